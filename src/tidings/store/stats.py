"""Aggregates over messages: how many were sent, delivered and failed in a time range.

The definitions live here once, for the statistics API, the CLI and the alert rules:

- a message belongs to the range its ``created_at`` (when it was accepted) falls in;
- ``total`` counts every message in the range, ``attempted`` those not cancelled;
- ``pending`` are the attempted messages with no final status yet (``delivered``, ``failed``);
- the delivery rate is ``delivered / attempted`` and the failure rate ``failed / attempted``
  (``None`` when nothing was attempted).
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

from sqlalchemy import func, select
from sqlalchemy.ext.asyncio import AsyncConnection

from tidings.domain.status import Status
from tidings.store.tables import messages


@dataclass(frozen=True)
class Totals:
    """Counts of the messages accepted in a range, by what became of them."""

    total: int = 0
    delivered: int = 0
    failed: int = 0
    cancelled: int = 0

    @property
    def attempted(self) -> int:
        return self.total - self.cancelled

    @property
    def pending(self) -> int:
        return self.attempted - self.delivered - self.failed

    @property
    def delivery_rate(self) -> float | None:
        return self.delivered / self.attempted if self.attempted else None

    @property
    def failure_rate(self) -> float | None:
        return self.failed / self.attempted if self.attempted else None


async def totals(
    conn: AsyncConnection, since: datetime, until: datetime, *, provider: str | None = None
) -> Totals:
    """The messages accepted in ``[since, until)`` (of one provider, if given), by final status.
    Reads through the ``created_at`` index."""
    query = (
        select(messages.c.status, func.count())
        .where(messages.c.created_at >= since, messages.c.created_at < until)
        .group_by(messages.c.status)
    )
    if provider is not None:
        query = query.where(messages.c.provider == provider)
    counts = {str(status): int(count) for status, count in (await conn.execute(query)).all()}
    return Totals(
        total=sum(counts.values()),
        delivered=counts.get(Status.DELIVERED.value, 0),
        failed=counts.get(Status.FAILED.value, 0),
        cancelled=counts.get(Status.CANCELLED.value, 0),
    )
