"""The Mandrill adapter against the fake Mandrill server, over real HTTP both ways.

The adapter sends to the fake; the fake posts its signed, batched events to a small receiver on
127.0.0.1 standing where tidings' webhook route would be, and each request it got is handed to the
adapter's ``verify_webhook`` and ``parse_webhook`` exactly as it arrived.
"""

from __future__ import annotations

import asyncio
import base64
import dataclasses
from collections.abc import AsyncIterator, Awaitable, Callable
from datetime import UTC, datetime
from typing import Any
from urllib.parse import parse_qsl, urlencode

import orjson
import pytest
from aiohttp import web

from tests.live import Live, eventually, free_port, live_service
from tidings import ids
from tidings.config import Settings
from tidings.domain.content import Attachment, Channel, EmailContent
from tidings.domain.failures import FailureReason
from tidings.domain.reports import CLICKED, COMPLAINED, OPENED, UNSUBSCRIBED, ProviderReport, Report
from tidings.domain.status import Status
from tidings.errors import (
    ConfigError,
    PermanentProviderError,
    ProviderError,
    TemporaryProviderError,
    WebhookMediaType,
    WebhookRejected,
    WebhookUnauthorized,
    WebhookUnknownEvent,
)
from tidings.providers import KINDS, build_providers
from tidings.providers.base import OutboundMessage, ProviderContext, WebhookRequest
from tidings.providers.http import Answer
from tidings.providers.mandrill import METADATA_KEY, MandrillProvider, MandrillSettings, signature
from tidings.testing.fake_mandrill import (
    CLICKED_URL,
    DEFAULT_API_KEY,
    DEFAULT_WEBHOOK_KEY,
    FakeMandrillConfig,
    FakeMandrillServer,
)

FROM = "Clinic <noreply@clinic.example>"
PATIENT = "patient@example.org"
FORM = "application/x-www-form-urlencoded"

Make = Callable[[dict[str, Any]], Awaitable[MandrillProvider]]
"""Builds and starts an adapter named ``md`` from a settings table."""


@dataclasses.dataclass
class Receiver:
    """Stands where tidings' webhook route would: keeps each post as a :class:`WebhookRequest`."""

    requests: list[WebhookRequest] = dataclasses.field(default_factory=list)
    base: str = ""
    _runner: web.AppRunner | None = None

    async def _handle(self, request: web.Request) -> web.Response:
        body = await request.read()
        self.requests.append(WebhookRequest(f"{self.base}{request.path_qs}", dict(request.headers), body))
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


@pytest.fixture
async def receiver() -> AsyncIterator[Receiver]:
    r = Receiver()
    await r.start()
    yield r
    await r.stop()


@pytest.fixture
async def fake(receiver: Receiver) -> AsyncIterator[FakeMandrillServer]:
    server = FakeMandrillServer(
        FakeMandrillConfig(event_delay_ms=5, batch_ms=5, subaccounts=frozenset({"clinic"}))
    )
    await server.start()
    server.config.webhook_url = f"{receiver.base}/webhooks/mandrill/md/events"
    yield server
    await server.stop()


def table(base_url: str, **extra: Any) -> dict[str, Any]:
    values: dict[str, Any] = {
        "kind": "mandrill",
        "api_key": DEFAULT_API_KEY,
        "webhook_key": DEFAULT_WEBHOOK_KEY,
        "from": FROM,
        "base_url": f"{base_url}/api/1.0",
        "timeout_seconds": 3,
    }
    values.update(extra)
    return values


@pytest.fixture
async def make(receiver: Receiver) -> AsyncIterator[Make]:
    """Build and start a ``md`` adapter from a settings table; all are closed at the end."""
    started: list[MandrillProvider] = []

    async def build(values: dict[str, Any]) -> MandrillProvider:
        context = ProviderContext(base_url=receiver.base)
        provider = MandrillProvider("md", MandrillSettings.model_validate(values), context)
        await provider.start()
        started.append(provider)
        return provider

    yield build
    for provider in started:
        await provider.close()


@pytest.fixture
async def provider(make: Make, fake: FakeMandrillServer) -> MandrillProvider:
    return await make(table(fake.url))


def email(to: str = PATIENT, *, sender: str | None = None, **content: Any) -> OutboundMessage:
    fields: dict[str, Any] = {"subject": "Your appointment", "html": "<p>Tomorrow at 9</p>"}
    fields.update(content)
    return OutboundMessage(id=ids.new_id(), to=to, sender=sender, attempt=1, content=EmailContent(**fields))


async def webhooks(receiver: Receiver, count: int, timeout: float = 5.0) -> list[WebhookRequest]:
    """The posts received, once there are at least ``count`` events in them."""
    deadline = asyncio.get_running_loop().time() + timeout
    while sum(len(events_of(r)) for r in receiver.requests) < count:
        if asyncio.get_running_loop().time() > deadline:
            pytest.fail(f"{count} events not received within {timeout}s: {receiver.requests}")
        await asyncio.sleep(0.01)
    return receiver.requests


def events_of(request: WebhookRequest) -> list[dict[str, Any]]:
    found: list[dict[str, Any]] = orjson.loads(dict(parse_qsl(request.body.decode()))["mandrill_events"])
    return found


async def reports_for(
    provider: MandrillProvider, fake: FakeMandrillServer, receiver: Receiver, count: int
) -> list[ProviderReport]:
    """The reports of every event the fake posted, once ``count`` arrived and no more are coming,
    each post checked, verified and parsed."""
    requests = await webhooks(receiver, count)
    await fake.wait_for_events(5)
    found: list[ProviderReport] = []
    for request in requests:
        provider.check_webhook("events", request)
        provider.verify_webhook("events", request)
        found += (await provider.parse_webhook("events", request)).reports
    return found


# -- configuration -------------------------------------------------------------------------------


def test_mandrill_is_a_kind_of_provider_that_sends_email() -> None:
    assert KINDS["mandrill"] is MandrillProvider
    assert MandrillProvider.channels == frozenset({Channel.EMAIL})
    assert MandrillProvider.webhook_media_types == {"events": frozenset({FORM})}
    # Mandrill posts up to 1000 events at once.
    assert MandrillSettings.model_validate(table("http://127.0.0.1:9")).webhook_max_bytes == 10_485_760


def test_the_webhook_url_to_register_is_the_events_webhook() -> None:
    context = ProviderContext(base_url="https://tidings.example")
    assert (
        context.webhook_url("mandrill", "md", "events")
        == "https://tidings.example/webhooks/mandrill/md/events"
    )


def test_a_webhook_key_is_required_unless_webhooks_are_declared_unauthenticated() -> None:
    values = table("http://127.0.0.1:9")
    del values["webhook_key"]
    with pytest.raises(ConfigError) as refused:
        build_providers(
            Settings.model_validate({"providers": {"md": values}, "default_provider": "md"}),
            ProviderContext(base_url="http://127.0.0.1:8000"),
        )
    assert "webhook_key" in str(refused.value)
    settings = MandrillSettings.model_validate({**values, "webhook_unauthenticated": True})
    assert settings.webhook_key is None


@pytest.mark.parametrize(
    ("name", "value"), [("from", "not an address"), ("tags", ["_internal"]), ("api_key", "")]
)
def test_settings_that_mandrill_would_refuse_are_refused_at_start(name: str, value: object) -> None:
    with pytest.raises(ValueError, match=name):
        MandrillSettings.model_validate({**table("http://127.0.0.1:9"), name: value})


# -- sending -------------------------------------------------------------------------------------


async def test_a_send_carries_the_email_as_mandrills_json(
    provider: MandrillProvider, fake: FakeMandrillServer
) -> None:
    pdf = b"%PDF-1.4 \x00\xff binary"
    message = email(
        subject="Your appointment ✓",
        html="<p>Tomorrow at <b>9</b></p>",
        text="Tomorrow at 9",
        reply_to="desk@clinic.example",
        headers={"X-Campaign": "reminders", "Subject": "not this one"},
        attachments=(Attachment("letter.pdf", "application/pdf", pdf),),
    )
    result = await provider.send(message)

    [request] = fake.requests
    assert request["key"] == DEFAULT_API_KEY
    sent = request["message"]
    assert sent["subject"] == "Your appointment ✓"
    assert sent["html"] == "<p>Tomorrow at <b>9</b></p>"
    assert sent["text"] == "Tomorrow at 9"
    assert (sent["from_email"], sent["from_name"]) == ("noreply@clinic.example", "Clinic")
    assert sent["to"] == [{"email": PATIENT, "type": "to"}]
    assert sent["headers"] == {"X-Campaign": "reminders", "Reply-To": "desk@clinic.example"}
    [attachment] = sent["attachments"]
    assert (attachment["type"], attachment["name"]) == ("application/pdf", "letter.pdf")
    assert base64.b64decode(attachment["content"]) == pdf
    assert sent["metadata"] == {METADATA_KEY: message.id}
    assert "tags" not in sent and "subaccount" not in sent

    [stored] = fake.sends
    assert result.provider_message_ids == (stored.id,)
    assert (result.status, result.provider_status) == (Status.SENT, "sent")


async def test_the_messages_own_sender_tags_and_subaccount_go_with_it(
    make: Make, fake: FakeMandrillServer
) -> None:
    provider = await make(table(fake.url, tags=["reminders", "clinic"], subaccount="clinic"))
    await provider.send(email(sender="noreply@other.example", text="plain only", html=None))
    sent = fake.requests[-1]["message"]
    assert sent["from_email"] == "noreply@other.example" and "from_name" not in sent
    assert sent["text"] == "plain only" and "html" not in sent
    assert sent["tags"] == ["reminders", "clinic"]
    assert sent["subaccount"] == "clinic"
    assert "headers" not in sent and "attachments" not in sent


@pytest.mark.parametrize("to", ["queued@example.org", "scheduled@example.org"])
async def test_queued_and_scheduled_are_sent_in_our_words(
    provider: MandrillProvider, fake: FakeMandrillServer, to: str
) -> None:
    result = await provider.send(email(to))
    assert result.status is Status.SENT
    assert result.provider_status == to.split("@")[0]
    assert result.provider_message_ids == (fake.sends[-1].id,)


@pytest.mark.parametrize(
    ("to", "code", "reason"),
    [
        ("reject@example.org", "hard-bounce", FailureReason.INVALID_NUMBER),
        ("invalid@example.org", "invalid", FailureReason.INVALID_NUMBER),
    ],
)
async def test_a_rejected_or_invalid_recipient_is_a_permanent_refusal(
    provider: MandrillProvider, fake: FakeMandrillServer, to: str, code: str, reason: FailureReason
) -> None:
    with pytest.raises(PermanentProviderError) as refused:
        await provider.send(email(to))
    assert refused.value.code == code
    assert refused.value.raw["results"][0]["_id"] == fake.sends[-1].id
    assert provider.failure_reason(failed(code)) is reason


def failed(code: str) -> Report:
    return Report(status=Status.FAILED, source="test", occurred_at=datetime.now(UTC), error_code=code)


@pytest.mark.parametrize(
    ("settings", "to", "sender", "error", "code", "reason"),
    [
        ({"api_key": "wrong"}, PATIENT, None, TemporaryProviderError, "Invalid_Key", "provider_unavailable"),
        (
            {"subaccount": "nobody"},
            PATIENT,
            None,
            TemporaryProviderError,
            "Unknown_Subaccount",
            "provider_unavailable",
        ),
        ({}, PATIENT, "Someone <no-at-sign>", PermanentProviderError, "ValidationError", "rejected_content"),
        ({}, "unavailable@example.org", None, TemporaryProviderError, "GeneralError", "provider_unavailable"),
        ({}, "ratelimit@example.org", None, TemporaryProviderError, "http_429", "rate_limited"),
    ],
)
async def test_each_mandrill_error_is_temporary_or_permanent_as_it_should(
    make: Make,
    fake: FakeMandrillServer,
    settings: dict[str, Any],
    to: str,
    sender: str | None,
    error: type[ProviderError],
    code: str,
    reason: str,
) -> None:
    provider = await make(table(fake.url, **settings))
    with pytest.raises(ProviderError) as refused:
        await provider.send(email(to, sender=sender))
    assert type(refused.value) is error
    assert refused.value.code == code
    assert refused.value.message
    assert provider.failure_reason(failed(code)) == reason
    if code == "http_429":
        assert refused.value.retry_after == 1.0


async def test_a_general_error_then_success_is_a_retry_then_sent(
    provider: MandrillProvider, fake: FakeMandrillServer
) -> None:
    with pytest.raises(TemporaryProviderError):
        await provider.send(email("retry@example.org"))
    result = await provider.send(email("retry@example.org"))
    assert result.provider_message_ids == (fake.sends[-1].id,)
    assert fake.sends[-1].attempt == 2


async def test_no_answer_in_time_is_a_timeout(make: Make, receiver: Receiver) -> None:
    slow = FakeMandrillServer(FakeMandrillConfig(latency_ms=1000))
    await slow.start()
    try:
        provider = await make(table(slow.url, timeout_seconds=0.2))
        with pytest.raises(TemporaryProviderError) as refused:
            await provider.send(email())
        assert refused.value.code == "timeout"
    finally:
        await slow.stop()


async def test_nobody_listening_is_a_connection_error(make: Make) -> None:
    provider = await make(table(f"http://127.0.0.1:{free_port()}"))
    with pytest.raises(TemporaryProviderError) as refused:
        await provider.send(email())
    assert refused.value.code == "connection_error"


def mandrill_error(name: str) -> dict[str, Any]:
    return {"status": "error", "code": -1, "name": name, "message": f"{name} happened"}


@pytest.mark.parametrize(
    ("status", "body", "error", "code"),
    [
        (500, mandrill_error("PaymentRequired"), TemporaryProviderError, "PaymentRequired"),
        (500, mandrill_error("ServiceUnavailable"), TemporaryProviderError, "ServiceUnavailable"),
        (400, mandrill_error("ValidationError"), PermanentProviderError, "ValidationError"),
        (500, mandrill_error("Something_New"), TemporaryProviderError, "Something_New"),
        (400, mandrill_error("Something_New"), PermanentProviderError, "Something_New"),
        (503, {"body": "<html>down</html>"}, TemporaryProviderError, "http_503"),
    ],
)
def test_errors_the_fake_does_not_make_are_sorted_by_name_then_status(
    status: int, body: dict[str, Any], error: type[ProviderError], code: str
) -> None:
    provider = MandrillProvider(
        "md", MandrillSettings.model_validate(table("http://127.0.0.1:9")), ProviderContext("http://x")
    )
    refused = provider.send_error(Answer(status=status, headers={}, data=body, retry_after=None))
    assert type(refused) is error
    assert refused.code == code
    assert provider.failure_reason(failed("PaymentRequired")) is FailureReason.INSUFFICIENT_FUNDS


# -- webhooks: signatures ------------------------------------------------------------------------


@pytest.fixture
async def posted(provider: MandrillProvider, fake: FakeMandrillServer, receiver: Receiver) -> WebhookRequest:
    """A webhook the fake posted: the ``send`` event of an ordinary message."""
    await provider.send(email())
    [request] = await webhooks(receiver, 1)
    return request


async def test_a_webhook_the_fake_posted_verifies(
    provider: MandrillProvider, posted: WebhookRequest, receiver: Receiver
) -> None:
    assert posted.url == f"{receiver.base}/webhooks/mandrill/md/events"
    provider.check_webhook("events", posted)
    provider.verify_webhook("events", posted)
    expected = signature(DEFAULT_WEBHOOK_KEY, posted.url, parse_qsl(posted.body.decode()))
    assert posted.header("X-Mandrill-Signature") == expected


def _tampered(request: WebhookRequest) -> WebhookRequest:
    events = events_of(request)
    events[0]["event"] = "hard_bounce"
    body = urlencode({"mandrill_events": orjson.dumps(events).decode()}).encode()
    return dataclasses.replace(request, body=body)


def _unsigned(request: WebhookRequest) -> WebhookRequest:
    headers = {k: v for k, v in request.headers.items() if k.lower() != "x-mandrill-signature"}
    return dataclasses.replace(request, headers=headers)


def _elsewhere(request: WebhookRequest) -> WebhookRequest:
    return dataclasses.replace(request, url=request.url.replace("/md/", "/other/"))


@pytest.mark.parametrize(
    "change", [_tampered, _unsigned, _elsewhere], ids=["tampered", "unsigned", "other-url"]
)
async def test_a_webhook_changed_on_the_way_is_refused(
    provider: MandrillProvider, posted: WebhookRequest, change: Callable[[WebhookRequest], WebhookRequest]
) -> None:
    with pytest.raises(WebhookUnauthorized):
        provider.verify_webhook("events", change(posted))


async def test_a_webhook_signed_with_another_key_is_refused(
    provider: MandrillProvider, fake: FakeMandrillServer, posted: WebhookRequest, receiver: Receiver
) -> None:
    [message] = fake.sends
    status, _ = await fake.post_events(posted.url, [fake.event(message, "hard_bounce")], webhook_key="forged")
    assert status == 200  # the receiver takes anything; the adapter does not
    forged = receiver.requests[-1]
    with pytest.raises(WebhookUnauthorized, match="does not match"):
        provider.verify_webhook("events", forged)


@pytest.mark.parametrize("body", [b"", b"mandrill_events=%5B%5D", b"mandrill_events="])
async def test_a_post_without_events_is_taken_unsigned_and_says_nothing(
    provider: MandrillProvider, body: bytes
) -> None:
    request = WebhookRequest("http://127.0.0.1/webhooks/mandrill/md/events", {"Content-Type": FORM}, body)
    provider.verify_webhook("events", request)
    assert (await provider.parse_webhook("events", request)).reports == []


async def test_an_unauthenticated_provider_takes_unsigned_events(
    make: Make, fake: FakeMandrillServer, posted: WebhookRequest
) -> None:
    values = table(fake.url, webhook_unauthenticated=True)
    del values["webhook_key"]
    unsigned_provider = await make(values)
    request = _unsigned(posted)
    unsigned_provider.verify_webhook("events", request)
    assert len((await unsigned_provider.parse_webhook("events", request)).reports) == 1


async def test_only_forms_to_the_events_webhook_are_taken(
    provider: MandrillProvider, posted: WebhookRequest
) -> None:
    as_json = dataclasses.replace(posted, headers={**posted.headers, "Content-Type": "application/json"})
    with pytest.raises(WebhookMediaType):
        provider.check_webhook("events", as_json)
    with pytest.raises(WebhookUnknownEvent):
        provider.check_webhook("status", posted)
    with pytest.raises(WebhookUnknownEvent):
        await provider.parse_webhook("status", posted)


# -- webhooks: events ----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("to", "expected"),
    [
        (PATIENT, [("send", None, "report", None)]),
        ("bounce@example.org", [("hard_bounce", Status.FAILED, "report", "hard_bounce")]),
        ("reject@example.org", [("reject", Status.FAILED, "report", "reject")]),
        ("soft@example.org", [("soft_bounce", None, "report", None), ("send", None, "report", None)]),
        ("defer@example.org", [("deferral", None, "report", None), ("send", None, "report", None)]),
        ("spam@example.org", [("send", None, "report", None), ("spam", None, COMPLAINED, None)]),
        ("unsub@example.org", [("send", None, "report", None), ("unsub", None, UNSUBSCRIBED, None)]),
        (
            "open@example.org",
            [("send", None, "report", None), ("open", None, OPENED, None), ("click", None, CLICKED, None)],
        ),
    ],
)
async def test_each_event_becomes_the_right_report(
    provider: MandrillProvider,
    fake: FakeMandrillServer,
    receiver: Receiver,
    to: str,
    expected: list[tuple[str, Status | None, str, str | None]],
) -> None:
    message = email(to)
    try:
        await provider.send(message)
    except PermanentProviderError:
        assert to.startswith("reject@")
    reports = await reports_for(provider, fake, receiver, len(expected))

    [stored] = fake.sends
    assert [
        (r.report.provider_status, r.report.status, r.event, r.report.error_code) for r in reports
    ] == expected
    assert all(r.message_id == message.id and r.provider_message_id == stored.id for r in reports)
    assert all(r.report.source == "provider:md" for r in reports)
    assert all(r.recipient is None for r in reports)


async def test_a_hard_bounce_says_why_in_text_and_in_shared_words(
    provider: MandrillProvider, fake: FakeMandrillServer, receiver: Receiver
) -> None:
    await provider.send(email("bounce@example.org"))
    [report] = [r.report for r in await reports_for(provider, fake, receiver, 1)]
    assert report.error_message is not None
    assert report.error_message.startswith("bad_mailbox: smtp;550 5.1.1")
    assert report.failure_reason is FailureReason.INVALID_NUMBER
    assert report.detail["bounce_description"] == "bad_mailbox"
    assert report.detail["state"] == "bounced"
    assert "subject" not in report.detail


async def test_a_click_keeps_the_link_and_the_time_it_happened(
    provider: MandrillProvider, fake: FakeMandrillServer, receiver: Receiver
) -> None:
    await provider.send(email("open@example.org"))
    reports = await reports_for(provider, fake, receiver, 3)
    click = reports[-1].report
    assert click.detail["url"] == CLICKED_URL
    assert click.detail["ip"] == "203.0.113.7"
    [event] = [e for e in fake.events if e["event"] == "click"]
    assert click.occurred_at == datetime.fromtimestamp(event["ts"], UTC).replace(tzinfo=None)


async def test_an_event_without_our_id_is_found_by_mandrills(
    provider: MandrillProvider, fake: FakeMandrillServer, receiver: Receiver, posted: WebhookRequest
) -> None:
    [message] = fake.sends
    event = fake.event(message, "hard_bounce")
    event["msg"]["metadata"] = {"user_id": 111}
    other = fake.event(message, "open")
    other["msg"]["metadata"] = {METADATA_KEY: "not an id of ours"}
    await fake.post_events(posted.url, [event, other])
    request = receiver.requests[-1]
    provider.verify_webhook("events", request)
    reports = (await provider.parse_webhook("events", request)).reports
    assert [(r.message_id, r.provider_message_id) for r in reports] == [(None, message.id)] * 2


async def test_events_not_about_a_message_we_sent_are_skipped(
    provider: MandrillProvider, fake: FakeMandrillServer, receiver: Receiver, posted: WebhookRequest
) -> None:
    [message] = fake.sends
    sync = {"type": "blacklist", "action": "add", "reject": {"email": PATIENT, "reason": "hard-bounce"}}
    inbound = {
        "event": "inbound",
        "ts": 1,
        "msg": {"raw_msg": "From: a@b.example\r\n\r\nhi", "email": "in@x"},
    }
    await fake.post_events(posted.url, [sync, inbound, fake.event(message, "send")])
    request = receiver.requests[-1]
    provider.verify_webhook("events", request)
    [report] = (await provider.parse_webhook("events", request)).reports
    assert report.report.provider_status == "send"


async def test_an_event_that_names_no_message_is_skipped_and_the_rest_of_the_batch_kept(
    provider: MandrillProvider,
) -> None:
    events = [
        {"event": "send", "ts": 1, "msg": {"metadata": {}}},
        {"event": "open", "_id": "b" * 32, "ts": 1, "msg": {"_id": "b" * 32}},
    ]
    body = urlencode({"mandrill_events": orjson.dumps(events).decode()}).encode()
    request = WebhookRequest("http://x/webhooks/mandrill/md/events", {"Content-Type": FORM}, body)
    [report] = (await provider.parse_webhook("events", request)).reports
    assert (report.event, report.provider_message_id) == (OPENED, "b" * 32)


async def test_an_event_we_do_not_know_is_recorded_and_changes_nothing(provider: MandrillProvider) -> None:
    events = [{"event": "resend", "_id": "a" * 32, "ts": 1_700_000_000, "msg": {"_id": "a" * 32}}]
    body = urlencode({"mandrill_events": orjson.dumps(events).decode()}).encode()
    request = WebhookRequest("http://x/webhooks/mandrill/md/events", {"Content-Type": FORM}, body)
    [report] = (await provider.parse_webhook("events", request)).reports
    assert (report.report.status, report.report.provider_status, report.event) == (None, "resend", "report")
    assert report.report.occurred_at == datetime(2023, 11, 14, 22, 13, 20)


@pytest.mark.parametrize(
    "body",
    [
        b"other=1",
        b"mandrill_events=not-json",
        b"mandrill_events=%7B%7D",
        b"mandrill_events=%5B1%2C2%5D",
        b"%%%",
    ],
    ids=["no-field", "not-json", "object", "not-objects", "not-a-form"],
)
async def test_a_body_that_is_not_mandrills_is_refused(provider: MandrillProvider, body: bytes) -> None:
    request = WebhookRequest("http://x/webhooks/mandrill/md/events", {"Content-Type": FORM}, body)
    with pytest.raises(WebhookRejected):
        await provider.parse_webhook("events", request)


# -- through the service -------------------------------------------------------------------------


@pytest.fixture
async def live(database_url: str) -> AsyncIterator[tuple[Live, FakeMandrillServer]]:
    """A tidings service with a Mandrill provider ``md``, and the fake posting its events to the
    service's own webhook route."""
    fake = FakeMandrillServer(FakeMandrillConfig(event_delay_ms=5, batch_ms=5))
    await fake.start()
    try:
        providers = {
            "fake": {"kind": "fake", "latency_ms": 0, "receipt_delay_ms": 10},
            "md": table(fake.url),
        }
        async with live_service(database_url, providers=providers, default_provider="fake") as live:
            fake.config.webhook_url = f"{live.url}/webhooks/mandrill/md/events"
            yield live, fake
    finally:
        await fake.stop()


async def send_email(live: Live, to: str) -> dict[str, Any]:
    return await live.send(
        channel="email", provider="md", to=to, sender=FROM, subject="Your appointment", html="<p>Hi</p>"
    )


def history(message: dict[str, Any]) -> list[tuple[str, str | None]]:
    return [
        (e["type"], e["provider_status"])
        for e in message["events"]
        if e["type"] not in ("accepted", "claimed")
    ]


async def test_an_email_goes_out_through_mandrill_and_its_send_event_is_recorded(
    live: tuple[Live, FakeMandrillServer],
) -> None:
    service, fake = live
    sent = await send_email(service, PATIENT)
    message = await service.wait_for(sent["id"], "sent")
    await fake.wait_for_events(5)
    [stored] = fake.sends
    assert stored.metadata == {METADATA_KEY: sent["id"]}
    message = await eventually(
        lambda: service.message(sent["id"]), lambda m: ("report", "send") in history(m), what="send event"
    )
    assert message["status"] == "sent"
    assert message["provider_message_id"] == stored.id
    [entry] = await service.service.store.webhooks.search(provider="md")
    assert entry.verified and entry.processed and entry.message_id == sent["id"]


async def test_a_hard_bounce_fails_the_email(live: tuple[Live, FakeMandrillServer]) -> None:
    service, _ = live
    sent = await send_email(service, "bounce@example.org")
    message = await service.wait_for(sent["id"], "failed")
    assert message["error_code"] == "hard_bounce"
    assert message["failure_reason"] == "invalid_number"
    assert message["provider_status"] == "hard_bounce"


async def test_a_rejected_recipient_fails_at_the_first_attempt(live: tuple[Live, FakeMandrillServer]) -> None:
    service, _ = live
    sent = await send_email(service, "reject@example.org")
    message = await service.wait_for(sent["id"], "failed")
    assert (message["error_code"], message["failure_reason"], message["attempts"]) == (
        "hard-bounce",
        "invalid_number",
        1,
    )


async def test_opens_and_clicks_are_kept_without_changing_the_status(
    live: tuple[Live, FakeMandrillServer],
) -> None:
    service, _ = live
    sent = await send_email(service, "open@example.org")
    message = await eventually(
        lambda: service.message(sent["id"]), lambda m: m["clicked_at"] is not None, what="clicked"
    )
    assert message["status"] == "sent"
    assert message["opened_at"] is not None and message["opened_at"] <= message["clicked_at"]
    assert history(message)[-2:] == [("opened", "open"), ("clicked", "click")]


async def test_a_spam_complaint_suppresses_the_address(live: tuple[Live, FakeMandrillServer]) -> None:
    service, _ = live
    await send_email(service, "spam@example.org")
    await eventually(
        lambda: service.client.get("/v1/opt-outs"),
        lambda r: any(o["address"] == "spam@example.org" for o in r.json()["data"]),
        what="the address suppressed",
    )
    refused = await service.client.post(
        "/v1/messages",
        json={"channel": "email", "provider": "md", "to": "spam@example.org", "subject": "s", "html": "h"},
    )
    assert refused.status_code == 422
    assert refused.json()["error"]["code"] == "recipient_opted_out"


async def test_the_webhook_route_answers_mandrills_check_and_refuses_a_forged_batch(
    live: tuple[Live, FakeMandrillServer],
) -> None:
    service, fake = live
    url = f"{service.url}/webhooks/mandrill/md/events"
    assert (await service.client.head(url)).status_code == 200
    check = await service.client.post(url, data={"mandrill_events": "[]"})
    assert check.status_code == 200

    sent = await send_email(service, "silent@example.org")
    await service.wait_for(sent["id"], "sent")
    [stored] = fake.sends
    status, _ = await fake.post_events(url, [fake.event(stored, "hard_bounce")], webhook_key="forged")
    assert status == 403
    assert (await service.message(sent["id"]))["status"] == "sent"
    refused = [e for e in await service.service.store.webhooks.search(provider="md") if e.verified is False]
    assert len(refused) == 1 and refused[0].response_status == 403
