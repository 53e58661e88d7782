"""The fake Twilio server, exercised over real sockets; signatures are checked with Twilio's own library."""

from __future__ import annotations

import asyncio
import base64
import re
import signal
import sys
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from email.utils import parsedate_to_datetime
from typing import Any

import aiohttp
import pytest
from aiohttp import web
from twilio.request_validator import RequestValidator

from tidings.testing.fake_twilio import FakeTwilioConfig, FakeTwilioServer, signature

ACCOUNT_SID = "AC" + "ab" * 16
AUTH_TOKEN = "test-auth-token"
SENDER = "+15005550006"
ORDINARY = "+14155550123"
SID = re.compile(r"SM[0-9a-f]{32}")
VALIDATOR = RequestValidator(AUTH_TOKEN)


def basic(login: str, password: str) -> dict[str, str]:
    """The ``Authorization`` header for HTTP Basic auth (aiohttp's BasicAuth is deprecated)."""
    token = base64.b64encode(f"{login}:{password}".encode()).decode("ascii")
    return {"Authorization": f"Basic {token}"}


@dataclass
class Webhook:
    url: str
    params: dict[str, str]
    headers: dict[str, str]

    def is_signed(self, validator: RequestValidator = VALIDATOR) -> bool:
        return bool(validator.validate(self.url, self.params, self.headers.get("X-Twilio-Signature", "")))


@dataclass
class Receiver:
    """A small web app that collects form webhooks; it can answer 500 to the first few."""

    fail_first: int = 0
    hits: int = 0
    webhooks: list[Webhook] = field(default_factory=list)
    arrived: asyncio.Queue[Webhook] = field(default_factory=asyncio.Queue)
    base: str = ""
    _runner: web.AppRunner | None = None

    async def _handle(self, request: web.Request) -> web.Response:
        self.hits += 1
        form = await request.post()
        if self.hits <= self.fail_first:
            return web.Response(status=500)
        webhook = Webhook(
            url=f"{self.base}{request.path_qs}",
            params={name: str(value) for name, value in form.items()},
            headers=dict(request.headers),
        )
        self.webhooks.append(webhook)
        self.arrived.put_nowait(webhook)
        return web.Response(text="<Response/>", content_type="text/xml")

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

    async def next(self, timeout: float = 3.0) -> Webhook:
        return await asyncio.wait_for(self.arrived.get(), timeout)


@pytest.fixture
async def receiver() -> AsyncIterator[Receiver]:
    r = Receiver()
    await r.start()
    yield r
    await r.stop()


async def started(**overrides: Any) -> FakeTwilioServer:
    config = FakeTwilioConfig(account_sid=ACCOUNT_SID, auth_token=AUTH_TOKEN, callback_delay_ms=5.0)
    for name, value in overrides.items():
        setattr(config, name, value)
    server = FakeTwilioServer(config)
    await server.start()
    return server


@pytest.fixture
async def fake() -> AsyncIterator[FakeTwilioServer]:
    server = await started(seed=11)
    yield server
    await server.stop()


@pytest.fixture
async def client() -> AsyncIterator[aiohttp.ClientSession]:
    async with aiohttp.ClientSession(headers=basic(ACCOUNT_SID, AUTH_TOKEN)) as session:
        yield session


def messages_url(fake: FakeTwilioServer, account_sid: str = ACCOUNT_SID) -> str:
    return f"{fake.url}/2010-04-01/Accounts/{account_sid}/Messages.json"


async def send(
    client: aiohttp.ClientSession, fake: FakeTwilioServer, to: str, **extra: str
) -> tuple[int, dict[str, str], dict[str, Any]]:
    form = {"To": to, "Body": "hello", **extra}
    if "MessagingServiceSid" not in form:
        form.setdefault("From", SENDER)
    async with client.post(messages_url(fake), data=form) as response:
        return response.status, dict(response.headers), await response.json()


async def fetch(
    client: aiohttp.ClientSession, fake: FakeTwilioServer, sid: str
) -> tuple[int, dict[str, Any]]:
    url = f"{fake.url}/2010-04-01/Accounts/{ACCOUNT_SID}/Messages/{sid}.json"
    async with client.get(url) as response:
        return response.status, await response.json()


def assert_twilio_error(answer: dict[str, Any], status: int, code: int) -> None:
    assert answer == {
        "code": code,
        "message": answer["message"],
        "more_info": f"https://www.twilio.com/docs/errors/{code}",
        "status": status,
    }
    assert isinstance(answer["message"], str) and answer["message"]


async def test_send_answers_201_with_the_message_resource(
    fake: FakeTwilioServer, client: aiohttp.ClientSession
) -> None:
    status, headers, answer = await send(client, fake, ORDINARY)
    assert status == 201
    assert headers["Content-Type"].startswith("application/json")
    sid = answer["sid"]
    assert SID.fullmatch(sid)
    assert answer["account_sid"] == ACCOUNT_SID
    assert (answer["to"], answer["from"], answer["body"]) == (ORDINARY, SENDER, "hello")
    assert answer["messaging_service_sid"] is None
    assert answer["status"] == "queued"
    assert (answer["num_segments"], answer["num_media"]) == ("1", "0")
    assert (answer["direction"], answer["api_version"]) == ("outbound-api", "2010-04-01")
    assert (answer["price"], answer["price_unit"]) == (None, "USD")
    assert (answer["error_code"], answer["error_message"]) == (None, None)
    assert parsedate_to_datetime(answer["date_created"]).utcoffset() is not None
    parsedate_to_datetime(answer["date_updated"])
    assert answer["date_sent"] is None
    uri = f"/2010-04-01/Accounts/{ACCOUNT_SID}/Messages/{sid}"
    assert answer["uri"] == f"{uri}.json"
    assert answer["subresource_uris"]["media"] == f"{uri}/Media.json"

    assert fake.messages[sid].attempt == 1
    assert [m.sid for m in fake.sends] == [sid]
    fetched_status, fetched = await fetch(client, fake, sid)
    assert fetched_status == 200
    assert fetched["sid"] == sid

    await fake.wait_for_callbacks(3)
    _, fetched = await fetch(client, fake, sid)
    assert fetched["status"] == "delivered"
    assert fetched["date_sent"] is not None


async def test_long_and_unicode_bodies_count_segments(
    fake: FakeTwilioServer, client: aiohttp.ClientSession
) -> None:
    for body, segments in (("a" * 161, "2"), ("привет", "1"), ("ж" * 71, "2")):
        status, _, answer = await send(client, fake, ORDINARY, Body=body)
        assert status == 201
        assert answer["num_segments"] == segments, body


async def test_wrong_credentials_are_401_with_twilio_error_json(fake: FakeTwilioServer) -> None:
    form = {"To": ORDINARY, "From": SENDER, "Body": "hi"}
    cases: list[tuple[dict[str, str], str]] = [
        (basic(ACCOUNT_SID, "wrong-token"), ACCOUNT_SID),
        ({}, ACCOUNT_SID),
        ({"Authorization": "Bearer " + AUTH_TOKEN}, ACCOUNT_SID),
        (basic(ACCOUNT_SID, AUTH_TOKEN), "AC" + "cd" * 16),
    ]
    async with aiohttp.ClientSession() as session:
        for headers, path_sid in cases:
            async with session.post(messages_url(fake, path_sid), data=form, headers=headers) as response:
                assert response.status == 401
                assert response.headers["WWW-Authenticate"] == 'Basic realm="Twilio API"'
                assert await response.json() == {
                    "code": 20003,
                    "message": "Authenticate",
                    "more_info": "https://www.twilio.com/docs/errors/20003",
                    "status": 401,
                }
    assert fake.stats["accepted"] == 0
    assert fake.stats["rejected"] == len(cases)


async def test_missing_parameters_get_twilio_codes(
    fake: FakeTwilioServer, client: aiohttp.ClientSession
) -> None:
    cases = [
        ({"From": SENDER, "Body": "hi"}, 21604),
        ({"To": ORDINARY, "From": SENDER}, 21602),
        ({"To": ORDINARY, "Body": "hi"}, 21603),
        ({"To": "not a number", "From": SENDER, "Body": "hi"}, 21211),
    ]
    for form, code in cases:
        async with client.post(messages_url(fake), data=form) as response:
            assert response.status == 400, form
            assert_twilio_error(await response.json(), 400, code)


@pytest.mark.parametrize(
    ("to", "status", "code"),
    [
        ("+15005550001", 400, 21211),
        ("+15005550002", 400, 21612),
        ("+15005550003", 400, 21408),
        ("+15005550004", 400, 21610),
        ("+15005550009", 400, 21614),
        ("+12025550101", 400, 21211),
        ("+12025550102", 429, 20429),
    ],
)
async def test_magic_numbers_are_refused_with_their_codes(
    fake: FakeTwilioServer, client: aiohttp.ClientSession, to: str, status: int, code: int
) -> None:
    for _ in range(2):
        answer_status, headers, answer = await send(client, fake, to)
        assert answer_status == status
        assert_twilio_error(answer, status, code)
        if status == 429:
            assert headers["Retry-After"] == "1"
    assert fake.sends == []


async def test_server_error_once_then_accepted_for_the_same_to_and_body(
    fake: FakeTwilioServer, client: aiohttp.ClientSession
) -> None:
    status, _, answer = await send(client, fake, "+12025550103")
    assert status == 500
    assert_twilio_error(answer, 500, 20500)
    status, _, answer = await send(client, fake, "+12025550103")
    assert status == 201
    assert fake.messages[answer["sid"]].attempt == 2
    status, _, _ = await send(client, fake, "+12025550103")
    assert status == 201
    assert fake.stats["duplicates"] == ["+12025550103|hello"]


async def test_status_callbacks_are_signed_as_twilio_signs_them(
    fake: FakeTwilioServer, client: aiohttp.ClientSession, receiver: Receiver
) -> None:
    callback = f"{receiver.base}/twilio/status?tenant=a%20b&n=1"
    status, _, answer = await send(client, fake, ORDINARY, StatusCallback=callback)
    assert status == 201
    sent, delivered = await receiver.next(), await receiver.next()
    for webhook, expected in ((sent, "sent"), (delivered, "delivered")):
        assert webhook.url == callback
        assert webhook.headers["Content-Type"] == "application/x-www-form-urlencoded"
        assert webhook.is_signed()
        assert not webhook.is_signed(RequestValidator("another-token"))
        assert webhook.headers["X-Twilio-Signature"] == signature(AUTH_TOKEN, callback, webhook.params)
        assert webhook.params["MessageStatus"] == webhook.params["SmsStatus"] == expected
        assert webhook.params["MessageSid"] == webhook.params["SmsSid"] == answer["sid"]
        assert webhook.params["AccountSid"] == ACCOUNT_SID
        assert (webhook.params["From"], webhook.params["To"]) == (SENDER, ORDINARY)
        assert webhook.params["ApiVersion"] == "2010-04-01"
        assert "ErrorCode" not in webhook.params
    assert "RawDlrDoneDate" not in sent.params
    assert re.fullmatch(r"[0-9]{10}", delivered.params["RawDlrDoneDate"])
    await fake.wait_for_callbacks(3)
    assert fake.stats["callbacks_sent"] == 2


@pytest.mark.parametrize(
    ("to", "final", "error_code"),
    [("+12025550104", "undelivered", "30003"), ("+12025550106", "failed", "30008")],
)
async def test_failing_numbers_get_a_failure_callback_after_sent(
    fake: FakeTwilioServer,
    client: aiohttp.ClientSession,
    receiver: Receiver,
    to: str,
    final: str,
    error_code: str,
) -> None:
    status, _, answer = await send(client, fake, to, StatusCallback=f"{receiver.base}/status")
    assert status == 201
    assert (await receiver.next()).params["MessageStatus"] == "sent"
    last = await receiver.next()
    assert (last.params["MessageStatus"], last.params["ErrorCode"]) == (final, error_code)
    assert last.is_signed()
    await fake.wait_for_callbacks(3)
    _, fetched = await fetch(client, fake, answer["sid"])
    assert (fetched["status"], fetched["error_code"]) == (final, int(error_code))


async def test_sent_only_number_gets_one_callback_but_polls_delivered(
    fake: FakeTwilioServer, client: aiohttp.ClientSession, receiver: Receiver
) -> None:
    status, _, answer = await send(client, fake, "+12025550105", StatusCallback=f"{receiver.base}/s")
    assert status == 201
    await fake.wait_for_callbacks(3)
    assert [w.params["MessageStatus"] for w in receiver.webhooks] == ["sent"]
    _, fetched = await fetch(client, fake, answer["sid"])
    assert fetched["status"] == "delivered"


async def test_reverse_and_duplicate_callbacks(client: aiohttp.ClientSession, receiver: Receiver) -> None:
    fake = await started(reverse_callbacks=True, duplicate_callbacks=True)
    try:
        status, _, answer = await send(client, fake, ORDINARY, StatusCallback=f"{receiver.base}/s")
        assert status == 201
        first = await receiver.next()
        assert first.params["MessageStatus"] == "delivered"
        _, fetched = await fetch(client, fake, answer["sid"])
        assert fetched["status"] == "delivered"
        await fake.wait_for_callbacks(3)
        statuses = [w.params["MessageStatus"] for w in receiver.webhooks]
        assert statuses == ["delivered", "delivered", "sent", "sent"]
        assert all(w.is_signed() for w in receiver.webhooks)
        _, fetched = await fetch(client, fake, answer["sid"])
        assert fetched["status"] == "delivered"
        assert fake.stats["callbacks_sent"] == 4
    finally:
        await fake.stop()


async def test_callback_is_retried_after_server_errors(
    fake: FakeTwilioServer, client: aiohttp.ClientSession, receiver: Receiver
) -> None:
    receiver.fail_first = 2
    status, _, answer = await send(client, fake, "+12025550105", StatusCallback=f"{receiver.base}/s")
    assert status == 201
    webhook = await receiver.next()
    assert webhook.params["MessageSid"] == answer["sid"]
    assert receiver.hits == 3
    await fake.wait_for_callbacks(3)
    assert (fake.stats["callbacks_sent"], fake.stats["callbacks_failed"]) == (1, 0)


async def test_messaging_service_send_is_accepted_then_gets_a_sender(
    fake: FakeTwilioServer, client: aiohttp.ClientSession, receiver: Receiver
) -> None:
    service = "MG" + "1" * 32
    status, _, answer = await send(
        client, fake, ORDINARY, MessagingServiceSid=service, StatusCallback=f"{receiver.base}/s"
    )
    assert status == 201
    assert (answer["status"], answer["from"], answer["num_segments"]) == ("accepted", None, "0")
    assert answer["messaging_service_sid"] == service
    webhook = await receiver.next()
    assert webhook.params["MessagingServiceSid"] == service
    assert webhook.params["From"] == SENDER
    await fake.wait_for_callbacks(3)


async def test_rate_limit_refuses_sends_beyond_the_window(client: aiohttp.ClientSession) -> None:
    fake = await started(max_per_second=2)
    try:
        results = [await send(client, fake, ORDINARY) for _ in range(3)]
        assert [status for status, _, _ in results] == [201, 201, 429]
        _, headers, answer = results[2]
        assert_twilio_error(answer, 429, 20429)
        assert headers["Retry-After"] == "1"
    finally:
        await fake.stop()


async def test_set_status_and_unknown_sid(fake: FakeTwilioServer, client: aiohttp.ClientSession) -> None:
    status, _, answer = await send(client, fake, ORDINARY)
    assert status == 201
    fake.set_status(answer["sid"], "undelivered", 30003)
    await fake.wait_for_callbacks(3)
    _, fetched = await fetch(client, fake, answer["sid"])
    assert (fetched["status"], fetched["error_code"]) == ("undelivered", 30003)

    missing = "SM" + "f" * 32
    fetched_status, fetched = await fetch(client, fake, missing)
    assert fetched_status == 404
    assert_twilio_error(fetched, 404, 20404)


async def test_slow_number_times_the_client_out_but_is_sent(
    fake: FakeTwilioServer, client: aiohttp.ClientSession
) -> None:
    form = {"To": "+12025550107", "From": SENDER, "Body": "slow"}
    with pytest.raises(TimeoutError):
        async with client.post(
            messages_url(fake), data=form, timeout=aiohttp.ClientTimeout(total=0.2)
        ) as response:
            await response.read()
    assert [m.to for m in fake.sends] == ["+12025550107"]


async def test_post_inbound_and_post_status_are_signed(fake: FakeTwilioServer, receiver: Receiver) -> None:
    url = f"{receiver.base}/twilio/inbound?x=1"
    status, body = await fake.post_inbound(url, "+14155550100", "+14155550199", "hi there")
    assert (status, body) == (200, b"<Response/>")
    inbound = await receiver.next()
    assert inbound.is_signed()
    assert SID.fullmatch(inbound.params["MessageSid"])
    assert inbound.params["SmsSid"] == inbound.params["SmsMessageSid"] == inbound.params["MessageSid"]
    assert inbound.params["AccountSid"] == ACCOUNT_SID
    assert (inbound.params["From"], inbound.params["To"]) == ("+14155550100", "+14155550199")
    assert (inbound.params["Body"], inbound.params["NumMedia"], inbound.params["NumSegments"]) == (
        "hi there",
        "0",
        "1",
    )

    await fake.post_inbound(url, "+14155550100", "+14155550199", "forged", auth_token="wrong")
    assert not (await receiver.next()).is_signed()

    params = {"MessageSid": "SM" + "0" * 32, "MessageStatus": "delivered"}
    status, _ = await fake.post_status(f"{receiver.base}/status", params)
    assert status == 200
    posted = await receiver.next()
    assert posted.params == params
    assert posted.is_signed()


async def test_stats_report_duplicates_and_reset_clears_them(
    fake: FakeTwilioServer, client: aiohttp.ClientSession
) -> None:
    for body in ("same", "same", "other"):
        status, _, _ = await send(client, fake, ORDINARY, Body=body)
        assert status == 201
    async with client.get(f"{fake.url}/_stats") as response:
        stats = await response.json()
    assert stats == {
        "requests": 3,
        "accepted": 3,
        "rejected": 0,
        "callbacks_sent": 0,
        "callbacks_failed": 0,
        "duplicates": [f"{ORDINARY}|same"],
    }
    assert fake.stats == stats
    async with client.post(f"{fake.url}/_reset") as response:
        assert response.status == 204
    assert fake.stats["requests"] == 0
    assert fake.sends == []
    async with client.get(f"{fake.url}/") as response:
        assert response.status == 200


def test_signature_matches_twilio_reference() -> None:
    params = {"To": "+14155550100", "Body": "hé & co", "AccountSid": ACCOUNT_SID}
    url = "https://example.com/hook?a=1&b=2"
    assert signature(AUTH_TOKEN, url, params) == VALIDATOR.compute_signature(url, params)


async def test_command_line_prints_listening_line_serves_and_stops_on_sigterm() -> None:
    process = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "tidings.testing.fake_twilio",
        "--port",
        "0",
        "--account-sid",
        ACCOUNT_SID,
        "--auth-token",
        AUTH_TOKEN,
        stdout=asyncio.subprocess.PIPE,
    )
    try:
        assert process.stdout is not None
        line = (await asyncio.wait_for(process.stdout.readline(), 20)).decode()
        assert line.startswith("listening on http://127.0.0.1:")
        url = line.removeprefix("listening on ").strip()
        async with aiohttp.ClientSession(headers=basic(ACCOUNT_SID, AUTH_TOKEN)) as session:
            form = {"To": ORDINARY, "From": SENDER, "Body": "cli"}
            async with session.post(
                f"{url}/2010-04-01/Accounts/{ACCOUNT_SID}/Messages.json", data=form
            ) as response:
                assert response.status == 201
        process.send_signal(signal.SIGTERM)
        assert await asyncio.wait_for(process.wait(), 20) == 0
    finally:
        if process.returncode is None:
            process.kill()
            await process.wait()
