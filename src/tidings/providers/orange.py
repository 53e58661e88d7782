"""The ``orange`` provider: Orange's SMS API (OneAPI style, "SMS Africa and Middle East").

Authentication is OAuth2 client credentials: ``POST {base_url}/oauth/v3/token`` with HTTP Basic
``client_id:client_secret`` and ``grant_type=client_credentials``. The token is cached until
``token_margin_seconds`` before it expires; one lock makes concurrent sends share one refresh, and
a 401 from the API drops the token and refreshes it once before the send is tried once more.
Refused credentials are a temporary error (code ``invalid_client``): the operator must fix the
configuration, and the messages must not be failed for it (for ``REFUSED_PAUSE`` seconds after a
refusal, sends fail the same way without asking the token endpoint again).

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

import asyncio
import base64
import hashlib
import logging
import re
import time
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime
from email.utils import parsedate_to_datetime
from typing import Any, ClassVar
from urllib.parse import parse_qsl, quote, urlsplit

import aiohttp
import orjson
from pydantic import Field, field_validator

from tidings import ids
from tidings.clock import to_db, utcnow
from tidings.config import ProviderSettings
from tidings.domain.reports import InboundMessage, ProviderReport, Report
from tidings.domain.status import Status
from tidings.errors import (
    PermanentProviderError,
    TemporaryProviderError,
    WebhookRejected,
    WebhookUnauthorized,
)
from tidings.providers.base import (
    OutboundMessage,
    PollRequest,
    Provider,
    ProviderContext,
    SendResult,
    WebhookRequest,
    WebhookResult,
    signatures_match,
)

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

DEFAULT_TOKEN_LIFETIME = 3600.0
"""Seconds a token is assumed to work when Orange's answer does not say."""
REFUSED_PAUSE = 10.0
"""After the token endpoint refused our credentials, sends fail at once (temporarily) for this long
instead of asking it again for every message."""

MAX_ADDRESS = 64
"""The longest sender or destination an inbound SMS may have (what the store keeps)."""
MAX_ID = 128
"""The longest provider id the store keeps; a longer inbound messageId is kept as its hash."""

_TEL = re.compile(r"^(?:tel:)?\+([0-9]{1,15})$")


class OrangeSettings(ProviderSettings):
    kind: str = "orange"
    client_id: str = Field(min_length=1)
    client_secret: str = Field(min_length=1)
    sender: str
    """The account's number, ``tel:+2250700000000`` (``+2250700000000`` is accepted too)."""
    sender_name: str | None = Field(default=None, min_length=1)
    """The name shown as the sender (it must be registered with Orange)."""
    base_url: str = "https://api.orange.com"
    rate_limit: float | None = Field(default=5.0, gt=0)
    """Orange allows 5 sends a second unless the contract says otherwise."""
    webhook_token: str | None = Field(default=None, min_length=1)
    """When set, receipts and inbound SMS must carry ``?token=<it>`` (Orange does not sign them)."""
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


@dataclass(frozen=True)
class _Answer:
    status: int
    data: dict[str, Any]
    retry_after: str | None
    location: str | None = None


def _strip_tel(address: str) -> str:
    return address[4:] if address.lower().startswith("tel:") else address


def _ids(value: str | None) -> tuple[str, ...]:
    return (value,) if value else ()


def _last_segment(url: str) -> str | None:
    segment = urlsplit(url).path.rstrip("/").rsplit("/", 1)[-1]
    return segment or None


def _retry_after(value: str | None) -> float | None:
    """Seconds to wait from a ``Retry-After`` header (seconds or an HTTP date)."""
    if not value:
        return None
    value = value.strip()
    try:
        return max(0.0, float(value))
    except ValueError:
        pass
    try:
        when = parsedate_to_datetime(value)
    except (TypeError, ValueError, IndexError):
        return None
    return max(0.0, (to_db(when) - utcnow()).total_seconds())


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


class OrangeProvider(Provider):
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

    settings: OrangeSettings

    def __init__(self, name: str, settings: ProviderSettings, context: ProviderContext) -> None:
        super().__init__(name, settings, context)
        base = self.settings.base_url.rstrip("/")
        self._token_url = f"{base}/oauth/v3/token"
        self._requests_url = (
            f"{base}/smsmessaging/v1/outbound/{quote(self.settings.sender, safe='')}/requests"
        )
        credentials = f"{self.settings.client_id}:{self.settings.client_secret}".encode()
        self._basic = "Basic " + base64.b64encode(credentials).decode("ascii")
        self._session: aiohttp.ClientSession | None = None
        self._token: str | None = None
        self._token_valid_until = 0.0
        self._refused_until = 0.0
        self._refused: TemporaryProviderError | None = None
        self._token_lock: asyncio.Lock | None = None

    async def start(self) -> None:
        self._session = self.context.session or aiohttp.ClientSession(
            connector=aiohttp.TCPConnector(limit=self.settings.concurrency),
            cookie_jar=aiohttp.DummyCookieJar(),
            timeout=aiohttp.ClientTimeout(total=self.settings.timeout_seconds),
        )
        self._token_lock = asyncio.Lock()
        if not self.settings.webhook_token and not self.settings.webhook_allow_ips:
            log.warning(
                "provider %s accepts Orange webhooks from anyone: Orange does not sign them, so set "
                "providers.%s.webhook_token or providers.%s.webhook_allow_ips",
                self.name,
                self.name,
                self.name,
                extra={"action": "start", "provider": self.name},
            )

    async def close(self) -> None:
        session, self._session = self._session, None
        if session is not None and session is not self.context.session:
            await session.close()

    # -- the access token ------------------------------------------------------------------------

    async def _access_token(self) -> str:
        """A working access token: the cached one, or a new one (one request for all callers)."""
        if self._token_lock is None:
            raise RuntimeError(f"provider {self.name} is not started")
        async with self._token_lock:
            now = time.monotonic()
            if self._token is not None and now < self._token_valid_until:
                return self._token
            refused = self._refused
            if refused is not None and now < self._refused_until:
                raise TemporaryProviderError(refused.message, code=refused.code, raw=refused.raw)
            token, lifetime = await self._fetch_token()
            margin = min(self.settings.token_margin_seconds, lifetime / 2)
            self._token = token
            self._token_valid_until = time.monotonic() + lifetime - margin
            self._refused = None
            return token

    def _drop_token(self, token: str) -> None:
        """Forget ``token`` (the API refused it) unless another caller already replaced it."""
        if self._token == token:
            self._token = None

    async def _fetch_token(self) -> tuple[str, float]:
        answer = await self._call(
            "POST",
            self._token_url,
            headers={"Authorization": self._basic, "Accept": JSON},
            data={"grant_type": "client_credentials"},
            what="the Orange token endpoint",
        )
        data = answer.data
        if answer.status == 200 and isinstance(data.get("access_token"), str) and data["access_token"]:
            try:
                lifetime = float(data.get("expires_in", DEFAULT_TOKEN_LIFETIME))
            except (TypeError, ValueError):
                lifetime = DEFAULT_TOKEN_LIFETIME
            log.debug("new Orange access token", extra={"action": "token", "provider": self.name})
            return str(data["access_token"]), max(lifetime, 0.0)
        error = str(data.get("error") or f"http_{answer.status}")
        description = str(data.get("error_description") or data.get("message") or f"HTTP {answer.status}")
        if answer.status == 429 or answer.status >= 500:
            raise TemporaryProviderError(
                f"the Orange token endpoint is unavailable: {description}",
                code="token_unavailable",
                raw=data,
                retry_after=_retry_after(answer.retry_after),
            )
        if answer.status == 401 or error == "invalid_client":
            error = "invalid_client"
            log.error(
                "Orange refused the credentials of provider %s (%s): check providers.%s.client_id and "
                "providers.%s.client_secret",
                self.name,
                description,
                self.name,
                self.name,
                extra={"action": "token", "provider": self.name, "error_code": error},
            )
        else:
            log.error(
                "the Orange token endpoint refused provider %s's request (%s: %s)",
                self.name,
                error,
                description,
                extra={"action": "token", "provider": self.name, "error_code": error},
            )
        refused = TemporaryProviderError(
            f"Orange refused the credentials: {description}", code=error, raw=data
        )
        self._refused, self._refused_until = refused, time.monotonic() + REFUSED_PAUSE
        raise refused

    # -- HTTP ------------------------------------------------------------------------------------

    async def _call(
        self,
        method: str,
        url: str,
        *,
        headers: dict[str, str],
        what: str,
        data: dict[str, str] | None = None,
        json: bytes | None = None,
    ) -> _Answer:
        session = self._session
        if session is None:
            raise RuntimeError(f"provider {self.name} is not started")
        if json is not None:
            headers = {**headers, "Content-Type": JSON}
        try:
            async with session.request(
                method,
                url,
                headers=headers,
                data=json if json is not None else data,
                timeout=aiohttp.ClientTimeout(total=self.settings.timeout_seconds),
            ) as response:
                raw = await response.read()
                status = response.status
                retry_after = response.headers.get("Retry-After")
                location = response.headers.get("Location")
        except TimeoutError as exc:
            raise TemporaryProviderError(
                f"{what} did not answer within {self.settings.timeout_seconds} s", code="timeout"
            ) from exc
        except aiohttp.ClientError as exc:
            raise TemporaryProviderError(f"{what} is unreachable: {exc!r}", code="connection_error") from exc
        try:
            parsed = orjson.loads(raw) if raw else {}
        except orjson.JSONDecodeError:
            parsed = {"body": raw[:500].decode("utf-8", "replace")}
        body: dict[str, Any] = parsed if isinstance(parsed, dict) else {"body": parsed}
        return _Answer(status=status, data=body, retry_after=retry_after, location=location)

    async def _authorized(self, method: str, url: str, *, what: str, json: bytes | None = None) -> _Answer:
        """Call the API with the access token; on a 401 get a new token and try once more."""
        token = await self._access_token()
        answer = await self._call(method, url, headers=self._bearer(token), what=what, json=json)
        if answer.status != 401:
            return answer
        log.info(
            "Orange refused the access token (%s); getting a new one",
            answer.data.get("message") or "HTTP 401",
            extra={"action": "token", "provider": self.name},
        )
        self._drop_token(token)
        token = await self._access_token()
        return await self._call(method, url, headers=self._bearer(token), what=what, json=json)

    @staticmethod
    def _bearer(token: str) -> dict[str, str]:
        return {"Authorization": f"Bearer {token}", "Accept": JSON}

    # -- sending ---------------------------------------------------------------------------------

    def notify_url(self) -> str:
        """Where Orange posts the receipts of the messages we send."""
        url = self.context.webhook_url(self.kind, self.name, "delivery")
        if self.settings.webhook_token:
            url += f"?{TOKEN_PARAM}={quote(self.settings.webhook_token, safe='')}"
        return url

    async def send(self, message: OutboundMessage) -> SendResult:
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
        answer = await self._authorized(
            "POST",
            self._requests_url,
            what="the Orange SMS API",
            json=orjson.dumps({"outboundSMSMessageRequest": request}),
        )
        if answer.status in (200, 201):
            inner = answer.data.get("outboundSMSMessageRequest")
            resource = inner.get("resourceURL") if isinstance(inner, dict) else None
            if not isinstance(resource, str):
                resource = answer.location
            return SendResult(
                provider_message_ids=_ids(_last_segment(resource) if isinstance(resource, str) else None),
                raw=answer.data,
            )
        raise self._error(answer)

    def _error(self, answer: _Answer) -> Exception:
        status, data = answer.status, answer.data
        refused = _request_error(data)
        if status == 429:
            text = refused[1] if refused else str(data.get("message") or "Too many requests")
            return TemporaryProviderError(
                f"Orange is rate limiting: {text}",
                code="rate_limited",
                raw=data,
                retry_after=_retry_after(answer.retry_after),
            )
        if status >= 500:
            text = refused[1] if refused else str(data.get("message") or f"HTTP {status}")
            return TemporaryProviderError(
                text, code=f"http_{status}", raw=data, retry_after=_retry_after(answer.retry_after)
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
        expected = self.settings.webhook_token
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

    async def poll(self, message: PollRequest) -> Report | None:
        answer = await self._authorized(
            "GET",
            f"{self._requests_url}/{quote(message.provider_message_id, safe='')}/deliveryInfos",
            what="the Orange SMS API",
        )
        if answer.status == 404:
            return None
        if answer.status != 200:
            raise self._error(answer)
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
