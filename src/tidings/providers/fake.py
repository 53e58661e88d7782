"""The ``fake`` provider: the default, so a new user can send and track a message with nothing else.

It behaves like a real provider: it takes time to answer, refuses some messages for good and some
for now, and confirms delivery later with a receipt. The magic numbers of ``fake_rules`` force
each path. It runs in one of two ways:

- in process (no ``url``): the adapter decides the outcome itself and, after
  ``receipt_delay_ms``, builds the same signed receipt the fake server would post and feeds it
  through the service's webhook pipeline: the very path a real provider's webhook takes, log
  entry included. A receipt still waiting when the process stops is lost, as a
  real provider's can be; like one, this fake can then be polled (``poll_after_seconds``): the
  outcome it decided is written into the id it gave;
- over HTTP (``url`` set): the adapter posts to the fake provider server
  (``python -m tidings.testing.fake_server``) through the shared pipeline of
  :class:`~tidings.providers.http.HttpProvider`, and the server posts receipts back to
  ``/webhooks/fake/{name}/status``. Tests and benchmarks use this. 200, 201 and 202 mean accepted;
  429 (``Retry-After`` honoured), 5xx, timeouts and connection errors are temporary; any other
  refusal is permanent, with the ``error.code`` of the answer.

It sends email too (in process): the magic numbers' paths are taken by addresses whose part
before the ``@`` names them (``bounce@``, ``tempfail@``, ``tempfail-once@``, ``undeliverable@``,
``no-receipt@``), and after delivery ``engaged@`` opens and clicks, ``complains@`` marks the email
as spam (its address is then suppressed).
"""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import logging
import random
import secrets
from collections.abc import Mapping
from datetime import UTC, datetime
from typing import Any, ClassVar

import orjson
from pydantic import Field, SecretStr

from tidings.clock import to_db, utcnow
from tidings.config import ProviderSettings
from tidings.domain.content import Channel
from tidings.domain.failures import FailureReason
from tidings.domain.reports import CLICKED, COMPLAINED, OPENED, ProviderReport, Report
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
    SendResult,
    WebhookRequest,
    WebhookResult,
    signatures_match,
)
from tidings.providers.fake_rules import (
    COMPLAINS,
    ENGAGED,
    ERROR_CODES,
    FakeBehaviour,
    Outcome,
    decide,
    local_part,
)
from tidings.providers.http import Answer, HttpProvider, HttpRequest

log = logging.getLogger(__name__)

_ID_MARKS = {Outcome.DELIVERED: "d", Outcome.RECEIPT_FAILED: "f", Outcome.NO_RECEIPT: "n"}
"""The letter after ``FK`` in an in-process id: what this fake decided for the message."""

SIGNATURE_HEADER = "X-Fake-Signature"


class FakeSettings(ProviderSettings):
    kind: str = "fake"
    latency_ms: float = Field(default=20.0, ge=0)
    receipt_delay_ms: float = Field(default=200.0, ge=0)
    temporary_failure_rate: float = Field(default=0.0, ge=0, le=1)
    permanent_failure_rate: float = Field(default=0.0, ge=0, le=1)
    undelivered_rate: float = Field(default=0.0, ge=0, le=1)
    url: str | None = None
    """Base URL of a fake provider server; unset: simulate in process."""
    token: SecretStr | None = None
    webhook_secret: SecretStr | None = None
    seed: int | None = None


def _reveal(secret: SecretStr | None) -> str | None:
    return secret.get_secret_value() if secret is not None else None


def sign(secret: str, body: bytes) -> str:
    """The ``X-Fake-Signature`` value for ``body``."""
    return "sha256=" + hmac.new(secret.encode(), body, hashlib.sha256).hexdigest()


_RECEIPT_STATUS = {"delivered": Status.DELIVERED, "failed": Status.FAILED, "sent": Status.SENT}
_EVENTS = frozenset({"report", OPENED, CLICKED, COMPLAINED})
"""What the fake's webhook reports: a status (``report``), or what an email's recipient did."""
_AFTERWARDS = {ENGAGED: (OPENED, CLICKED), COMPLAINS: (COMPLAINED,)}
"""What a magic address's recipient does after the email is delivered."""


FAILURE_REASONS: Mapping[str, FailureReason] = {
    "invalid_number": FailureReason.INVALID_NUMBER,
    "throttled": FailureReason.RATE_LIMITED,
    "undeliverable": FailureReason.UNREACHABLE,
}
"""The fake's codes in shared words."""


class FakeProvider(HttpProvider):
    kind = "fake"
    settings_model = FakeSettings
    webhook_media_types: ClassVar[dict[str, frozenset[str]]] = {"status": frozenset({"application/json"})}
    service = "the fake provider"
    sent_statuses = frozenset({200, 201, 202})
    can_poll = True
    failure_reasons = FAILURE_REASONS
    channels = frozenset({Channel.SMS, Channel.EMAIL})

    settings: FakeSettings

    async def start(self) -> None:
        self._rng = random.Random(self.settings.seed)
        self._behaviour = FakeBehaviour(
            temporary_failure_rate=self.settings.temporary_failure_rate,
            permanent_failure_rate=self.settings.permanent_failure_rate,
            undelivered_rate=self.settings.undelivered_rate,
        )
        # In process, receipts are signed with a per-process secret when none is configured,
        # so they take exactly the verified path a posted receipt takes.
        self._secret = _reveal(self.settings.webhook_secret) or secrets.token_hex(16)
        self._receipts: set[asyncio.Task[None]] = set()
        if self.settings.url:
            await super().start()

    async def close(self) -> None:
        for task in list(self._receipts):
            task.cancel()
        if self._receipts:
            await asyncio.gather(*self._receipts, return_exceptions=True)
        await super().close()

    async def send(self, message: OutboundMessage) -> SendResult:
        if self.settings.url:
            return await super().send(message)
        return await self._send_in_process(message)

    async def _send_in_process(self, message: OutboundMessage) -> SendResult:
        if self.settings.latency_ms:
            await asyncio.sleep(self.settings.latency_ms / 1000)
        outcome = decide(message.to, message.attempt, self._behaviour, self._rng)
        if outcome is Outcome.TEMPORARY:
            code, text = ERROR_CODES[outcome]
            raise TemporaryProviderError(text, code=code, raw={"error": {"code": code, "message": text}})
        if outcome is Outcome.PERMANENT:
            code, text = ERROR_CODES[outcome]
            raise PermanentProviderError(text, code=code, raw={"error": {"code": code, "message": text}})
        # The outcome is in the id, so that a poll after a restart still knows it.
        provider_id = f"FK{_ID_MARKS[outcome]}{secrets.token_hex(16)}"
        if outcome is not Outcome.NO_RECEIPT:
            after = _AFTERWARDS.get(local_part(message.to) or "", ()) if outcome is Outcome.DELIVERED else ()
            task = asyncio.create_task(self._deliver_receipt(provider_id, message.id, outcome, after))
            self._receipts.add(task)
            task.add_done_callback(self._receipts.discard)
        return SendResult(
            provider_message_ids=(provider_id,),
            provider_status="accepted",
            raw={"id": provider_id, "status": "accepted"},
        )

    async def _deliver_receipt(
        self, provider_id: str, reference: str, outcome: Outcome, after: tuple[str, ...] = ()
    ) -> None:
        await asyncio.sleep(self.settings.receipt_delay_ms / 1000)
        failed = outcome is Outcome.RECEIPT_FAILED
        code, text = ERROR_CODES[Outcome.RECEIPT_FAILED] if failed else (None, None)
        receipt = {
            "id": provider_id,
            "reference": reference,
            "status": "failed" if failed else "delivered",
            "error_code": code,
            "error_message": text,
            "timestamp": datetime.now(UTC).isoformat().replace("+00:00", "Z"),
        }
        await self._post_receipt(reference, orjson.dumps(receipt))
        for event in after:
            stamp = datetime.now(UTC).isoformat().replace("+00:00", "Z")
            body = {"id": provider_id, "reference": reference, "event": event, "timestamp": stamp}
            await self._post_receipt(reference, orjson.dumps(body))

    async def _post_receipt(self, reference: str, body: bytes) -> None:
        request = WebhookRequest(
            url=self.context.webhook_url(self.kind, self.name, "status"),
            headers={SIGNATURE_HEADER: sign(self._secret, body), "content-type": "application/json"},
            body=body,
        )
        if self.context.deliver is None:
            return
        try:
            await self.context.deliver(self, "status", request)
        except Exception:
            log.exception(
                "fake receipt could not be applied", extra={"action": "receipt", "message_id": reference}
            )

    async def poll(self, message: PollRequest) -> Report | None:
        """In process: the receipt this fake would have sent, from the outcome written into its
        id (its receipt may have been lost with a restart). Over HTTP: the server is not polled."""
        if self.settings.url:
            return None
        mark = message.provider_message_id[2:3]
        outcome = next((o for o, m in _ID_MARKS.items() if m == mark), None)
        if outcome is None or outcome is Outcome.NO_RECEIPT:
            return None
        failed = outcome is Outcome.RECEIPT_FAILED
        code, text = ERROR_CODES[Outcome.RECEIPT_FAILED] if failed else (None, None)
        word = "failed" if failed else "delivered"
        return Report(
            status=_RECEIPT_STATUS[word],
            source=f"provider:{self.name}",
            occurred_at=utcnow(),
            provider_status=word,
            error_code=code,
            error_message=text,
            detail={"polled": {"id": message.provider_message_id, "status": word}},
        )

    # -- over HTTP ---------------------------------------------------------------------------------

    def headers(self) -> Mapping[str, str]:
        token = _reveal(self.settings.token)
        return {"Authorization": f"Bearer {token}"} if token else {}

    def build_send(self, message: OutboundMessage) -> HttpRequest:
        assert self.settings.url
        payload = {
            "to": message.to,
            "from": message.sender,
            "body": message.sms.text if message.channel is Channel.SMS else (message.email.text or ""),
            "reference": message.id,
            "receipt_url": self.context.webhook_url(self.kind, self.name, "status"),
        }
        return HttpRequest("POST", self.settings.url.rstrip("/") + "/v1/messages", json=payload)

    def parse_sent(self, answer: Answer) -> SendResult:
        data = answer.data
        return SendResult(
            provider_message_ids=(str(data["id"]),) if data.get("id") else (),
            provider_status=data.get("status"),
            raw=data,
        )

    def error_details(self, answer: Answer) -> tuple[str, str]:
        found = answer.data.get("error")
        error: dict[str, Any] = found if isinstance(found, dict) else {}
        return str(error.get("code") or answer.status), str(error.get("message") or f"HTTP {answer.status}")

    # -- receipts ----------------------------------------------------------------------------------

    @property
    def _webhook_secret(self) -> str | None:
        return _reveal(self.settings.webhook_secret) if self.settings.url else self._secret

    def verify_webhook(self, event: str, request: WebhookRequest) -> None:
        secret = self._webhook_secret
        if secret and not signatures_match(sign(secret, request.body), request.header(SIGNATURE_HEADER)):
            raise WebhookUnauthorized()

    async def parse_webhook(self, event: str, request: WebhookRequest) -> WebhookResult:
        if event != "status":
            return await super().parse_webhook(event, request)
        try:
            data = orjson.loads(request.body)
            event = data.get("event", "report")
            if event not in _EVENTS:
                raise KeyError(event)
            status = _RECEIPT_STATUS[data["status"]] if event == "report" else None
            provider_id = data.get("id")
            reference = data.get("reference")
        except (orjson.JSONDecodeError, KeyError, TypeError, AttributeError) as exc:
            raise WebhookRejected(f"not a fake receipt: {exc!r}") from exc
        occurred = utcnow()
        if isinstance(data.get("timestamp"), str):
            try:
                occurred = to_db(datetime.fromisoformat(data["timestamp"].replace("Z", "+00:00")))
            except ValueError:
                pass
        report = Report(
            status=status,
            source=f"provider:{self.name}",
            occurred_at=occurred,
            provider_status=str(data["status"] if status is not None else event),
            error_code=data.get("error_code"),
            error_message=data.get("error_message"),
            detail=data,
        )
        return WebhookResult(
            reports=[
                ProviderReport(
                    report=report, message_id=reference, provider_message_id=provider_id, event=event
                )
            ]
        )
