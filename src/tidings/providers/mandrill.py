"""The ``mandrill`` provider: Mailchimp Transactional (Mandrill), for email.

Sending is ``POST {base_url}/messages/send`` with a JSON body: the API ``key`` and a ``message``
with ``subject``, ``html`` and ``text``, ``from_email`` and ``from_name`` (the message's sender,
else the ``from`` setting), one ``to`` recipient, ``headers`` (the email's own, and ``Reply-To``),
``attachments`` (``type``, ``name``, base64 ``content``), ``tags`` and ``subaccount`` from the
settings, and ``metadata`` carrying our message id under :data:`METADATA_KEY`, which Mandrill
repeats in every webhook event about the message. Mandrill answers 200 and one result per
recipient: ``{"email", "status", "reject_reason", "queued_reason", "_id"}``; ``_id`` is kept as
the provider's id.

Mandrill's words and ours, in the answer: ``sent``, ``queued``, ``scheduled`` → ``sent`` (the
word is kept as the provider status); ``rejected`` → refused for good, its ``reject_reason``
(``hard-bounce``, ``soft-bounce``, ``spam``, ``unsub``, ``custom``, ``invalid-sender``,
``invalid``, ``test-mode-limit``, ``unsigned``, ``rule``) the error code; ``invalid`` (not an
address Mandrill takes) → refused for good, code ``invalid``.

Errors are ``{"status": "error", "code", "name", "message"}``, usually with HTTP 500 whatever the
cause, so they are sorted by ``name``: ``ValidationError`` (the request itself is wrong, like a
From that is not an address) is permanent; ``GeneralError`` and ``ServiceUnavailable`` are
temporary, and so are 429, timeouts and connection errors; ``Invalid_Key``, ``PaymentRequired``
and ``Unknown_Subaccount`` are temporary too: the operator must fix the account or the settings,
and the messages must not be failed for it. Any other name is temporary on 429 and 5xx and
permanent otherwise. Mandrill has no idempotency key: a send whose answer is lost (a timeout) may
go out twice when it is retried.

Webhooks: one event, ``events``, at ``/webhooks/mandrill/{name}/events`` (register that URL in
Mandrill's webhook settings, with the events wanted). Mandrill posts a form with one field,
``mandrill_events``: a JSON array of up to 1000 events, each ``{"event", "_id", "ts", "msg"}``
(and ``url`` for a click). Each post is signed with ``X-Mandrill-Signature``: base64 HMAC-SHA1,
keyed with the webhook's key, over the URL as registered followed by each form field's name and
value, sorted by name. A post that carries no events (Mandrill's check of a new URL) is answered
200 unsigned; Mandrill's ``HEAD`` check is answered by the webhook route itself.

Events and our reports (the message is found by our id in ``msg.metadata``, else by ``_id``;
``ts`` is when it happened): ``send`` (the receiving server took it), ``deferral`` and
``soft_bounce`` (Mandrill tries again) are recorded and change nothing: the answer to the send
already made the message ``sent``; ``hard_bounce`` → ``failed`` (code ``hard_bounce``, text from
``bounce_description`` and ``diag``); ``reject`` → ``failed`` (code ``reject``); ``spam`` →
``complained``, ``unsub`` → ``unsubscribed``, ``open`` → ``opened``, ``click`` → ``clicked``
(the link in the detail), all with no status. Sync events (allow- and deny-list changes) and
inbound mail are not about a message we sent and are skipped.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import logging
from collections.abc import Mapping, Sequence
from datetime import UTC, datetime
from email.utils import parseaddr
from typing import Any, ClassVar
from urllib.parse import parse_qsl

import orjson
from pydantic import Field, SecretStr, field_validator, model_validator

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
    WebhookRejected,
    WebhookUnauthorized,
)
from tidings.providers.base import (
    OutboundMessage,
    ProviderContext,
    SendResult,
    WebhookRequest,
    WebhookResult,
    signatures_match,
)
from tidings.providers.http import Answer, HttpProvider, HttpRequest

__all__ = ["METADATA_KEY", "MandrillProvider", "MandrillSettings", "signature"]

log = logging.getLogger(__name__)

SIGNATURE_HEADER = "X-Mandrill-Signature"
FORM = "application/x-www-form-urlencoded"
EVENTS_FIELD = "mandrill_events"
METADATA_KEY = "tidings_message_id"
"""The ``metadata`` key our message id travels under."""

WEBHOOK_MAX_BYTES = 10_485_760
"""The default largest webhook body: a batch of 1000 events, URL-encoded, with room to spare."""

SENT_WORDS = frozenset({"sent", "queued", "scheduled"})
"""A recipient's status in the answer that means Mandrill took the message."""

TEMPORARY_ERRORS = frozenset({"GeneralError", "ServiceUnavailable"})
"""Error names that mean "try again later"."""
OPERATOR_ERRORS = frozenset({"Invalid_Key", "PaymentRequired", "Unknown_Subaccount"})
"""Error names only the operator can fix: temporary, so that the messages wait."""
PERMANENT_ERRORS = frozenset({"ValidationError"})

EVENTS: dict[str, tuple[Status | None, str]] = {
    "send": (None, "report"),
    "deferral": (None, "report"),
    "soft_bounce": (None, "report"),
    "hard_bounce": (Status.FAILED, "report"),
    "reject": (Status.FAILED, "report"),
    "spam": (None, COMPLAINED),
    "unsub": (None, UNSUBSCRIBED),
    "open": (None, OPENED),
    "click": (None, CLICKED),
}
"""Mandrill's message events: the status they report and the event they are in our history; an
event not listed is recorded as a report that changes nothing."""

SKIPPED_EVENTS = frozenset({"whitelist", "blacklist", "inbound"})
"""Events that are not about a message we sent."""

FAILURE_REASONS: Mapping[str, FailureReason] = {
    # reject_reason in an answer
    "hard-bounce": FailureReason.INVALID_NUMBER,  # the address bounced before
    "invalid": FailureReason.INVALID_NUMBER,  # not an address (also a recipient status)
    "soft-bounce": FailureReason.UNREACHABLE,  # bounced softly too often lately
    "spam": FailureReason.OPTED_OUT,  # the recipient marked earlier mail as spam
    "unsub": FailureReason.OPTED_OUT,  # the recipient unsubscribed
    "custom": FailureReason.BLOCKED,  # on the account's own deny list
    "invalid-sender": FailureReason.BLOCKED,  # the From is not one Mandrill sends for
    "unsigned": FailureReason.BLOCKED,  # the sending domain is not verified
    "rule": FailureReason.BLOCKED,  # a rule of the account refused it
    "test-mode-limit": FailureReason.BLOCKED,  # a test key's limit
    # webhook events
    "hard_bounce": FailureReason.INVALID_NUMBER,
    "reject": FailureReason.BLOCKED,
    # error names
    "ValidationError": FailureReason.REJECTED_CONTENT,
    "Invalid_Key": FailureReason.PROVIDER_UNAVAILABLE,
    "Unknown_Subaccount": FailureReason.PROVIDER_UNAVAILABLE,
    "GeneralError": FailureReason.PROVIDER_UNAVAILABLE,
    "ServiceUnavailable": FailureReason.PROVIDER_UNAVAILABLE,
    "PaymentRequired": FailureReason.INSUFFICIENT_FUNDS,
    "http_429": FailureReason.RATE_LIMITED,
}
"""Mandrill's codes in shared words."""

BOUNCE_REASONS: Mapping[str, FailureReason] = {
    "bad_mailbox": FailureReason.INVALID_NUMBER,
    "invalid_domain": FailureReason.INVALID_NUMBER,
    "mailbox_full": FailureReason.UNREACHABLE,
    "spam_related": FailureReason.REJECTED_CONTENT,
    "policy_related": FailureReason.BLOCKED,
}
"""A hard bounce's ``bounce_description``, when it says more than the code."""

_MSG_DETAIL = ("email", "state", "bounce_description", "diag", "bgtools_code", "smtp_events", "subaccount")
"""What of an event's ``msg`` is kept in a report's detail (not the subject, opens or clicks)."""


class MandrillSettings(ProviderSettings):
    kind: str = "mandrill"
    api_key: SecretStr = Field(min_length=1)
    webhook_key: SecretStr | None = Field(default=None, min_length=1)
    """The webhook's key, shown by Mandrill once the webhook is added: it signs the events."""
    webhook_unauthenticated: bool = False
    """Take events without a signature (say so only when something in front of tidings checks them)."""
    from_: str = Field(alias="from", min_length=3)
    """The From of messages that do not give one: ``Name <address>`` or an address."""
    subaccount: str | None = Field(default=None, min_length=1)
    base_url: str = "https://mandrillapp.com/api/1.0"
    tags: list[str] = Field(default_factory=list)
    """Tags put on every message (for Mandrill's statistics)."""
    webhook_max_bytes: int = Field(default=WEBHOOK_MAX_BYTES, ge=256)
    """Mandrill posts up to 1000 events at once: far more than other providers' webhooks."""

    @field_validator("from_")
    @classmethod
    def _address(cls, value: str) -> str:
        _, address = parseaddr(value)
        if "@" not in address:
            raise ValueError(
                "must be an address, or a name and an address: `Clinic <noreply@clinic.example>`"
            )
        return value.strip()

    @field_validator("tags")
    @classmethod
    def _tags(cls, value: list[str]) -> list[str]:
        for tag in value:
            if not tag or tag.startswith("_"):
                raise ValueError(f"tag {tag!r}: a tag is not empty and does not start with `_`")
        return value

    @model_validator(mode="after")
    def _webhooks_protected(self) -> MandrillSettings:
        if self.webhook_key is None and not self.webhook_unauthenticated:
            raise ValueError(
                "set webhook_key (Mandrill's key for the webhook, which signs its events), or "
                "webhook_unauthenticated = true if something in front of tidings checks them"
            )
        return self


def signature(webhook_key: str, url: str, params: Sequence[tuple[str, str]]) -> str:
    """The ``X-Mandrill-Signature`` of a post to ``url`` with form ``params``."""
    payload = url + "".join(name + value for name, value in sorted(params, key=lambda item: item[0]))
    mac = hmac.new(webhook_key.encode(), payload.encode(), hashlib.sha1)
    return base64.b64encode(mac.digest()).decode("ascii")


def _form(body: bytes) -> list[tuple[str, str]]:
    try:
        return parse_qsl(body.decode("utf-8"), keep_blank_values=True, strict_parsing=bool(body))
    except (UnicodeDecodeError, ValueError) as exc:
        raise WebhookRejected(f"body is not a URL-encoded form: {exc}") from exc


def _carries_no_events(params: Sequence[tuple[str, str]]) -> bool:
    """Whether a post says nothing: no fields, or an empty ``mandrill_events``."""
    return all(name == EVENTS_FIELD and value.strip() in ("", "[]") for name, value in params)


def _occurred_at(ts: object) -> datetime:
    if isinstance(ts, int | float) and not isinstance(ts, bool):
        try:
            return to_db(datetime.fromtimestamp(ts, UTC))
        except (OverflowError, OSError, ValueError):
            pass
    return utcnow()


def _text(value: object) -> str | None:
    return value if isinstance(value, str) and value else None


class MandrillProvider(HttpProvider):
    kind = "mandrill"
    settings_model = MandrillSettings
    channels = frozenset({Channel.EMAIL})
    webhook_media_types: ClassVar[dict[str, frozenset[str]]] = {"events": frozenset({FORM})}
    service = "Mandrill"
    failure_reasons = FAILURE_REASONS

    settings: MandrillSettings

    def __init__(self, name: str, settings: ProviderSettings, context: ProviderContext) -> None:
        super().__init__(name, settings, context)
        self._send_url = self.settings.base_url.rstrip("/") + "/messages/send"

    async def start(self) -> None:
        await super().start()
        if self.settings.webhook_key is None:
            log.warning(
                "provider %s takes Mandrill's webhooks unsigned (webhook_unauthenticated = true)",
                self.name,
                extra={"action": "start", "provider": self.name},
            )

    def headers(self) -> Mapping[str, str]:
        return {"Accept": "application/json"}

    # -- sending ---------------------------------------------------------------------------------

    def build_send(self, message: OutboundMessage) -> HttpRequest:
        email = message.email
        from_name, from_email = parseaddr(message.sender or self.settings.from_)
        to_name, to_email = parseaddr(message.to)
        recipient: dict[str, str] = {"email": to_email or message.to, "type": "to"}
        if to_name:
            recipient["name"] = to_name
        body: dict[str, Any] = {"subject": email.subject, "from_email": from_email, "to": [recipient]}
        if from_name:
            body["from_name"] = from_name
        if email.html is not None:
            body["html"] = email.html
        if email.text is not None:
            body["text"] = email.text
        headers = {
            name: value for name, value in email.headers.items() if name.lower() not in RESERVED_HEADERS
        }
        if email.reply_to:
            headers["Reply-To"] = email.reply_to
        if headers:
            body["headers"] = headers
        if email.attachments:
            body["attachments"] = [
                {
                    "type": attachment.content_type,
                    "name": attachment.filename,
                    "content": base64.b64encode(attachment.data).decode("ascii"),
                }
                for attachment in email.attachments
            ]
        if self.settings.tags:
            body["tags"] = list(self.settings.tags)
        if self.settings.subaccount is not None:
            body["subaccount"] = self.settings.subaccount
        body["metadata"] = {METADATA_KEY: message.id}
        payload = {"key": self.settings.api_key.get_secret_value(), "message": body}
        return HttpRequest("POST", self._send_url, json=payload)

    def parse_sent(self, answer: Answer) -> SendResult:
        results = answer.data.get("body")
        if not isinstance(results, list):
            if answer.data.get("status") == "error":
                raise self.send_error(answer)
            # Accepted, but not in words we know: the message is out, without an id.
            return SendResult(raw=answer.data)
        items = [item for item in results if isinstance(item, dict)]
        if not items:
            return SendResult(raw={"results": results})
        result = items[0]
        word = str(result.get("status") or "sent")
        provider_id = _text(result.get("_id"))
        raw = {"results": results}
        if word in SENT_WORDS:
            return SendResult(
                provider_message_ids=(provider_id,) if provider_id else (), provider_status=word, raw=raw
            )
        if word == "rejected":
            reason = _text(result.get("reject_reason")) or "rejected"
            raise PermanentProviderError(f"Mandrill rejected the message ({reason})", code=reason, raw=raw)
        if word == "invalid":
            raise PermanentProviderError("Mandrill found the recipient invalid", code="invalid", raw=raw)
        # A word Mandrill does not document: it answered 200, so the message is taken as sent.
        return SendResult(
            provider_message_ids=(provider_id,) if provider_id else (), provider_status=word, raw=raw
        )

    def error_details(self, answer: Answer) -> tuple[str, str]:
        name = _text(answer.data.get("name"))
        return name or f"http_{answer.status}", str(answer.data.get("message") or f"HTTP {answer.status}")

    def send_error(self, answer: Answer) -> ProviderError:
        code, text = self.error_details(answer)
        if answer.status == 429:
            # Mandrill documents no body for it: the status says all.
            return TemporaryProviderError(
                text, code="http_429", raw=answer.data, retry_after=answer.retry_after
            )
        if code in PERMANENT_ERRORS:
            return PermanentProviderError(text, code=code, raw=answer.data)
        if code in OPERATOR_ERRORS:
            log.error(
                "Mandrill refused provider %s's request (%s: %s): check providers.%s.api_key and subaccount",
                self.name,
                code,
                text,
                self.name,
                extra={"action": "send", "provider": self.name, "error_code": code},
            )
            return TemporaryProviderError(f"Mandrill: {text}", code=code, raw=answer.data)
        if code in TEMPORARY_ERRORS:
            return TemporaryProviderError(text, code=code, raw=answer.data, retry_after=answer.retry_after)
        return super().send_error(answer)

    # -- webhooks --------------------------------------------------------------------------------

    def verify_webhook(self, event: str, request: WebhookRequest) -> None:
        key = self.settings.webhook_key
        if key is None:
            return
        params = _form(request.body)
        given = request.header(SIGNATURE_HEADER)
        if given is None:
            if _carries_no_events(params):
                return  # Mandrill checking the URL: nothing to trust or refuse
            raise WebhookUnauthorized(f"no {SIGNATURE_HEADER} header")
        if not signatures_match(signature(key.get_secret_value(), request.url, params), given):
            raise WebhookUnauthorized(
                f"{SIGNATURE_HEADER} does not match the request (is the webhook registered at {request.url}?)"
            )

    async def parse_webhook(self, event: str, request: WebhookRequest) -> WebhookResult:
        if event != "events":
            return await super().parse_webhook(event, request)
        params = _form(request.body)
        if _carries_no_events(params):
            return WebhookResult()
        raw = dict(params).get(EVENTS_FIELD)
        if raw is None:
            raise WebhookRejected(f"a Mandrill webhook has a {EVENTS_FIELD} field")
        try:
            events = orjson.loads(raw)
        except orjson.JSONDecodeError as exc:
            raise WebhookRejected(f"{EVENTS_FIELD} is not valid JSON: {exc}") from exc
        if not isinstance(events, list) or not all(isinstance(item, dict) for item in events):
            raise WebhookRejected(f"{EVENTS_FIELD} is a JSON array of event objects")
        reports = [report for item in events if (report := self._event_report(item)) is not None]
        return WebhookResult(reports=reports)

    def _event_report(self, item: dict[str, Any]) -> ProviderReport | None:
        word = item.get("event")
        msg = item.get("msg")
        if not isinstance(word, str) or word in SKIPPED_EVENTS or not isinstance(msg, dict):
            return None
        provider_id = _text(item.get("_id")) or _text(msg.get("_id"))
        metadata = msg.get("metadata")
        ours = metadata.get(METADATA_KEY) if isinstance(metadata, dict) else None
        message_id = ours if isinstance(ours, str) and ids.is_id(ours) else None
        if provider_id is None and message_id is None:
            # Refusing the batch would have Mandrill resend the events that are fine with it.
            log.warning(
                "a Mandrill %r event names no message (no _id): skipped",
                word[:64],
                extra={"action": "webhook", "provider": self.name},
            )
            return None
        status, history_event = EVENTS.get(word, (None, "report"))
        detail: dict[str, Any] = {key: value for key, value in item.items() if key != "msg"}
        detail.update({key: msg[key] for key in _MSG_DETAIL if key in msg})
        error_code = error_message = None
        failure_reason = None
        if status is Status.FAILED:
            error_code = word
            if word == "hard_bounce":
                description, diag = _text(msg.get("bounce_description")), _text(msg.get("diag"))
                error_message = ": ".join(part for part in (description, diag) if part) or "hard bounce"
                failure_reason = BOUNCE_REASONS.get(description or "")
            else:
                error_message = "Mandrill rejected the message"
        report = Report(
            status=status,
            source=f"provider:{self.name}",
            occurred_at=_occurred_at(item.get("ts")),
            provider_status=word,
            error_code=error_code,
            error_message=error_message,
            detail=detail,
            failure_reason=failure_reason,
        )
        return ProviderReport(
            report=report, message_id=message_id, provider_message_id=provider_id, event=history_event
        )
