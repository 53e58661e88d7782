"""The ``twilio`` provider: Twilio Programmable Messaging.

Sending is ``POST /2010-04-01/Accounts/{AccountSid}/Messages.json`` (a form: ``To``, ``From`` or
``MessagingServiceSid``, ``Body``, ``StatusCallback``) with HTTP Basic auth; the answer's ``sid``
is kept as the provider's id. Twilio reports each status change by posting a form to the
``StatusCallback`` URL, which carries our message id so a callback finds its message in one
lookup. Callbacks and inbound SMS are signed with ``X-Twilio-Signature``: base64 HMAC-SHA1, keyed
with the auth token, over the URL followed by each parameter's name and value, sorted by name.

Twilio's words and ours: ``queued``, ``accepted``, ``scheduled``, ``sending`` → ``sending``;
``sent`` → ``sent``; ``delivered``, ``read`` → ``delivered``; ``undelivered``, ``failed`` →
``failed`` with Twilio's error code; ``canceled`` → ``failed`` (cancelled at the provider).
The answer to a send means Twilio accepted the message, which is ``sent`` in our model; a later
``queued`` callback is recorded and does not move it back.

Errors: 429, 5xx, timeouts and connection errors are temporary. Refused credentials (401/403,
code 20003) are temporary too: the operator must fix the configuration, and the messages must
not be failed for it. Any other 4xx carries a Twilio error code (21211 invalid number, 21610
recipient opted out, 21614 not a mobile number…) and is permanent.
"""

from __future__ import annotations

import base64
import dataclasses
import hashlib
import hmac
import logging
from collections.abc import Mapping
from typing import Any, ClassVar
from urllib.parse import parse_qsl, quote, urlsplit, urlunsplit

from pydantic import Field, SecretStr, model_validator

from tidings.clock import utcnow
from tidings.config import ProviderSettings
from tidings.domain.costs import Cost, check_currency, to_micros
from tidings.domain.failures import FailureReason
from tidings.domain.reports import InboundMessage, ProviderReport, Report
from tidings.domain.status import Status
from tidings.errors import (
    ProviderError,
    TemporaryProviderError,
    WebhookRejected,
    WebhookUnauthorized,
)
from tidings.providers.base import (
    OutboundMessage,
    PollRequest,
    ProviderContext,
    SendResult,
    WebhookRequest,
    WebhookResult,
    signatures_match,
)
from tidings.providers.http import Answer, HttpProvider, HttpRequest

log = logging.getLogger(__name__)

SIGNATURE_HEADER = "X-Twilio-Signature"
FORM = "application/x-www-form-urlencoded"
EMPTY_TWIML = b'<?xml version="1.0" encoding="UTF-8"?><Response/>'

STATUSES: dict[str, Status] = {
    "queued": Status.SENDING,
    "accepted": Status.SENDING,
    "scheduled": Status.SENDING,
    "sending": Status.SENDING,
    "sent": Status.SENT,
    "delivered": Status.DELIVERED,
    "read": Status.DELIVERED,
    "undelivered": Status.FAILED,
    "failed": Status.FAILED,
    "canceled": Status.FAILED,
}
"""Twilio's message statuses in our model; a word not listed changes nothing (it is recorded)."""

# Descriptions of the delivery error codes Twilio reports in callbacks (its own wording is long).
ERROR_DESCRIPTIONS = {
    "30001": "Queue overflow",
    "30002": "Account suspended",
    "30003": "Unreachable destination handset",
    "30004": "Message blocked",
    "30005": "Unknown destination handset",
    "30006": "Landline or unreachable carrier",
    "30007": "Message filtered by the carrier",
    "30008": "Unknown error",
    "30034": "Message from an unregistered number",
}


FAILURE_REASONS: Mapping[str, FailureReason] = {
    "21211": FailureReason.INVALID_NUMBER,  # not a valid number
    "21614": FailureReason.INVALID_NUMBER,  # not a mobile number
    "30005": FailureReason.INVALID_NUMBER,  # unknown destination handset
    "30006": FailureReason.INVALID_NUMBER,  # landline or unreachable carrier
    "21612": FailureReason.UNREACHABLE,  # not reachable by SMS
    "30003": FailureReason.UNREACHABLE,  # unreachable destination handset
    "21610": FailureReason.OPTED_OUT,  # the recipient replied STOP to this sender
    "21408": FailureReason.BLOCKED,  # no permission to send to this region
    "21606": FailureReason.BLOCKED,  # the From number is not a valid sender
    "30002": FailureReason.BLOCKED,  # account suspended
    "30004": FailureReason.BLOCKED,  # message blocked
    "30032": FailureReason.BLOCKED,  # toll-free number not verified
    "30034": FailureReason.BLOCKED,  # unregistered 10DLC sender
    "30007": FailureReason.REJECTED_CONTENT,  # filtered by the carrier
    "21602": FailureReason.REJECTED_CONTENT,  # no body
    "21617": FailureReason.REJECTED_CONTENT,  # body too long
    "30001": FailureReason.RATE_LIMITED,  # queue overflow
    "20429": FailureReason.RATE_LIMITED,  # too many requests
    "30036": FailureReason.EXPIRED,  # validity period expired
    "20003": FailureReason.PROVIDER_UNAVAILABLE,  # credentials refused
    "30008": FailureReason.UNKNOWN,
}
"""Twilio's error codes in shared words."""


def _price(resource: Mapping[str, Any]) -> Cost | None:
    """What a Message resource says the message cost: ``price`` is a negative decimal string (a
    debit, ``"-0.00750"``) once Twilio knows it, ``null`` before; ``price_unit`` its currency."""
    price, unit = resource.get("price"), resource.get("price_unit")
    if price in (None, "") or not isinstance(unit, str):
        return None
    try:
        micros = abs(to_micros(str(price), field="price", negative=True))
        return Cost(micros, check_currency(unit), quoted=True)
    except ValueError:
        log.warning("Twilio gave a price we cannot read: %r %r", price, unit, extra={"action": "poll"})
        return None


class TwilioSettings(ProviderSettings):
    kind: str = "twilio"
    account_sid: str = Field(pattern=r"^AC[0-9a-fA-F]{32}$")
    auth_token: SecretStr = Field(min_length=1)
    from_: str | None = Field(default=None, alias="from", min_length=1)
    """The sending number or sender id; or use ``messaging_service_sid``."""
    messaging_service_sid: str | None = Field(default=None, pattern=r"^MG[0-9a-fA-F]{32}$")
    base_url: str = "https://api.twilio.com"
    status_callback: bool = True
    """Ask Twilio to post status callbacks (turn off only to rely on polling)."""

    @model_validator(mode="after")
    def _has_sender(self) -> TwilioSettings:
        if self.from_ is None and self.messaging_service_sid is None:
            raise ValueError("set `from` (a number or sender id) or `messaging_service_sid`")
        return self


def signature(auth_token: str, url: str, params: list[tuple[str, str]]) -> str:
    """The ``X-Twilio-Signature`` of a request to ``url`` with form ``params``."""
    by_name: dict[str, set[str]] = {}
    for name, value in params:
        by_name.setdefault(name, set()).add(value)
    payload = url + "".join(name + value for name in sorted(by_name) for value in sorted(by_name[name]))
    mac = hmac.new(auth_token.encode(), payload.encode(), hashlib.sha1)
    return base64.b64encode(mac.digest()).decode("ascii")


def _url_variants(url: str) -> list[str]:
    """``url`` as given and with its default port added or removed: Twilio signs the URL as it was
    configured, and a proxy may have shown it to us the other way."""
    parts = urlsplit(url)
    default = {"https": 443, "http": 80}.get(parts.scheme)
    variants = [url]
    if default is None or parts.hostname is None:
        return variants
    host = parts.hostname if ":" not in parts.hostname else f"[{parts.hostname}]"
    userinfo = parts.netloc.rpartition("@")[0]
    prefix = userinfo + "@" if userinfo else ""
    if parts.port is None:
        variants.append(urlunsplit(parts._replace(netloc=f"{prefix}{host}:{default}")))
    elif parts.port == default:
        variants.append(urlunsplit(parts._replace(netloc=f"{prefix}{host}")))
    return variants


def _form(body: bytes) -> list[tuple[str, str]]:
    try:
        return parse_qsl(body.decode("utf-8"), keep_blank_values=True, strict_parsing=bool(body))
    except (UnicodeDecodeError, ValueError) as exc:
        raise WebhookRejected(f"body is not a URL-encoded form: {exc}") from exc


class TwilioProvider(HttpProvider):
    kind = "twilio"
    settings_model = TwilioSettings
    webhook_media_types: ClassVar[dict[str, frozenset[str]]] = {
        "status": frozenset({FORM}),
        "inbound": frozenset({FORM}),
    }
    can_poll = True
    service = "Twilio"
    failure_reasons = FAILURE_REASONS

    settings: TwilioSettings

    def __init__(self, name: str, settings: ProviderSettings, context: ProviderContext) -> None:
        super().__init__(name, settings, context)
        credentials = f"{self.settings.account_sid}:{self.settings.auth_token.get_secret_value()}".encode()
        self._authorization = "Basic " + base64.b64encode(credentials).decode("ascii")
        self._messages_url = (
            f"{self.settings.base_url.rstrip('/')}/2010-04-01/Accounts/{self.settings.account_sid}/Messages"
        )

    def headers(self) -> Mapping[str, str]:
        return {"Authorization": self._authorization, "Accept": "application/json"}

    # -- sending ---------------------------------------------------------------------------------

    def build_send(self, message: OutboundMessage) -> HttpRequest:
        form = {"To": message.to, "Body": message.sms.text}
        sender = message.sender or self.settings.from_
        if sender is not None:
            form["From"] = sender
        else:
            assert self.settings.messaging_service_sid is not None
            form["MessagingServiceSid"] = self.settings.messaging_service_sid
        if self.settings.status_callback:
            form["StatusCallback"] = (
                self.context.webhook_url(self.kind, self.name, "status") + "?message_id=" + quote(message.id)
            )
        return HttpRequest("POST", self._messages_url + ".json", form=form)

    def parse_sent(self, answer: Answer) -> SendResult:
        data = answer.data
        return SendResult(
            provider_message_ids=(str(data["sid"]),) if data.get("sid") else (),
            provider_status=str(data.get("status") or "queued"),
            raw=data,
        )

    def error_details(self, answer: Answer) -> tuple[str, str]:
        return (
            str(answer.data.get("code") or answer.status),
            str(answer.data.get("message") or f"HTTP {answer.status}"),
        )

    def send_error(self, answer: Answer) -> ProviderError:
        if answer.status not in (401, 403):
            return super().send_error(answer)
        code, text = self.error_details(answer)
        log.error(
            "Twilio refused provider %s's credentials: check providers.%s.account_sid, auth_token",
            self.name,
            self.name,
            extra={"action": "send", "provider": self.name, "error_code": code},
        )
        return TemporaryProviderError(f"Twilio refused the credentials: {text}", code=code, raw=answer.data)

    # -- webhooks --------------------------------------------------------------------------------

    def verify_webhook(self, event: str, request: WebhookRequest) -> None:
        given = request.header(SIGNATURE_HEADER)
        if given is None:
            raise WebhookUnauthorized(f"no {SIGNATURE_HEADER} header")
        params = _form(request.body)
        if not any(
            signatures_match(signature(self.settings.auth_token.get_secret_value(), url, params), given)
            for url in _url_variants(request.url)
        ):
            raise WebhookUnauthorized(f"{SIGNATURE_HEADER} does not match the request")
        account = dict(params).get("AccountSid")
        if account is not None and account != self.settings.account_sid:
            raise WebhookUnauthorized(f"webhook is for account {account}, not this provider's")

    async def parse_webhook(self, event: str, request: WebhookRequest) -> WebhookResult:
        params = dict(_form(request.body))
        if event == "status":
            return WebhookResult(reports=[self._status_report(params, request.url)])
        if event == "inbound":
            return WebhookResult(inbound=[self._inbound(params)], body=EMPTY_TWIML, content_type="text/xml")
        return await super().parse_webhook(event, request)

    def _status_report(self, params: dict[str, str], url: str) -> ProviderReport:
        sid = params.get("MessageSid") or params.get("SmsSid")
        word = params.get("MessageStatus") or params.get("SmsStatus")
        if not sid or not word:
            raise WebhookRejected("a status callback needs MessageSid and MessageStatus")
        query = dict(parse_qsl(urlsplit(url).query))
        return ProviderReport(
            report=self._report(word, params.get("ErrorCode") or None, params),
            message_id=query.get("message_id"),
            provider_message_id=sid,
        )

    def _report(self, word: str, error_code: str | None, detail: dict[str, Any]) -> Report:
        status = STATUSES.get(word.lower())
        error_message = None
        if status is Status.FAILED:
            if word.lower() == "canceled":
                error_code = error_code or "canceled"
                error_message = "cancelled at the provider"
            else:
                error_message = ERROR_DESCRIPTIONS.get(error_code or "", f"Twilio reports the message {word}")
        return Report(
            status=status,
            source=f"provider:{self.name}",
            occurred_at=utcnow(),
            provider_status=word,
            error_code=error_code if status is Status.FAILED else None,
            error_message=error_message,
            detail=detail,
        )

    def _inbound(self, params: dict[str, str]) -> InboundMessage:
        sid = params.get("MessageSid") or params.get("SmsMessageSid") or params.get("SmsSid")
        sender = params.get("From")
        if not sid or not sender or "Body" not in params:
            raise WebhookRejected("an inbound message needs MessageSid, From and Body")
        return InboundMessage(
            sender=sender,
            to=params.get("To"),
            body=params["Body"],
            provider_message_id=sid,
            raw=dict(params),
        )

    # -- polling ---------------------------------------------------------------------------------

    def build_poll(self, message: PollRequest) -> HttpRequest:
        return HttpRequest("GET", f"{self._messages_url}/{quote(message.provider_message_id)}.json")

    def parse_poll(self, answer: Answer) -> Report | None:
        data = answer.data
        word = data.get("status")
        if not isinstance(word, str):
            return None
        error_code = data.get("error_code")
        report = self._report(word, str(error_code) if error_code else None, {"polled": data})
        return dataclasses.replace(report, cost=_price(data))
