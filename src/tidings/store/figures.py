"""What ``GET /metrics`` reads from the database when it is scraped: a few small queries, each on
an index that holds only what it counts, never a scan of every message.

- queue depth: one count per waiting status, each on its partial index (``ix_messages_due``,
  ``ix_messages_scheduled``, ``ix_messages_leased``, ``ix_messages_awaiting_receipt``), so it costs
  what is waiting, however many finished messages the table keeps;
- the oldest due message of each provider: the first entry of ``ix_messages_due`` for it;
- the Android gateways' last polls: their rows;
- the progress of recent batches: the newest batches of the last day, and their messages that are
  not final yet;
- open alerts by rule (:func:`open_alerts`).
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime, timedelta

from sqlalchemy import func, literal, select, union_all
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from tidings.config import AlertRules
from tidings.domain.status import Status
from tidings.metrics import BatchProgress, Figures
from tidings.store.sql import in_values, is_value
from tidings.store.tables import alerts, batches, gateways, messages

WAITING = (Status.SCHEDULED, Status.PENDING, Status.SENDING, Status.SENT)
"""The statuses counted as queue depth: each has a partial index of its own."""
BATCH_WINDOW = timedelta(hours=24)
"""Batches created longer ago than this are not reported."""
BATCHES_LOOKED_AT = 200
"""The newest batches of the window whose progress is read."""
BATCHES_SHOWN = 50
"""The most batches reported (the newest with unfinished messages): bounds the series."""


async def queue_depth(conn: AsyncConnection) -> dict[str, int]:
    """Messages in each waiting status, in one statement."""
    counts = union_all(
        *(
            select(literal(status.value).label("status"), func.count().label("n")).where(
                is_value(messages.c.status, status.value)
            )
            for status in WAITING
        )
    )
    return {str(status): int(n) for status, n in (await conn.execute(counts)).all()}


async def oldest_pending(conn: AsyncConnection, providers: Sequence[str], now: datetime) -> dict[str, float]:
    """Per provider, seconds since its oldest due ``pending`` message became due (0 when none is:
    a message waiting out a retry back-off is not late)."""
    if not providers:
        return {}
    # The first entry of the provider's part of ix_messages_due (a min() is not planned as that
    # everywhere).
    first_due = union_all(
        *(
            select(
                literal(name).label("provider"),
                select(messages.c.next_attempt_at)
                .where(is_value(messages.c.status, Status.PENDING.value), messages.c.provider == name)
                .order_by(messages.c.next_attempt_at)
                .limit(1)
                .scalar_subquery()
                .label("due"),
            )
            for name in providers
        )
    )
    found = {str(name): due for name, due in (await conn.execute(first_due)).all()}
    return {
        name: max(0.0, (now - due).total_seconds()) if due is not None else 0.0 for name, due in found.items()
    }


async def gateway_poll_ages(conn: AsyncConnection, names: Sequence[str], now: datetime) -> dict[str, float]:
    """Seconds since each of the gateways ``names`` last polled (those that never did are left out)."""
    if not names:
        return {}
    query = select(gateways.c.name, gateways.c.last_poll_at).where(gateways.c.name.in_(list(names)))
    return {str(name): (now - last).total_seconds() for name, last in (await conn.execute(query)).all()}


async def batch_progress(conn: AsyncConnection, now: datetime) -> list[BatchProgress]:
    """The newest batches of the last :data:`BATCH_WINDOW` that still have messages that are not
    final, newest first, at most :data:`BATCHES_SHOWN`."""
    recent = (
        await conn.execute(
            select(batches.c.id, batches.c.accepted)
            .where(batches.c.created_at >= now - BATCH_WINDOW)
            .order_by(batches.c.created_at.desc())
            .limit(BATCHES_LOOKED_AT)
        )
    ).all()
    if not recent:
        return []
    unfinished: dict[str, int] = dict(
        (
            await conn.execute(
                select(messages.c.batch_id, func.count())
                .where(
                    messages.c.batch_id.in_([r.id for r in recent]),
                    in_values(messages.c.status, [s.value for s in WAITING]),
                )
                .group_by(messages.c.batch_id)
            )
        ).all()
    )
    found = [
        BatchProgress(id=str(r.id), total=int(r.accepted), unfinished=int(unfinished[r.id]))
        for r in recent
        if unfinished.get(r.id)
    ]
    return found[:BATCHES_SHOWN]


async def open_alerts(conn: AsyncConnection) -> dict[str, int]:
    """Open alerts by rule, every rule named (0 when none is open), through ``ix_alerts_open``,
    which holds only the open ones."""
    query = select(alerts.c.rule, func.count()).where(alerts.c.resolved_at.is_(None)).group_by(alerts.c.rule)
    found = dict.fromkeys(AlertRules.model_fields, 0)
    found.update({str(rule): int(n) for rule, n in (await conn.execute(query)).all()})
    return found


class FigureStore:
    def __init__(self, engine: AsyncEngine) -> None:
        self.engine = engine

    async def read(self, *, providers: Sequence[str], gateways: Sequence[str], now: datetime) -> Figures:
        """Every figure, read on one connection."""
        async with self.engine.connect() as conn:
            return Figures(
                queue=await queue_depth(conn),
                oldest_pending=await oldest_pending(conn, providers, now),
                gateway_last_poll=await gateway_poll_ages(conn, gateways, now),
                batches=await batch_progress(conn, now),
                open_alerts=await open_alerts(conn),
            )
