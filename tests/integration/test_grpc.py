"""The gRPC API over a real port, on both databases, beside the REST API of the same service:
every call, its errors (codes and details), the change stream, deadlines and cancellation,
health, reflection and TLS."""

from __future__ import annotations

import asyncio
import datetime as dt
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import grpc
import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID
from grpc_health.v1 import health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection_pb2, reflection_pb2_grpc
from grpc_status import rpc_status

from tests.live import Live, free_port, live_service
from tidings.providers.fake_rules import PERMANENT_FAILURE, RECEIPT_FAILED
from tidings.rpc.errors import error_info
from tidings.rpc.server import GrpcServer
from tidings.v1 import messaging_pb2 as pb
from tidings.v1 import messaging_pb2_grpc as pb_grpc

ORDINARY = "+12025550123"


@dataclass
class Grpc:
    live: Live
    stub: pb_grpc.MessagingStub
    key: str
    channel: grpc.aio.Channel

    @property
    def auth(self) -> list[tuple[str, str]]:
        return [("authorization", f"Bearer {self.key}")]


@pytest.fixture
async def rpc(database_url: str) -> AsyncIterator[Grpc]:
    async with live_service(database_url) as live:
        server = GrpcServer(live.service, live.service.settings)
        port = await server.start("127.0.0.1", free_port())
        _key, secret = await live.service.store.keys.create("grpc")
        channel = grpc.aio.insecure_channel(f"127.0.0.1:{port}")
        try:
            yield Grpc(live, pb_grpc.MessagingStub(channel), secret, channel)
        finally:
            await channel.close()
            await server.stop(0)


async def failure(call: Any) -> tuple[grpc.StatusCode, str, dict[str, str]]:
    """The code, the ErrorInfo reason and its metadata of a call that must fail."""
    with pytest.raises(grpc.aio.AioRpcError) as raised:
        await call
    error = raised.value
    status = rpc_status.from_call(error)
    assert status is not None, "no details in the status"
    info = error_info(status)
    assert info is not None and info.domain == "tidings"
    return error.code(), info.reason, dict(info.metadata)


async def wait_final(rpc: Grpc, message_id: str, timeout: float = 10) -> pb.Message:
    deadline = asyncio.get_running_loop().time() + timeout
    while True:
        found = await rpc.stub.GetMessage(pb.GetMessageRequest(id=message_id), metadata=rpc.auth)
        if found.final:
            return found
        assert asyncio.get_running_loop().time() < deadline, pb.Status.Name(found.status)
        await asyncio.sleep(0.05)


async def test_send_get_and_the_rest_api_see_the_same_message(rpc: Grpc) -> None:
    sent = await rpc.stub.SendMessage(
        pb.SendMessageRequest(to=ORDINARY, body="hello over gRPC", tags=["grpc"], metadata={"n": 1}),
        metadata=rpc.auth,
    )
    assert sent.status == pb.STATUS_PENDING and not sent.final
    delivered = await wait_final(rpc, sent.id)
    assert delivered.status == pb.STATUS_DELIVERED
    assert [pb.Status.Name(e.status) for e in delivered.events if e.changed][-1] == "STATUS_DELIVERED"
    assert delivered.events[0].type == "accepted"
    rest = (await rpc.live.client.get(f"/v1/messages/{sent.id}")).json()
    assert rest["status"] == "delivered" and rest["tags"] == ["grpc"]
    # Whole numbers stay whole (a Struct holds doubles); nested values come through as JSON.
    assert repr(rest["metadata"]) == repr({"n": 1})
    assert (
        delivered.delivered_at.ToDatetime(tzinfo=dt.UTC)
        .isoformat(timespec="milliseconds")
        .replace("+00:00", "Z")
        == rest["delivered_at"]
    )
    assert len(delivered.events) == len(rest["events"])


async def test_an_idempotency_key_answers_the_same_message_and_refuses_another(rpc: Grpc) -> None:
    request = pb.SendMessageRequest(to=ORDINARY, body="once only")
    keyed = [*rpc.auth, ("idempotency-key", "visit-42")]
    first = await rpc.stub.SendMessage(request, metadata=keyed)
    again = await rpc.stub.SendMessage(request, metadata=keyed)
    assert again.id == first.id
    code, reason, _ = await failure(
        rpc.stub.SendMessage(pb.SendMessageRequest(to=ORDINARY, body="something else"), metadata=keyed)
    )
    assert (code, reason) == (grpc.StatusCode.ALREADY_EXISTS, "idempotency_conflict")
    listed = (await rpc.live.client.get("/v1/messages", params={"q": "once only"})).json()["data"]
    assert [m["id"] for m in listed] == [first.id]


async def test_bad_input_has_the_rest_apis_codes_and_fields(rpc: Grpc) -> None:
    cases = [
        (pb.SendMessageRequest(to="not a number", body="x"), "invalid_phone_number", "to"),
        (pb.SendMessageRequest(body="no recipient"), "validation_error", "to"),
        (pb.SendMessageRequest(to=ORDINARY, body="x" * 5000), "body_too_long", "body"),
        (pb.SendMessageRequest(to=ORDINARY, body="x", channel="pigeon"), "validation_error", "channel"),
    ]
    for request, reason, field in cases:
        code, found, details = await failure(rpc.stub.SendMessage(request, metadata=rpc.auth))
        assert (code, found, details.get("field")) == (grpc.StatusCode.INVALID_ARGUMENT, reason, field)
    # Nothing was stored.
    assert (await rpc.live.client.get("/v1/messages")).json()["data"] == []


async def test_a_wrong_missing_or_narrow_key_is_refused(rpc: Grpc) -> None:
    request = pb.GetMessageRequest(id="01M8MXTKX4WC3JT699P79W58GS")
    for metadata in ([], [("authorization", "Bearer tdg_wrong")], [("authorization", "Basic abc")]):
        code, reason, _ = await failure(rpc.stub.GetMessage(request, metadata=metadata))
        assert (code, reason) == (grpc.StatusCode.UNAUTHENTICATED, "unauthorized")
    _key, reader = await rpc.live.service.store.keys.create("reader", scopes=frozenset({"read"}))
    code, reason, _ = await failure(
        rpc.stub.SendMessage(
            pb.SendMessageRequest(to=ORDINARY, body="x"), metadata=[("authorization", f"Bearer {reader}")]
        )
    )
    assert (code, reason) == (grpc.StatusCode.PERMISSION_DENIED, "insufficient_scope")
    code, reason, _ = await failure(rpc.stub.GetMessage(request, metadata=rpc.auth))
    assert (code, reason) == (grpc.StatusCode.NOT_FOUND, "not_found")


async def test_was_sent_and_was_delivered_answer_seed_001s_questions(rpc: Grpc) -> None:
    delivered = await rpc.stub.SendMessage(pb.SendMessageRequest(to=ORDINARY, body="a"), metadata=rpc.auth)
    undelivered = await rpc.stub.SendMessage(
        pb.SendMessageRequest(to=RECEIPT_FAILED, body="b"), metadata=rpc.auth
    )
    refused = await rpc.stub.SendMessage(
        pb.SendMessageRequest(to=PERMANENT_FAILURE, body="c"), metadata=rpc.auth
    )
    later = await rpc.stub.SendMessage(
        pb.SendMessageRequest(to=ORDINARY, body="d", send_at={"seconds": 4_102_444_800}), metadata=rpc.auth
    )
    for message in (delivered, undelivered, refused):
        await wait_final(rpc, message.id)

    def ask(message: pb.Message) -> Any:
        ref = pb.MessageRef(id=message.id)
        return asyncio.gather(
            rpc.stub.WasSent(ref, metadata=rpc.auth), rpc.stub.WasDelivered(ref, metadata=rpc.auth)
        )

    sent, yes = await ask(delivered)
    assert (sent.sent, sent.final, yes.delivered, yes.final, yes.to) == (True, True, True, True, ORDINARY)
    assert yes.HasField("delivered_at") and not yes.HasField("reason")
    sent, no = await ask(undelivered)
    assert (sent.sent, sent.final, no.delivered, no.final) == (True, True, False, True)
    assert no.error_code == "undeliverable" and no.reason
    sent, no = await ask(refused)
    assert (sent.sent, sent.final, no.delivered, no.final) == (False, True, False, True)
    assert sent.error_code == "invalid_number" and sent.reason
    sent, no = await ask(later)
    assert (sent.sent, sent.final, no.delivered, no.final) == (False, False, False, False)
    assert sent.status == pb.STATUS_SCHEDULED and not sent.HasField("reason")


async def test_cancel_then_cancel_again(rpc: Grpc) -> None:
    later = await rpc.stub.SendMessage(
        pb.SendMessageRequest(to=ORDINARY, body="d", send_at={"seconds": 4_102_444_800}), metadata=rpc.auth
    )
    cancelled = await rpc.stub.CancelMessage(pb.MessageRef(id=later.id), metadata=rpc.auth)
    assert cancelled.status == pb.STATUS_CANCELLED and cancelled.final
    code, reason, _ = await failure(rpc.stub.CancelMessage(pb.MessageRef(id=later.id), metadata=rpc.auth))
    assert (code, reason) == (grpc.StatusCode.FAILED_PRECONDITION, "not_cancellable")


async def test_list_messages_filters_and_pages_like_rest(rpc: Grpc) -> None:
    ids = []
    for i in range(5):
        sent = await rpc.stub.SendMessage(
            pb.SendMessageRequest(
                to=ORDINARY, body=f"reminder number {i}", tags=["even" if i % 2 == 0 else "odd"]
            ),
            metadata=rpc.auth,
        )
        ids.append(sent.id)
    first = await rpc.stub.ListMessages(pb.ListMessagesRequest(limit=2), metadata=rpc.auth)
    second = await rpc.stub.ListMessages(
        pb.ListMessagesRequest(limit=2, cursor=first.next_cursor), metadata=rpc.auth
    )
    third = await rpc.stub.ListMessages(
        pb.ListMessagesRequest(limit=2, cursor=second.next_cursor), metadata=rpc.auth
    )
    assert [m.id for m in (*first.messages, *second.messages, *third.messages)] == ids[::-1]
    assert third.next_cursor == ""
    even = await rpc.stub.ListMessages(pb.ListMessagesRequest(tags=["even"], q="reminder"), metadata=rpc.auth)
    rest = (await rpc.live.client.get("/v1/messages", params={"tag": "even", "q": "reminder"})).json()["data"]
    assert [m.id for m in even.messages] == [m["id"] for m in rest] == [ids[4], ids[2], ids[0]]
    code, reason, details = await failure(
        rpc.stub.ListMessages(pb.ListMessagesRequest(limit=501), metadata=rpc.auth)
    )
    assert (code, reason, details["field"]) == (
        grpc.StatusCode.INVALID_ARGUMENT,
        "validation_error",
        "limit",
    )
    code, reason, _ = await failure(
        rpc.stub.ListMessages(pb.ListMessagesRequest(cursor="x"), metadata=rpc.auth)
    )
    assert (code, reason) == (grpc.StatusCode.INVALID_ARGUMENT, "bad_request")
    code, reason, _ = await failure(
        rpc.stub.ListMessages(pb.ListMessagesRequest(statuses=[42]), metadata=rpc.auth)  # type: ignore[list-item]
    )
    assert (code, reason) == (grpc.StatusCode.INVALID_ARGUMENT, "invalid_input")


def batch_parts(group: str, recipients: list[str], chunk: int = 2) -> list[pb.SendBatchRequest]:
    shared = pb.BatchShared(group_id=group, template="Hello {{ first_name }}{{ day }}", tags=["drive"])
    shared.context.update({"day": ""})
    parts = [pb.SendBatchRequest(batch=shared)]
    for start in range(0, len(recipients), chunk):
        parts.append(
            pb.SendBatchRequest(
                recipients=pb.RecipientChunk(
                    recipients=[recipient(to) for to in recipients[start : start + chunk]]
                )
            )
        )
    return parts


def recipient(to: str) -> pb.Recipient:
    made = pb.Recipient(to=to, first_name="Amina")
    made.context.update({"day": ", see you on Friday", "visit": {"room": 3}})
    made.metadata.update({"patient": "P-7"})
    return made


async def stream(parts: list[pb.SendBatchRequest]) -> AsyncIterator[pb.SendBatchRequest]:
    for part in parts:
        yield part


async def test_a_batch_streamed_in_chunks_is_one_batch(rpc: Grpc) -> None:
    numbers = ["+12025550130", "+12025550131", "not-a-number", "+12025550133", "+12025550134"]
    batch = await rpc.stub.SendBatch(stream(batch_parts("drive-1", numbers)), metadata=rpc.auth)
    assert (batch.total, batch.accepted, batch.existing) == (5, 4, False)
    assert [(r.index, r.code) for r in batch.refused] == [(2, "invalid_phone_number")]
    again = await rpc.stub.SendBatch(stream(batch_parts("drive-1", numbers, chunk=5)), metadata=rpc.auth)
    assert (again.id, again.existing) == (batch.id, True)
    rest = (await rpc.live.client.get(f"/v1/batches/{batch.id}")).json()
    assert rest["accepted"] == 4 and rest["group_id"] == "drive-1"
    messages = (await rpc.live.client.get("/v1/messages", params={"batch": batch.id})).json()["data"]
    assert sorted(m["body"] for m in messages) == ["Hello Amina, see you on Friday"] * 4
    assert {repr(m["metadata"]) for m in messages} == {repr({"patient": "P-7"})}

    out_of_order = batch_parts("drive-2", numbers)[1:]
    code, reason, _ = await failure(rpc.stub.SendBatch(stream(out_of_order), metadata=rpc.auth))
    assert (code, reason) == (grpc.StatusCode.INVALID_ARGUMENT, "invalid_input")
    code, reason, details = await failure(
        rpc.stub.SendBatch(stream(batch_parts("drive-3", [])), metadata=rpc.auth)
    )
    assert (code, reason, details["field"]) == (
        grpc.StatusCode.INVALID_ARGUMENT,
        "validation_error",
        "recipients",
    )


async def test_too_many_recipients_stops_the_stream(database_url: str) -> None:
    async with live_service(database_url, max_batch_recipients=3) as live:
        server = GrpcServer(live.service, live.service.settings)
        port = await server.start("127.0.0.1", free_port())
        _key, secret = await live.service.store.keys.create("grpc")
        async with grpc.aio.insecure_channel(f"127.0.0.1:{port}") as channel:
            stub = pb_grpc.MessagingStub(channel)
            parts = batch_parts("big", [f"+1202555{i:04d}" for i in range(10)])
            code, reason, _ = await failure(
                stub.SendBatch(stream(parts), metadata=[("authorization", f"Bearer {secret}")])
            )
        await server.stop(0)
    assert (code, reason) == (grpc.StatusCode.INVALID_ARGUMENT, "too_many_recipients")


async def test_watching_a_message_streams_its_changes_in_order(rpc: Grpc) -> None:
    sent = await rpc.stub.SendMessage(
        pb.SendMessageRequest(to=RECEIPT_FAILED, body="watch me"), metadata=rpc.auth
    )
    changes = []
    call = rpc.stub.WatchMessages(pb.WatchMessagesRequest(message_id=sent.id), metadata=rpc.auth, timeout=10)
    async for change in call:
        changes.append(change)
        if change.final:
            call.cancel()
            break
    assert [c.event for c in changes] == ["accepted", "claimed", "send_accepted", "report"]
    assert [pb.Status.Name(c.status) for c in changes] == [
        "STATUS_PENDING",
        "STATUS_SENDING",
        "STATUS_SENT",
        "STATUS_FAILED",
    ]
    assert changes[-1].error_code == "undeliverable"
    assert [int(c.cursor) for c in changes] == sorted(int(c.cursor) for c in changes)
    # From a cursor: only what came after it.
    rest = rpc.stub.WatchMessages(
        pb.WatchMessagesRequest(message_id=sent.id, cursor=changes[1].cursor), metadata=rpc.auth, timeout=10
    )
    after = []
    async for change in rest:
        after.append(change.cursor)
        if len(after) == 2:
            rest.cancel()
            break
    assert after == [c.cursor for c in changes[2:]]


async def test_watching_everything_resumes_without_missing_or_repeating(rpc: Grpc) -> None:
    seen: list[pb.StatusChange] = []
    first = rpc.stub.WatchMessages(pb.WatchMessagesRequest(), metadata=rpc.auth, timeout=30)
    reader = asyncio.create_task(collect(first, seen, until=lambda s: len(s) >= 8))
    await asyncio.sleep(0.3)  # the stream starts "from now": let it start before sending
    sent = [
        await rpc.stub.SendMessage(pb.SendMessageRequest(to=ORDINARY, body=f"m{i}"), metadata=rpc.auth)
        for i in range(5)
    ]
    await reader
    first.cancel()
    cursor = seen[-1].cursor
    for message in sent:
        await wait_final(rpc, message.id)
    more: list[pb.StatusChange] = []
    second = rpc.stub.WatchMessages(pb.WatchMessagesRequest(cursor=cursor), metadata=rpc.auth, timeout=30)
    await collect(second, more, until=lambda s: sum(c.status == pb.STATUS_DELIVERED for c in seen + s) == 5)
    second.cancel()
    together = [c.cursor for c in seen + more]
    assert len(together) == len(set(together)), "a change came twice"
    expected = 0
    for message in sent:
        rest = (await rpc.live.client.get(f"/v1/messages/{message.id}")).json()
        expected += sum(1 for e in rest["events"] if e["changed"])
    assert len(together) == expected == 20


async def collect(call: Any, into: list[pb.StatusChange], *, until: Any) -> None:
    async for change in call:
        into.append(change)
        if until(into):
            return


async def test_watch_errors_deadlines_and_cancellation(rpc: Grpc) -> None:
    code, reason, _ = await failure(
        collect(
            rpc.stub.WatchMessages(pb.WatchMessagesRequest(cursor="abc"), metadata=rpc.auth), [], until=bool
        )
    )
    assert (code, reason) == (grpc.StatusCode.INVALID_ARGUMENT, "invalid_input")
    code, reason, _ = await failure(
        collect(
            rpc.stub.WatchMessages(
                pb.WatchMessagesRequest(message_id="01M8MXTKX4WC3JT699P79W58GS"), metadata=rpc.auth
            ),
            [],
            until=bool,
        )
    )
    assert (code, reason) == (grpc.StatusCode.NOT_FOUND, "not_found")
    quiet = rpc.stub.WatchMessages(pb.WatchMessagesRequest(), metadata=rpc.auth, timeout=0.5)
    with pytest.raises(grpc.aio.AioRpcError) as raised:
        await collect(quiet, [], until=bool)
    assert raised.value.code() == grpc.StatusCode.DEADLINE_EXCEEDED
    cancelled = rpc.stub.WatchMessages(pb.WatchMessagesRequest(), metadata=rpc.auth)
    cancelled.cancel()
    with pytest.raises(asyncio.CancelledError):
        await collect(cancelled, [], until=bool)
    # The server goes on serving after both.
    assert (await rpc.stub.ListMessages(pb.ListMessagesRequest(), metadata=rpc.auth)).next_cursor == ""


async def test_health_and_reflection(rpc: Grpc) -> None:
    health = health_pb2_grpc.HealthStub(rpc.channel)
    for service in ("", "tidings.v1.Messaging"):
        answer = await health.Check(health_pb2.HealthCheckRequest(service=service))
        assert answer.status == health_pb2.HealthCheckResponse.SERVING
    reflection = reflection_pb2_grpc.ServerReflectionStub(rpc.channel)

    async def ask() -> AsyncIterator[reflection_pb2.ServerReflectionRequest]:
        yield reflection_pb2.ServerReflectionRequest(list_services="")

    names = []
    async for answer in reflection.ServerReflectionInfo(ask()):
        names = [s.name for s in answer.list_services_response.service]
    assert "tidings.v1.Messaging" in names and "grpc.health.v1.Health" in names


def self_signed(directory: Path) -> tuple[Path, Path]:
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "localhost")])
    now = dt.datetime.now(dt.UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(minutes=1))
        .not_valid_after(now + dt.timedelta(days=1))
        .add_extension(x509.SubjectAlternativeName([x509.DNSName("localhost")]), critical=False)
        .sign(key, hashes.SHA256())
    )
    cert_path, key_path = directory / "cert.pem", directory / "key.pem"
    cert_path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    key_path.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
        )
    )
    return cert_path, key_path


async def test_with_a_certificate_it_speaks_tls_only(database_url: str, tmp_path: Path) -> None:
    cert, key = self_signed(tmp_path)
    async with live_service(database_url, grpc_tls_cert=str(cert), grpc_tls_key=str(key)) as live:
        server = GrpcServer(live.service, live.service.settings)
        port = await server.start("127.0.0.1", free_port())
        _id, secret = await live.service.store.keys.create("tls")
        auth = [("authorization", f"Bearer {secret}")]
        credentials = grpc.ssl_channel_credentials(root_certificates=cert.read_bytes())
        options = [("grpc.ssl_target_name_override", "localhost")]
        try:
            async with grpc.aio.secure_channel(f"127.0.0.1:{port}", credentials, options=options) as channel:
                page = await pb_grpc.MessagingStub(channel).ListMessages(
                    pb.ListMessagesRequest(), metadata=auth
                )
                assert list(page.messages) == []
            async with grpc.aio.insecure_channel(f"127.0.0.1:{port}") as plain:
                with pytest.raises(grpc.aio.AioRpcError) as raised:
                    await pb_grpc.MessagingStub(plain).ListMessages(
                        pb.ListMessagesRequest(), metadata=auth, timeout=3
                    )
                assert raised.value.code() == grpc.StatusCode.UNAVAILABLE
        finally:
            await server.stop(0)


async def test_the_grpc_client_end_to_end_and_its_watch_across_a_server_restart(database_url: str) -> None:
    from tidings.client import GrpcClient, GrpcError

    async with live_service(database_url) as live:
        port = free_port()
        server = GrpcServer(live.service, live.service.settings)
        await server.start("127.0.0.1", port)
        _id, secret = await live.service.store.keys.create("client")
        client = GrpcClient(f"127.0.0.1:{port}", secret, timeout=10)
        try:
            sent = await asyncio.to_thread(client.send_message, ORDINARY, "from the client", tags=["c"])
            with pytest.raises(GrpcError) as raised:
                await asyncio.to_thread(client.send_message, "nope", "x")
            assert (raised.value.status, raised.value.code, raised.value.field) == (
                grpc.StatusCode.INVALID_ARGUMENT,
                "invalid_phone_number",
                "to",
            )
            shared = pb.BatchShared(group_id="client-batch", template="Hi {{ first_name }}")
            people = (pb.Recipient(to=f"+1202555{i:04d}", first_name="Otieno") for i in range(7))
            batch = await asyncio.to_thread(client.send_batch, shared, people, chunk=3)
            assert (batch.total, batch.accepted) == (7, 7)
            page = await asyncio.to_thread(client.list_messages, batch=batch.id, limit=10)
            assert len(page.messages) == 7

            # The watch goes on across a restart of the server, from where it was.
            seen: list[pb.StatusChange] = []

            def follow() -> None:
                for change in client.watch(message_id=sent.id, reconnect_seconds=0.1):
                    seen.append(change)
                    if change.final:
                        return

            await wait_final_rest(live, sent.id)
            await server.stop(0)
            watching = asyncio.create_task(asyncio.to_thread(follow))
            await asyncio.sleep(0.5)  # it is refused meanwhile, and tries again
            server = GrpcServer(live.service, live.service.settings)
            await server.start("127.0.0.1", port)
            await asyncio.wait_for(watching, 30)
            assert [c.event for c in seen] == ["accepted", "claimed", "send_accepted", "report"]
            answer = await asyncio.to_thread(client.was_delivered, sent.id)
            assert answer.delivered and answer.final
        finally:
            client.close()
            await server.stop(0)


async def wait_final_rest(live: Live, message_id: str) -> None:
    deadline = asyncio.get_running_loop().time() + 10
    while (await live.client.get(f"/v1/messages/{message_id}")).json()["status"] != "delivered":
        assert asyncio.get_running_loop().time() < deadline
        await asyncio.sleep(0.05)


async def test_a_keys_rate_limit_counts_its_rest_and_grpc_requests_together(database_url: str) -> None:
    async with live_service(database_url, api_key_rate_limit=3) as live:
        live.service.key_checker.clock = lambda: 100.0  # every request in the same second
        server = GrpcServer(live.service, live.service.settings)
        port = await server.start("127.0.0.1", free_port())
        try:
            for _ in range(2):
                assert (await live.client.get("/v1/messages")).status_code == 200
            async with grpc.aio.insecure_channel(f"127.0.0.1:{port}") as channel:
                stub = pb_grpc.MessagingStub(channel)
                auth = [("authorization", live.client.headers["authorization"])]
                await stub.ListMessages(pb.ListMessagesRequest(), metadata=auth)
                code, reason, _ = await failure(stub.ListMessages(pb.ListMessagesRequest(), metadata=auth))
            assert (code, reason) == (grpc.StatusCode.RESOURCE_EXHAUSTED, "rate_limited")
            assert (await live.client.get("/v1/messages")).status_code == 429
        finally:
            await server.stop(0)
