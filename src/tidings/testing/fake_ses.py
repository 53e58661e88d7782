"""A fake Amazon SES (API v2) and the SNS topic it publishes to, over real HTTP.

It lets the SES adapter (and the tests) exercise every path an email can take without an AWS
account: Signature Version 4, SES's error answers, simple and raw (MIME) messages, and SES events
published through SNS: a signed subscription confirmation first, then signed notifications.

Wire format
-----------
``POST /v2/email/outbound-emails`` with a JSON ``SendEmail`` body (``FromEmailAddress``,
``Destination.ToAddresses``, ``ReplyToAddresses``, ``Content.Simple`` with ``Subject``,
``Body.Text``/``Body.Html`` and ``Headers``, or ``Content.Raw.Data``: a base64 MIME message;
``EmailTags``, ``ConfigurationSetName``), signed with SigV4 for service ``ses`` in the configured
region with the configured access key (and session token, when one is configured). The answer is:

* ``200 {"MessageId": "…"}`` (an id shaped like SES's);
* ``403`` ``MissingAuthenticationTokenException`` (no ``Authorization``),
  ``IncompleteSignatureException`` (not a SigV4 header, no ``X-Amz-Date``),
  ``UnrecognizedClientException`` (an unknown access key or session token) or
  ``InvalidSignatureException`` (a signature that does not match, a scope of another region,
  service or day, a time more than 5 minutes away, ``host`` or ``x-amz-date`` not signed);
* ``400 BadRequestException`` for a body SES would not take (not JSON, no content or two kinds,
  no sender or recipient, a raw message that is not base64, tags or headers outside SES's rules);
* the refusal of a magic address (below).

An error is ``{"message": "…"}`` with its code in the ``x-amzn-ErrorType`` header
(``Code:http://internal.amazon.com/coral/…``), as SES's REST API sends it; with
``error_type_in_body`` the code is in the body's ``__type`` instead (``com.amazonaws.sesv2#Code``),
which clients must read too. Every request the fake answers (to SES's API, for the certificate, to
confirm) is kept in :attr:`FakeSesServer.requests`, every accepted email in
:attr:`FakeSesServer.emails`.

Magic addresses, by the local part of the first recipient (any domain); the names of
``providers/fake_rules.py`` mean here what they mean for every fake:

================================  ================================================================
``reject``                        400 ``MessageRejected``
``throttle``, ``tempfail``        429 ``TooManyRequestsException``, every time
``limit``                         400 ``LimitExceededException``
``tempfail-once``                 500 ``InternalFailure`` on the first send of a message (its
                                  ``tidings_id`` tag, else its recipient), accepted afterwards
``paused``                        400 ``SendingPausedException``
``suspended``                     400 ``AccountSuspendedException``
``mailfrom``                      400 ``MailFromDomainNotVerifiedException``
``bounce``, ``undeliverable``     accepted, then ``Bounce`` ``Permanent``/``General``
``suppressed``                    accepted, then ``Bounce`` ``Permanent``/``OnAccountSuppressionList``
``softbounce``                    accepted, then ``Bounce`` ``Transient``/``MailboxFull``
``complaint``, ``complains``      accepted, then ``Delivery`` and ``Complaint``
``delay``                         accepted, then ``DeliveryDelay`` and ``Delivery``
``engaged``                       accepted, then ``Delivery``, ``Open`` and ``Click``
``virus``                         accepted, then ``Reject``
``no-receipt``, ``silent``        accepted, and no event
================================  ================================================================

Any other address is accepted, then gets a ``Delivery`` event.

SNS
---
Events are published as event publishing writes them (``eventType``, the message's tags in
``mail.tags``), or with ``events="notifications"`` as feedback notifications do
(``notificationType``, no tags, only ``Bounce``, ``Complaint`` and ``Delivery``), one every
``event_delay_ms``. Each is wrapped in an SNS ``Notification`` signed with the fake's own RSA key
(``SignatureVersion`` ``2``, SHA-256, or ``1``, SHA-1); the self-signed certificate is served at
``GET /SimpleNotificationService-<hash>.pem`` (:attr:`FakeSesServer.certificate_url`), so the
adapter must be told to take certificates from the fake's origin (``sns_certificate_origin``).

:meth:`FakeSesServer.subscribe` subscribes a URL: it posts a signed ``SubscriptionConfirmation``
whose ``SubscribeURL`` is ``GET /?Action=ConfirmSubscription&TopicArn=…&Token=…`` on the fake,
which records the confirmation (:attr:`FakeSesServer.confirmations`). Notifications are posted
only once the subscription is confirmed (those published before wait); each post is retried up to
3 times on connection errors, timeouts and 5xx, as SNS retries only those. Every SNS message is
kept in :attr:`FakeSesServer.published` (posted or not), every post's answer in
:attr:`FakeSesServer.deliveries`. :meth:`FakeSesServer.notification` and
:meth:`FakeSesServer.sign` build signed messages of any content, and :meth:`FakeSesServer.post`
posts one once, to test the receiving side.

Run it standalone with ``python -m tidings.testing.fake_ses --port 0 [--webhook-url URL]``: it
prints one line, ``listening on http://HOST:PORT``, subscribes the webhook URL (retrying until it
answers), and serves until SIGTERM or SIGINT.
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import binascii
import functools
import hashlib
import hmac
import random
import re
import uuid
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from email import message_from_bytes, policy
from email.message import EmailMessage
from email.utils import getaddresses, parseaddr
from typing import Any, Literal
from urllib.parse import urlencode

import orjson
from aiohttp import web
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import padding, rsa
from cryptography.x509.oid import NameOID

from tidings.providers import sigv4
from tidings.testing.http_fake import (
    FakeHttpServer,
    PostPolicy,
    cli_parser,
    json_response,
    run_until_signalled,
)

__all__ = [
    "DEFAULT_ACCESS_KEY_ID",
    "DEFAULT_REGION",
    "DEFAULT_SECRET_ACCESS_KEY",
    "DEFAULT_TOPIC_ARN",
    "FakeSesConfig",
    "FakeSesEmail",
    "FakeSesRequest",
    "FakeSesServer",
    "SnsDelivery",
    "main",
    "self_signed_certificate",
]

DEFAULT_ACCESS_KEY_ID = "AKIAFAKESESEXAMPLE01"
DEFAULT_SECRET_ACCESS_KEY = "fake/ses/secret+access+key/EXAMPLE0000"
DEFAULT_REGION = "us-east-1"
ACCOUNT_ID = "123456789012"
DEFAULT_TOPIC_ARN = f"arn:aws:sns:{DEFAULT_REGION}:{ACCOUNT_ID}:tidings-ses-events"
SEND_PATH = "/v2/email/outbound-emails"
MAX_SKEW = timedelta(minutes=5)
"""How far a request's ``X-Amz-Date`` may be from the fake's clock, as AWS allows."""

SNS_POSTS = PostPolicy(
    kind="SNS notification", attempts=4, backoff_s=0.1, timeout_s=10.0, connection_limit=64
)
_SNS_CONTENT_TYPE = "text/plain; charset=UTF-8"
_SNS_USER_AGENT = "Amazon Simple Notification Service Agent"
_TAG = re.compile(r"[A-Za-z0-9_-]{1,256}")
_HEADER_NAME = re.compile(r"[\x21-\x39\x3b-\x7e]{1,126}")
_HEADER_VALUE = re.compile(r"[\x20-\x7e]{0,995}")
_HREF = re.compile(r"""href=["']([^"']+)["']""", re.IGNORECASE)
_CONFIRMATION_SIGNED = ("Message", "MessageId", "SubscribeURL", "Timestamp", "Token", "TopicArn", "Type")
_SNS_SIGNED = {
    "Notification": ("Message", "MessageId", "Subject", "Timestamp", "TopicArn", "Type"),
    "SubscriptionConfirmation": _CONFIRMATION_SIGNED,
    "UnsubscribeConfirmation": _CONFIRMATION_SIGNED,
}
"""The fields SNS signs for each type of message, in order (an absent ``Subject`` is skipped)."""

_REFUSALS: Mapping[str, tuple[int, str, str]] = {
    "reject": (
        400,
        "MessageRejected",
        "Email address is not verified. The following identities failed the check",
    ),
    "throttle": (429, "TooManyRequestsException", "Too Many Requests"),
    "tempfail": (429, "TooManyRequestsException", "Too Many Requests"),
    "limit": (400, "LimitExceededException", "Maximum sending rate exceeded."),
    "paused": (400, "SendingPausedException", "Email sending is paused for this account."),
    "suspended": (400, "AccountSuspendedException", "Your account's ability to send email is restricted."),
    "mailfrom": (400, "MailFromDomainNotVerifiedException", "The MAIL FROM domain is not verified."),
}
_ONCE = (500, "InternalFailure", "An internal error occurred.")

_STEPS: Mapping[str, tuple[str, ...]] = {
    "bounce": ("Bounce:Permanent:General",),
    "undeliverable": ("Bounce:Permanent:General",),
    "suppressed": ("Bounce:Permanent:OnAccountSuppressionList",),
    "softbounce": ("Bounce:Transient:MailboxFull",),
    "complaint": ("Delivery", "Complaint"),
    "complains": ("Delivery", "Complaint"),
    "delay": ("DeliveryDelay", "Delivery"),
    "engaged": ("Delivery", "Open", "Click"),
    "virus": ("Reject",),
    "no-receipt": (),
    "silent": (),
}
_DELIVERED = ("Delivery",)
_FEEDBACK = frozenset({"Bounce", "Complaint", "Delivery"})
"""The events feedback notifications carry (event publishing carries them all)."""


def _now() -> datetime:
    return datetime.now(UTC)


def _iso(moment: datetime) -> str:
    return moment.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%S.") + f"{moment.microsecond // 1000:03d}Z"


@functools.cache
def _private_key() -> rsa.RSAPrivateKey:
    """One RSA key per process: making one takes a while, and every fake may share it."""
    return rsa.generate_private_key(public_exponent=65537, key_size=2048)


def self_signed_certificate(key: rsa.RSAPrivateKey, not_before: datetime, not_after: datetime) -> bytes:
    """A PEM certificate for ``key``, signed by itself, named like SNS's."""
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "sns.amazonaws.com")])
    certificate = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(not_before)
        .not_valid_after(not_after)
        .sign(key, hashes.SHA256())
    )
    return certificate.public_bytes(serialization.Encoding.PEM)


@dataclass
class FakeSesConfig:
    """How a :class:`FakeSesServer` behaves."""

    access_key_id: str = DEFAULT_ACCESS_KEY_ID
    secret_access_key: str = DEFAULT_SECRET_ACCESS_KEY
    session_token: str | None = None
    """When set, requests must carry (and sign) it as ``X-Amz-Security-Token``."""
    region: str = DEFAULT_REGION
    topic_arn: str = DEFAULT_TOPIC_ARN
    webhook_url: str | None = None
    """Subscribed when the server starts (retrying until it answers); or call ``subscribe``."""
    event_delay_ms: float = 30.0
    """The pause before each event of a message (the first that long after the answer)."""
    events: Literal["events", "notifications"] = "events"
    """Event publishing (``eventType``, with tags) or feedback notifications (``notificationType``)."""
    signature_version: Literal["1", "2"] = "2"
    error_type_in_body: bool = False
    """Put the error code in the body's ``__type`` instead of the ``x-amzn-ErrorType`` header."""
    certificate_expired: bool = False
    """Serve a certificate that expired yesterday."""
    seed: int | None = None
    """Seed for the message ids, for reproducible runs; ``None`` draws random ones."""


@dataclass
class FakeSesEmail:
    """One accepted email, as the fake stores it."""

    message_id: str
    from_address: str
    to: list[str]
    tags: dict[str, str]
    attempt: int
    received_at: datetime
    subject: str | None = None
    text: str | None = None
    html: str | None = None
    reply_to: list[str] = field(default_factory=list)
    headers: list[dict[str, str]] = field(default_factory=list)
    """``Simple.Headers``."""
    raw: bytes | None = None
    """The MIME message of a raw send."""
    configuration_set: str | None = None

    @property
    def mime(self) -> EmailMessage | None:
        """The raw message parsed (``None`` for a simple one)."""
        if self.raw is None:
            return None
        parsed = message_from_bytes(self.raw, policy=policy.default)
        assert isinstance(parsed, EmailMessage)
        return parsed


@dataclass(frozen=True)
class FakeSesRequest:
    """One request to the fake, as it arrived, and the status it was answered."""

    method: str
    path: str
    headers: dict[str, str]
    body: bytes
    status: int


@dataclass(frozen=True)
class SnsDelivery:
    """One SNS message posted to the subscribed URL, and what it answered (0: no answer)."""

    url: str
    type: str
    message: dict[str, str]
    status: int


@dataclass
class _Subscription:
    url: str
    token: str
    arn: str
    confirmed: asyncio.Event = field(default_factory=asyncio.Event)


@dataclass
class _Stats:
    requests: int = 0
    accepted: int = 0
    rejected: int = 0
    notifications_posted: int = 0
    notifications_failed: int = 0
    confirmations: int = 0
    attempts: dict[str, int] = field(default_factory=dict)

    def as_dict(self) -> dict[str, object]:
        return {
            "requests": self.requests,
            "accepted": self.accepted,
            "rejected": self.rejected,
            "notifications_posted": self.notifications_posted,
            "notifications_failed": self.notifications_failed,
            "confirmations": self.confirmations,
        }


class _Refused(Exception):
    def __init__(self, status: int, code: str, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.code = code
        self.message = message


def _bad_request(message: str) -> _Refused:
    return _Refused(400, "BadRequestException", message)


def _address(value: str) -> str:
    """The bare address of ``Name <address>``."""
    return parseaddr(value)[1] or value


def _local_part(address: str) -> str:
    return _address(address).rsplit("@", 1)[0].lower()


def _strings(value: object, what: str) -> list[str]:
    if value is None:
        return []
    if not isinstance(value, list) or not all(isinstance(v, str) and v for v in value):
        raise _bad_request(f"{what} must be a list of addresses")
    return list(value)


class FakeSesServer(FakeHttpServer):
    """A fake SES and SNS on a real socket: :meth:`start` it, send it email, then :meth:`stop` it."""

    def __init__(self, config: FakeSesConfig | None = None, *, key: rsa.RSAPrivateKey | None = None) -> None:
        """``key`` signs SNS messages instead of the key every fake shares (to play an impostor)."""
        super().__init__("fake SES server", SNS_POSTS)
        self.config = config if config is not None else FakeSesConfig()
        self.emails: list[FakeSesEmail] = []
        """The accepted emails, in arrival order."""
        self.requests: list[FakeSesRequest] = []
        """Every request the fake answered, in arrival order."""
        self.published: list[dict[str, str]] = []
        """Every SNS message made (confirmations and notifications), posted or not."""
        self.deliveries: list[SnsDelivery] = []
        """Every post of an SNS message to the subscribed URL, and its answer."""
        self.confirmations: list[str] = []
        """The ``SubscribeURL`` of each confirmation received."""
        self.subscription: _Subscription | None = None
        self._stats = _Stats()
        self._rng = random.Random(self.config.seed)
        self._key = key if key is not None else _private_key()
        now = _now()
        if self.config.certificate_expired:
            not_before, not_after = now - timedelta(days=30), now - timedelta(days=1)
        else:
            not_before, not_after = now - timedelta(days=1), now + timedelta(days=30)
        self.certificate_pem = self_signed_certificate(self._key, not_before, not_after)
        digest = hashlib.sha256(self.certificate_pem).hexdigest()[:32]
        self.certificate_path = f"/SimpleNotificationService-{digest}.pem"

    @property
    def stats(self) -> dict[str, object]:
        return self._stats.as_dict()

    @property
    def certificate_url(self) -> str:
        return self.url + self.certificate_path

    def _build_app(self) -> web.Application:
        app = super()._build_app()
        app.middlewares.append(self._record)
        return app

    @web.middleware
    async def _record(
        self, request: web.Request, handler: Callable[[web.Request], Awaitable[web.StreamResponse]]
    ) -> web.StreamResponse:
        """Keep every request the fake answers (SES's API, certificates, confirmations…)."""
        body = await request.read()  # kept by aiohttp: the handler reads it again
        status = 500
        try:
            response = await handler(request)
            status = response.status
            return response
        except web.HTTPException as exc:
            status = exc.status
            raise
        finally:
            self.requests.append(
                FakeSesRequest(request.method, request.path_qs, dict(request.headers), body, status)
            )

    def _add_routes(self, router: web.UrlDispatcher) -> None:
        router.add_post(SEND_PATH, self._handle_send)
        router.add_get(self.certificate_path, self._handle_certificate)

    def _reset(self) -> None:
        self._stats = _Stats()
        self.emails.clear()
        self.requests.clear()
        self.published.clear()
        self.deliveries.clear()
        self.confirmations.clear()

    async def start(self, host: str = "127.0.0.1", port: int = 0) -> str:
        url = await super().start(host, port)
        if self.config.webhook_url is not None:
            self._spawn(self._subscribe_with_retries(self.config.webhook_url))
        return url

    async def wait_for_events(self, timeout: float) -> None:
        """Wait until no event is pending (posted or given up); :class:`TimeoutError` after
        ``timeout`` seconds. Events wait for the subscription to be confirmed."""
        await self._wait_for_tasks(timeout)

    # --- SNS --------------------------------------------------------------------------------------

    def sign(self, fields: Mapping[str, str], *, signature_version: str | None = None) -> dict[str, str]:
        """``fields`` (an SNS message's) with ``SignatureVersion``, ``SigningCertURL`` and
        ``Signature`` added, signed with the fake's key."""
        version = signature_version or self.config.signature_version
        signed = {**fields, "SignatureVersion": version, "SigningCertURL": self.certificate_url}
        names = _SNS_SIGNED[signed["Type"]]
        text = "".join(f"{name}\n{signed[name]}\n" for name in names if name in signed)
        digest: hashes.HashAlgorithm = hashes.SHA1() if version == "1" else hashes.SHA256()
        raw = self._key.sign(text.encode("utf-8"), padding.PKCS1v15(), digest)
        signed["Signature"] = base64.b64encode(raw).decode("ascii")
        return signed

    def notification(self, message: str | Mapping[str, Any], *, subject: str | None = None) -> dict[str, str]:
        """A signed SNS ``Notification`` of ``message`` (an SES event, or any text) on the topic."""
        fields = {
            "Type": "Notification",
            "MessageId": str(uuid.uuid4()),
            "TopicArn": self.config.topic_arn,
            "Message": message if isinstance(message, str) else orjson.dumps(message).decode(),
            "Timestamp": _iso(_now()),
        }
        if subject is not None:
            fields["Subject"] = subject
        signed = self.sign(fields)
        arn = self.subscription.arn if self.subscription else f"{self.config.topic_arn}:none"
        query = urlencode({"Action": "Unsubscribe", "SubscriptionArn": arn}, safe=":")
        signed["UnsubscribeURL"] = f"{self.url}/?{query}"
        return signed

    def _confirmation(self, subscription: _Subscription, kind: str) -> dict[str, str]:
        topic = self.config.topic_arn
        # As SNS writes it: the ARN's colons left as they are.
        query = urlencode(
            {"Action": "ConfirmSubscription", "TopicArn": topic, "Token": subscription.token}, safe=":"
        )
        if kind == "SubscriptionConfirmation":
            text = (
                f"You have chosen to subscribe to the topic {topic}.\n"
                "To confirm the subscription, visit the SubscribeURL included in this message."
            )
        else:
            text = (
                f"You have chosen to deactivate subscription {subscription.arn}.\n"
                "To cancel this operation and restore the subscription, visit the SubscribeURL "
                "included in this message."
            )
        return self.sign(
            {
                "Type": kind,
                "MessageId": str(uuid.uuid4()),
                "Token": subscription.token,
                "TopicArn": topic,
                "Message": text,
                "SubscribeURL": f"{self.url}/?{query}",
                "Timestamp": _iso(_now()),
            }
        )

    @staticmethod
    def sns_headers(message: Mapping[str, str], subscription_arn: str | None = None) -> dict[str, str]:
        """The headers SNS posts ``message`` with."""
        headers = {
            "Content-Type": _SNS_CONTENT_TYPE,
            "User-Agent": _SNS_USER_AGENT,
            "x-amz-sns-message-type": message.get("Type", ""),
            "x-amz-sns-message-id": message.get("MessageId", ""),
            "x-amz-sns-topic-arn": message.get("TopicArn", ""),
        }
        if subscription_arn is not None:
            headers["x-amz-sns-subscription-arn"] = subscription_arn
        return headers

    @staticmethod
    def body(message: Mapping[str, Any]) -> bytes:
        """An SNS message as SNS posts it: indented JSON."""
        return orjson.dumps(dict(message), option=orjson.OPT_INDENT_2)

    async def post(
        self, url: str, message: Mapping[str, Any], *, headers: Mapping[str, str] | None = None
    ) -> tuple[int, bytes]:
        """Post ``message`` to ``url`` once, as SNS would; return (status, response body)."""
        sent = dict(self.sns_headers({k: str(v) for k, v in message.items()}))
        sent.update(headers or {})
        return await self._post_once(url, self.body(message), sent)

    async def subscribe(self, url: str) -> tuple[int, bytes]:
        """Subscribe ``url``: post it a signed ``SubscriptionConfirmation`` once and return its
        answer. Notifications reach it once it GETs the ``SubscribeURL``."""
        subscription = self._new_subscription(url)
        message = self._confirmation(subscription, "SubscriptionConfirmation")
        self.published.append(message)
        status, answer = await self.post(url, message)
        self.deliveries.append(SnsDelivery(url, message["Type"], message, status))
        return status, answer

    async def unsubscribe(self) -> tuple[int, bytes]:
        """End the subscription: post a signed ``UnsubscribeConfirmation`` once, return its answer."""
        subscription = self.subscription
        if subscription is None:
            raise RuntimeError("nothing is subscribed")
        self.subscription = None
        message = self._confirmation(subscription, "UnsubscribeConfirmation")
        self.published.append(message)
        status, answer = await self.post(subscription.url, message)
        self.deliveries.append(SnsDelivery(subscription.url, message["Type"], message, status))
        return status, answer

    def _new_subscription(self, url: str) -> _Subscription:
        self.subscription = _Subscription(
            url=url,
            token=hashlib.sha256(uuid.uuid4().bytes).hexdigest() * 2,
            arn=f"{self.config.topic_arn}:{uuid.uuid4()}",
        )
        return self.subscription

    async def _subscribe_with_retries(self, url: str) -> None:
        subscription = self._new_subscription(url)
        message = self._confirmation(subscription, "SubscriptionConfirmation")
        self.published.append(message)
        while not await self._post_with_retries(url, self.body(message), self.sns_headers(message)):
            self.deliveries.append(SnsDelivery(url, message["Type"], message, 0))
            await asyncio.sleep(1.0)
        self.deliveries.append(SnsDelivery(url, message["Type"], message, 200))

    async def publish(self, event: str | Mapping[str, Any]) -> None:
        """Publish ``event`` to the topic: post it to the subscribed URL once the subscription is
        confirmed (waiting for it), retrying as SNS does."""
        message = self.notification(event)
        self.published.append(message)
        subscription = self.subscription
        if subscription is None:
            return
        await subscription.confirmed.wait()
        if self.subscription is not subscription:
            return
        ok = await self._post_with_retries(
            subscription.url, self.body(message), self.sns_headers(message, subscription.arn)
        )
        self.deliveries.append(SnsDelivery(subscription.url, "Notification", message, 200 if ok else 0))
        if ok:
            self._stats.notifications_posted += 1
        else:
            self._stats.notifications_failed += 1

    async def _handle_health(self, request: web.Request) -> web.Response:
        action = request.query.get("Action")
        if action is None:
            return await super()._handle_health(request)
        subscription = self.subscription
        if action == "ConfirmSubscription":
            token = request.query.get("Token", "")
            if (
                subscription is None
                or not hmac.compare_digest(token, subscription.token)
                or request.query.get("TopicArn") != self.config.topic_arn
            ):
                return _sns_error(400, "InvalidParameter", "Invalid token")
            self.confirmations.append(self.url + request.raw_path)
            self._stats.confirmations += 1
            subscription.confirmed.set()
            return _sns_answer(
                "ConfirmSubscription",
                f"<ConfirmSubscriptionResult><SubscriptionArn>{subscription.arn}</SubscriptionArn>"
                "</ConfirmSubscriptionResult>",
            )
        if action == "Unsubscribe":
            if subscription is None or request.query.get("SubscriptionArn") != subscription.arn:
                return _sns_error(404, "NotFound", "Subscription does not exist")
            self.subscription = None
            return _sns_answer("Unsubscribe", "")
        return _sns_error(400, "InvalidAction", f"The action {action} is not valid for this endpoint.")

    async def _handle_certificate(self, request: web.Request) -> web.Response:
        return web.Response(body=self.certificate_pem, content_type="application/x-x509-ca-cert")

    # --- SES events -------------------------------------------------------------------------------

    def event(self, email: FakeSesEmail, step: str) -> dict[str, Any]:
        """The SES event ``step`` (``Delivery``, ``Bounce:Permanent:General``, ``Open``…) about
        ``email``, as the configured kind of publishing writes it."""
        kind, *qualifiers = step.split(":")
        now = _iso(_now())
        recipient = email.to[0]
        domain = _address(email.from_address).rpartition("@")[2]
        mail: dict[str, Any] = {
            "timestamp": _iso(email.received_at),
            "source": _address(email.from_address),
            "sourceArn": f"arn:aws:ses:{self.config.region}:{ACCOUNT_ID}:identity/{domain}",
            "sourceIp": "127.0.0.1",
            "sendingAccountId": ACCOUNT_ID,
            "callerIdentity": "tidings",
            "messageId": email.message_id,
            "destination": list(email.to),
            "headersTruncated": False,
            "headers": [
                {"name": "From", "value": email.from_address},
                {"name": "To", "value": ", ".join(email.to)},
                {"name": "Subject", "value": email.subject or ""},
            ],
            "commonHeaders": {
                "from": [email.from_address],
                "to": list(email.to),
                "messageId": email.message_id,
                "subject": email.subject or "",
            },
        }
        publishing = self.config.events == "events"
        if publishing:
            tags: dict[str, list[str]] = {
                "ses:operation": ["SendEmail"],
                "ses:source-ip": ["127.0.0.1"],
                "ses:from-domain": [domain],
                "ses:caller-identity": ["tidings"],
            }
            if email.configuration_set:
                tags["ses:configuration-set"] = [email.configuration_set]
            tags.update({name: [value] for name, value in email.tags.items()})
            mail["tags"] = tags
        event: dict[str, Any] = {("eventType" if publishing else "notificationType"): kind, "mail": mail}
        if kind == "Delivery":
            event["delivery"] = {
                "timestamp": now,
                "processingTimeMillis": 412,
                "recipients": list(email.to),
                "smtpResponse": "250 2.6.0 Message received",
                "reportingMTA": "a8-55.smtp-out.amazonses.com",
                "remoteMtaIp": "127.0.0.1",
            }
        elif kind == "Bounce":
            bounce_type, sub_type = qualifiers if len(qualifiers) == 2 else ("Permanent", "General")
            diagnostic = {
                "General": "smtp; 550 5.1.1 user unknown",
                "OnAccountSuppressionList": (
                    "Amazon SES did not send the message to this address because it is on the "
                    "suppression list for your account."
                ),
                "MailboxFull": "smtp; 452 4.2.2 Mailbox full",
            }.get(sub_type, "smtp; 550 5.0.0 undeliverable")
            event["bounce"] = {
                "feedbackId": f"{email.message_id}-bounce",
                "bounceType": bounce_type,
                "bounceSubType": sub_type,
                "bouncedRecipients": [
                    {
                        "emailAddress": recipient,
                        "action": "failed",
                        "status": "4.2.2" if bounce_type == "Transient" else "5.1.1",
                        "diagnosticCode": diagnostic,
                    }
                ],
                "timestamp": now,
                "reportingMTA": "dns; a8-55.smtp-out.amazonses.com",
            }
        elif kind == "Complaint":
            event["complaint"] = {
                "feedbackId": f"{email.message_id}-complaint",
                "complaintSubType": None,
                "complainedRecipients": [{"emailAddress": recipient}],
                "timestamp": now,
                "userAgent": "ExampleCorp Feedback Loop (V0.01)",
                "complaintFeedbackType": "abuse",
                "arrivalDate": now,
            }
        elif kind == "DeliveryDelay":
            expires = _iso(_now() + timedelta(hours=14))
            event["deliveryDelay"] = {
                "timestamp": now,
                "delayType": "TransientCommunicationFailure",
                "expirationTime": expires,
                "delayedRecipients": [
                    {
                        "emailAddress": recipient,
                        "status": "4.4.1",
                        "diagnosticCode": "smtp; 421 4.4.1 Unable to connect to remote host",
                    }
                ],
                "reportingMTA": "a8-55.smtp-out.amazonses.com",
            }
        elif kind == "Open":
            event["open"] = {"ipAddress": "192.0.2.1", "timestamp": now, "userAgent": "Mozilla/5.0"}
        elif kind == "Click":
            links = _HREF.findall(email.html or "")
            event["click"] = {
                "ipAddress": "192.0.2.1",
                "timestamp": now,
                "userAgent": "Mozilla/5.0",
                "link": links[0] if links else "https://example.com/",
                "linkTags": {"campaign": ["welcome"]},
            }
        elif kind == "Reject":
            event["reject"] = {"reason": "Bad content"}
        elif kind == "Send":
            event["send"] = {}
        return event

    def _schedule_events(self, email: FakeSesEmail) -> None:
        steps = _STEPS.get(_local_part(email.to[0]), _DELIVERED)
        if self.config.events == "notifications":
            steps = tuple(step for step in steps if step.split(":")[0] in _FEEDBACK)
        if steps:
            self._spawn(self._run_events(email, steps))

    async def _run_events(self, email: FakeSesEmail, steps: Sequence[str]) -> None:
        for step in steps:
            await asyncio.sleep(self.config.event_delay_ms / 1000)
            await self.publish(self.event(email, step))

    # --- SES API ----------------------------------------------------------------------------------

    async def _handle_send(self, request: web.Request) -> web.Response:
        self._stats.requests += 1
        body = await request.read()
        try:
            self._check_signature(request, body)
            email = self._accept(body)
        except _Refused as refused:
            self._stats.rejected += 1
            response = self._error(refused)
        else:
            self._stats.accepted += 1
            self.emails.append(email)
            self._schedule_events(email)
            response = json_response(
                200, {"MessageId": email.message_id}, {"x-amzn-RequestId": str(uuid.uuid4())}
            )
        return response

    def _error(self, refused: _Refused) -> web.Response:
        headers = {"x-amzn-RequestId": str(uuid.uuid4())}
        payload: dict[str, str] = {"message": refused.message}
        if self.config.error_type_in_body:
            payload["__type"] = f"com.amazonaws.sesv2#{refused.code}"
        else:
            headers["x-amzn-ErrorType"] = (
                f"{refused.code}:http://internal.amazon.com/coral/com.amazonaws.sesv2/"
            )
        return json_response(refused.status, payload, headers)

    def _check_signature(self, request: web.Request, body: bytes) -> None:
        config = self.config
        given = request.headers.get("Authorization")
        if given is None:
            raise _Refused(403, "MissingAuthenticationTokenException", "Missing Authentication Token")
        authorization = sigv4.parse_authorization(given)
        stamp = request.headers.get("X-Amz-Date", "")
        try:
            moment = datetime.strptime(stamp, "%Y%m%dT%H%M%SZ").replace(tzinfo=UTC)
        except ValueError:
            moment = None
        if authorization is None or moment is None:
            raise _Refused(
                403,
                "IncompleteSignatureException",
                "Authorization header requires 'Credential', 'Signature' and 'SignedHeaders' parameters, "
                "and the request an X-Amz-Date header.",
            )
        invalid = "InvalidSignatureException"
        if not hmac.compare_digest(authorization.access_key, config.access_key_id):
            raise _Refused(
                403, "UnrecognizedClientException", "The security token included in the request is invalid."
            )
        if abs(_now() - moment) > MAX_SKEW:
            raise _Refused(403, invalid, f"Signature expired: {stamp} is more than 5 minutes from now.")
        if authorization.date != stamp[:8]:
            raise _Refused(403, invalid, "Credential should be scoped to a valid date.")
        if authorization.region != config.region:
            raise _Refused(
                403, invalid, f"Credential should be scoped to a valid region, not '{authorization.region}'."
            )
        if authorization.service != "ses":
            raise _Refused(
                403,
                invalid,
                f"Credential should be scoped to correct service: 'ses', not '{authorization.service}'.",
            )
        if not {"host", "x-amz-date"} <= set(authorization.signed_headers):
            raise _Refused(403, invalid, "'Host' and 'X-Amz-Date' must be signed.")
        if config.session_token is not None:
            token = request.headers.get("X-Amz-Security-Token", "")
            if not hmac.compare_digest(token, config.session_token) or (
                "x-amz-security-token" not in authorization.signed_headers
            ):
                raise _Refused(
                    403,
                    "UnrecognizedClientException",
                    "The security token included in the request is invalid.",
                )
        content_sha256 = sigv4.payload_hash(body)
        if request.headers.get("X-Amz-Content-Sha256", content_sha256) != content_sha256:
            raise _Refused(
                400, "XAmzContentSHA256Mismatch", "The provided 'x-amz-content-sha256' header does not match."
            )
        url = f"http://{request.host}{request.raw_path}"
        headers = sigv4.signed_headers_of(url, request.headers.items(), authorization.signed_headers)
        canonical = sigv4.canonical_request(request.method, url, headers, content_sha256)
        key = sigv4.signing_key(config.secret_access_key, authorization.date, config.region, "ses")
        expected = sigv4.signature(key, sigv4.string_to_sign(stamp, authorization.scope, canonical))
        if not hmac.compare_digest(expected, authorization.signature):
            raise _Refused(
                403,
                invalid,
                "The request signature we calculated does not match the signature you provided. Check your "
                "AWS Secret Access Key and signing method. Consult the service documentation for details.",
            )

    def _accept(self, body: bytes) -> FakeSesEmail:
        try:
            data: Any = orjson.loads(body)
        except orjson.JSONDecodeError as exc:
            raise _bad_request("The request body is not valid JSON.") from exc
        if not isinstance(data, dict):
            raise _bad_request("The request body must be a JSON object.")
        content = data.get("Content")
        if (
            not isinstance(content, dict)
            or len([k for k in ("Simple", "Raw", "Template") if k in content]) != 1
        ):
            raise _bad_request("Content must have exactly one of Simple, Raw or Template.")
        destination = data.get("Destination") or {}
        if not isinstance(destination, dict):
            raise _bad_request("Destination must be an object.")
        to = _strings(destination.get("ToAddresses"), "Destination.ToAddresses")
        to += _strings(destination.get("CcAddresses"), "Destination.CcAddresses")
        to += _strings(destination.get("BccAddresses"), "Destination.BccAddresses")
        tags = self._tags(data.get("EmailTags"))
        configuration_set = data.get("ConfigurationSetName")
        if configuration_set is not None and not isinstance(configuration_set, str):
            raise _bad_request("ConfigurationSetName must be a string.")
        sender = data.get("FromEmailAddress")
        if sender is not None and (not isinstance(sender, str) or "@" not in sender):
            raise _bad_request("FromEmailAddress must be an email address.")
        email = FakeSesEmail(
            message_id="",
            from_address=sender or "",
            to=to,
            tags=tags,
            attempt=0,
            received_at=_now(),
            reply_to=_strings(data.get("ReplyToAddresses"), "ReplyToAddresses"),
            configuration_set=configuration_set,
        )
        if "Template" in content:
            raise _bad_request("This fake does not send templates.")
        if "Simple" in content:
            self._simple(email, content["Simple"])
        else:
            self._raw(email, content["Raw"])
        if not email.from_address:
            raise _bad_request("Missing required parameter FromEmailAddress.")
        if not email.to:
            raise _bad_request("Missing final '@domain'")
        key = tags.get("tidings_id") or _address(email.to[0]).lower()
        local = _local_part(email.to[0])
        refusal = _REFUSALS.get(local)
        if refusal is not None:
            raise _Refused(*refusal)
        email.attempt = self._stats.attempts.get(key, 0) + 1
        self._stats.attempts[key] = email.attempt
        if local == "tempfail-once" and email.attempt == 1:
            raise _Refused(*_ONCE)
        email.message_id = self._new_id()
        return email

    @staticmethod
    def _tags(value: object) -> dict[str, str]:
        if value is None:
            return {}
        if not isinstance(value, list):
            raise _bad_request("EmailTags must be a list.")
        tags = {}
        for tag in value:
            name = tag.get("Name") if isinstance(tag, dict) else None
            given = tag.get("Value") if isinstance(tag, dict) else None
            if not (
                isinstance(name, str)
                and _TAG.fullmatch(name)
                and isinstance(given, str)
                and _TAG.fullmatch(given)
            ):
                raise _bad_request(
                    f"Invalid tag {tag!r}: names and values are ASCII letters, digits, _ and -."
                )
            tags[name] = given
        return tags

    @staticmethod
    def _simple(email: FakeSesEmail, simple: object) -> None:
        if not isinstance(simple, dict):
            raise _bad_request("Content.Simple must be an object.")
        subject, body = simple.get("Subject"), simple.get("Body")
        if not isinstance(subject, dict) or not isinstance(subject.get("Data"), str):
            raise _bad_request("Content.Simple.Subject.Data is required.")
        if not isinstance(body, dict) or not ("Text" in body or "Html" in body):
            raise _bad_request("Content.Simple.Body needs Text or Html.")
        parts: dict[str, str | None] = {}
        for name in ("Text", "Html"):
            part = body.get(name)
            if part is not None and (not isinstance(part, dict) or not isinstance(part.get("Data"), str)):
                raise _bad_request(f"Content.Simple.Body.{name}.Data is required.")
            parts[name] = part["Data"] if part is not None else None
        headers = simple.get("Headers") or []
        if not isinstance(headers, list) or len(headers) > 15:
            raise _bad_request("Content.Simple.Headers is a list of at most 15 headers.")
        for header in headers:
            header_name = header.get("Name") if isinstance(header, dict) else None
            value = header.get("Value") if isinstance(header, dict) else None
            if not (
                isinstance(header_name, str)
                and _HEADER_NAME.fullmatch(header_name)
                and isinstance(value, str)
                and _HEADER_VALUE.fullmatch(value)
                and len(header_name) + len(value) <= 996
            ):
                raise _bad_request(f"Invalid header {header!r}.")
        email.subject = subject["Data"]
        email.text, email.html = parts["Text"], parts["Html"]
        email.headers = [{"Name": h["Name"], "Value": h["Value"]} for h in headers]

    @staticmethod
    def _raw(email: FakeSesEmail, raw: object) -> None:
        data = raw.get("Data") if isinstance(raw, dict) else None
        if not isinstance(data, str):
            raise _bad_request("Content.Raw.Data is required.")
        try:
            decoded = base64.b64decode(data, validate=True)
        except (binascii.Error, ValueError) as exc:
            raise _bad_request("Content.Raw.Data is not base64.") from exc
        email.raw = decoded
        mime = email.mime
        assert mime is not None
        if not mime.get("From") and not email.from_address:
            raise _bad_request("The raw message has no From header.")
        email.from_address = email.from_address or str(mime["From"])
        if not email.to:
            fields = [str(v) for name in ("To", "Cc", "Bcc") for v in mime.get_all(name, [])]
            email.to = [address for _, address in getaddresses(fields) if address]
        subject = mime.get("Subject")
        email.subject = str(subject) if subject is not None else None
        text = mime.get_body(("plain",))
        html = mime.get_body(("html",))
        email.text = text.get_content() if isinstance(text, EmailMessage) else None
        email.html = html.get_content() if isinstance(html, EmailMessage) else None

    def _new_id(self) -> str:
        millis = int(_now().timestamp() * 1000)
        if self.config.seed is None:
            middle = str(uuid.uuid4())
        else:
            middle = str(uuid.UUID(int=self._rng.getrandbits(128)))
        return f"{millis:016x}-{middle}-000000"


def _sns_answer(action: str, result: str) -> web.Response:
    body = (
        f'<{action}Response xmlns="http://sns.amazonaws.com/doc/2010-03-31/">{result}'
        f"<ResponseMetadata><RequestId>{uuid.uuid4()}</RequestId></ResponseMetadata></{action}Response>"
    )
    return web.Response(text=body, content_type="text/xml")


def _sns_error(status: int, code: str, message: str) -> web.Response:
    body = (
        '<ErrorResponse xmlns="http://sns.amazonaws.com/doc/2010-03-31/"><Error><Type>Sender</Type>'
        f"<Code>{code}</Code><Message>{message}</Message></Error>"
        f"<RequestId>{uuid.uuid4()}</RequestId></ErrorResponse>"
    )
    return web.Response(status=status, text=body, content_type="text/xml")


# --- command line ---------------------------------------------------------------------------------


def _parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = cli_parser("tidings.testing.fake_ses", "Run a fake Amazon SES (API v2) and SNS topic over HTTP.")
    parser.add_argument("--access-key-id", default=DEFAULT_ACCESS_KEY_ID)
    parser.add_argument("--secret-access-key", default=DEFAULT_SECRET_ACCESS_KEY)
    parser.add_argument("--session-token", default=None)
    parser.add_argument("--region", default=DEFAULT_REGION)
    parser.add_argument("--topic-arn", default=None, help=f"default {DEFAULT_TOPIC_ARN} (in --region)")
    parser.add_argument("--webhook-url", default=None, help="subscribe this URL to the topic at start")
    parser.add_argument("--event-delay-ms", type=float, default=30.0)
    parser.add_argument(
        "--notifications", action="store_true", help="feedback notifications, not event publishing"
    )
    parser.add_argument("--signature-version", choices=["1", "2"], default="2")
    parser.add_argument("--seed", type=int, default=None)
    return parser.parse_args(argv)


def main(argv: Sequence[str] | None = None) -> None:
    """Run the fake SES server until SIGTERM or SIGINT."""
    args = _parse_args(argv)
    config = FakeSesConfig(
        access_key_id=args.access_key_id,
        secret_access_key=args.secret_access_key,
        session_token=args.session_token,
        region=args.region,
        topic_arn=args.topic_arn or f"arn:aws:sns:{args.region}:{ACCOUNT_ID}:tidings-ses-events",
        webhook_url=args.webhook_url,
        event_delay_ms=args.event_delay_ms,
        events="notifications" if args.notifications else "events",
        signature_version=args.signature_version,
        seed=args.seed,
    )
    run_until_signalled(FakeSesServer(config), args.host, args.port)


if __name__ == "__main__":
    main()
