"""The ``gateway`` provider: an Android phone running medic-gateway (cht-gateway) that pulls its work.

The phone polls ``POST /api/sms`` every 30 s (and at once after a full batch) with the SMS it
received and the status updates of the messages it was given; the answer lists the messages due
for it. Nothing is pushed, so the dispatcher never sends for this provider: the poll hands messages
over (see ``services/gateway.py`` and ``api/gateway.py``). This module reads the app's JSON and
turns it into what every provider gives tidings: inbound messages and reports.

The app's words and ours (the app's word is kept as ``provider_status``, the medic-webapp name for
the step in the event's ``detail``):

    UNSENT     received-by-gateway   sending
    PENDING    forwarded-by-gateway  sending
    SENT       sent                  sent
    DELIVERED  delivered             delivered
    FAILED     failed                failed (with the app's reason)

Any other word, or none, is recorded as unrecognised and changes nothing.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, ClassVar

import orjson
from pydantic import Field, SecretStr

from tidings.clock import to_db, utcnow
from tidings.config import ProviderSettings
from tidings.domain.failures import FailureReason, reason_for
from tidings.domain.reports import InboundMessage, ProviderReport, Report
from tidings.domain.status import Status
from tidings.errors import GatewayProtocolError, TemporaryProviderError
from tidings.providers.base import OutboundMessage, Provider, SendResult

log = logging.getLogger(__name__)

STATUSES: dict[str, tuple[Status, str]] = {
    "UNSENT": (Status.SENDING, "received-by-gateway"),
    "PENDING": (Status.SENDING, "forwarded-by-gateway"),
    "SENT": (Status.SENT, "sent"),
    "DELIVERED": (Status.DELIVERED, "delivered"),
    "FAILED": (Status.FAILED, "failed"),
}


UPDATE_EVENT = "gateway_update"
"""How a phone's status update is named in a message's history."""


FAILURE_REASONS: Mapping[str, FailureReason] = {
    # The reasons the app gives with FAILED: Android's SmsManager results.
    "radio-off": FailureReason.UNREACHABLE,
    "no-service": FailureReason.UNREACHABLE,
    "null-pdu": FailureReason.REJECTED_CONTENT,
    "generic-failure": FailureReason.UNKNOWN,
}
"""The Android app's failure reasons in shared words."""


class GatewaySettings(ProviderSettings):
    kind: str = "gateway"
    username: str = Field(min_length=1)
    password: SecretStr = Field(min_length=1)
    batch_size: int = Field(default=25, ge=1, le=1000)
    """Most messages handed over in one answer."""
    silent_after_seconds: float = Field(default=300.0, gt=0)
    """A phone that has not polled for this long is reported silent."""
    failover_after_seconds: float | None = Field(default=None, gt=0)
    """Pending messages that waited this long for a silent phone move to the next provider in their
    route (unset: they wait for the phone)."""


@dataclass(frozen=True)
class GatewaySms:
    """An SMS the phone received."""

    id: str
    sender: str
    body: str
    sent_at: datetime | None
    raw: dict[str, Any] = field(compare=False)


@dataclass(frozen=True)
class GatewayUpdate:
    """A status update for a message the phone was given."""

    id: str
    word: str | None
    """The app's status word as sent (``None`` when missing)."""
    status: Status | None
    """Ours; ``None`` for a word we do not know."""
    label: str | None
    reason: str | None
    raw: dict[str, Any] = field(compare=False)

    @property
    def key(self) -> tuple[str | None, str | None]:
        """What makes two updates of one message the same update."""
        return (self.word, self.reason)


@dataclass
class GatewayPoll:
    inbound: list[GatewaySms] = field(default_factory=list)
    updates: list[GatewayUpdate] = field(default_factory=list)
    skipped: list[str] = field(default_factory=list)
    """Why each malformed item was skipped."""


def _millis(value: Any) -> datetime | None:
    if isinstance(value, bool) or not isinstance(value, int | float):
        return None
    try:
        return to_db(datetime.fromtimestamp(value / 1000, UTC))
    except (OverflowError, OSError, ValueError):
        return None


def _text(value: Any) -> str | None:
    if isinstance(value, str) and value:
        return value
    if isinstance(value, int) and not isinstance(value, bool):
        return str(value)
    return None


def _items(payload: dict[str, Any], name: str, skipped: list[str]) -> list[Any]:
    value = payload.get(name)
    if value is None:
        return []
    if not isinstance(value, list):
        skipped.append(f"{name} is not a list")
        return []
    return value


def parse_poll(body: bytes) -> GatewayPoll:
    """Read the app's request body. Missing, null or empty lists are fine and unknown fields are
    ignored; a malformed item is skipped (and said why), the rest are kept."""
    if not body.strip():
        return GatewayPoll()
    try:
        payload = orjson.loads(body)
    except orjson.JSONDecodeError as exc:
        raise GatewayProtocolError(f"request body is not valid JSON: {exc}") from exc
    if not isinstance(payload, dict):
        raise GatewayProtocolError("request body must be a JSON object")
    poll = GatewayPoll()
    for n, item in enumerate(_items(payload, "messages", poll.skipped)):
        if not isinstance(item, dict):
            poll.skipped.append(f"messages[{n}] is not an object")
            continue
        sms_id, sender, content = _text(item.get("id")), _text(item.get("from")), item.get("content")
        if sms_id is None or sender is None or not isinstance(content, str):
            poll.skipped.append(f"messages[{n}] needs id, from and content")
            continue
        sent_at = _millis(item.get("sms_sent")) or _millis(item.get("sms_received"))
        poll.inbound.append(GatewaySms(id=sms_id, sender=sender, body=content, sent_at=sent_at, raw=item))
    for n, item in enumerate(_items(payload, "updates", poll.skipped)):
        if not isinstance(item, dict):
            poll.skipped.append(f"updates[{n}] is not an object")
            continue
        update_id = _text(item.get("id"))
        if update_id is None:
            poll.skipped.append(f"updates[{n}] has no id")
            continue
        word = item.get("status") if isinstance(item.get("status"), str) else None
        known = STATUSES.get(word.upper()) if word else None
        reason = item.get("reason")
        poll.updates.append(
            GatewayUpdate(
                id=update_id,
                word=word,
                status=known[0] if known else None,
                label=known[1] if known else None,
                reason=reason if isinstance(reason, str) and reason else None,
                raw=item,
            )
        )
    return poll


class GatewayProvider(Provider):
    kind = "gateway"
    settings_model = GatewaySettings
    pulls: ClassVar[bool] = True
    failure_reasons = FAILURE_REASONS

    settings: GatewaySettings

    def failure_reason(self, report: Report) -> FailureReason:
        # The app's code is always FAILED; its reason says why.
        return reason_for(report.error_message, self.failure_reasons)

    def inbound(self, poll: GatewayPoll) -> list[InboundMessage]:
        """The SMS the phone received."""
        return [
            InboundMessage(
                sender=sms.sender, body=sms.body, provider_message_id=sms.id, sent_at=sms.sent_at, raw=sms.raw
            )
            for sms in poll.inbound
        ]

    def reports(self, poll: GatewayPoll) -> list[ProviderReport]:
        """The phone's status updates as reports, in the order it sent them."""
        now = utcnow()
        return [
            ProviderReport(
                report=Report(
                    status=item.status,
                    source=f"gateway:{self.name}",
                    occurred_at=now,
                    provider_status=item.word,
                    error_code=item.word if item.status is Status.FAILED else None,
                    error_message=item.reason,
                    detail={"gateway_status": item.label or "unrecognised", "update": item.raw},
                ),
                message_id=item.id,
                event=UPDATE_EVENT,
            )
            for item in poll.updates
        ]

    async def send(self, message: OutboundMessage) -> SendResult:
        # Never called: the phone pulls its messages. Kept honest should that change.
        raise TemporaryProviderError(
            f"gateway {self.name} is polled by its phone; messages are not pushed", code="gateway_pull_only"
        )
