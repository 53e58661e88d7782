"""The fake SES and SNS server, exercised over real sockets with a plain HTTP client: requests are
signed with botocore's own SigV4 signer, and SNS signatures checked here with ``cryptography``
alone, so neither side leans on the adapter's code."""

from __future__ import annotations

import asyncio
import base64
import re
import signal
import sys
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from email.message import EmailMessage
from typing import Any
from unittest import mock

import aiohttp
import orjson
import pytest
from aiohttp import web
from botocore.auth import SigV4Auth  # type: ignore[import-untyped]
from botocore.awsrequest import AWSRequest  # type: ignore[import-untyped]
from botocore.credentials import Credentials  # type: ignore[import-untyped]
from cryptography import x509
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import padding, rsa

from tidings.testing.fake_ses import (
    DEFAULT_ACCESS_KEY_ID,
    DEFAULT_REGION,
    DEFAULT_SECRET_ACCESS_KEY,
    DEFAULT_TOPIC_ARN,
    FakeSesConfig,
    FakeSesServer,
)

SENDER = "Tidings <noreply@tidings.example>"
MESSAGE_ID = re.compile(r"[0-9a-f]{16}-[0-9a-f-]{36}-000000")


# --- helpers --------------------------------------------------------------------------------------


@dataclass
class Posted:
    url: str
    headers: dict[str, str]
    body: bytes

    @property
    def message(self) -> dict[str, Any]:
        data: dict[str, Any] = orjson.loads(self.body)
        return data

    @property
    def event(self) -> dict[str, Any]:
        data: dict[str, Any] = orjson.loads(self.message["Message"])
        return data


@dataclass
class Receiver:
    """A small web app that collects what SNS posts; it can answer 500 to the first few."""

    fail_first: int = 0
    hits: int = 0
    posts: list[Posted] = field(default_factory=list)
    arrived: asyncio.Queue[Posted] = field(default_factory=asyncio.Queue)
    url: str = ""
    _runner: web.AppRunner | None = None

    async def _handle(self, request: web.Request) -> web.Response:
        self.hits += 1
        body = await request.read()
        if self.hits <= self.fail_first:
            return web.Response(status=500)
        posted = Posted(f"{self.url}{request.path_qs}", dict(request.headers), body)
        self.posts.append(posted)
        self.arrived.put_nowait(posted)
        return web.Response(text="OK")

    async def start(self) -> None:
        app = web.Application()
        app.router.add_post("/{tail:.*}", self._handle)
        self._runner = web.AppRunner(app, access_log=None)
        await self._runner.setup()
        await web.TCPSite(self._runner, "127.0.0.1", 0).start()
        self.url = f"http://127.0.0.1:{self._runner.addresses[0][1]}/sns"

    async def stop(self) -> None:
        if self._runner is not None:
            await self._runner.cleanup()

    async def next(self, timeout: float = 5.0) -> Posted:
        return await asyncio.wait_for(self.arrived.get(), timeout)


@pytest.fixture
async def receiver() -> AsyncIterator[Receiver]:
    r = Receiver()
    await r.start()
    yield r
    await r.stop()


async def started(**overrides: Any) -> FakeSesServer:
    config = FakeSesConfig(event_delay_ms=5.0, seed=7)
    for name, value in overrides.items():
        setattr(config, name, value)
    server = FakeSesServer(config)
    await server.start()
    return server


@pytest.fixture
async def fake() -> AsyncIterator[FakeSesServer]:
    server = await started()
    yield server
    await server.stop()


@pytest.fixture
async def client() -> AsyncIterator[aiohttp.ClientSession]:
    async with aiohttp.ClientSession() as session:
        yield session


def simple(to: str = "someone@example.com", **extra: Any) -> dict[str, Any]:
    body: dict[str, Any] = {
        "FromEmailAddress": SENDER,
        "Destination": {"ToAddresses": [to]},
        "Content": {
            "Simple": {
                "Subject": {"Data": "Your receipt", "Charset": "UTF-8"},
                "Body": {
                    "Text": {"Data": "Thanks!", "Charset": "UTF-8"},
                    "Html": {"Data": '<p>Thanks! <a href="https://shop.example/r/1">receipt</a></p>'},
                },
            }
        },
        "EmailTags": [{"Name": "tidings_id", "Value": "01HZZZZZZZZZZZZZZZZZZZZZZZ"}],
        "ConfigurationSetName": "tidings",
    }
    body.update(extra)
    return body


def botocore_signed(
    url: str,
    body: bytes,
    *,
    access_key: str = DEFAULT_ACCESS_KEY_ID,
    secret_key: str = DEFAULT_SECRET_ACCESS_KEY,
    token: str | None = None,
    region: str = DEFAULT_REGION,
    service: str = "ses",
    when: datetime | None = None,
) -> dict[str, str]:
    """The headers botocore's SigV4 signer gives a SendEmail request."""
    request = AWSRequest(method="POST", url=url, data=body, headers={"Content-Type": "application/json"})
    signer = SigV4Auth(Credentials(access_key, secret_key, token), service, region)
    if when is None:
        signer.add_auth(request)
    else:
        with mock.patch("botocore.auth.get_current_datetime", return_value=when.replace(tzinfo=None)):
            signer.add_auth(request)
    return dict(request.headers.items())


async def send(
    client: aiohttp.ClientSession,
    fake: FakeSesServer,
    payload: dict[str, Any] | bytes,
    *,
    tamper: bytes | None = None,
    **signing: Any,
) -> tuple[int, dict[str, str], dict[str, Any]]:
    url = f"{fake.url}/v2/email/outbound-emails"
    body = payload if isinstance(payload, bytes) else orjson.dumps(payload)
    headers = botocore_signed(url, body, **signing)
    async with client.post(url, data=tamper if tamper is not None else body, headers=headers) as response:
        return response.status, dict(response.headers), await response.json()


def error_code(headers: dict[str, str]) -> str:
    return headers["x-amzn-ErrorType"].split(":", 1)[0]


SIGNED_FIELDS = {
    "Notification": ["Message", "MessageId", "Subject", "Timestamp", "TopicArn", "Type"],
    "SubscriptionConfirmation": [
        "Message",
        "MessageId",
        "SubscribeURL",
        "Timestamp",
        "Token",
        "TopicArn",
        "Type",
    ],
    "UnsubscribeConfirmation": [
        "Message",
        "MessageId",
        "SubscribeURL",
        "Timestamp",
        "Token",
        "TopicArn",
        "Type",
    ],
}


async def sns_signature_holds(client: aiohttp.ClientSession, message: dict[str, Any]) -> bool:
    """Check an SNS message's signature as AWS documents it, with the certificate it names."""
    async with client.get(message["SigningCertURL"]) as response:
        assert response.status == 200
        certificate = x509.load_pem_x509_certificate(await response.read())
    text = "".join(f"{name}\n{message[name]}\n" for name in SIGNED_FIELDS[message["Type"]] if name in message)
    digest: hashes.HashAlgorithm = hashes.SHA1() if message["SignatureVersion"] == "1" else hashes.SHA256()
    key = certificate.public_key()
    assert isinstance(key, rsa.RSAPublicKey)
    try:
        key.verify(base64.b64decode(message["Signature"]), text.encode(), padding.PKCS1v15(), digest)
    except InvalidSignature:
        return False
    return True


async def subscribe_and_confirm(
    fake: FakeSesServer, receiver: Receiver, client: aiohttp.ClientSession
) -> None:
    status, _ = await fake.subscribe(receiver.url)
    assert status == 200
    confirmation = await receiver.next()
    async with client.get(confirmation.message["SubscribeURL"]) as response:
        assert response.status == 200


# --- sending --------------------------------------------------------------------------------------


async def test_a_simple_email_signed_by_botocore_is_accepted_and_recorded(
    fake: FakeSesServer, client: aiohttp.ClientSession
) -> None:
    status, headers, answer = await send(client, fake, simple(ReplyToAddresses=["help@tidings.example"]))
    assert status == 200, answer
    assert MESSAGE_ID.fullmatch(answer["MessageId"])
    assert headers["x-amzn-RequestId"]
    [email] = fake.emails
    assert email.message_id == answer["MessageId"]
    assert (email.from_address, email.to, email.reply_to) == (
        SENDER,
        ["someone@example.com"],
        ["help@tidings.example"],
    )
    assert (email.subject, email.text) == ("Your receipt", "Thanks!")
    assert email.html is not None and "receipt" in email.html
    assert email.tags == {"tidings_id": "01HZZZZZZZZZZZZZZZZZZZZZZZ"}
    assert email.configuration_set == "tidings"
    assert email.attempt == 1 and email.raw is None and email.mime is None
    [request] = fake.requests
    assert (request.method, request.path, request.status) == ("POST", "/v2/email/outbound-emails", 200)
    assert request.headers["Authorization"].startswith("AWS4-HMAC-SHA256 Credential=AKIAFAKESESEXAMPLE01/")
    assert fake.stats["accepted"] == 1


async def test_a_raw_mime_message_is_accepted_and_parsed(
    fake: FakeSesServer, client: aiohttp.ClientSession
) -> None:
    mime = EmailMessage()
    mime["From"] = SENDER
    mime["To"] = "Amani <amani@example.com>"
    mime["Subject"] = "Ripoti ya wiki — ✓"
    mime.set_content("Habari")
    mime.add_alternative("<p>Habari</p>", subtype="html")
    mime.add_attachment(b"%PDF-1.4 ...", maintype="application", subtype="pdf", filename="ripoti.pdf")
    payload = {"Content": {"Raw": {"Data": base64.b64encode(mime.as_bytes()).decode()}}}
    status, _, answer = await send(client, fake, payload)
    assert status == 200, answer
    [email] = fake.emails
    assert email.to == ["amani@example.com"]  # from the MIME headers, no Destination given
    assert email.from_address == SENDER
    assert email.subject == "Ripoti ya wiki — ✓"
    assert (email.text, email.html) == ("Habari\n", "<p>Habari</p>\n")
    parsed = email.mime
    assert parsed is not None
    [attachment] = list(parsed.iter_attachments())
    assert attachment.get_filename() == "ripoti.pdf"
    assert attachment.get_content() == b"%PDF-1.4 ..."


@pytest.mark.parametrize(
    ("signing", "tamper", "code"),
    [
        ({"secret_key": "not-the-secret"}, None, "InvalidSignatureException"),
        ({"access_key": "AKIAUNKNOWNKEY000000"}, None, "UnrecognizedClientException"),
        ({"region": "eu-west-1"}, None, "InvalidSignatureException"),
        ({"service": "email"}, None, "InvalidSignatureException"),
        ({"when": datetime.now(UTC) - timedelta(minutes=10)}, None, "InvalidSignatureException"),
        ({}, b'{"Content": {}}', "InvalidSignatureException"),
    ],
    ids=["wrong-secret", "unknown-key", "other-region", "other-service", "too-old", "body-changed"],
)
async def test_a_request_whose_signature_does_not_hold_is_refused(
    fake: FakeSesServer,
    client: aiohttp.ClientSession,
    signing: dict[str, Any],
    tamper: bytes | None,
    code: str,
) -> None:
    status, headers, answer = await send(client, fake, simple(), tamper=tamper, **signing)
    assert status == 403
    assert error_code(headers) == code
    assert answer["message"]
    assert fake.emails == [] and fake.stats["rejected"] == 1


async def test_an_unsigned_request_is_refused(fake: FakeSesServer, client: aiohttp.ClientSession) -> None:
    async with client.post(f"{fake.url}/v2/email/outbound-emails", json=simple()) as response:
        assert response.status == 403
        assert error_code(dict(response.headers)) == "MissingAuthenticationTokenException"
    garbled = {"Authorization": "AWS4-HMAC-SHA256 Credential=nonsense", "X-Amz-Date": "20240101T000000Z"}
    async with client.post(
        f"{fake.url}/v2/email/outbound-emails", json=simple(), headers=garbled
    ) as response:
        assert response.status == 403
        assert error_code(dict(response.headers)) == "IncompleteSignatureException"


async def test_a_configured_session_token_must_be_sent_and_signed(client: aiohttp.ClientSession) -> None:
    fake = await started(session_token="session-token-123")
    try:
        status, headers, _ = await send(client, fake, simple())
        assert (status, error_code(headers)) == (403, "UnrecognizedClientException")
        status, _, answer = await send(client, fake, simple(), token="session-token-123")
        assert status == 200, answer
    finally:
        await fake.stop()


@pytest.mark.parametrize(
    "payload",
    [
        b"not json",
        b"[1, 2]",
        {"FromEmailAddress": SENDER, "Destination": {"ToAddresses": ["a@example.com"]}, "Content": {}},
        simple(Content={"Template": {"TemplateName": "x"}}),
        simple(EmailTags=[{"Name": "tidings id", "Value": "x"}]),
        simple(FromEmailAddress="not an address"),
        simple(Destination={"ToAddresses": []}),
        {"Content": {"Raw": {"Data": "%%% not base64 %%%"}}},
    ],
    ids=[
        "not-json",
        "not-object",
        "no-content",
        "template",
        "bad-tag",
        "bad-from",
        "no-recipient",
        "bad-raw",
    ],
)
async def test_a_body_ses_would_not_take_is_a_bad_request(
    fake: FakeSesServer, client: aiohttp.ClientSession, payload: dict[str, Any] | bytes
) -> None:
    status, headers, answer = await send(client, fake, payload)
    assert (status, error_code(headers)) == (400, "BadRequestException")
    assert answer["message"]


@pytest.mark.parametrize(
    ("local", "status", "code"),
    [
        ("reject", 400, "MessageRejected"),
        ("throttle", 429, "TooManyRequestsException"),
        ("tempfail", 429, "TooManyRequestsException"),
        ("limit", 400, "LimitExceededException"),
        ("paused", 400, "SendingPausedException"),
        ("suspended", 400, "AccountSuspendedException"),
        ("mailfrom", 400, "MailFromDomainNotVerifiedException"),
    ],
)
async def test_magic_addresses_are_refused_with_ses_errors(
    fake: FakeSesServer, client: aiohttp.ClientSession, local: str, status: int, code: str
) -> None:
    answer_status, headers, answer = await send(client, fake, simple(to=f"{local}@example.com"))
    assert (answer_status, error_code(headers)) == (status, code)
    assert set(answer) == {"message"}
    assert fake.emails == []


async def test_tempfail_once_fails_the_first_send_of_a_message_only(
    fake: FakeSesServer, client: aiohttp.ClientSession
) -> None:
    payload = simple(to="tempfail-once@example.com")
    status, headers, _ = await send(client, fake, payload)
    assert (status, error_code(headers)) == (500, "InternalFailure")
    status, _, answer = await send(client, fake, payload)
    assert status == 200, answer
    assert fake.emails[0].attempt == 2


async def test_the_error_code_can_come_in_the_body() -> None:
    fake = await started(error_type_in_body=True)
    try:
        async with aiohttp.ClientSession() as client:
            status, headers, answer = await send(client, fake, simple(to="reject@example.com"))
        assert status == 400
        assert "x-amzn-ErrorType" not in headers
        assert answer["__type"] == "com.amazonaws.sesv2#MessageRejected"
    finally:
        await fake.stop()


# --- SNS ------------------------------------------------------------------------------------------


async def test_subscribing_posts_a_signed_confirmation_whose_url_confirms(
    fake: FakeSesServer, receiver: Receiver, client: aiohttp.ClientSession
) -> None:
    status, _ = await fake.subscribe(receiver.url)
    assert status == 200
    posted = await receiver.next()
    message = posted.message
    assert posted.headers["Content-Type"] == "text/plain; charset=UTF-8"
    assert posted.headers["x-amz-sns-message-type"] == "SubscriptionConfirmation"
    assert posted.headers["x-amz-sns-topic-arn"] == DEFAULT_TOPIC_ARN
    assert posted.headers["x-amz-sns-message-id"] == message["MessageId"]
    assert message["Type"] == "SubscriptionConfirmation"
    assert message["TopicArn"] == DEFAULT_TOPIC_ARN
    assert message["SignatureVersion"] == "2"
    assert message["SigningCertURL"] == fake.certificate_url
    assert re.fullmatch(r".*/SimpleNotificationService-[0-9a-f]{32}\.pem", fake.certificate_url)
    assert message["SubscribeURL"].startswith(f"{fake.url}/?Action=ConfirmSubscription&TopicArn=")
    assert await sns_signature_holds(client, message)

    async with client.get(message["SubscribeURL"]) as response:
        assert response.status == 200
        assert (
            "<SubscriptionArn>arn:aws:sns:us-east-1:123456789012:tidings-ses-events:" in await response.text()
        )
    assert fake.confirmations == [message["SubscribeURL"]]
    assert fake.stats["confirmations"] == 1
    assert [(r.method, r.path.split("?")[0], r.status) for r in fake.requests] == [
        ("GET", fake.certificate_path, 200),
        ("GET", "/", 200),
    ]

    wrong = message["SubscribeURL"].replace("Token=", "Token=x")
    async with client.get(wrong) as response:
        assert response.status == 400
        assert "<Code>InvalidParameter</Code>" in await response.text()


async def test_events_are_published_as_signed_notifications_once_confirmed(
    fake: FakeSesServer, receiver: Receiver, client: aiohttp.ClientSession
) -> None:
    await fake.subscribe(receiver.url)
    confirmation = await receiver.next()
    status, _, answer = await send(client, fake, simple(to="complaint@example.com"))
    assert status == 200
    await asyncio.sleep(0.1)
    assert len(receiver.posts) == 1  # nothing reaches an unconfirmed subscription
    async with client.get(confirmation.message["SubscribeURL"]) as response:
        assert response.status == 200

    delivery, complaint = await receiver.next(), await receiver.next()
    for posted in (delivery, complaint):
        assert posted.headers["x-amz-sns-message-type"] == "Notification"
        assert posted.headers["x-amz-sns-subscription-arn"].startswith(DEFAULT_TOPIC_ARN + ":")
        assert posted.headers["User-Agent"] == "Amazon Simple Notification Service Agent"
        assert await sns_signature_holds(client, posted.message)
        assert "UnsubscribeURL" in posted.message and "Subject" not in posted.message
        mail = posted.event["mail"]
        assert mail["messageId"] == answer["MessageId"]
        assert mail["tags"]["tidings_id"] == ["01HZZZZZZZZZZZZZZZZZZZZZZZ"]
        assert mail["tags"]["ses:configuration-set"] == ["tidings"]
    assert delivery.event["eventType"] == "Delivery"
    assert delivery.event["delivery"]["recipients"] == ["complaint@example.com"]
    assert complaint.event["eventType"] == "Complaint"
    assert complaint.event["complaint"]["complainedRecipients"] == [{"emailAddress": "complaint@example.com"}]
    await fake.wait_for_events(5)
    assert fake.stats["notifications_posted"] == 2


@pytest.mark.parametrize(
    ("local", "expected"),
    [
        ("someone", [("Delivery", None)]),
        ("bounce", [("Bounce", ("Permanent", "General"))]),
        ("undeliverable", [("Bounce", ("Permanent", "General"))]),
        ("suppressed", [("Bounce", ("Permanent", "OnAccountSuppressionList"))]),
        ("softbounce", [("Bounce", ("Transient", "MailboxFull"))]),
        ("delay", [("DeliveryDelay", None), ("Delivery", None)]),
        ("engaged", [("Delivery", None), ("Open", None), ("Click", None)]),
        ("virus", [("Reject", None)]),
    ],
)
async def test_each_magic_address_publishes_its_events(
    fake: FakeSesServer,
    receiver: Receiver,
    client: aiohttp.ClientSession,
    local: str,
    expected: list[tuple[str, tuple[str, str] | None]],
) -> None:
    await subscribe_and_confirm(fake, receiver, client)
    status, _, _ = await send(client, fake, simple(to=f"{local}@example.com"))
    assert status == 200
    events = [(await receiver.next()).event for _ in expected]
    assert [e["eventType"] for e in events] == [kind for kind, _ in expected]
    for event, (_, bounce) in zip(events, expected, strict=True):
        if bounce is not None:
            assert (event["bounce"]["bounceType"], event["bounce"]["bounceSubType"]) == bounce
            assert event["bounce"]["bouncedRecipients"][0]["diagnosticCode"]
    clicks = [e for e in events if e["eventType"] == "Click"]
    assert all(c["click"]["link"] == "https://shop.example/r/1" for c in clicks)


async def test_no_receipt_and_silent_publish_nothing(
    fake: FakeSesServer, receiver: Receiver, client: aiohttp.ClientSession
) -> None:
    await subscribe_and_confirm(fake, receiver, client)
    for local in ("no-receipt", "silent"):
        status, _, _ = await send(client, fake, simple(to=f"{local}@example.com"))
        assert status == 200
    await fake.wait_for_events(5)
    assert len(receiver.posts) == 1  # the confirmation only


async def test_feedback_notifications_have_no_tags_and_only_three_kinds(
    receiver: Receiver, client: aiohttp.ClientSession
) -> None:
    fake = await started(events="notifications", signature_version="1")
    try:
        await subscribe_and_confirm(fake, receiver, client)
        status, _, _ = await send(client, fake, simple(to="engaged@example.com"))
        assert status == 200
        posted = await receiver.next()
        assert posted.message["SignatureVersion"] == "1"
        assert await sns_signature_holds(client, posted.message)
        assert posted.event["notificationType"] == "Delivery"
        assert "eventType" not in posted.event and "tags" not in posted.event["mail"]
        await fake.wait_for_events(5)
        assert len(receiver.posts) == 2  # no Open, no Click
    finally:
        await fake.stop()


async def test_a_failed_post_is_retried(fake: FakeSesServer, client: aiohttp.ClientSession) -> None:
    flaky = Receiver(fail_first=3)  # the confirmation, then two failures of the notification
    await flaky.start()
    try:
        status, _ = await fake.subscribe(flaky.url)
        assert status == 500
        [subscription] = [d for d in fake.deliveries if d.type == "SubscriptionConfirmation"]
        assert subscription.status == 500
        async with client.get(subscription.message["SubscribeURL"]) as response:
            assert response.status == 200
        await send(client, fake, simple())
        posted = await flaky.next()
        assert posted.event["eventType"] == "Delivery"
        assert flaky.hits == 4
        await fake.wait_for_events(5)
        assert fake.stats["notifications_posted"] == 1
    finally:
        await flaky.stop()


async def test_hand_made_messages_can_be_signed_and_posted(
    fake: FakeSesServer, receiver: Receiver, client: aiohttp.ClientSession
) -> None:
    message = fake.notification(
        "Successfully validated SNS topic for Amazon SES event publishing.", subject="Hi"
    )
    assert await sns_signature_holds(client, message)
    forged = {**message, "Message": "something else"}
    assert not await sns_signature_holds(client, forged)
    status, _ = await fake.post(receiver.url, message)
    assert status == 200
    posted = await receiver.next()
    assert posted.message == message
    assert posted.headers["x-amz-sns-message-type"] == "Notification"


async def test_unsubscribing_posts_a_signed_unsubscribe_confirmation(
    fake: FakeSesServer, receiver: Receiver, client: aiohttp.ClientSession
) -> None:
    await subscribe_and_confirm(fake, receiver, client)
    status, _ = await fake.unsubscribe()
    assert status == 200
    posted = await receiver.next()
    assert posted.message["Type"] == "UnsubscribeConfirmation"
    assert await sns_signature_holds(client, posted.message)
    assert fake.subscription is None
    await send(client, fake, simple())
    await fake.wait_for_events(5)
    assert len(receiver.posts) == 2


async def test_the_certificate_can_be_expired() -> None:
    fake = await started(certificate_expired=True)
    try:
        async with aiohttp.ClientSession() as client, client.get(fake.certificate_url) as response:
            certificate = x509.load_pem_x509_certificate(await response.read())
        assert certificate.not_valid_after_utc < datetime.now(UTC)
    finally:
        await fake.stop()


async def test_stats_health_and_reset(fake: FakeSesServer, client: aiohttp.ClientSession) -> None:
    await send(client, fake, simple())
    async with client.get(f"{fake.url}/_stats") as response:
        assert (await response.json())["accepted"] == 1
    async with client.get(f"{fake.url}/") as response:
        assert await response.json() == {"status": "ok"}
    async with client.post(f"{fake.url}/_reset") as response:
        assert response.status == 204
    assert fake.emails == [] and fake.stats["accepted"] == 0
    assert [r.path for r in fake.requests] == ["/_reset"]  # kept as it is answered


async def test_command_line_subscribes_the_webhook_url_serves_and_stops_on_sigterm(
    receiver: Receiver,
) -> None:
    process = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "tidings.testing.fake_ses",
        "--port",
        "0",
        "--webhook-url",
        receiver.url,
        "--event-delay-ms",
        "5",
        stdout=asyncio.subprocess.PIPE,
    )
    try:
        assert process.stdout is not None
        line = (await asyncio.wait_for(process.stdout.readline(), 20)).decode()
        assert line.startswith("listening on http://127.0.0.1:")
        url = line.removeprefix("listening on ").strip()
        confirmation = await receiver.next(20)
        assert confirmation.message["Type"] == "SubscriptionConfirmation"
        async with aiohttp.ClientSession() as client:
            async with client.get(confirmation.message["SubscribeURL"]) as response:
                assert response.status == 200
            body = orjson.dumps(simple())
            send_url = f"{url}/v2/email/outbound-emails"
            async with client.post(send_url, data=body, headers=botocore_signed(send_url, body)) as response:
                assert response.status == 200
        assert (await receiver.next(10)).event["eventType"] == "Delivery"
        process.send_signal(signal.SIGTERM)
        assert await asyncio.wait_for(process.wait(), 20) == 0
    finally:
        if process.returncode is None:
            process.kill()
            await process.wait()
