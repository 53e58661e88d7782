"""What providers tell us: reports about our messages, and messages people send us. Pure data.

Every source (a webhook, a status poll, the Android gateway's updates, the worker's own view of a
send) speaks in :class:`Report`; an adapter wraps each in a :class:`ProviderReport` that says how
to find the message it is about. :class:`InboundMessage` is a reply or any message someone sent
to one of our addresses.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from tidings.domain.costs import Cost
from tidings.domain.failures import FailureReason
from tidings.domain.status import Status


@dataclass(frozen=True)
class Report:
    """One statement about a message's status from any source.

    ``provider_status`` keeps the provider's own word (``DeliveredToNetwork``, ``undelivered``…);
    ``detail`` the raw payload it came in. ``status`` is ``None`` for a report that carries no
    status we can act on; it is recorded and changes nothing.
    """

    status: Status | None
    source: str
    occurred_at: datetime
    provider_status: str | None = None
    error_code: str | None = None
    error_message: str | None = None
    detail: dict[str, Any] = field(default_factory=dict, compare=False, hash=False)
    failure_reason: FailureReason | None = None
    """``error_code`` in words every provider shares, for a report of failure."""
    cost: Cost | None = None
    """What the provider says the message cost (believed over any price table)."""


@dataclass(frozen=True)
class ProviderReport:
    """A report from a provider about one message, found by our id, else by the provider's id,
    else (for providers that lose both, like Orange's receipts without ``callbackData``) as the
    most recent ``sent`` message to ``recipient``. ``event`` names the kind of report in the
    message's history (``report``; the Android gateway's updates are ``gateway_update``).

    Email providers also report what the recipient did, with ``report.status`` ``None`` (it never
    changes the status): ``opened`` and ``clicked`` (kept as the message's ``opened_at`` and
    ``clicked_at``), and ``complained`` and ``unsubscribed`` (which put the address on the
    suppression list: the opt-out list of the email channel)."""

    report: Report
    message_id: str | None = None
    provider_message_id: str | None = None
    recipient: str | None = None
    event: str = "report"


@dataclass(frozen=True)
class InboundMessage:
    """A message someone sent to one of our numbers or addresses."""

    sender: str
    body: str
    to: str | None = None
    provider_message_id: str | None = None
    sent_at: datetime | None = None
    raw: dict[str, Any] = field(default_factory=dict)


OPENED = "opened"
CLICKED = "clicked"
COMPLAINED = "complained"
UNSUBSCRIBED = "unsubscribed"
ENGAGEMENT_EVENTS = frozenset({OPENED, CLICKED})
"""Report events that say the recipient looked: recorded with their time, no status change."""
SUPPRESSING_EVENTS = frozenset({COMPLAINED, UNSUBSCRIBED})
"""Report events after which no more email goes to the address."""
