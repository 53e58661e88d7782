"""The ``ses`` provider: email through Amazon SES (API v2), events back through Amazon SNS.

Sending is ``POST {endpoint}/v2/email/outbound-emails`` (``endpoint`` defaults to
``https://email.<region>.amazonaws.com``), signed with AWS Signature Version 4 for the service
``ses`` (``providers/sigv4.py``; with ``session_token`` for temporary credentials). The JSON body
has ``FromEmailAddress`` (the message's sender, else ``from``), ``Destination.ToAddresses``, our
message id as the message tag ``tidings_id`` (``EmailTags``), the ``ConfigurationSetName`` when
one is set, and the content in one of two forms:

* ``Content.Simple`` (``Subject``, ``Body.Text``/``Body.Html``, all ``Charset`` ``UTF-8``, the
  extra headers as ``Headers``, ``ReplyToAddresses``) for a message without attachments whose
  extra headers SES takes that way (at most 15, printable ASCII);
* ``Content.Raw.Data``: the whole MIME message (``providers/mime.py``), base64, otherwise.

Addresses go out as SES wants them: a display name that is not ASCII RFC 2047-encoded, a domain
that is not ASCII in Punycode. SES answers ``200 {"MessageId": …}``; that id is the provider's.

Refusals (SES puts the code in the ``x-amzn-ErrorType`` header, or ``__type`` in the body, and the
text in ``message``): throttling (429 ``TooManyRequestsException``, ``LimitExceededException``,
``Throttling``), 5xx, timeouts and connection errors are temporary. So are the refusals an
operator fixes without the message changing, which must not fail every message meanwhile:
credentials or signature refused (403 ``InvalidSignatureException``,
``UnrecognizedClientException``, ``ExpiredTokenException``…), ``SendingPausedException`` (sending
paused for the account or the configuration set) and ``NotFoundException`` (no such configuration
set); they are logged as errors. Anything else is permanent, with SES's code:
``MessageRejected`` (content refused, or in the sandbox an unverified recipient),
``MailFromDomainNotVerifiedException`` (it concerns the sender, which a message may set itself),
``AccountSuspendedException`` (SES calls it a permanent restriction: retrying for hours would only
delay the failure), ``BadRequestException``.

Events: SES publishes them to an SNS topic (a configuration set's event destination, with the
``tidings_id`` tag, or an identity's feedback notifications, without tags) and SNS posts them to
``/webhooks/ses/{name}/sns`` (``providers/sns.py`` checks SNS's signature; with ``sns_topic_arn``
set, only that topic is taken, else any topic of the region, which anyone with an AWS account can
create: set it). A ``SubscriptionConfirmation`` is confirmed by fetching its ``SubscribeURL``
(only from SNS's own host) and answered 200; an ``UnsubscribeConfirmation`` is answered 200. A
``Notification`` carries one SES event in ``Message``, as event publishing writes it
(``eventType``) or as feedback notifications do (``notificationType``); it is about the message
with the provider id ``mail.messageId`` (and our ``tidings_id`` tag, when present). SES's words and
ours:

* ``Delivery`` → ``delivered``;
* ``Bounce`` ``Permanent`` (and ``Undetermined``) → ``failed``, code
  ``bounce_<type>_<subtype>`` (``bounce_permanent_no_email``…), the first recipient's diagnostic as
  the error message; ``Bounce`` ``Transient`` → recorded, no change (SES keeps trying);
* ``Reject`` (a virus) → ``failed``, code ``reject``; ``Rendering Failure`` → ``failed``, code
  ``rendering_failure``;
* ``Send`` and ``DeliveryDelay`` → recorded, no change;
* ``Complaint`` → a ``complained`` report, ``Open`` → ``opened``, ``Click`` → ``clicked`` (the
  link in its detail), ``Subscription`` with ``unsubscribeAll`` → ``unsubscribed``: none of them
  change the status.

Any other event (and SES's set-up test messages) is answered 200 and recorded nothing.

Checking SNS's signature needs its certificate, fetched over the network, and ``verify_webhook``
cannot wait for it: it checks everything else (and the signature too once the certificate is at
hand, as it is for every message after the first signed with it); ``parse_webhook`` fetches the
certificate and checks the signature before it reads anything, so a webhook log replay checks it
again. A certificate that cannot be fetched now, or a subscription SNS does not confirm, is
answered 503 so that SNS, which retries only server errors, posts the message again.
``webhook_max_bytes`` is 256 KiB by default for this kind: the largest SNS message.
"""

from __future__ import annotations

import base64
import logging
import re
from collections.abc import Mapping
from datetime import datetime
from email.utils import formataddr, parseaddr
from typing import Any, ClassVar

import aiohttp
import orjson
from pydantic import Field, SecretStr, field_validator

from tidings import ids
from tidings.clock import to_db, utcnow
from tidings.config import ProviderSettings
from tidings.domain.content import RESERVED_HEADERS, Channel
from tidings.domain.failures import FailureReason
from tidings.domain.reports import CLICKED, COMPLAINED, OPENED, UNSUBSCRIBED, ProviderReport, Report
from tidings.domain.status import Status
from tidings.errors import (
    PermanentProviderError,
    ProviderError,
    TemporaryProviderError,
    TidingsError,
    WebhookRejected,
)
from tidings.providers import sigv4
from tidings.providers.base import OutboundMessage, ProviderContext, SendResult, WebhookRequest, WebhookResult
from tidings.providers.http import Answer, HttpProvider, HttpRequest
from tidings.providers.mime import build_mime
from tidings.providers.sns import (
    MAX_CERTIFICATE_BYTES,
    NOTIFICATION,
    SUBSCRIPTION_CONFIRMATION,
    CertificateUnavailable,
    SnsMessage,
    SnsVerifier,
)

log = logging.getLogger(__name__)

JSON = "application/json"
SEND_PATH = "/v2/email/outbound-emails"
TAG = "tidings_id"
"""The message tag that carries our message id."""
CHARSET = "UTF-8"
MAX_SIMPLE_HEADERS = 15

THROTTLING = frozenset(
    {
        "TooManyRequestsException",
        "LimitExceededException",
        "Throttling",
        "ThrottlingException",
        "RequestLimitExceeded",
    }
)
CREDENTIALS = frozenset(
    {
        "InvalidSignatureException",
        "SignatureDoesNotMatch",
        "IncompleteSignature",
        "IncompleteSignatureException",
        "UnrecognizedClientException",
        "InvalidClientTokenId",
        "ExpiredToken",
        "ExpiredTokenException",
        "RequestExpired",
        "AccessDeniedException",
        "MissingAuthenticationToken",
        "MissingAuthenticationTokenException",
    }
)
"""Refusals of the credentials or the signature: the operator's to fix."""
OPERATOR = frozenset({"SendingPausedException", "NotFoundException"})
"""Refusals about the account's set-up (paused sending, a missing configuration set)."""

FAILURE_REASONS: Mapping[str, FailureReason] = {
    "MessageRejected": FailureReason.REJECTED_CONTENT,
    "BadRequestException": FailureReason.REJECTED_CONTENT,
    "MailFromDomainNotVerifiedException": FailureReason.BLOCKED,
    "AccountSuspendedException": FailureReason.BLOCKED,
    "SendingPausedException": FailureReason.BLOCKED,
    **dict.fromkeys(THROTTLING, FailureReason.RATE_LIMITED),
    **dict.fromkeys(CREDENTIALS, FailureReason.PROVIDER_UNAVAILABLE),
    "NotFoundException": FailureReason.PROVIDER_UNAVAILABLE,
    "InternalFailure": FailureReason.PROVIDER_UNAVAILABLE,
    "ServiceUnavailable": FailureReason.PROVIDER_UNAVAILABLE,
    "bounce_permanent_general": FailureReason.INVALID_NUMBER,
    "bounce_permanent_no_email": FailureReason.INVALID_NUMBER,
    "bounce_permanent_suppressed": FailureReason.BLOCKED,
    "bounce_permanent_on_account_suppression_list": FailureReason.BLOCKED,
    "bounce_undetermined_undetermined": FailureReason.UNKNOWN,
    "reject": FailureReason.REJECTED_CONTENT,
    "rendering_failure": FailureReason.REJECTED_CONTENT,
}
"""SES's error codes, and ours for its events, in shared words (``invalid_number`` is "the address
does not exist" on the email channel)."""

_PRINTABLE = re.compile(r"[\x21-\x7e]+")
_PRINTABLE_VALUE = re.compile(r"[\x20-\x7e]*")
_REGION = r"^[a-z]{2}(-[a-z]+)+-[0-9]+$"


class SesSettings(ProviderSettings):
    kind: str = "ses"
    region: str = Field(pattern=_REGION)
    """The AWS region of the SES account (``eu-west-1``); SNS notifications must come from it too."""
    access_key_id: str = Field(min_length=1)
    secret_access_key: SecretStr = Field(min_length=1)
    session_token: SecretStr | None = None
    """For temporary credentials (an assumed role)."""
    from_: str = Field(alias="from", min_length=3)
    """The sender, ``address`` or ``Name <address>``, of a verified identity."""
    configuration_set: str | None = Field(default=None, min_length=1)
    """The configuration set whose event destination publishes to SNS."""
    endpoint: str | None = None
    """The SES API's base URL; default ``https://email.<region>.amazonaws.com``."""
    sns_topic_arn: str | None = Field(
        default=None, pattern=r"^arn:aws[a-z-]*:sns:[a-z0-9-]+:[0-9]{12}:[\w.-]+$"
    )
    """Only notifications from this topic are taken (set it: without it, any topic of the region)."""
    sns_certificate_origin: str | None = None
    """Tests only: take SNS certificates and subscription URLs from this origin
    (``http://127.0.0.1:PORT``) instead of SNS's own host."""
    webhook_max_bytes: int = Field(default=262_144, ge=256)
    """SNS messages reach 256 KiB (an SES event carries the email's headers)."""

    @field_validator("endpoint", "sns_certificate_origin")
    @classmethod
    def _http_url(cls, value: str | None) -> str | None:
        if value is not None and not re.match(r"^https?://[^/?#]+", value):
            raise ValueError(f"{value!r} is not an http(s) URL")
        return value.rstrip("/") if value is not None else None

    @property
    def base_url(self) -> str:
        if self.endpoint is not None:
            return self.endpoint
        suffix = ".cn" if self.region.startswith("cn-") else ""
        return f"https://email.{self.region}.amazonaws.com{suffix}"


class SubscriptionNotConfirmed(TidingsError):
    """The SNS subscription could not be confirmed now; SNS sends the confirmation again."""

    code = "sns_subscription_not_confirmed"
    http_status = 503


def _ascii_domain(address: str) -> str:
    local, at, domain = address.rpartition("@")
    if not at or domain.isascii():
        return address
    try:
        return f"{local}@{domain.encode('idna').decode('ascii')}"
    except UnicodeError:
        return address


def ses_address(value: str) -> str:
    """``value`` (``address`` or ``Name <address>``) as SES takes it: the name RFC 2047-encoded
    when it is not ASCII, the domain in Punycode."""
    name, address = parseaddr(value)
    if not address:
        return value
    address = _ascii_domain(address)
    return formataddr((name, address), charset="utf-8") if name else address


def _simple_headers(headers: Mapping[str, str]) -> list[dict[str, str]] | None:
    """The extra headers as SES's ``Simple.Headers``; ``None`` when SES would not take them so
    (the message then goes as MIME)."""
    kept = [(name, value) for name, value in headers.items() if name.lower() not in RESERVED_HEADERS]
    if len(kept) > MAX_SIMPLE_HEADERS:
        return None
    for name, value in kept:
        if (
            len(name) > 126
            or ":" in name
            or not _PRINTABLE.fullmatch(name)
            or not _PRINTABLE_VALUE.fullmatch(value)
            or len(value) > 995
            or len(name) + len(value) > 996
        ):
            return None
    return [{"Name": name, "Value": value} for name, value in kept]


def _snake(word: str) -> str:
    """``OnAccountSuppressionList`` → ``on_account_suppression_list``."""
    return re.sub(r"[^a-z0-9_]", "", re.sub(r"(?<=[a-z0-9])(?=[A-Z])", "_", word).lower())


def _when(value: object) -> datetime:
    """An event's ISO 8601 time as naive UTC; now when it has none we can read."""
    if isinstance(value, str):
        try:
            return to_db(datetime.fromisoformat(value))
        except (ValueError, OverflowError):
            pass
    return utcnow()


def _dict(value: object) -> dict[str, Any]:
    return value if isinstance(value, dict) else {}


class SesProvider(HttpProvider):
    kind = "ses"
    settings_model = SesSettings
    channels = frozenset({Channel.EMAIL})
    service = "Amazon SES"
    webhook_media_types: ClassVar[dict[str, frozenset[str]]] = {
        "sns": frozenset({"text/plain", JSON}),
    }
    failure_reasons = FAILURE_REASONS

    settings: SesSettings

    def __init__(self, name: str, settings: ProviderSettings, context: ProviderContext) -> None:
        super().__init__(name, settings, context)
        self._send_url = self.settings.base_url + SEND_PATH
        self.sns = SnsVerifier(
            self.settings.region,
            self._fetch_certificate,
            topic_arn=self.settings.sns_topic_arn,
            certificate_origin=self.settings.sns_certificate_origin,
        )

    async def start(self) -> None:
        await super().start()
        if self.settings.sns_topic_arn is None:
            log.warning(
                "providers.%s.sns_topic_arn is not set: SES events are taken from any SNS topic in %s",
                self.name,
                self.settings.region,
                extra={"action": "start", "provider": self.name},
            )

    # -- sending ---------------------------------------------------------------------------------

    def payload(self, message: OutboundMessage) -> dict[str, Any]:
        """The SendEmail request body for ``message``."""
        email = message.email
        sender = message.sender or self.settings.from_
        payload: dict[str, Any] = {
            "FromEmailAddress": ses_address(sender),
            "Destination": {"ToAddresses": [ses_address(message.to)]},
            "EmailTags": [{"Name": TAG, "Value": message.id}],
        }
        headers = _simple_headers(email.headers)
        if email.attachments or headers is None:
            mime = build_mime(message, sender)
            payload["Content"] = {"Raw": {"Data": base64.b64encode(mime.as_bytes()).decode("ascii")}}
        else:
            text = email.text if email.text is not None or email.html is not None else ""
            body: dict[str, Any] = {}
            if text is not None:
                body["Text"] = {"Data": text, "Charset": CHARSET}
            if email.html is not None:
                body["Html"] = {"Data": email.html, "Charset": CHARSET}
            simple: dict[str, Any] = {"Subject": {"Data": email.subject, "Charset": CHARSET}, "Body": body}
            if headers:
                simple["Headers"] = headers
            payload["Content"] = {"Simple": simple}
            if email.reply_to:
                payload["ReplyToAddresses"] = [ses_address(email.reply_to)]
        if self.settings.configuration_set is not None:
            payload["ConfigurationSetName"] = self.settings.configuration_set
        return payload

    def build_send(self, message: OutboundMessage) -> HttpRequest:
        payload = self.payload(message)
        # HttpProvider.call sends json= as orjson.dumps(payload): the very bytes signed here.
        body = orjson.dumps(payload)
        settings = self.settings
        headers = sigv4.sign(
            "POST",
            self._send_url,
            {"Content-Type": JSON},
            body,
            service="ses",
            region=settings.region,
            access_key=settings.access_key_id,
            secret_key=settings.secret_access_key.get_secret_value(),
            session_token=settings.session_token.get_secret_value() if settings.session_token else None,
        )
        return HttpRequest("POST", self._send_url, headers=headers, json=payload)

    def parse_sent(self, answer: Answer) -> SendResult:
        message_id = answer.data.get("MessageId")
        return SendResult(
            provider_message_ids=(message_id,) if isinstance(message_id, str) and message_id else (),
            raw=answer.data,
        )

    def error_details(self, answer: Answer) -> tuple[str, str]:
        data = answer.data
        code = (answer.headers.get("x-amzn-ErrorType") or "").split(":", 1)[0].strip()
        if not code:
            given = data.get("__type") or data.get("code") or data.get("Code")
            code = str(given).rsplit("#", 1)[-1].split(":", 1)[0].strip() if given else ""
        text = data.get("message") or data.get("Message") or data.get("body") or f"HTTP {answer.status}"
        return code or f"http_{answer.status}", str(text)

    def send_error(self, answer: Answer) -> ProviderError:
        code, text = self.error_details(answer)
        if code in THROTTLING or answer.status == 429 or answer.status >= 500:
            return TemporaryProviderError(text, code=code, raw=answer.data, retry_after=answer.retry_after)
        if code in CREDENTIALS or code in OPERATOR or answer.status in (401, 403):
            log.error(
                "Amazon SES refused provider %s's request (%s: %s): check providers.%s (credentials, "
                "region, configuration_set) and the account's sending status",
                self.name,
                code,
                text,
                self.name,
                extra={"action": "send", "provider": self.name, "error_code": code},
            )
            return TemporaryProviderError(
                f"Amazon SES refused the request: {text}", code=code, raw=answer.data
            )
        return PermanentProviderError(text, code=code, raw=answer.data)

    # -- webhooks --------------------------------------------------------------------------------

    def verify_webhook(self, event: str, request: WebhookRequest) -> None:
        """Check where the message's certificate is, its topic and, when the certificate is
        already at hand, its signature. A certificate not yet fetched is fetched (and the signature
        checked) by :meth:`parse_webhook`, which this synchronous check cannot wait for."""
        self.sns.verify_cached(self.sns.message(request))

    async def parse_webhook(self, event: str, request: WebhookRequest) -> WebhookResult:
        if event != "sns":
            return await super().parse_webhook(event, request)
        message = self.sns.message(request)
        await self.sns.verify(message)
        if message.type == SUBSCRIPTION_CONFIRMATION:
            await self._confirm(message)
            return WebhookResult()
        if message.type != NOTIFICATION:
            log.info(
                "SNS says %s for topic %s",
                message.type,
                message.topic_arn,
                extra={"action": "webhook", "provider": self.name},
            )
            return WebhookResult()
        report = self.report(message)
        return WebhookResult(reports=[report] if report is not None else [])

    async def _confirm(self, message: SnsMessage) -> None:
        url = message.subscribe_url
        assert url is not None  # parse_message requires it of a confirmation
        try:
            answer = await self.call(HttpRequest("GET", url, what="SNS (SubscribeURL)", auth=False))
        except TemporaryProviderError as exc:
            raise SubscriptionNotConfirmed(f"the SNS subscription could not be confirmed: {exc}") from exc
        if answer.status != 200:
            raise SubscriptionNotConfirmed(
                f"SNS answered HTTP {answer.status} to the subscription confirmation"
            )
        log.info(
            "confirmed the SNS subscription to topic %s",
            message.topic_arn,
            extra={"action": "webhook", "provider": self.name},
        )

    async def _fetch_certificate(self, url: str) -> tuple[int, bytes]:
        session = self._session
        if session is None:
            raise RuntimeError(f"provider {self.name} is not started")
        timeout = aiohttp.ClientTimeout(total=self.settings.timeout_seconds)
        try:
            async with session.get(url, timeout=timeout, allow_redirects=False) as response:
                body = bytearray()
                async for chunk in response.content.iter_chunked(16_384):
                    body += chunk
                    if len(body) > MAX_CERTIFICATE_BYTES:
                        return 413, b""
                return response.status, bytes(body)
        except (TimeoutError, aiohttp.ClientError) as exc:
            raise CertificateUnavailable(
                f"the SNS signing certificate could not be fetched: {exc!r}"
            ) from exc

    # -- events ----------------------------------------------------------------------------------

    def report(self, message: SnsMessage) -> ProviderReport | None:
        """The report an SNS notification's SES event makes; ``None`` when it makes none."""
        try:
            event: Any = orjson.loads(message.message)
        except orjson.JSONDecodeError:
            # SES's "Successfully validated SNS topic…" when an event destination is set up.
            log.info(
                "SNS notification without an SES event: %.200s",
                message.message,
                extra={"action": "webhook", "provider": self.name},
            )
            return None
        if not isinstance(event, dict):
            raise WebhookRejected("the SNS notification's Message is not an SES event object")
        kind = event.get("eventType") or event.get("notificationType")
        mail = _dict(event.get("mail"))
        provider_id = mail.get("messageId")
        tag = _dict(mail.get("tags")).get(TAG)
        ours = tag[0] if isinstance(tag, list) and tag else tag
        built = self._event(str(kind), event) if isinstance(kind, str) else None
        if built is None:
            log.info(
                "SES event %r recorded nothing",
                kind,
                extra={"action": "webhook", "provider": self.name},
            )
            return None
        report, event_name = built
        message_id = ours if isinstance(ours, str) and ids.is_id(ours) else None
        if message_id is None and not (isinstance(provider_id, str) and provider_id):
            raise WebhookRejected("an SES event needs mail.messageId (or the tidings_id tag)")
        return ProviderReport(
            report=report,
            message_id=message_id,
            provider_message_id=provider_id if isinstance(provider_id, str) and provider_id else None,
            event=event_name,
        )

    def _event(self, kind: str, event: dict[str, Any]) -> tuple[Report, str] | None:
        """SES's event ``kind`` as a report and its event name; ``None`` for one we do not read."""
        if kind == "Delivery":
            delivery = _dict(event.get("delivery"))
            return self._report(Status.DELIVERED, "Delivery", delivery, event), "report"
        if kind == "Bounce":
            return self._bounce(event), "report"
        if kind == "Reject":
            reject = _dict(event.get("reject"))
            reason = str(reject.get("reason") or "rejected by SES")
            return self._report(Status.FAILED, "Reject", reject, event, "reject", reason), "report"
        if kind == "Rendering Failure":
            failure = _dict(event.get("failure"))
            text = str(failure.get("errorMessage") or "the template could not be rendered")
            return (
                self._report(Status.FAILED, "Rendering Failure", failure, event, "rendering_failure", text),
                "report",
            )
        if kind == "Send":
            return self._report(None, "Send", _dict(event.get("send")), event), "report"
        if kind == "DeliveryDelay":
            delay = _dict(event.get("deliveryDelay"))
            word = "DeliveryDelay/" + str(delay.get("delayType") or "Undetermined")
            return self._report(None, word, delay, event), "report"
        if kind == "Complaint":
            complaint = _dict(event.get("complaint"))
            feedback = complaint.get("complaintFeedbackType")
            word = f"Complaint/{feedback}" if isinstance(feedback, str) and feedback else "Complaint"
            return self._report(None, word, complaint, event), COMPLAINED
        if kind == "Open":
            return self._report(None, "Open", _dict(event.get("open")), event), OPENED
        if kind == "Click":
            return self._report(None, "Click", _dict(event.get("click")), event), CLICKED
        if kind == "Subscription":
            subscription = _dict(event.get("subscription"))
            if _dict(subscription.get("newTopicPreferences")).get("unsubscribeAll") is True:
                return self._report(None, "Subscription/UnsubscribeAll", subscription, event), UNSUBSCRIBED
            return self._report(None, "Subscription", subscription, event), "report"
        return None

    def _bounce(self, event: dict[str, Any]) -> Report:
        bounce = _dict(event.get("bounce"))
        kind = str(bounce.get("bounceType") or "Undetermined")
        sub = str(bounce.get("bounceSubType") or "Undetermined")
        word = f"Bounce/{kind}/{sub}"
        if kind == "Transient":
            return self._report(None, word, bounce, event)
        recipients = bounce.get("bouncedRecipients")
        first = _dict(recipients[0]) if isinstance(recipients, list) and recipients else {}
        text = first.get("diagnosticCode") or first.get("status") or f"{kind} bounce ({sub})"
        return self._report(
            Status.FAILED, word, bounce, event, f"bounce_{_snake(kind)}_{_snake(sub)}", str(text)
        )

    def _report(
        self,
        status: Status | None,
        word: str,
        part: dict[str, Any],
        event: dict[str, Any],
        error_code: str | None = None,
        error_message: str | None = None,
    ) -> Report:
        return Report(
            status=status,
            source=f"provider:{self.name}",
            occurred_at=_when(part.get("timestamp")),
            provider_status=word,
            error_code=error_code if status is Status.FAILED else None,
            error_message=error_message if status is Status.FAILED else None,
            detail=event,
        )


__all__ = ["SesProvider", "SesSettings", "SubscriptionNotConfirmed", "ses_address"]
