"""The SES adapter against the fake SES and SNS server, over real HTTP both ways.

Sends go from the adapter to the fake, signed with our SigV4 signer and checked by the fake. The
fake's SNS notifications go to a small receiver on 127.0.0.1 that hands each request, as a
``WebhookRequest``, to the adapter's webhook steps (check, verify, parse), as the service's webhook
pipeline does, and answers what the adapter says.
"""

from __future__ import annotations

import asyncio
import base64
import logging
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from typing import Any

import orjson
import pytest
from aiohttp import web
from cryptography.hazmat.primitives.asymmetric import rsa
from pydantic import ValidationError

from tests.live import Live, eventually, live_service
from tidings.config import Settings
from tidings.domain.content import Attachment, EmailContent
from tidings.domain.failures import FailureReason
from tidings.domain.reports import CLICKED, COMPLAINED, OPENED, UNSUBSCRIBED, ProviderReport
from tidings.domain.status import Status
from tidings.errors import (
    PermanentProviderError,
    TemporaryProviderError,
    TidingsError,
    WebhookMediaType,
    WebhookRejected,
    WebhookUnauthorized,
)
from tidings.ids import new_id
from tidings.providers import build_providers
from tidings.providers.base import OutboundMessage, ProviderContext, WebhookRequest, WebhookResult
from tidings.providers.ses import SesProvider, SesSettings, SubscriptionNotConfirmed, ses_address
from tidings.providers.sns import CertificateUnavailable, sns_url_allowed
from tidings.testing.fake_ses import (
    DEFAULT_ACCESS_KEY_ID,
    DEFAULT_REGION,
    DEFAULT_SECRET_ACCESS_KEY,
    DEFAULT_TOPIC_ARN,
    FakeSesConfig,
    FakeSesRequest,
    FakeSesServer,
)

FROM = "Tidings <noreply@tidings.example>"


# --- fixtures -------------------------------------------------------------------------------------


def ses_table(fake: FakeSesServer, **extra: Any) -> dict[str, Any]:
    table: dict[str, Any] = {
        "kind": "ses",
        "region": DEFAULT_REGION,
        "access_key_id": DEFAULT_ACCESS_KEY_ID,
        "secret_access_key": DEFAULT_SECRET_ACCESS_KEY,
        "from": FROM,
        "configuration_set": "tidings",
        "endpoint": fake.url,
        "sns_topic_arn": DEFAULT_TOPIC_ARN,
        "sns_certificate_origin": fake.url,
        "timeout_seconds": 3,
    }
    table.update(extra)
    return table


async def make_provider(fake: FakeSesServer, **extra: Any) -> SesProvider:
    settings = SesSettings.model_validate(ses_table(fake, **extra))
    provider = SesProvider("ses", settings, ProviderContext(base_url="http://tidings.test"))
    await provider.start()
    return provider


@dataclass
class Handled:
    request: WebhookRequest
    result: WebhookResult | None
    error: TidingsError | None
    verified_early: bool
    """Whether ``verify_webhook`` already had the certificate (and so checked the signature)."""


@dataclass
class Receiver:
    """The webhook URL subscribed to the fake's topic: each post goes through the adapter's
    check, verify and parse, and is answered what the adapter says (its error's status)."""

    provider: SesProvider
    handled: list[Handled] = field(default_factory=list)
    arrived: asyncio.Queue[Handled] = field(default_factory=asyncio.Queue)
    url: str = ""
    _runner: web.AppRunner | None = None

    async def _handle(self, request: web.Request) -> web.Response:
        incoming = WebhookRequest(url=self.url, headers=dict(request.headers), body=await request.read())
        provider = self.provider
        cached = provider.sns.certificates.cached(provider.sns.message(incoming).signing_cert_url)
        result: WebhookResult | None = None
        error: TidingsError | None = None
        try:
            provider.check_webhook("sns", incoming)
            provider.verify_webhook("sns", incoming)
            result = await provider.parse_webhook("sns", incoming)
        except TidingsError as exc:
            error = exc
        handled = Handled(incoming, result, error, cached is not None)
        self.handled.append(handled)
        self.arrived.put_nowait(handled)
        if error is not None:
            return web.Response(status=error.http_status, text=error.message)
        assert result is not None
        return web.Response(status=result.status, body=result.body, content_type=result.content_type)

    async def start(self) -> None:
        app = web.Application()
        app.router.add_post("/webhooks/ses/ses/sns", self._handle)
        self._runner = web.AppRunner(app, access_log=None)
        await self._runner.setup()
        await web.TCPSite(self._runner, "127.0.0.1", 0).start()
        self.url = f"http://127.0.0.1:{self._runner.addresses[0][1]}/webhooks/ses/ses/sns"

    async def stop(self) -> None:
        if self._runner is not None:
            await self._runner.cleanup()

    async def next(self, timeout: float = 5.0) -> Handled:
        return await asyncio.wait_for(self.arrived.get(), timeout)

    async def reports(self, count: int) -> list[ProviderReport]:
        """The reports of the next ``count`` notifications."""
        found: list[ProviderReport] = []
        for _ in range(count):
            handled = await self.next()
            assert handled.error is None, handled.error
            assert handled.result is not None
            found += handled.result.reports
        return found


@pytest.fixture
async def fake(request: pytest.FixtureRequest) -> AsyncIterator[FakeSesServer]:
    config = getattr(request, "param", None) or FakeSesConfig(event_delay_ms=5)
    server = FakeSesServer(config)
    await server.start()
    try:
        yield server
    finally:
        await server.stop()


@pytest.fixture
async def provider(fake: FakeSesServer) -> AsyncIterator[SesProvider]:
    adapter = await make_provider(fake)
    try:
        yield adapter
    finally:
        await adapter.close()


@pytest.fixture
async def receiver(provider: SesProvider) -> AsyncIterator[Receiver]:
    r = Receiver(provider)
    await r.start()
    try:
        yield r
    finally:
        await r.stop()


@pytest.fixture
async def subscribed(fake: FakeSesServer, receiver: Receiver) -> Receiver:
    """The receiver, subscribed: the adapter has confirmed the subscription."""
    status, _ = await fake.subscribe(receiver.url)
    assert status == 200
    confirmation = await receiver.next()
    assert confirmation.error is None and confirmation.result is not None
    assert confirmation.result.reports == [] and confirmation.result.status == 200
    assert len(fake.confirmations) == 1
    return receiver


def email(to: str = "amani@example.com", **content: Any) -> OutboundMessage:
    fields: dict[str, Any] = {
        "subject": "Your receipt",
        "text": "Thanks for your order.",
        "html": '<p>Thanks! <a href="https://shop.example/orders/7">Your order</a></p>',
    }
    fields.update(content)
    return OutboundMessage(id=new_id(), to=to, sender=None, attempt=1, content=EmailContent(**fields))


def sends(fake: FakeSesServer) -> list[FakeSesRequest]:
    return [r for r in fake.requests if r.path == "/v2/email/outbound-emails"]


def sent_body(fake: FakeSesServer) -> dict[str, Any]:
    body: dict[str, Any] = orjson.loads(sends(fake)[-1].body)
    return body


# --- settings -------------------------------------------------------------------------------------


def test_settings_defaults_and_refusals() -> None:
    base = {
        "kind": "ses",
        "region": "eu-west-1",
        "access_key_id": "AKIA",
        "secret_access_key": "s",
        "from": "a@b.example",
    }
    settings = SesSettings.model_validate(base)
    assert settings.base_url == "https://email.eu-west-1.amazonaws.com"
    assert SesSettings.model_validate({**base, "region": "cn-north-1"}).base_url == (
        "https://email.cn-north-1.amazonaws.com.cn"
    )
    assert (
        SesSettings.model_validate({**base, "endpoint": "http://127.0.0.1:9/"}).base_url
        == "http://127.0.0.1:9"
    )
    for wrong in (
        {"region": "Europe"},
        {"endpoint": "ftp://x"},
        {"sns_topic_arn": "topic"},
        {"secret_access_key": ""},
        {"unknown": 1},
    ):
        with pytest.raises(ValidationError):
            SesSettings.model_validate({**base, **wrong})
    assert "hunter2" not in repr(SesSettings.model_validate({**base, "secret_access_key": "hunter2"}))


def test_a_ses_table_builds_an_ses_provider() -> None:
    settings = Settings.model_validate(
        {
            "default_provider": "mail",
            "providers": {
                "mail": {
                    "kind": "ses",
                    "region": "eu-west-1",
                    "access_key_id": "AKIA",
                    "secret_access_key": "s",
                    "from": "a@b.example",
                }
            },
        }
    )
    providers = build_providers(settings, ProviderContext(base_url="http://tidings.test"))
    assert isinstance(providers["mail"], SesProvider)


def test_addresses_go_out_ascii() -> None:
    assert ses_address("a@b.example") == "a@b.example"
    assert ses_address("Tidings <a@b.example>") == "Tidings <a@b.example>"
    assert ses_address("Zoë Ngugi <zoe@b.example>") == "=?utf-8?q?Zo=C3=AB_Ngugi?= <zoe@b.example>"
    assert ses_address("amani@bücher.example") == "amani@xn--bcher-kva.example"


# --- sending --------------------------------------------------------------------------------------


async def test_a_simple_email_is_signed_sent_and_tagged(fake: FakeSesServer, provider: SesProvider) -> None:
    message = email(reply_to="help@tidings.example", headers={"X-Campaign": "spring", "List-Id": "<news>"})
    result = await provider.send(message)

    [stored] = fake.emails
    assert result.provider_message_ids == (stored.message_id,)
    assert (stored.from_address, stored.to, stored.reply_to) == (
        FROM,
        ["amani@example.com"],
        ["help@tidings.example"],
    )
    assert (stored.subject, stored.text) == ("Your receipt", "Thanks for your order.")
    assert stored.html is not None and "orders/7" in stored.html
    assert stored.headers == [
        {"Name": "X-Campaign", "Value": "spring"},
        {"Name": "List-Id", "Value": "<news>"},
    ]
    assert stored.tags == {"tidings_id": message.id}
    assert stored.configuration_set == "tidings"
    body = sent_body(fake)
    simple = body["Content"]["Simple"]
    assert simple["Subject"] == {"Data": "Your receipt", "Charset": "UTF-8"}
    assert simple["Body"]["Text"]["Charset"] == simple["Body"]["Html"]["Charset"] == "UTF-8"
    headers = sends(fake)[-1].headers
    assert headers["Content-Type"] == "application/json"
    assert "SignedHeaders=content-type;host;x-amz-date," in headers["Authorization"]
    assert "/us-east-1/ses/aws4_request" in headers["Authorization"]


async def test_a_non_ascii_subject_and_sender_go_simple(fake: FakeSesServer, provider: SesProvider) -> None:
    message = OutboundMessage(
        id=new_id(),
        to="amani@example.com",
        sender="Zoë <zoe@tidings.example>",
        attempt=1,
        content=EmailContent(subject="Habari za asubuhi — ☀", html="<p>Karibu</p>"),
    )
    await provider.send(message)
    [stored] = fake.emails
    assert stored.subject == "Habari za asubuhi — ☀"
    assert stored.text is None and stored.html == "<p>Karibu</p>"
    assert sent_body(fake)["FromEmailAddress"] == "=?utf-8?q?Zo=C3=AB?= <zoe@tidings.example>"


async def test_attachments_go_as_raw_mime(fake: FakeSesServer, provider: SesProvider) -> None:
    message = email(
        subject="Ripoti yako — ✓",
        reply_to="help@tidings.example",
        attachments=(
            Attachment("ripoti.pdf", "application/pdf", b"%PDF-1.4 fake"),
            Attachment("data.csv", "text/csv", b"jina,kiasi\nAmani,3\n"),
        ),
    )
    result = await provider.send(message)
    [stored] = fake.emails
    assert result.provider_message_id == stored.message_id
    body = sent_body(fake)
    assert set(body["Content"]) == {"Raw"}
    assert "ReplyToAddresses" not in body
    assert body["EmailTags"] == [{"Name": "tidings_id", "Value": message.id}]
    assert stored.raw is not None
    assert stored.raw == base64.b64decode(body["Content"]["Raw"]["Data"])
    assert stored.raw.isascii()  # the subject RFC 2047-encoded, the parts in base64 or quoted-printable
    mime = stored.mime
    assert mime is not None
    assert mime["Subject"] == "Ripoti yako — ✓"
    assert mime["From"] == FROM and mime["To"] == "amani@example.com"
    assert mime["Reply-To"] == "help@tidings.example"
    assert message.id in mime["Message-ID"]
    assert stored.text is not None and stored.text.strip() == "Thanks for your order."
    assert stored.html is not None and "orders/7" in stored.html
    attachments = {part.get_filename(): part for part in mime.iter_attachments()}
    assert set(attachments) == {"ripoti.pdf", "data.csv"}
    assert attachments["ripoti.pdf"].get_content_type() == "application/pdf"
    assert attachments["ripoti.pdf"].get_content() == b"%PDF-1.4 fake"
    assert attachments["data.csv"].get_content() == "jina,kiasi\nAmani,3\n"


async def test_headers_ses_would_not_take_simple_go_as_raw(
    fake: FakeSesServer, provider: SesProvider
) -> None:
    await provider.send(email(headers={"X-Note": "café"}))
    body = sent_body(fake)
    assert set(body["Content"]) == {"Raw"}
    mime = fake.emails[-1].mime
    assert mime is not None and mime["X-Note"] == "café"
    too_many = {f"X-H{i}": "v" for i in range(16)}
    await provider.send(email(headers=too_many))
    assert set(sent_body(fake)["Content"]) == {"Raw"}


@pytest.mark.parametrize(
    "fake", [FakeSesConfig(event_delay_ms=5, session_token="temporary-session-token")], indirect=True
)
async def test_temporary_credentials_send_their_session_token(fake: FakeSesServer) -> None:
    adapter = await make_provider(fake, session_token="temporary-session-token")
    without = await make_provider(fake)
    try:
        await adapter.send(email())
        assert len(fake.emails) == 1
        assert sends(fake)[-1].headers["X-Amz-Security-Token"] == "temporary-session-token"
        with pytest.raises(TemporaryProviderError) as refused:
            await without.send(email())
        assert refused.value.code == "UnrecognizedClientException"
    finally:
        await adapter.close()
        await without.close()


async def test_refused_credentials_are_temporary_and_logged(
    fake: FakeSesServer, caplog: pytest.LogCaptureFixture
) -> None:
    adapter = await make_provider(fake, secret_access_key="not-the-secret")
    try:
        with (
            caplog.at_level(logging.ERROR, logger="tidings.providers.ses"),
            pytest.raises(TemporaryProviderError) as refused,
        ):
            await adapter.send(email())
    finally:
        await adapter.close()
    assert refused.value.code == "InvalidSignatureException"
    assert "signature we calculated does not match" in refused.value.message
    assert "not-the-secret" not in caplog.text
    assert any("providers.ses" in r.getMessage() for r in caplog.records)
    assert adapter.failure_reasons[refused.value.code] is FailureReason.PROVIDER_UNAVAILABLE


@pytest.mark.parametrize(
    ("local", "error", "code", "reason"),
    [
        ("reject", PermanentProviderError, "MessageRejected", FailureReason.REJECTED_CONTENT),
        ("throttle", TemporaryProviderError, "TooManyRequestsException", FailureReason.RATE_LIMITED),
        ("limit", TemporaryProviderError, "LimitExceededException", FailureReason.RATE_LIMITED),
        ("paused", TemporaryProviderError, "SendingPausedException", FailureReason.BLOCKED),
        ("suspended", PermanentProviderError, "AccountSuspendedException", FailureReason.BLOCKED),
        ("mailfrom", PermanentProviderError, "MailFromDomainNotVerifiedException", FailureReason.BLOCKED),
    ],
)
async def test_ses_refusals_are_sorted_into_temporary_and_permanent(
    provider: SesProvider,
    local: str,
    error: type[Exception],
    code: str,
    reason: FailureReason,
) -> None:
    with pytest.raises(error) as refused:
        await provider.send(email(to=f"{local}@example.com"))
    assert isinstance(refused.value, TemporaryProviderError | PermanentProviderError)
    assert refused.value.code == code
    assert refused.value.message
    assert provider.failure_reasons[code] is reason


@pytest.mark.parametrize("fake", [FakeSesConfig(event_delay_ms=5, error_type_in_body=True)], indirect=True)
async def test_the_error_code_is_read_from_the_body_too(provider: SesProvider) -> None:
    with pytest.raises(PermanentProviderError) as refused:
        await provider.send(email(to="reject@example.com"))
    assert refused.value.code == "MessageRejected"


async def test_a_server_error_is_temporary_and_the_retry_goes_through(
    fake: FakeSesServer, provider: SesProvider
) -> None:
    message = email(to="tempfail-once@example.com")
    with pytest.raises(TemporaryProviderError) as refused:
        await provider.send(message)
    assert refused.value.code == "InternalFailure"
    assert provider.failure_reasons["InternalFailure"] is FailureReason.PROVIDER_UNAVAILABLE
    result = await provider.send(message)
    assert result.provider_message_id == fake.emails[0].message_id
    assert fake.emails[0].attempt == 2


async def test_an_unreachable_endpoint_is_temporary(fake: FakeSesServer) -> None:
    adapter = await make_provider(fake, endpoint="http://127.0.0.1:1")
    try:
        with pytest.raises(TemporaryProviderError) as refused:
            await adapter.send(email())
    finally:
        await adapter.close()
    assert refused.value.code == "connection_error"


# --- SNS: subscription and events -----------------------------------------------------------------


async def test_the_subscription_is_confirmed_through_the_subscribe_url(
    fake: FakeSesServer, subscribed: Receiver
) -> None:
    [confirmation] = subscribed.handled
    assert confirmation.request.header("x-amz-sns-message-type") == "SubscriptionConfirmation"
    assert confirmation.request.media_type == "text/plain"
    assert fake.confirmations[0].startswith(
        f"{fake.url}/?Action=ConfirmSubscription&TopicArn={DEFAULT_TOPIC_ARN}"
    )
    # The certificate was fetched to check it; the next message is checked in verify_webhook.
    assert not confirmation.verified_early


@dataclass(frozen=True)
class Expected:
    event: str
    status: Status | None
    provider_status: str | None
    error_code: str | None = None


DELIVERED = Expected("report", Status.DELIVERED, "Delivery")


@pytest.mark.parametrize(
    ("local", "expected"),
    [
        ("amani", [DELIVERED]),
        (
            "bounce",
            [Expected("report", Status.FAILED, "Bounce/Permanent/General", "bounce_permanent_general")],
        ),
        (
            "suppressed",
            [
                Expected(
                    "report",
                    Status.FAILED,
                    "Bounce/Permanent/OnAccountSuppressionList",
                    "bounce_permanent_on_account_suppression_list",
                )
            ],
        ),
        ("softbounce", [Expected("report", None, "Bounce/Transient/MailboxFull")]),
        ("complaint", [DELIVERED, Expected(COMPLAINED, None, "Complaint/abuse")]),
        ("delay", [Expected("report", None, "DeliveryDelay/TransientCommunicationFailure"), DELIVERED]),
        ("engaged", [DELIVERED, Expected(OPENED, None, "Open"), Expected(CLICKED, None, "Click")]),
        ("virus", [Expected("report", Status.FAILED, "Reject", "reject")]),
    ],
)
async def test_each_ses_event_becomes_its_report(
    fake: FakeSesServer,
    provider: SesProvider,
    subscribed: Receiver,
    local: str,
    expected: list[Expected],
) -> None:
    message = email(to=f"{local}@example.com")
    result = await provider.send(message)
    reports = await subscribed.reports(len(expected))
    assert [
        Expected(r.event, r.report.status, r.report.provider_status, r.report.error_code) for r in reports
    ] == (expected)
    for item in reports:
        assert item.message_id == message.id
        assert item.provider_message_id == result.provider_message_id
        assert item.report.source == "provider:ses"
        assert item.report.detail["mail"]["messageId"] == result.provider_message_id
        failed = item.report.status is Status.FAILED
        assert (item.report.error_message is not None) is failed
    bounces = [r for r in reports if r.report.error_code == "bounce_permanent_general"]
    assert all(r.report.error_message == "smtp; 550 5.1.1 user unknown" for r in bounces)
    assert all(provider.explain(r.report).failure_reason is FailureReason.INVALID_NUMBER for r in bounces)
    clicks = [r for r in reports if r.event == CLICKED]
    assert all(r.report.detail["click"]["link"] == "https://shop.example/orders/7" for r in clicks)
    assert all(
        h.verified_early for h in subscribed.handled[1:]
    )  # the certificate was at hand: verify_webhook checked


@pytest.mark.parametrize(
    "fake", [FakeSesConfig(event_delay_ms=5, events="notifications", signature_version="1")], indirect=True
)
async def test_feedback_notifications_are_found_by_the_ses_id(
    fake: FakeSesServer, provider: SesProvider, subscribed: Receiver
) -> None:
    result = await provider.send(email(to="bounce@example.com"))
    [report] = await subscribed.reports(1)
    assert report.message_id is None  # feedback notifications carry no tags
    assert report.provider_message_id == result.provider_message_id
    assert report.report.status is Status.FAILED
    assert report.report.detail["notificationType"] == "Bounce"


async def test_set_up_messages_and_unknown_events_record_nothing(
    fake: FakeSesServer, provider: SesProvider, subscribed: Receiver
) -> None:
    await provider.send(email(to="silent@example.com"))
    [stored] = fake.emails
    await fake.publish("Successfully validated SNS topic for Amazon SES event publishing.")
    await fake.publish({"notificationType": "AMAZON_SES_SETUP_NOTIFICATION"})
    await fake.publish(fake.event(stored, "Send") | {"eventType": "Something New"})
    for _ in range(3):
        handled = await subscribed.next()
        assert handled.error is None and handled.result is not None
        assert handled.result.reports == [] and handled.result.status == 200


async def test_send_and_subscription_events(
    fake: FakeSesServer, provider: SesProvider, subscribed: Receiver
) -> None:
    message = email(to="silent@example.com")
    await provider.send(message)
    [stored] = fake.emails
    unsubscribed = fake.event(stored, "Send") | {
        "eventType": "Subscription",
        "subscription": {
            "contactList": "news",
            "timestamp": "2024-05-01T10:00:00.000Z",
            "source": "UnsubscribeHeader",
            "newTopicPreferences": {"unsubscribeAll": True, "topicSubscriptionStatus": []},
        },
    }
    await fake.publish(fake.event(stored, "Send"))
    await fake.publish(unsubscribed)
    send, unsubscribe = await subscribed.reports(2)
    assert (send.event, send.report.status, send.report.provider_status) == ("report", None, "Send")
    assert (unsubscribe.event, unsubscribe.report.status) == (UNSUBSCRIBED, None)
    assert unsubscribe.message_id == message.id
    assert unsubscribe.report.occurred_at.isoformat() == "2024-05-01T10:00:00"


async def test_an_unsubscribe_confirmation_is_answered_and_records_nothing(
    fake: FakeSesServer, subscribed: Receiver
) -> None:
    status, _ = await fake.unsubscribe()
    assert status == 200
    handled = await subscribed.next()
    assert handled.error is None and handled.result is not None and handled.result.reports == []


# --- SNS: verification ----------------------------------------------------------------------------


def request_of(fake: FakeSesServer, message: dict[str, Any], **headers: str) -> WebhookRequest:
    return WebhookRequest(
        url="http://tidings.test/webhooks/ses/ses/sns",
        headers={**fake.sns_headers(message), **headers},
        body=fake.body(message),
    )


async def accepted(provider: SesProvider, request: WebhookRequest) -> WebhookResult:
    provider.check_webhook("sns", request)
    provider.verify_webhook("sns", request)
    return await provider.parse_webhook("sns", request)


async def refused(provider: SesProvider, request: WebhookRequest) -> WebhookRejected:
    """What the adapter refuses ``request`` with, whether in verify_webhook or parse_webhook."""
    with pytest.raises(WebhookRejected) as caught:
        await accepted(provider, request)
    return caught.value


def delivery_event(fake: FakeSesServer, message_id: str = "0100018f00000000-aaaa-000000") -> dict[str, Any]:
    return {
        "eventType": "Delivery",
        "mail": {"messageId": message_id, "tags": {}},
        "delivery": {"timestamp": "2024-05-01T10:00:00.000Z"},
    }


async def test_a_valid_notification_is_taken_whether_the_certificate_is_at_hand_or_not(
    fake: FakeSesServer, provider: SesProvider
) -> None:
    message = fake.notification(delivery_event(fake))
    result = await accepted(provider, request_of(fake, message))  # fetched in parse_webhook
    [report] = result.reports
    assert report.provider_message_id == "0100018f00000000-aaaa-000000" and report.message_id is None
    assert provider.sns.certificates.cached(fake.certificate_url) is not None
    assert (await accepted(provider, request_of(fake, message))).reports  # checked in verify_webhook
    with_subject = fake.notification(delivery_event(fake), subject="Amazon SES Email Event Notification")
    assert (await accepted(provider, request_of(fake, with_subject))).reports
    as_json = request_of(fake, message, **{"Content-Type": "application/json"})
    assert (await accepted(provider, as_json)).reports


@pytest.mark.parametrize("warm", [False, True], ids=["certificate-not-fetched", "certificate-at-hand"])
async def test_a_forged_or_tampered_notification_is_refused(
    fake: FakeSesServer, provider: SesProvider, warm: bool
) -> None:
    if warm:
        await accepted(provider, request_of(fake, fake.notification(delivery_event(fake))))
    genuine = fake.notification(delivery_event(fake))
    tampered = {
        **genuine,
        "Message": orjson.dumps(delivery_event(fake, "0100018f00000000-bbbb-000000")).decode(),
    }
    forged = {**genuine, "Signature": base64.b64encode(b"\x01" * 256).decode()}
    garbled = {**genuine, "Signature": "not base64!"}
    other_subject = {**fake.notification(delivery_event(fake), subject="a"), "Subject": "b"}
    downgraded = {**genuine, "SignatureVersion": "1"}  # a SHA-256 signature checked as SHA-1
    for message in (tampered, forged, garbled, other_subject, downgraded):
        error = await refused(provider, request_of(fake, message))
        assert isinstance(error, WebhookUnauthorized), error
        assert error.http_status == 403


async def test_a_message_signed_by_another_key_is_refused(provider: SesProvider, fake: FakeSesServer) -> None:
    impostor = FakeSesServer(
        FakeSesConfig(), key=rsa.generate_private_key(public_exponent=65537, key_size=2048)
    )
    await impostor.start()
    try:
        message = impostor.notification(delivery_event(fake))
        # Its own certificate is on another origin: refused before anything is fetched.
        assert isinstance(await refused(provider, request_of(fake, message)), WebhookUnauthorized)
        # Pointed at the real certificate URL, its signature does not hold.
        message = {**message, "SigningCertURL": fake.certificate_url}
        assert isinstance(await refused(provider, request_of(fake, message)), WebhookUnauthorized)
    finally:
        await impostor.stop()


@pytest.mark.parametrize(
    "change",
    [
        {
            "SigningCertURL": "https://sns.us-east-1.amazonaws.com.evil.example/SimpleNotificationService-x.pem"
        },
        {"SigningCertURL": "https://evil.example/SimpleNotificationService-x.pem"},
        {"TopicArn": "arn:aws:sns:us-east-1:210987654321:someone-elses-topic"},
        {"SignatureVersion": "3"},
    ],
    ids=["cert-on-lookalike-host", "cert-on-other-host", "other-topic", "unknown-signature-version"],
)
async def test_certificates_elsewhere_other_topics_and_unknown_versions_are_refused_unfetched(
    fake: FakeSesServer, provider: SesProvider, change: dict[str, str]
) -> None:
    message = {**fake.notification(delivery_event(fake)), **change}
    request = request_of(fake, message)
    with pytest.raises(WebhookUnauthorized):
        provider.verify_webhook("sns", request)
    assert provider.sns.certificates.cached(message["SigningCertURL"]) is None
    assert fake.requests == []


async def test_a_confirmation_with_a_subscribe_url_elsewhere_is_refused(
    fake: FakeSesServer, provider: SesProvider, receiver: Receiver
) -> None:
    await fake.subscribe(receiver.url)
    confirmation = (await receiver.next()).request
    message = orjson.loads(confirmation.body)
    moved = fake.sign({**message, "SubscribeURL": "https://evil.example/?Action=ConfirmSubscription&Token=x"})
    with pytest.raises(WebhookUnauthorized):
        provider.verify_webhook("sns", request_of(fake, moved))
    wrong_token = fake.sign({**message, "SubscribeURL": message["SubscribeURL"] + "x", "Token": "x"})
    with pytest.raises(SubscriptionNotConfirmed) as unconfirmed:
        await accepted(provider, request_of(fake, wrong_token))
    assert unconfirmed.value.http_status == 503  # SNS sends the confirmation again


async def test_bodies_that_are_not_sns_messages_are_rejected(
    fake: FakeSesServer, provider: SesProvider
) -> None:
    genuine = fake.notification(delivery_event(fake))
    for body in (b"not json", b"[]", b'{"Type": "Notification"}', b'{"Type": "Other"}'):
        request = WebhookRequest(url="http://t/", headers={"Content-Type": "text/plain"}, body=body)
        error = await refused(provider, request)
        assert type(error) is WebhookRejected, error
    mismatched = request_of(fake, genuine, **{"x-amz-sns-message-type": "SubscriptionConfirmation"})
    assert type(await refused(provider, mismatched)) is WebhookRejected
    html = request_of(fake, genuine, **{"Content-Type": "text/html"})
    assert isinstance(await refused(provider, html), WebhookMediaType)


@pytest.mark.parametrize("fake", [FakeSesConfig(certificate_expired=True)], indirect=True)
async def test_an_expired_certificate_is_refused(fake: FakeSesServer, provider: SesProvider) -> None:
    error = await refused(provider, request_of(fake, fake.notification(delivery_event(fake))))
    assert isinstance(error, WebhookUnauthorized)
    assert "not valid now" in error.message


async def test_a_certificate_that_cannot_be_fetched_is_a_503_or_a_refusal(
    fake: FakeSesServer, provider: SesProvider
) -> None:
    missing = {
        **fake.notification(delivery_event(fake)),
        "SigningCertURL": f"{fake.url}/SimpleNotificationService-missing.pem",
    }
    assert isinstance(await refused(provider, request_of(fake, missing)), WebhookUnauthorized)  # a 404

    message = fake.notification(delivery_event(fake))
    await fake.stop()
    with pytest.raises(CertificateUnavailable) as unavailable:
        await accepted(provider, request_of(fake, message))
    assert unavailable.value.http_status == 503  # SNS retries server errors only


def test_only_snss_own_host_serves_certificates() -> None:
    pem = "/SimpleNotificationService-0123.pem"
    assert sns_url_allowed(f"https://sns.us-east-1.amazonaws.com{pem}", "us-east-1")
    assert sns_url_allowed(f"https://sns.us-east-1.amazonaws.com:443{pem}", "us-east-1")
    assert sns_url_allowed(f"https://sns.cn-north-1.amazonaws.com.cn{pem}", "cn-north-1")
    assert sns_url_allowed(f"https://sns.cn-north-1.amazonaws.com{pem}", "cn-north-1")
    for url in (
        f"http://sns.us-east-1.amazonaws.com{pem}",
        f"https://sns.us-east-1.amazonaws.com:8443{pem}",
        f"https://sns.eu-west-1.amazonaws.com{pem}",
        f"https://sns.us-east-1.amazonaws.com.cn{pem}",
        f"https://user@sns.us-east-1.amazonaws.com{pem}",
        f"https://sns.us-east-1.amazonaws.com.evil.example{pem}",
        f"https://evil.example/sns.us-east-1.amazonaws.com{pem}",
        "https://sns.us-east-1.amazonaws.com:bad/x.pem",
        "not a url",
    ):
        assert not sns_url_allowed(url, "us-east-1"), url
    origin = "http://127.0.0.1:8080"
    assert sns_url_allowed(f"http://127.0.0.1:8080{pem}", "us-east-1", origin)
    assert not sns_url_allowed(f"http://127.0.0.1:8081{pem}", "us-east-1", origin)
    assert not sns_url_allowed(f"https://sns.us-east-1.amazonaws.com{pem}", "us-east-1", origin)


async def test_without_a_topic_any_topic_of_the_region_is_taken(fake: FakeSesServer) -> None:
    adapter = await make_provider(fake, sns_topic_arn=None)
    try:
        message = fake.notification(delivery_event(fake))
        assert (await accepted(adapter, request_of(fake, message))).reports
        elsewhere = fake.sign({**message, "TopicArn": "arn:aws:sns:eu-west-1:123456789012:t"})
        with pytest.raises(WebhookUnauthorized):
            adapter.verify_webhook("sns", request_of(fake, elsewhere))
    finally:
        await adapter.close()


# --- through the service --------------------------------------------------------------------------


@pytest.fixture
async def live(database_url: str) -> AsyncIterator[tuple[Live, FakeSesServer]]:
    """A tidings service with an SES provider ``mail``, its webhook URL subscribed to the fake's
    topic (the service confirmed the subscription)."""
    fake = FakeSesServer(FakeSesConfig(event_delay_ms=5))
    await fake.start()
    try:
        providers = {
            "fake": {"kind": "fake", "latency_ms": 0, "receipt_delay_ms": 10},
            "mail": ses_table(fake),
        }
        async with live_service(database_url, providers=providers, default_provider="fake") as live:
            status, _ = await fake.subscribe(f"{live.url}/webhooks/ses/mail/sns")
            assert status == 200
            assert len(fake.confirmations) == 1
            yield live, fake
    finally:
        await fake.stop()


async def send_email(live: Live, to: str) -> dict[str, Any]:
    return await live.send(
        channel="email",
        provider="mail",
        to=to,
        sender=FROM,
        subject="Your order",
        html='<p>Thanks! <a href="https://shop.example/orders/7">Your order</a></p>',
    )


def history(message: dict[str, Any]) -> list[tuple[str, str | None]]:
    return [
        (e["type"], e["provider_status"])
        for e in message["events"]
        if e["type"] not in ("accepted", "claimed")
    ]


async def test_an_email_goes_out_through_ses_and_is_delivered(live: tuple[Live, FakeSesServer]) -> None:
    service, fake = live
    sent = await send_email(service, "amani@example.com")
    message = await service.wait_for(sent["id"], "delivered")
    [stored] = fake.emails
    assert stored.tags == {"tidings_id": sent["id"]}
    assert message["provider_message_id"] == stored.message_id
    assert message["provider_status"] == "Delivery"
    entries = await service.service.store.webhooks.search(provider="mail")
    assert len(entries) == 2  # the subscription confirmation and the Delivery
    assert all(e.verified and e.processed for e in entries)
    assert [e.message_id for e in entries if e.reports] == [sent["id"]]


async def test_a_permanent_bounce_fails_the_email(live: tuple[Live, FakeSesServer]) -> None:
    service, _ = live
    sent = await send_email(service, "bounce@example.com")
    message = await service.wait_for(sent["id"], "failed")
    assert message["error_code"] == "bounce_permanent_general"
    assert message["failure_reason"] == "invalid_number"
    assert message["error_message"] == "smtp; 550 5.1.1 user unknown"


async def test_a_message_ses_rejects_fails_at_the_first_attempt(live: tuple[Live, FakeSesServer]) -> None:
    service, _ = live
    sent = await send_email(service, "reject@example.com")
    message = await service.wait_for(sent["id"], "failed")
    assert (message["error_code"], message["failure_reason"], message["attempts"]) == (
        "MessageRejected",
        "rejected_content",
        1,
    )


async def test_opens_and_clicks_are_kept_without_changing_the_status(
    live: tuple[Live, FakeSesServer],
) -> None:
    service, _ = live
    sent = await send_email(service, "engaged@example.com")
    message = await eventually(
        lambda: service.message(sent["id"]), lambda m: m["clicked_at"] is not None, what="clicked"
    )
    assert message["status"] == "delivered"
    assert message["opened_at"] is not None and message["opened_at"] <= message["clicked_at"]
    assert history(message)[-2:] == [("opened", "Open"), ("clicked", "Click")]


async def test_a_complaint_suppresses_the_address(live: tuple[Live, FakeSesServer]) -> None:
    service, _ = live
    await send_email(service, "complaint@example.com")
    await eventually(
        lambda: service.client.get("/v1/opt-outs"),
        lambda r: any(o["address"] == "complaint@example.com" for o in r.json()["data"]),
        what="the address suppressed",
    )
    refused = await service.client.post(
        "/v1/messages",
        json={
            "channel": "email",
            "provider": "mail",
            "to": "complaint@example.com",
            "subject": "s",
            "html": "h",
        },
    )
    assert refused.status_code == 422
    assert refused.json()["error"]["code"] == "recipient_opted_out"


async def test_the_webhook_route_refuses_a_forged_notification(live: tuple[Live, FakeSesServer]) -> None:
    service, fake = live
    sent = await send_email(service, "silent@example.com")
    await service.wait_for(sent["id"], "sent")
    [stored] = fake.emails
    url = f"{service.url}/webhooks/ses/mail/sns"
    bounce = fake.notification(fake.event(stored, "Bounce:Permanent:General"))
    forged = {**bounce, "Signature": base64.b64encode(b"\x02" * 256).decode()}
    status, _ = await fake.post(url, forged)
    assert status == 403
    assert (await service.message(sent["id"]))["status"] == "sent"
    refused = [e for e in await service.service.store.webhooks.search(provider="mail") if e.verified is False]
    assert len(refused) == 1 and refused[0].response_status == 403
    status, _ = await fake.post(url, bounce)
    assert status == 200
    assert (await service.wait_for(sent["id"], "failed"))["error_code"] == "bounce_permanent_general"
