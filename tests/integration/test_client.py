"""The REST clients (``tidings.client``) against a running tidings on a real port.

Every operation is called with real data, through both :class:`Client` (run in a thread: the
server runs in the test's event loop) and :class:`AsyncClient`. Retries are proved through a
proxy on 127.0.0.1 that loses answers, answers 503 or 429, or drops connections, in front of the
real server: a retried send carries one ``Idempotency-Key`` and makes one message. Callback
signatures are checked on callbacks a running worker delivered.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
import orjson
import pytest
from aiohttp import web

from tests.conftest import make_settings
from tests.live import Live, eventually, live_service
from tidings.api.app import create_app
from tidings.client import (
    ApiError,
    AsyncClient,
    BatchIn,
    Client,
    MessageIn,
    MessageOut,
    SigningKey,
    TemplateUpdate,
    verify_callback,
)
from tidings.client.rest import NONE, OPERATIONS, Operation
from tidings.services import Service
from tidings.signatures import sign
from tidings.store import Store

PERSON = "+254712345678"
OTHER = "+254712345679"
GATEWAY = {"kind": "gateway", "username": "phone", "password": "pw"}

NOT_CLIENT_OPERATIONS = {
    "receiveWebhook": "providers post receipts and inbound SMS to it, with their own signatures",
    "checkGateway": "the medic-gateway app's URL check, part of the phone's protocol",
    "pollGateway": "the medic-gateway app's poll (HTTP Basic as the phone), not an application's call",
    "unsubscribe": "an email recipient's one-click unsubscribe, signed for the recipient, not a key",
    "unsubscribePage": "the page a recipient's unsubscribe link opens in a browser",
}
"""Operations of the OpenAPI document no client method calls, and why. (``/metrics``, scraped by
Prometheus, is not in the document at all.)"""

METHODS = {
    "getHealth": "get_health",
    "sendMessage": "send_message",
    "listMessages": "list_messages",
    "getMessage": "get_message",
    "cancelMessage": "cancel_message",
    "sendBatch": "send_batch",
    "listBatches": "list_batches",
    "getBatch": "get_batch",
    "cancelBatch": "cancel_batch",
    "createTemplate": "create_template",
    "listTemplates": "list_templates",
    "getTemplate": "get_template",
    "updateTemplate": "update_template",
    "deleteTemplate": "delete_template",
    "listGateways": "list_gateways",
    "listInbound": "list_inbound",
    "listOptOuts": "list_opt_outs",
    "addOptOut": "add_opt_out",
    "removeOptOut": "remove_opt_out",
    "listLog": "list_log",
    "listCallbacks": "list_callbacks",
    "retryCallback": "retry_callback",
    "getCallbackSettings": "get_callback_settings",
    "setCallbackSettings": "set_callback_settings",
    "rotateCallbackSecret": "rotate_callback_secret",
    "getStats": "get_stats",
    "getWebhookStats": "get_webhook_stats",
    "listAlerts": "list_alerts",
}
"""Each operation's client method, the same name on both clients."""


# --- The OpenAPI document against the clients -----------------------------------------------------


def _ref(content: dict[str, Any]) -> str | None:
    """The model name of a JSON body in the document (a reference, or an inlined schema's title)."""
    schema = content.get("application/json", {}).get("schema", {})
    ref = schema.get("$ref")
    return str(ref).rsplit("/", 1)[-1] if ref else schema.get("title")


def _query_names(op: Operation[Any]) -> set[str]:
    keys = set(getattr(op.query, "__optional_keys__", set())) | set(
        getattr(op.query, "__required_keys__", set())
    )
    return {op.renamed.get(k, k) for k in keys}


def test_every_operation_of_the_api_has_a_client_method(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'doc.db'}"
    document = create_app(Service(make_settings(url), store=Store.connect(url))).openapi()
    seen: set[str] = set()
    for path, operations in document["paths"].items():
        for method, spec in operations.items():
            op_id = spec["operationId"]
            seen.add(op_id)
            if op_id in NOT_CLIENT_OPERATIONS:
                continue
            assert op_id in METHODS, f"{method.upper()} {path} ({op_id}) has no client method"
            op = OPERATIONS[op_id]
            assert (op.method, op.path) == (method.upper(), path), op_id
            for client in (Client, AsyncClient):
                assert getattr(client, METHODS[op_id]).operation is op, f"{client.__name__}.{METHODS[op_id]}"
            parameters = spec.get("parameters", [])
            query = {p["name"] for p in parameters if p["in"] == "query"}
            assert _query_names(op) == query, f"{op_id}: the client's query arguments are not the API's"
            headers = {p["name"].lower() for p in parameters if p["in"] == "header"}
            assert headers == ({"idempotency-key"} if op.creates else set()), op_id
            body = spec.get("requestBody", {}).get("content", {})
            assert _ref(body) == (op.body.__name__ if op.body else None), f"{op_id}: request model"
            answers = {s: r for s, r in spec["responses"].items() if s.startswith("2")}
            for status, answer in answers.items():
                expected = None if op.answer is NONE else op.answer.__name__
                assert _ref(answer.get("content", {})) == expected, f"{op_id} {status}: answer model"
            for status in op.also_answers:
                assert _ref(spec["responses"][str(status)]["content"]) == op.answer.__name__
            signed = any("signedRequest" in s for s in spec.get("security", []))
            assert op.signable == signed, op_id
    assert set(NOT_CLIENT_OPERATIONS) <= seen, "an excluded operation no longer exists: drop it"
    assert set(OPERATIONS) <= seen, "the client calls an operation the API no longer has"
    assert set(OPERATIONS) == set(METHODS)
    assert "/metrics" not in document["paths"]


# --- Both clients, from the test's event loop -----------------------------------------------------


class Api:
    """A client's methods, awaitable from the test's loop: :class:`AsyncClient`'s as they are,
    :class:`Client`'s in a thread (the server answers from this loop, so they must not block it)."""

    def __init__(self, client: Client | AsyncClient) -> None:
        self.client = client

    def __getattr__(self, name: str) -> Callable[..., Awaitable[Any]]:
        method = getattr(self.client, name)
        if isinstance(self.client, AsyncClient):
            return method  # type: ignore[no-any-return]

        async def in_thread(*args: Any, **kwargs: Any) -> Any:
            return await asyncio.to_thread(method, *args, **kwargs)

        return in_thread


@pytest.fixture(params=["async", "blocking"])
def flavour(request: pytest.FixtureRequest) -> str:
    return str(request.param)


@contextlib.asynccontextmanager
async def opened(flavour: str, url: str, key: str | None, **options: Any) -> AsyncIterator[Api]:
    """A client of ``flavour`` (``async`` or ``blocking``) at ``url``, closed afterwards."""
    if flavour == "async":
        async with AsyncClient(url, key, **options) as client:
            yield Api(client)
    else:
        blocking = Client(url, key, **options)
        try:
            yield Api(blocking)
        finally:
            await asyncio.to_thread(blocking.close)


def key_of(live: Live) -> str:
    return live.client.headers["Authorization"].removeprefix("Bearer ")


# --- Messages -----------------------------------------------------------------------------------


async def test_messages_send_read_list_and_cancel(database_url: str, flavour: str) -> None:
    async with live_service(database_url) as live, opened(flavour, live.url, key_of(live)) as api:
        sent = await api.send_message(
            to=PERSON, body="Your visit is tomorrow", tags=["visits"], sender="CLINIC"
        )
        assert isinstance(sent, MessageOut)
        assert (sent.to, sent.body, sent.tags, sent.status) == (
            PERSON,
            "Your visit is tomorrow",
            ["visits"],
            "pending",
        )
        model = await api.send_message(MessageIn(to=OTHER, body="A model, not keywords"))
        assert (model.to, model.body) == (OTHER, "A model, not keywords")

        delivered = await eventually(
            lambda: api.get_message(sent.id), lambda m: m.status == "delivered", what="delivery"
        )
        assert delivered.delivered_at is not None and delivered.provider == "fake"
        assert [e.status for e in delivered.events or []][-1] == "delivered"

        later = datetime.now(UTC) + timedelta(days=1)
        scheduled = await api.send_message(to=OTHER, body="Next week", send_at=later, tags=["later"])
        assert scheduled.status == "scheduled"

        every = await api.list_messages()
        assert {m.id for m in every.data} >= {sent.id, scheduled.id}
        started = sent.created_at - timedelta(seconds=1)
        filtered = await api.list_messages(
            q="visit tomorrow",
            status=["delivered", "sent"],
            to=PERSON,
            to_prefix="+2547",
            tag=["visits"],
            provider="fake",
            channel="sms",
            created_after=started,
            created_before=datetime.now(UTC) + timedelta(minutes=1),
            limit=10,
        )
        assert [m.id for m in filtered.data] == [sent.id]
        assert (await api.list_messages(tag=["later"], status=["scheduled"])).data[0].id == scheduled.id
        assert (await api.list_messages(currency="USD", cost_min="0", cost_max="1")).data == []
        first = await api.list_messages(limit=1)
        assert first.next_cursor is not None
        second = await api.list_messages(limit=1, cursor=first.next_cursor)
        assert second.data[0].id != first.data[0].id

        cancelled = await api.cancel_message(scheduled.id)
        assert cancelled.status == "cancelled" and cancelled.cancelled_at is not None
        with pytest.raises(ApiError) as again:
            await api.cancel_message(scheduled.id)
        assert (again.value.status, again.value.code) == (409, "not_cancellable")


async def test_errors_carry_the_servers_code_message_and_field(database_url: str, flavour: str) -> None:
    async with live_service(database_url, worker=False) as live:
        async with opened(flavour, live.url, key_of(live)) as api:
            with pytest.raises(ApiError) as bad_number:
                await api.send_message(to="+1 555", body="hi")
            error = bad_number.value
            assert (error.status, error.code, error.field) == (422, "invalid_phone_number", "to")
            assert error.message and error.request_id
            with pytest.raises(ApiError) as missing:
                await api.get_message("01J9ZK3V8Q4W6M2N5P7R9T1X3Y")
            assert (missing.value.status, missing.value.code) == (404, "not_found")
            with pytest.raises(ApiError) as bad_query:
                await api.list_messages(limit=0)
            assert (bad_query.value.code, bad_query.value.field) == ("validation_error", "limit")
        async with opened(flavour, live.url, "tdg_not-a-key") as stranger:
            with pytest.raises(ApiError) as unauthorized:
                await stranger.list_messages()
            assert (unauthorized.value.status, unauthorized.value.code) == (401, "unauthorized")
            assert (await stranger.get_health()).status == "ok"
        assert (await live.client.get("/v1/messages")).json()["data"] == []


async def test_a_misspelt_argument_is_refused_before_anything_is_sent(database_url: str) -> None:
    async with live_service(database_url, worker=False) as live:
        async with AsyncClient(live.url, key_of(live)) as client:
            with pytest.raises(TypeError, match="takes no stauts"):
                await client.list_messages(stauts=["sent"])  # type: ignore[call-arg]
            with pytest.raises(ValueError, match="bdy"):
                await client.send_message(to=PERSON, bdy="hi")
        assert (await live.client.get("/v1/messages")).json()["data"] == []


# --- Batches and templates ------------------------------------------------------------------------


async def test_batches_and_templates(database_url: str, flavour: str) -> None:
    async with (
        live_service(database_url, worker=False) as live,
        opened(flavour, live.url, key_of(live)) as api,
    ):
        template = await api.create_template(name="visit", body="Hello {{ first_name }}, see you {{ day }}.")
        assert (template.version, template.latest_version, template.channel) == (1, 1, "sms")
        updated = await api.update_template(
            template.id, TemplateUpdate(name="visit", body="Hi {{ first_name }}, {{ day }}.")
        )
        assert (updated.version, updated.latest_version) == (2, 2)
        assert (await api.get_template(template.id, version=1)).body == template.body
        assert (await api.get_template(template.id)).version == 2
        assert [t.id for t in (await api.list_templates(limit=5)).data] == [template.id]

        later = datetime.now(UTC) + timedelta(days=1)
        accepted = await api.send_batch(
            template_id=template.id,
            context={"day": "Friday"},
            tags=["clinic"],
            send_at=later,
            recipients=[{"to": PERSON, "first_name": "Amina"}, {"to": "+1 555", "first_name": "Nobody"}],
        )
        assert (accepted.total, accepted.accepted) == (2, 1)
        assert [(r.index, r.code) for r in accepted.refused] == [(1, "invalid_phone_number")]
        assert accepted.group_id  # made up by the client, the batch's idempotency key
        [message] = (await api.list_messages(batch=accepted.id)).data
        assert message.body == "Hi Amina, Friday." and message.template_version == 2

        spec = BatchIn(
            group_id="g-1", template="Hey {{ first_name }}", recipients=[{"to": OTHER, "first_name": "O"}]
        )
        first = await api.send_batch(spec)
        assert (await api.send_batch(spec)).id == first.id  # the same group_id: the same batch
        batch = await api.get_batch(accepted.id)
        assert (batch.counts, batch.progress.total, batch.tags) == ({"scheduled": 1}, 1, ["clinic"])
        assert [b.id for b in (await api.list_batches(tag="clinic")).data] == [accepted.id]
        assert len((await api.list_batches(created_after=batch.created_at - timedelta(seconds=1))).data) == 2

        cancelled = await api.cancel_batch(accepted.id)
        assert cancelled.cancelled == 1 and cancelled.counts == {"cancelled": 1}

        assert await api.delete_template(template.id) is None
        with pytest.raises(ApiError) as gone:
            await api.get_template(template.id)
        assert gone.value.code == "not_found"


# --- Opt-outs -------------------------------------------------------------------------------------


async def test_opt_outs_add_list_and_remove(database_url: str, flavour: str) -> None:
    async with (
        live_service(database_url, worker=False) as live,
        opened(flavour, live.url, key_of(live)) as api,
    ):
        waiting = await api.send_message(
            to=PERSON, body="later", send_at=datetime.now(UTC) + timedelta(days=1)
        )
        added = await api.add_opt_out(number=PERSON, note="asked at the desk")
        assert (added.created, added.number, added.scope, added.cancelled_messages) == (True, PERSON, "*", 1)
        assert (await api.get_message(waiting.id)).status == "cancelled"
        assert (await api.add_opt_out(number=PERSON)).created is False
        email = await api.add_opt_out(email="amina@example.org")
        assert (email.channel, email.address) == ("email", "amina@example.org")

        [listed] = (await api.list_opt_outs(number=PERSON)).data
        assert (listed.number, listed.note, listed.source) == (PERSON, "asked at the desk", "api")
        assert len((await api.list_opt_outs()).data) == 2
        with pytest.raises(ApiError) as refused:
            await api.send_message(to=PERSON, body="hi")
        assert refused.value.code == "recipient_opted_out"

        assert await api.remove_opt_out(PERSON) is None
        assert await api.remove_opt_out("amina@example.org") is None
        with pytest.raises(ApiError) as not_out:
            await api.remove_opt_out(PERSON, sender="CLINIC")
        assert (not_out.value.status, not_out.value.code) == (404, "not_found")
        assert (await api.send_message(to=PERSON, body="welcome back")).status == "pending"


# --- What tidings saw: log, stats, inbound, gateways, alerts, health ---------------------------------


async def test_log_stats_inbound_gateways_alerts_and_health(database_url: str, flavour: str) -> None:
    providers = {"fake": {"kind": "fake", "latency_ms": 0, "receipt_delay_ms": 10}, "phone": GATEWAY}
    async with (
        live_service(database_url, providers=providers) as live,
        opened(flavour, live.url, key_of(live)) as api,
    ):
        since = datetime.now(UTC) - timedelta(minutes=1)
        sent = await api.send_message(to=PERSON, body="counted")
        await live.wait_for(sent.id, "delivered")
        poll = await live.client.post(
            "/api/sms",
            json={"messages": [{"id": "in-1", "from": OTHER, "content": "Thanks"}]},
            auth=("phone", "pw"),
        )
        assert poll.status_code == 200, poll.text

        log = await eventually(
            lambda: api.list_log(message_id=sent.id), lambda page: len(page.data) >= 2, what="log entries"
        )
        assert {e.kind for e in log.data} >= {"OUTBOUND", "STATUS_UPDATE"}
        assert all(e.number == PERSON for e in log.data)
        assert [e.kind for e in (await api.list_log(kind="INBOUND", number=OTHER, since=since)).data] == [
            "INBOUND"
        ]

        stats = await api.get_stats(since=since, by=["provider"], channel="sms")
        assert (stats.totals.total, stats.totals.delivered) == (1, 1)
        assert [g.key for g in stats.groups] == [{"provider": "fake"}]
        assert (await api.get_stats(since=since, provider="phone")).totals.total == 0
        webhooks = await api.get_webhook_stats(since=since, until=datetime.now(UTC) + timedelta(seconds=5))
        assert abs(webhooks.since - since) < timedelta(milliseconds=1)

        [inbound] = (await api.list_inbound(sender=OTHER, since=since)).data
        assert (inbound.sender, inbound.body, inbound.provider) == (OTHER, "Thanks", "phone")
        assert (await api.list_inbound(sender=PERSON)).data == []

        [phone] = (await api.list_gateways()).data
        assert (phone.name, phone.polls, phone.inbound_received) == ("phone", 1, 1)
        assert (await api.list_alerts(status="open", since=since)).data == []
        health = await api.get_health()
        assert (health.status, health.database) == ("ok", "ok")


# --- Callbacks and their signatures -----------------------------------------------------------------


@dataclass
class Receiver:
    """An application's callback endpoint on 127.0.0.1; ``refuse`` answers 410 (given up at once)."""

    url: str = ""
    got: list[tuple[str, bytes]] = field(default_factory=list)
    refuse: bool = False

    async def handle(self, request: web.Request) -> web.Response:
        if self.refuse:
            return web.Response(status=410)
        self.got.append((request.headers.get("Tidings-Signature", ""), await request.read()))
        return web.Response(status=200)


@pytest.fixture
async def receiver() -> AsyncIterator[Receiver]:
    receiver = Receiver()
    app = web.Application()
    app.router.add_post("/hook", receiver.handle)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    await web.TCPSite(runner, "127.0.0.1", 0).start()
    receiver.url = f"http://127.0.0.1:{runner.addresses[0][1]}/hook"
    try:
        yield receiver
    finally:
        await runner.cleanup()


async def test_callbacks_are_verified_with_the_keys_secret(
    database_url: str, flavour: str, receiver: Receiver
) -> None:
    async with live_service(database_url) as live, opened(flavour, live.url, key_of(live)) as api:
        settings = await api.set_callback_settings(receiver.url)
        assert settings.url == receiver.url and settings.secret
        assert (await api.get_callback_settings()).secret == settings.secret
        sent = await api.send_message(to=PERSON, body="tell me")
        await live.wait_for(sent.id, "delivered")
        # One callback per change: sending, sent, delivered.
        page = await eventually(
            lambda: api.list_callbacks(message_id=sent.id, status="delivered"),
            lambda p: len(p.data) == 3,
            what="three delivered callbacks",
        )
        assert {c.url for c in page.data} == {receiver.url}
        assert len(receiver.got) == 3

        for header, body in receiver.got:
            assert verify_callback(body, header, settings.secret)
            assert orjson.loads(body)["id"] == sent.id
            forged = body.replace(b'"to"', b'"tO"')
            assert not verify_callback(forged, header, settings.secret)
            assert not verify_callback(body, header, "whsec_someone-else")
            assert not verify_callback(body, None, settings.secret)
            stale = sign(body, settings.secret, timestamp=int(time.time()) - 600)
            assert not verify_callback(body, stale, settings.secret)
            assert verify_callback(body, stale, settings.secret, tolerance=3600)

        rotated = await api.rotate_callback_secret()
        assert rotated.secret != settings.secret and rotated.previous_secret_until is not None
        receiver.refuse = True
        refused = await api.send_message(to=PERSON, body="refused")
        failed = await eventually(
            lambda: api.list_callbacks(message_id=refused.id, status="failed"),
            lambda p: len(p.data) == 3,
            what="three failed callbacks",
        )
        receiver.refuse = False
        retried = await api.retry_callback(failed.data[0].id)
        assert retried.status == "pending" and retried.id == failed.data[0].id
        await eventually(
            lambda: api.list_callbacks(message_id=refused.id, status="delivered"),
            lambda p: [c.id for c in p.data] == [retried.id],
            what="the retried callback delivered",
        )
        header, body = receiver.got[-1]
        # During the rotation's grace both secrets sign it.
        assert verify_callback(body, header, rotated.secret) and verify_callback(
            body, header, settings.secret
        )


# --- Retries --------------------------------------------------------------------------------------


@dataclass
class Seen:
    """One request that reached the proxy, what it did with it, and tidings' answer if it asked."""

    method: str
    path: str
    headers: dict[str, str]
    body: bytes
    action: str
    upstream: int | None = None
    upstream_body: bytes = b""


class Flaky:
    """An HTTP proxy on 127.0.0.1 in front of tidings that misbehaves on purpose. For the requests
    to a ``(method, path)`` of ``plan`` it takes the planned actions in turn: ``lose`` (pass the
    request on, then close the connection instead of answering: tidings acted, the client never
    heard), ``drop`` (close without passing it on), ``503`` (a database outage, with
    ``Retry-After: 0``), ``429:N`` (rate limited, ``Retry-After: N``), ``502`` (a gateway's HTML
    error page, not tidings' error contract), ``hang`` (never answer); anything else, and every
    request after the plan, is passed on and answered."""

    def __init__(self, upstream: str, plan: dict[tuple[str, str], list[str]]) -> None:
        self.upstream = httpx.AsyncClient(base_url=upstream)
        self.plan = {k: list(v) for k, v in plan.items()}
        self.seen: list[Seen] = []
        self.url = ""
        self.release = asyncio.Event()
        """Set when the proxy stops: the requests it hangs on end then."""

    def to(self, method: str, path: str) -> list[Seen]:
        return [s for s in self.seen if (s.method, s.path.split("?")[0]) == (method, path)]

    async def serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            head = await reader.readuntil(b"\r\n\r\n")
            request_line, *lines = head.decode("latin-1").split("\r\n")
            method, target, _ = request_line.split(" ", 2)
            headers = {k.strip().lower(): v.strip() for k, _, v in (ln.partition(":") for ln in lines if ln)}
            body = await reader.readexactly(int(headers.get("content-length", "0")))
            actions = self.plan.get((method, target.split("?")[0]), [])
            seen = Seen(method, target, headers, body, actions.pop(0) if actions else "pass")
            self.seen.append(seen)
            status, answer, extra = 0, b"", ""
            if seen.action in ("pass", "lose"):
                passed = {
                    k: v for k, v in headers.items() if k not in ("host", "content-length", "connection")
                }
                upstream = await self.upstream.request(method, target, headers=passed, content=body)
                seen.upstream, seen.upstream_body = upstream.status_code, upstream.content
                status, answer = upstream.status_code, upstream.content
            if seen.action in ("lose", "drop"):
                return
            if seen.action == "hang":
                await self.release.wait()
                return
            if seen.action == "503":
                status, extra = 503, "Retry-After: 0\r\n"
                answer = (
                    b'{"error": {"code": "database_unavailable", "message": "the database is out of reach"}}'
                )
            elif seen.action.startswith("429:"):
                status, extra = 429, f"Retry-After: {seen.action[4:]}\r\n"
                answer = b'{"error": {"code": "rate_limited", "message": "slow down"}}'
            elif seen.action == "502":
                status, answer = 502, b"<html><body>Bad Gateway</body></html>"
            writer.write(
                f"HTTP/1.1 {status} X\r\nContent-Type: application/json\r\nContent-Length: {len(answer)}\r\n"
                f"{extra}Connection: close\r\n\r\n".encode()
                + answer
            )
            await writer.drain()
        finally:
            writer.close()


@contextlib.asynccontextmanager
async def flaky(upstream: str, plan: dict[tuple[str, str], list[str]]) -> AsyncIterator[Flaky]:
    proxy = Flaky(upstream, plan)
    server = await asyncio.start_server(proxy.serve, "127.0.0.1", 0)
    proxy.url = f"http://127.0.0.1:{server.sockets[0].getsockname()[1]}"
    try:
        yield proxy
    finally:
        proxy.release.set()
        server.close()
        await server.wait_closed()
        await proxy.upstream.aclose()


FAST: dict[str, Any] = {"backoff": 0.01, "max_backoff": 0.05}


async def test_a_send_whose_answer_was_lost_is_retried_into_one_message(
    database_url: str, flavour: str
) -> None:
    async with live_service(database_url, worker=False) as live:
        plan = {("POST", "/v1/messages"): ["lose", "503", "pass"]}
        async with flaky(live.url, plan) as proxy, opened(flavour, proxy.url, key_of(live), **FAST) as api:
            message = await api.send_message(to=PERSON, body="exactly once")
        attempts = proxy.to("POST", "/v1/messages")
        assert [a.action for a in attempts] == ["lose", "503", "pass"]
        assert len({a.headers["idempotency-key"] for a in attempts}) == 1
        assert len({a.headers["x-request-id"] for a in attempts}) == 1
        assert len({a.body for a in attempts}) == 1
        # tidings stored it on the first attempt (202) and answered the repeat with it (200).
        assert [a.upstream for a in attempts] == [202, None, 200]
        assert orjson.loads(attempts[0].upstream_body)["id"] == message.id
        stored = (await live.client.get("/v1/messages")).json()["data"]
        assert [m["id"] for m in stored] == [message.id]


async def test_a_caller_given_idempotency_key_is_the_one_sent(database_url: str) -> None:
    async with live_service(database_url, worker=False) as live:
        async with flaky(live.url, {("POST", "/v1/messages"): ["lose"]}) as proxy:
            async with AsyncClient(proxy.url, key_of(live), **FAST) as client:
                first = await client.send_message(to=PERSON, body="once", idempotency_key="order-42")
                again = await client.send_message(to=PERSON, body="once", idempotency_key="order-42")
                with pytest.raises(ApiError) as conflict:
                    await client.send_message(to=PERSON, body="other", idempotency_key="order-42")
        assert first.id == again.id
        assert conflict.value.code == "idempotency_conflict"
        assert {a.headers["idempotency-key"] for a in proxy.to("POST", "/v1/messages")} == {"order-42"}
        assert len((await live.client.get("/v1/messages")).json()["data"]) == 1


async def test_without_retries_a_lost_answer_is_a_transport_error(database_url: str, flavour: str) -> None:
    async with live_service(database_url, worker=False) as live:
        async with flaky(live.url, {("POST", "/v1/messages"): ["lose"]}) as proxy:
            async with opened(flavour, proxy.url, key_of(live), retries=0) as api:
                with pytest.raises(httpx.TransportError):
                    await api.send_message(to=PERSON, body="lost")
        assert len(proxy.to("POST", "/v1/messages")) == 1


async def test_dropped_connections_are_retried_up_to_the_cap(database_url: str, flavour: str) -> None:
    async with live_service(database_url, worker=False) as live:
        async with flaky(live.url, {("GET", "/v1/messages"): ["drop"] * 5}) as proxy:
            async with opened(flavour, proxy.url, key_of(live), retries=2, **FAST) as api:
                with pytest.raises(httpx.TransportError):
                    await api.list_messages()
                assert len(proxy.to("GET", "/v1/messages")) == 3
                async with opened(flavour, proxy.url, key_of(live), retries=4, **FAST) as patient:
                    assert (await patient.list_messages()).data == []


async def test_rate_limits_are_waited_out_only_when_short(database_url: str, flavour: str) -> None:
    async with live_service(database_url, worker=False) as live:
        plan = {("GET", "/v1/opt-outs"): ["429:1"], ("GET", "/v1/callbacks"): ["429:3600"]}
        async with flaky(live.url, plan) as proxy, opened(flavour, proxy.url, key_of(live), **FAST) as api:
            started = time.monotonic()
            assert (await api.list_opt_outs()).data == []
            assert time.monotonic() - started >= 1.0  # Retry-After, not the much shorter back-off
            assert [a.action for a in proxy.to("GET", "/v1/opt-outs")] == ["429:1", "pass"]
            with pytest.raises(ApiError) as limited:
                await api.list_callbacks()
            assert (limited.value.status, limited.value.code, limited.value.retry_after) == (
                429,
                "rate_limited",
                3600,
            )
            assert len(proxy.to("GET", "/v1/callbacks")) == 1


async def test_what_could_happen_twice_is_not_retried_after_tidings_may_have_acted(
    database_url: str, flavour: str
) -> None:
    async with live_service(database_url, worker=False) as live:
        plan = {("POST", "/v1/callback-settings/rotate-secret"): ["lose"], ("POST", "/v1/templates"): ["503"]}
        before = (await live.client.get("/v1/callback-settings")).json()
        async with flaky(live.url, plan) as proxy, opened(flavour, proxy.url, key_of(live), **FAST) as api:
            with pytest.raises(httpx.TransportError):
                await api.rotate_callback_secret()
            with pytest.raises(ApiError) as unavailable:
                await api.create_template(name="t", body="hi")
            assert (unavailable.value.status, unavailable.value.code) == (503, "database_unavailable")
        assert len(proxy.to("POST", "/v1/callback-settings/rotate-secret")) == 1
        assert len(proxy.to("POST", "/v1/templates")) == 1
        after = (await live.client.get("/v1/callback-settings")).json()
        # Rotated once: the secret it had is now the previous one, signing beside the new.
        assert after["secret"] != before["secret"] and after["previous_secret_until"] is not None


async def test_a_signed_batch_is_signed_anew_for_each_attempt(database_url: str, flavour: str) -> None:
    async with live_service(database_url, worker=False) as live:
        key, secret = await live.service.store.keys.create("signer")
        settings = await live.client.get(
            "/v1/callback-settings", headers={"Authorization": f"Bearer {secret}"}
        )
        signing = SigningKey(key.id, settings.json()["secret"])
        async with flaky(live.url, {("POST", "/v1/batches"): ["lose", "pass"]}) as proxy:
            async with opened(flavour, proxy.url, None, signing_key=signing, **FAST) as api:
                accepted = await api.send_batch(
                    group_id="signed-1", template="Hello", recipients=[{"to": PERSON}, {"to": OTHER}]
                )
                with pytest.raises(ApiError) as needs_key:
                    await api.list_batches()
                assert needs_key.value.code == "unauthorized"
        first, second = proxy.to("POST", "/v1/batches")
        assert "authorization" not in first.headers and first.headers["tidings-key"] == key.id
        assert first.headers["tidings-signature"] != second.headers["tidings-signature"]
        assert [first.upstream, second.upstream] == [202, 200]
        assert accepted.accepted == 2 and accepted.id == orjson.loads(first.upstream_body)["id"]
        # The first attempt's signature is spent: sent again as it was, tidings refuses it.
        async with httpx.AsyncClient(base_url=live.url) as raw:
            replayed = await raw.post(
                "/v1/batches",
                content=first.body,
                headers={
                    "Content-Type": "application/json",
                    "Tidings-Key": key.id,
                    "Tidings-Signature": first.headers["tidings-signature"],
                },
            )
        assert replayed.status_code == 409 and replayed.json()["error"]["code"] == "signature_reused"
        batches = (await live.client.get("/v1/batches")).json()["data"]
        assert [b["id"] for b in batches] == [accepted.id]


async def test_an_error_page_that_is_not_tidings_is_an_http_error(database_url: str, flavour: str) -> None:
    async with live_service(database_url, worker=False) as live:
        async with flaky(live.url, {("GET", "/v1/batches"): ["502", "502"]}) as proxy:
            async with opened(flavour, proxy.url, key_of(live), retries=1, **FAST) as api:
                with pytest.raises(ApiError) as bad_gateway:
                    await api.list_batches()
        error = bad_gateway.value
        assert (error.status, error.code, error.field) == (502, "http_error", None)
        assert "Bad Gateway" in error.message
        assert len(proxy.to("GET", "/v1/batches")) == 2


async def test_the_timeout_bounds_each_attempt(database_url: str, flavour: str) -> None:
    async with live_service(database_url, worker=False) as live:
        async with flaky(live.url, {("GET", "/v1/templates"): ["hang", "hang"]}) as proxy:
            async with opened(flavour, proxy.url, key_of(live), timeout=0.3, retries=1, **FAST) as api:
                started = time.monotonic()
                with pytest.raises(httpx.ReadTimeout):
                    await api.list_templates()
                took = time.monotonic() - started
                assert len(proxy.to("GET", "/v1/templates")) == 2
                assert 0.6 <= took < 5, took
                assert (await api.list_templates()).data == []
