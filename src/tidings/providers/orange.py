"""The ``orange`` provider: Orange's SMS API (OneAPI style, "SMS Africa and Middle East").

Authentication is OAuth2 client credentials (``providers.oauth``): ``POST
{base_url}/oauth/v3/token`` with HTTP Basic ``client_id:client_secret`` and
``grant_type=client_credentials``. The token is cached until ``token_margin_seconds`` before it
expires; one lock makes concurrent sends share one refresh, and a 401 from the API drops the token
and refreshes it once before the send is tried once more. Refused credentials are a temporary
error (code ``invalid_client``): the operator must fix the configuration, and the messages must
not be failed for it (for ``oauth.REFUSED_PAUSE`` seconds after a refusal, sends fail the same way
without asking the token endpoint again).

Sending is ``POST {base_url}/smsmessaging/v1/outbound/{tel:+SENDER, URL-encoded}/requests`` with
an ``outboundSMSMessageRequest`` from the account's number (``sender``), shown as the message's
own ``sender`` or else ``sender_name`` (a name registered with Orange). Our message id goes in
``clientCorrelator`` (Orange answers a repeated correlator with the original request, so a retried
send is not sent twice) and in the receipt's ``callbackData``. The last path segment of the
answer's ``resourceURL`` is kept as the provider's id, which polling uses
(``…/requests/{id}/deliveryInfos``).

Orange's words and ours: ``DeliveredToNetwork``, ``DeliveredToGateway``, ``MessageWaiting`` →
``sent``; ``DeliveredToTerminal`` → ``delivered``; ``DeliveryImpossible`` → ``failed``;
``DeliveryUncertain`` and any other word are recorded and change nothing.

Errors: a ``requestError`` (``serviceException`` SVC…, ``policyException`` POL…) is permanent, its
``messageId`` the error code; 429 (``Retry-After`` honoured), 5xx, timeouts and connection errors
are temporary, and so are 401 and 403 without a ``requestError`` (credentials or subscription: the
operator's to fix); any other 4xx is permanent (code ``http_<status>``).

Webhooks: ``delivery`` (receipts, posted to the ``notifyURL`` we give with each message) and
``inbound`` (SMS sent to our number, posted to the URL registered with Orange). Orange does not
sign them, so they are protected by ``webhook_allow_ips`` and by ``webhook_token``: when it is set
our ``notifyURL`` carries ``?token=…`` and a webhook without the same token is refused (register
the inbound URL with Orange with the same ``?token=…``).
"""

from __future__ import annotations

import hashlib
import logging
import re
from collections.abc import Mapping
from datetime import datetime
from typing import Any, ClassVar
from urllib.parse import parse_qsl, quote, urlsplit

import orjson
from pydantic import Field, SecretStr, field_validator, model_validator

from tidings import ids
from tidings.clock import to_db, utcnow
from tidings.config import ProviderSettings
from tidings.domain.failures import FailureReason
from tidings.domain.reports import InboundMessage, ProviderReport, Report
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
    PollRequest,
    ProviderContext,
    SendResult,
    WebhookRequest,
    WebhookResult,
    signatures_match,
)
from tidings.providers.http import Answer, HttpProvider, HttpRequest, retry_after
from tidings.providers.oauth import ClientCredentials

log = logging.getLogger(__name__)

JSON = "application/json"
TOKEN_PARAM = "token"

STATUSES: dict[str, Status] = {
    "DeliveredToNetwork": Status.SENT,
    "DeliveredToGateway": Status.SENT,
    "MessageWaiting": Status.SENT,
    "DeliveredToTerminal": Status.DELIVERED,
    "DeliveryImpossible": Status.FAILED,
}
"""Orange's delivery statuses in our model; ``DeliveryUncertain`` and any word not listed change
nothing (the report is recorded)."""

MAX_ADDRESS = 64
"""The longest sender or destination an inbound SMS may have (what the store keeps)."""
MAX_ID = 128
"""The longest provider id the store keeps; a longer inbound messageId is kept as its hash."""

_TEL = re.compile(r"^(?:tel:)?\+([0-9]{1,15})$")


FAILURE_REASONS: Mapping[str, FailureReason] = {
    "SVC0004": FailureReason.INVALID_NUMBER,  # no valid address
    "SVC0002": FailureReason.REJECTED_CONTENT,  # an invalid value in the request
    "POL0001": FailureReason.BLOCKED,  # a policy refused it (sender not allowed, country, …)
    "DeliveryImpossible": FailureReason.UNREACHABLE,  # the network could not deliver it
    "rate_limited": FailureReason.RATE_LIMITED,
    "invalid_client": FailureReason.PROVIDER_UNAVAILABLE,  # credentials refused
    "token_unavailable": FailureReason.PROVIDER_UNAVAILABLE,
}
"""Orange's codes (and the words of its receipts) in shared words."""


class OrangeSettings(ProviderSettings):
    kind: str = "orange"
    client_id: str = Field(min_length=1)
    client_secret: SecretStr = Field(min_length=1)
    sender: str
    """The account's number, ``tel:+2250700000000`` (``+2250700000000`` is accepted too)."""
    sender_name: str | None = Field(default=None, min_length=1)
    """The name shown as the sender (it must be registered with Orange)."""
    base_url: str = "https://api.orange.com"
    rate_limit: float | None = Field(default=5.0, gt=0)
    """Orange allows 5 sends a second unless the contract says otherwise."""
    webhook_token: SecretStr | None = Field(default=None, min_length=1)
    """When set, receipts and inbound SMS must carry ``?token=<it>`` (Orange does not sign them)."""
    webhook_unauthenticated: bool = False
    """Take Orange's webhooks from anyone, with neither a token nor an allowlist (say so only when
    something in front of tidings checks them)."""
    token_margin_seconds: float = Field(default=60.0, ge=0)
    """Get a new access token this long before the current one expires."""

    @field_validator("sender")
    @classmethod
    def _tel(cls, value: str) -> str:
        match = _TEL.match(value.strip())
        if match is None:
            raise ValueError(
                "must be the account's number as tel:+ and 1 to 15 digits, like tel:+2250700000000"
            )
        return f"tel:+{match.group(1)}"

    @model_validator(mode="after")
    def _webhooks_protected(self) -> OrangeSettings:
        # Orange does not sign its notifications: without a token or an allowlist anyone could
        # mark any message delivered.
        if not self.webhook_token and not self.webhook_allow_ips and not self.webhook_unauthenticated:
            raise ValueError(
                "Orange does not sign its webhooks: set webhook_token or webhook_allow_ips, or "
                "webhook_unauthenticated = true if something in front of tidings checks them"
            )
        return self


def _strip_tel(address: str) -> str:
    return address[4:] if address.lower().startswith("tel:") else address


def _ids(value: str | None) -> tuple[str, ...]:
    return (value,) if value else ()


def _last_segment(url: str) -> str | None:
    segment = urlsplit(url).path.rstrip("/").rsplit("/", 1)[-1]
    return segment or None


_retry_after = retry_after
"""The shared ``Retry-After`` reader, under the name this module's tests know it by."""


def _substitute(text: str, variables: object) -> str:
    """OneAPI error text with ``%1``, ``%2``… replaced by ``variables``."""
    if not isinstance(variables, list):
        return text
    for index in range(len(variables), 0, -1):
        text = text.replace(f"%{index}", str(variables[index - 1]))
    return text


def _request_error(data: dict[str, Any]) -> tuple[str, str] | None:
    """``(messageId, text)`` of a OneAPI ``requestError`` answer, if it is one."""
    found = data.get("requestError")
    if not isinstance(found, dict):
        return None
    for kind in ("serviceException", "policyException"):
        exception = found.get(kind)
        if isinstance(exception, dict):
            code = str(exception.get("messageId") or kind)
            text = _substitute(str(exception.get("text") or kind), exception.get("variables"))
            return code, text
    return None


def _json_body(body: bytes) -> Any:
    try:
        return orjson.loads(body)
    except orjson.JSONDecodeError as exc:
        raise WebhookRejected(f"body is not valid JSON: {exc}") from exc


class OrangeProvider(HttpProvider):
    kind = "orange"
    settings_model = OrangeSettings
    webhook_media_types: ClassVar[dict[str, frozenset[str]]] = {
        "delivery": frozenset({JSON}),
        "inbound": frozenset({JSON}),
    }
    legacy_webhook_paths: ClassVar[Mapping[str, str]] = {
        # Where seed 002's service took Orange's notifications.
        "/api/sms/webhook/delivery-status": "delivery",
        "/api/sms/webhook/inbound-message": "inbound",
    }
    can_poll = True
    service = "the Orange SMS API"
    failure_reasons = FAILURE_REASONS

    settings: OrangeSettings

    def __init__(self, name: str, settings: ProviderSettings, context: ProviderContext) -> None:
        super().__init__(name, settings, context)
        base = self.settings.base_url.rstrip("/")
        self._requests_url = (
            f"{base}/smsmessaging/v1/outbound/{quote(self.settings.sender, safe='')}/requests"
        )
        self.auth = ClientCredentials(
            self.call,
            token_url=f"{base}/oauth/v3/token",
            client_id=self.settings.client_id,
            client_secret=self.settings.client_secret.get_secret_value(),
            issuer="Orange",
            provider=name,
            margin=self.settings.token_margin_seconds,
        )

    async def start(self) -> None:
        await super().start()
        if not self.settings.webhook_token and not self.settings.webhook_allow_ips:
            log.warning(
                "provider %s takes Orange webhooks from anyone (webhook_unauthenticated = true): "
                "Orange does not sign them",
                self.name,
                extra={"action": "start", "provider": self.name},
            )

    def headers(self) -> Mapping[str, str]:
        return {"Accept": JSON}

    # -- sending ---------------------------------------------------------------------------------

    def notify_url(self) -> str:
        """Where Orange posts the receipts of the messages we send."""
        url = self.context.webhook_url(self.kind, self.name, "delivery")
        if self.settings.webhook_token:
            url += f"?{TOKEN_PARAM}={quote(self.settings.webhook_token.get_secret_value(), safe='')}"
        return url

    def build_send(self, message: OutboundMessage) -> HttpRequest:
        request: dict[str, Any] = {
            "address": "tel:" + message.to if not message.to.startswith("tel:") else message.to,
            "senderAddress": self.settings.sender,
        }
        sender_name = message.sender or self.settings.sender_name
        if sender_name:
            request["senderName"] = sender_name
        request["outboundSMSTextMessage"] = {"message": message.sms.text}
        request["clientCorrelator"] = message.id
        request["receiptRequest"] = {"notifyURL": self.notify_url(), "callbackData": message.id}
        return HttpRequest("POST", self._requests_url, json={"outboundSMSMessageRequest": request})

    def parse_sent(self, answer: Answer) -> SendResult:
        inner = answer.data.get("outboundSMSMessageRequest")
        resource = inner.get("resourceURL") if isinstance(inner, dict) else None
        if not isinstance(resource, str):
            resource = answer.headers.get("Location")
        return SendResult(
            provider_message_ids=_ids(_last_segment(resource) if isinstance(resource, str) else None),
            raw=answer.data,
        )

    def send_error(self, answer: Answer) -> ProviderError:
        status, data = answer.status, answer.data
        refused = _request_error(data)
        if status == 429:
            text = refused[1] if refused else str(data.get("message") or "Too many requests")
            return TemporaryProviderError(
                f"Orange is rate limiting: {text}",
                code="rate_limited",
                raw=data,
                retry_after=answer.retry_after,
            )
        if status >= 500:
            text = refused[1] if refused else str(data.get("message") or f"HTTP {status}")
            return TemporaryProviderError(
                text, code=f"http_{status}", raw=data, retry_after=answer.retry_after
            )
        if refused is not None:
            code, text = refused
            return PermanentProviderError(text, code=code, raw=data)
        text = str(data.get("description") or data.get("message") or f"HTTP {status}")
        if status in (401, 403, 408):
            # Credentials Orange will not take, or an application without access to the API: the
            # operator has to act; the messages must wait, not fail.
            if status != 408:
                log.error(
                    "Orange refused provider %s's access (HTTP %d: %s): check the application's "
                    "subscription and providers.%s.client_id",
                    self.name,
                    status,
                    text,
                    self.name,
                    extra={"action": "send", "provider": self.name},
                )
            return TemporaryProviderError(text, code=f"http_{status}", raw=data)
        return PermanentProviderError(text, code=f"http_{status}", raw=data)

    # -- reports ---------------------------------------------------------------------------------

    def _report(self, item: dict[str, Any], detail: dict[str, Any]) -> Report:
        word = str(item["deliveryStatus"])
        status = STATUSES.get(word)
        failed = status is Status.FAILED
        description = item.get("description")
        return Report(
            status=status,
            source=f"provider:{self.name}",
            occurred_at=utcnow(),
            provider_status=word,
            error_code=word if failed else None,
            error_message=(str(description) if description else None) if failed else None,
            detail=detail,
        )

    # -- webhooks --------------------------------------------------------------------------------

    def verify_webhook(self, event: str, request: WebhookRequest) -> None:
        expected = self.settings.webhook_token.get_secret_value() if self.settings.webhook_token else None
        if not expected:
            return
        given = dict(parse_qsl(urlsplit(request.url).query, keep_blank_values=True)).get(TOKEN_PARAM)
        if given is None:
            raise WebhookUnauthorized(f"the webhook URL has no {TOKEN_PARAM} parameter")
        if not signatures_match(expected, given):
            raise WebhookUnauthorized(f"the webhook URL's {TOKEN_PARAM} is not this provider's")

    async def parse_webhook(self, event: str, request: WebhookRequest) -> WebhookResult:
        if event == "delivery":
            return WebhookResult(reports=self._delivery(_json_body(request.body)))
        if event == "inbound":
            return WebhookResult(inbound=[self._inbound(_json_body(request.body))])
        return await super().parse_webhook(event, request)

    def _delivery(self, data: Any) -> list[ProviderReport]:
        notification = data.get("deliveryInfoNotification") if isinstance(data, dict) else None
        if not isinstance(notification, dict):
            raise WebhookRejected("not an Orange delivery receipt: no deliveryInfoNotification object")
        infos = notification.get("deliveryInfo")
        found = infos if isinstance(infos, list) else [infos]
        items: list[dict[str, Any]] = [
            i for i in found if isinstance(i, dict) and isinstance(i.get("deliveryStatus"), str)
        ]
        if not items or len(items) != len(found) or not all(i["deliveryStatus"] for i in items):
            raise WebhookRejected(
                "not an Orange delivery receipt: deliveryInfo must be an object (or a list of objects) "
                "with a deliveryStatus"
            )
        callback = notification.get("callbackData")
        message_id = callback if isinstance(callback, str) and ids.is_id(callback) else None
        reports = []
        for item in items:
            address = item.get("address")
            reports.append(
                ProviderReport(
                    report=self._report(item, item),
                    message_id=message_id,
                    recipient=_strip_tel(address) if isinstance(address, str) and address else None,
                )
            )
        return reports

    def _inbound(self, data: Any) -> InboundMessage:
        notification = data.get("inboundSMSMessageNotification") if isinstance(data, dict) else None
        sms = notification.get("inboundSMSMessage") if isinstance(notification, dict) else None
        if not isinstance(sms, dict):
            raise WebhookRejected(
                "not an Orange inbound SMS: no inboundSMSMessageNotification.inboundSMSMessage object"
            )
        sender, body = sms.get("senderAddress"), sms.get("message")
        if not isinstance(sender, str) or not sender or not isinstance(body, str):
            raise WebhookRejected("an Orange inbound SMS needs senderAddress and message")
        destination = sms.get("destinationAddress")
        for field, value in (("senderAddress", sender), ("destinationAddress", destination)):
            if isinstance(value, str) and len(_strip_tel(value)) > MAX_ADDRESS:
                raise WebhookRejected(
                    f"an Orange inbound SMS's {field} has more than {MAX_ADDRESS} characters"
                )
        sent = sms.get("dateTime")
        message_id = sms.get("messageId")
        if not isinstance(message_id, str | int) or message_id == "":
            # No id from Orange: one made from the message itself, so a resent webhook is still
            # stored once.
            key = f"{sender}|{sent if sent is not None else ''}|{body}".encode()
            message_id = "sha256:" + hashlib.sha256(key).hexdigest()
        elif len(str(message_id)) > MAX_ID:
            message_id = "sha256:" + hashlib.sha256(str(message_id).encode()).hexdigest()
        return InboundMessage(
            sender=_strip_tel(sender),
            to=_strip_tel(destination) if isinstance(destination, str) and destination else None,
            body=body,
            provider_message_id=str(message_id),
            sent_at=_utc(sent),
            raw=data,
        )

    # -- polling ---------------------------------------------------------------------------------

    def build_poll(self, message: PollRequest) -> HttpRequest:
        return HttpRequest(
            "GET", f"{self._requests_url}/{quote(message.provider_message_id, safe='')}/deliveryInfos"
        )

    def parse_poll(self, answer: Answer) -> Report | None:
        listing = answer.data.get("deliveryInfoList")
        infos = listing.get("deliveryInfo") if isinstance(listing, dict) else None
        first = infos[0] if isinstance(infos, list) and infos else infos
        if not isinstance(first, dict) or not isinstance(first.get("deliveryStatus"), str):
            return None
        report = self._report(first, {"polled": answer.data})
        return report if report.status is not None else None


def _utc(value: object) -> datetime | None:
    """An ISO 8601 time from Orange as naive UTC (``None`` when there is none or it is unreadable)."""
    if not isinstance(value, str) or not value:
        return None
    try:
        parsed = datetime.fromisoformat(value.replace("Z", "+00:00"))
    except ValueError:
        return None
    return to_db(parsed)
