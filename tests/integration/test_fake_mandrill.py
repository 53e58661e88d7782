"""The fake Mandrill server, exercised over real sockets with a plain HTTP client; its webhook
signatures are checked against an independent implementation of Mandrill's scheme."""

from __future__ import annotations

import asyncio
import base64
import hashlib
import hmac
import json
import re
import signal
import sys
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import parse_qsl, urlencode

import aiohttp
import pytest
from aiohttp import web

from tidings.testing.fake_mandrill import (
    CLICKED_URL,
    FakeMandrillConfig,
    FakeMandrillServer,
    signature,
)

API_KEY = "test-api-key"
WEBHOOK_KEY = "test-webhook-key"
FROM = "noreply@clinic.example"
ID = re.compile(r"[0-9a-f]{32}")


def mandrill_signature(key: str, url: str, body: bytes) -> str:
    """Mandrill's signature, written from its documentation: the URL, then each POST field's name
    and value sorted by name, HMAC-SHA1 with the webhook key, in base64."""
    fields = dict(parse_qsl(body.decode(), keep_blank_values=True))
    signed = url + "".join(f"{name}{fields[name]}" for name in sorted(fields))
    return base64.b64encode(hmac.new(key.encode(), signed.encode(), hashlib.sha1).digest()).decode()


@dataclass
class Batch:
    url: str
    headers: dict[str, str]
    body: bytes

    @property
    def events(self) -> list[dict[str, Any]]:
        found: list[dict[str, Any]] = json.loads(dict(parse_qsl(self.body.decode()))["mandrill_events"])
        return found

    def is_signed(self, key: str = WEBHOOK_KEY) -> bool:
        given = self.headers.get("X-Mandrill-Signature", "")
        return hmac.compare_digest(given, mandrill_signature(key, self.url, self.body))


@dataclass
class Receiver:
    """A small web app that collects webhook posts; it can answer 500 to the first few."""

    fail_first: int = 0
    hits: int = 0
    batches: list[Batch] = field(default_factory=list)
    base: str = ""
    _runner: web.AppRunner | None = None

    @property
    def url(self) -> str:
        return f"{self.base}/webhooks/mandrill/md/events"

    @property
    def events(self) -> list[dict[str, Any]]:
        return [event for batch in self.batches for event in batch.events]

    async def _handle(self, request: web.Request) -> web.Response:
        self.hits += 1
        body = await request.read()
        if self.hits <= self.fail_first:
            return web.Response(status=500)
        self.batches.append(Batch(f"{self.base}{request.path_qs}", dict(request.headers), body))
        return web.Response(text="OK")

    async def start(self) -> None:
        app = web.Application()
        app.router.add_post("/{tail:.*}", self._handle)
        self._runner = web.AppRunner(app, access_log=None)
        await self._runner.setup()
        await web.TCPSite(self._runner, "127.0.0.1", 0).start()
        self.base = f"http://127.0.0.1:{self._runner.addresses[0][1]}"

    async def stop(self) -> None:
        if self._runner is not None:
            await self._runner.cleanup()

    async def wait_for(self, count: int, timeout: float = 5.0) -> list[dict[str, Any]]:
        """The events received, once there are at least ``count``."""
        deadline = asyncio.get_running_loop().time() + timeout
        while len(self.events) < count:
            if asyncio.get_running_loop().time() > deadline:
                pytest.fail(f"{count} events not received within {timeout}s: {self.events}")
            await asyncio.sleep(0.01)
        return self.events


@pytest.fixture
async def receiver() -> AsyncIterator[Receiver]:
    r = Receiver()
    await r.start()
    yield r
    await r.stop()


@pytest.fixture
async def fake(receiver: Receiver) -> AsyncIterator[FakeMandrillServer]:
    config = FakeMandrillConfig(
        api_key=API_KEY, webhook_key=WEBHOOK_KEY, webhook_url=receiver.url, event_delay_ms=5, batch_ms=5
    )
    server = FakeMandrillServer(config)
    await server.start()
    yield server
    await server.stop()


@pytest.fixture
async def client() -> AsyncIterator[aiohttp.ClientSession]:
    async with aiohttp.ClientSession() as session:
        yield session


def message(to: str, **extra: Any) -> dict[str, Any]:
    return {
        "subject": "Your appointment",
        "html": "<p>Tomorrow at 9</p>",
        "text": "Tomorrow at 9",
        "from_email": FROM,
        "from_name": "Clinic",
        "to": [{"email": to, "type": "to"}],
        "metadata": {"tidings_message_id": "msg-1"},
        **extra,
    }


async def send(
    client: aiohttp.ClientSession,
    fake: FakeMandrillServer,
    to: str = "patient@example.org",
    *,
    key: str = API_KEY,
    path: str = "/api/1.0/messages/send",
    **extra: Any,
) -> tuple[int, dict[str, str], Any]:
    payload = {"key": key, "message": message(to, **extra)}
    async with client.post(f"{fake.url}{path}", json=payload) as response:
        return response.status, dict(response.headers), await response.json()


def names(events: list[dict[str, Any]]) -> list[str]:
    return [event["event"] for event in events]


async def test_a_send_is_answered_with_a_result_per_recipient_and_a_signed_send_event(
    client: aiohttp.ClientSession, fake: FakeMandrillServer, receiver: Receiver
) -> None:
    status, _, answer = await send(client, fake)

    assert status == 200
    [result] = answer
    assert result["email"] == "patient@example.org"
    assert result["status"] == "sent"
    assert result["reject_reason"] is None and result["queued_reason"] is None
    assert ID.fullmatch(result["_id"])
    assert fake.requests[-1]["message"]["html"] == "<p>Tomorrow at 9</p>"
    assert fake.messages[result["_id"]].metadata == {"tidings_message_id": "msg-1"}

    [event] = await receiver.wait_for(1)
    [batch] = receiver.batches
    assert batch.is_signed()
    assert not batch.is_signed("another-key")
    assert batch.headers["Content-Type"] == "application/x-www-form-urlencoded"
    assert event["event"] == "send"
    assert event["_id"] == result["_id"]
    assert isinstance(event["ts"], int)
    msg = event["msg"]
    assert msg["_id"] == result["_id"]
    assert msg["state"] == "sent"
    assert msg["email"] == "patient@example.org"
    assert msg["sender"] == FROM
    assert msg["subject"] == "Your appointment"
    assert msg["metadata"] == {"tidings_message_id": "msg-1"}
    assert msg["smtp_events"][0]["type"] == "sent"
    assert fake.stats["sent"] == 1 and fake.stats["events"] == 1


@pytest.mark.parametrize("path", ["/api/1.0/messages/send.json", "/messages/send", "/messages/send.json"])
async def test_the_send_path_may_end_in_json_and_drop_the_prefix(
    client: aiohttp.ClientSession, fake: FakeMandrillServer, path: str
) -> None:
    status, _, answer = await send(client, fake, path=path)
    assert status == 200 and answer[0]["status"] == "sent"


@pytest.mark.parametrize(
    ("to", "status", "reject_reason", "queued_reason"),
    [
        ("reject@example.org", "rejected", "hard-bounce", None),
        ("invalid@example.org", "invalid", None, None),
        ("no-at-sign", "invalid", None, None),
        ("queued@example.org", "queued", None, "attachments"),
        ("scheduled@example.org", "scheduled", None, None),
    ],
)
async def test_magic_addresses_are_answered_with_their_status(
    client: aiohttp.ClientSession,
    fake: FakeMandrillServer,
    to: str,
    status: str,
    reject_reason: str | None,
    queued_reason: str | None,
) -> None:
    code, _, [result] = await send(client, fake, to)
    assert code == 200
    assert (result["status"], result["reject_reason"], result["queued_reason"]) == (
        status,
        reject_reason,
        queued_reason,
    )
    assert ID.fullmatch(result["_id"])


@pytest.mark.parametrize(
    ("to", "events"),
    [
        ("patient@example.org", ["send"]),
        ("bounce@example.org", ["hard_bounce"]),
        ("reject@example.org", ["reject"]),
        ("soft@example.org", ["soft_bounce", "send"]),
        ("defer@example.org", ["deferral", "send"]),
        ("spam@example.org", ["send", "spam"]),
        ("unsub@example.org", ["send", "unsub"]),
        ("open@example.org", ["send", "open", "click"]),
        ("queued@example.org", ["send"]),
    ],
)
async def test_magic_addresses_get_their_events_in_order(
    client: aiohttp.ClientSession, fake: FakeMandrillServer, receiver: Receiver, to: str, events: list[str]
) -> None:
    _, _, [result] = await send(client, fake, to)
    received = await receiver.wait_for(len(events))
    await fake.wait_for_events(5)
    assert names(receiver.events) == events
    assert all(event["_id"] == result["_id"] for event in received)
    assert all(batch.is_signed() for batch in receiver.batches)


async def test_bounce_events_carry_the_description_and_the_servers_answer(
    client: aiohttp.ClientSession, fake: FakeMandrillServer, receiver: Receiver
) -> None:
    await send(client, fake, "bounce@example.org")
    await send(client, fake, "soft@example.org")
    events = {event["event"]: event for event in await receiver.wait_for(3)}
    hard, soft = events["hard_bounce"]["msg"], events["soft_bounce"]["msg"]
    assert (hard["state"], hard["bounce_description"]) == ("bounced", "bad_mailbox")
    assert hard["diag"].startswith("smtp;550 5.1.1")
    assert (soft["state"], soft["bounce_description"]) == ("soft-bounced", "mailbox_full")
    assert soft["diag"].startswith("smtp;552")


async def test_an_open_and_a_click_carry_where_and_what(
    client: aiohttp.ClientSession, fake: FakeMandrillServer, receiver: Receiver
) -> None:
    await send(client, fake, "open@example.org")
    _, opened, clicked = await receiver.wait_for(3)
    assert opened["event"] == "open" and opened["ip"] and opened["user_agent"]
    assert clicked["event"] == "click" and clicked["url"] == CLICKED_URL
    assert clicked["msg"]["clicks"][0]["url"] == CLICKED_URL


@pytest.mark.parametrize("to", ["silent@example.org", "invalid@example.org"])
async def test_some_addresses_get_no_event(
    client: aiohttp.ClientSession, fake: FakeMandrillServer, receiver: Receiver, to: str
) -> None:
    await send(client, fake, to)
    await fake.wait_for_events(5)
    assert fake.events == [] and receiver.batches == []


async def test_events_that_come_together_are_posted_in_one_batch(
    client: aiohttp.ClientSession, receiver: Receiver
) -> None:
    config = FakeMandrillConfig(
        api_key=API_KEY, webhook_key=WEBHOOK_KEY, webhook_url=receiver.url, event_delay_ms=5, batch_ms=300
    )
    fake = FakeMandrillServer(config)
    await fake.start()
    try:
        for n in range(3):
            await send(client, fake, f"patient{n}@example.org")
        await receiver.wait_for(3)
        await fake.wait_for_events(5)
    finally:
        await fake.stop()
    [batch] = receiver.batches
    assert names(batch.events) == ["send", "send", "send"]
    assert batch.is_signed()
    assert fake.stats["batches_posted"] == 1


async def test_a_batch_refused_with_500_is_posted_again(
    client: aiohttp.ClientSession, fake: FakeMandrillServer, receiver: Receiver
) -> None:
    receiver.fail_first = 2
    await send(client, fake)
    await receiver.wait_for(1)
    await fake.wait_for_events(5)
    assert receiver.hits == 3
    assert fake.stats["batches_posted"] == 1 and fake.stats["batches_failed"] == 0


async def test_without_a_webhook_url_events_are_kept_not_posted(client: aiohttp.ClientSession) -> None:
    fake = FakeMandrillServer(FakeMandrillConfig(api_key=API_KEY, event_delay_ms=1))
    await fake.start()
    try:
        _, _, [result] = await send(client, fake, "spam@example.org")
        await fake.wait_for_events(5)
    finally:
        await fake.stop()
    assert names(fake.events) == ["send", "spam"]
    assert all(event["_id"] == result["_id"] for event in fake.events)
    assert fake.batches == []


def assert_mandrill_error(answer: Any, name: str) -> None:
    assert answer["status"] == "error"
    assert answer["name"] == name
    assert isinstance(answer["code"], int)
    assert answer["message"]


@pytest.mark.parametrize("key", ["wrong-key", ""])
async def test_a_wrong_key_is_refused_with_invalid_key(
    client: aiohttp.ClientSession, fake: FakeMandrillServer, key: str
) -> None:
    status, _, answer = await send(client, fake, key=key)
    assert status == 500
    assert_mandrill_error(answer, "Invalid_Key")
    assert answer["code"] == -1
    assert fake.sends == [] and fake.stats["errors"] == 1


@pytest.mark.parametrize(
    "payload",
    [
        {"key": API_KEY},
        {"key": API_KEY, "message": {**message("x@example.org"), "to": []}},
        {"key": API_KEY, "message": message("x@example.org", from_email="no-at-sign")},
        {"key": API_KEY, "message": message("x@example.org", tags=["_reserved"])},
        {
            "key": API_KEY,
            "message": message(
                "x@example.org", attachments=[{"type": "text/plain", "name": "a.txt", "content": "%%%"}]
            ),
        },
        ["not", "an", "object"],
    ],
)
async def test_a_request_that_cannot_be_read_is_a_validation_error(
    client: aiohttp.ClientSession, fake: FakeMandrillServer, payload: Any
) -> None:
    async with client.post(f"{fake.url}/api/1.0/messages/send", json=payload) as response:
        assert response.status == 500
        answer = await response.json()
    assert_mandrill_error(answer, "ValidationError")
    assert answer["code"] == -2
    assert fake.sends == []


async def test_an_unknown_subaccount_is_refused(client: aiohttp.ClientSession, receiver: Receiver) -> None:
    fake = FakeMandrillServer(FakeMandrillConfig(api_key=API_KEY, subaccounts=frozenset({"clinic"})))
    await fake.start()
    try:
        status, _, answer = await send(client, fake, subaccount="other")
        assert status == 500
        assert_mandrill_error(answer, "Unknown_Subaccount")
        status, _, [result] = await send(client, fake, subaccount="clinic")
        assert status == 200 and result["status"] == "sent"
    finally:
        await fake.stop()


async def test_unavailable_is_a_general_error_every_time(
    client: aiohttp.ClientSession, fake: FakeMandrillServer
) -> None:
    for _ in range(2):
        status, _, answer = await send(client, fake, "unavailable@example.org")
        assert status == 500
        assert_mandrill_error(answer, "GeneralError")


async def test_retry_is_a_general_error_once_then_sent(
    client: aiohttp.ClientSession, fake: FakeMandrillServer
) -> None:
    status, _, answer = await send(client, fake, "retry@example.org")
    assert status == 500
    assert_mandrill_error(answer, "GeneralError")
    status, _, [result] = await send(client, fake, "retry@example.org")
    assert status == 200 and result["status"] == "sent"
    assert fake.sends[-1].attempt == 2


async def test_ratelimit_is_a_429_with_retry_after(
    client: aiohttp.ClientSession, fake: FakeMandrillServer
) -> None:
    status, headers, answer = await send(client, fake, "ratelimit@example.org")
    assert status == 429
    assert headers["Retry-After"] == "1"
    assert_mandrill_error(answer, "Too_Many_Requests")


async def test_sends_beyond_max_per_second_get_429(client: aiohttp.ClientSession) -> None:
    fake = FakeMandrillServer(FakeMandrillConfig(api_key=API_KEY, max_per_second=2))
    await fake.start()
    try:
        statuses = [(await send(client, fake, f"p{n}@example.org"))[0] for n in range(3)]
    finally:
        await fake.stop()
    assert statuses == [200, 200, 429]


async def test_post_events_signs_with_the_configured_or_a_given_key(
    fake: FakeMandrillServer, receiver: Receiver, client: aiohttp.ClientSession
) -> None:
    _, _, [result] = await send(client, fake, "silent@example.org")
    event = fake.event(fake.messages[result["_id"]], "unsub")
    assert await fake.post_events(receiver.url, [event]) == (200, b"OK")
    assert await fake.post_events(receiver.url, [event], webhook_key="forged") == (200, b"OK")
    signed, forged = receiver.batches
    assert signed.is_signed() and not forged.is_signed()
    assert signed.events == [event]
    assert event["msg"]["metadata"] == {"tidings_message_id": "msg-1"}


def test_signature_is_mandrills_scheme() -> None:
    url = "https://tidings.example/webhooks/mandrill/md/events?x=1"
    params = {"mandrill_events": '[{"event":"send","msg":{"subject":"hé & co"}}]'}
    body = urlencode(params).encode()
    assert signature(WEBHOOK_KEY, url, params) == mandrill_signature(WEBHOOK_KEY, url, body)


async def test_stats_and_reset(client: aiohttp.ClientSession, fake: FakeMandrillServer) -> None:
    await send(client, fake)
    await send(client, fake, "reject@example.org")
    await send(client, fake, key="wrong")
    async with client.get(f"{fake.url}/_stats") as response:
        stats = await response.json()
    assert (stats["requests"], stats["sent"], stats["rejected"], stats["errors"]) == (3, 1, 1, 1)
    async with client.post(f"{fake.url}/_reset") as response:
        assert response.status == 204
    assert fake.stats["requests"] == 0 and fake.sends == [] and fake.requests == []
    async with client.get(f"{fake.url}/") as response:
        assert response.status == 200


async def test_the_same_message_sent_twice_is_listed_as_a_duplicate(
    client: aiohttp.ClientSession, fake: FakeMandrillServer
) -> None:
    await send(client, fake)
    await send(client, fake)
    assert fake.stats["duplicates"] == ["patient@example.org|Your appointment"]


async def test_command_line_prints_listening_line_serves_and_stops_on_sigterm() -> None:
    process = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "tidings.testing.fake_mandrill",
        "--port",
        "0",
        "--api-key",
        API_KEY,
        stdout=asyncio.subprocess.PIPE,
    )
    try:
        assert process.stdout is not None
        line = (await asyncio.wait_for(process.stdout.readline(), 20)).decode()
        assert line.startswith("listening on http://127.0.0.1:")
        url = line.removeprefix("listening on ").strip()
        async with aiohttp.ClientSession() as session:
            payload = {"key": API_KEY, "message": message("cli@example.org")}
            async with session.post(f"{url}/api/1.0/messages/send.json", json=payload) as response:
                assert response.status == 200
                assert (await response.json())[0]["status"] == "sent"
        process.send_signal(signal.SIGTERM)
        assert await asyncio.wait_for(process.wait(), 20) == 0
    finally:
        if process.returncode is None:
            process.kill()
            await process.wait()
