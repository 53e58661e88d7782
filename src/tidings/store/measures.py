"""What the alert rules measure besides the totals of messages (``stats.py``): how long the queue
keeps messages waiting, failovers, failing webhooks and callbacks, stalled batches.

Each reads through an index, so that a check stays cheap on a table of millions of messages:
the partial ``ix_messages_due`` (waiting messages only), ``ix_message_events_failed_over``
(failover events only), ``ix_webhook_log_received_at``, ``ix_callbacks_status`` (with ids, which
sort by creation time) and ``ix_messages_batch``.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime

from sqlalchemy import and_, case, func, not_, or_, select
from sqlalchemy.ext.asyncio import AsyncConnection

from tidings import ids
from tidings.domain.callbacks import ALERT_RAISED, ALERT_RESOLVED
from tidings.domain.status import Status
from tidings.store.sql import is_value
from tidings.store.tables import callbacks, message_events, messages, webhook_log


async def oldest_due(conn: AsyncConnection, provider: str, now: datetime) -> datetime | None:
    """When the longest-waiting due message of ``provider`` came due (``None``: none is due).
    One step down ``ix_messages_due``."""
    query = select(func.min(messages.c.next_attempt_at)).where(
        is_value(messages.c.status, Status.PENDING.value),
        messages.c.provider == provider,
        messages.c.next_attempt_at <= now,
    )
    found: datetime | None = (await conn.execute(query)).scalar_one()
    return found


async def failovers(conn: AsyncConnection, since: datetime, until: datetime) -> dict[str, int]:
    """How many messages each provider passed on to the next provider in their route in
    ``[since, until)``: the ``failed_over`` events, by the provider they left."""
    left = message_events.c.detail["from"].as_string()
    query = (
        select(left, func.count())
        .where(
            is_value(message_events.c.type, "failed_over"),
            message_events.c.occurred_at >= since,
            message_events.c.occurred_at < until,
            left.is_not(None),
        )
        .group_by(left)
    )
    return {str(provider): int(count) for provider, count in (await conn.execute(query)).all()}


@dataclass(frozen=True)
class WebhookOutcomes:
    """A provider's webhook requests in a range that were finished with, and how many of those
    were refused or failed (a request still being processed is in neither)."""

    finished: int
    failed: int

    @property
    def failed_share(self) -> float | None:
        return self.failed / self.finished if self.finished else None


async def webhook_outcomes(
    conn: AsyncConnection, since: datetime, until: datetime
) -> dict[str, WebhookOutcomes]:
    """Per provider, its webhook-log rows received in ``[since, until)``: finished (processed, or
    answered with an error, or marked interrupted) and not processed among them."""
    answered = or_(webhook_log.c.response_status.is_not(None), webhook_log.c.error.is_not(None))
    finished = or_(webhook_log.c.processed.is_(True), answered)
    failed = and_(webhook_log.c.processed.is_(False), answered)
    query = (
        select(
            webhook_log.c.provider,
            func.count(case((finished, 1))),
            func.count(case((failed, 1))),
        )
        .where(webhook_log.c.received_at >= since, webhook_log.c.received_at < until)
        .group_by(webhook_log.c.provider)
    )
    return {
        str(provider): WebhookOutcomes(finished=int(done), failed=int(bad))
        for provider, done, bad in (await conn.execute(query)).all()
    }


@dataclass(frozen=True)
class FailingCallbacks:
    failed: int
    """Failed for good (attempts used up, or refused)."""
    retrying: int
    """Not delivered yet, waiting for another attempt."""


async def failing_callbacks(conn: AsyncConnection, since: datetime) -> FailingCallbacks:
    """The callbacks queued since ``since`` that failed or wait to be tried again; alert callbacks
    are left out, so that an alert about failing callbacks does not feed itself."""
    first = ids.lowest_at(since)
    not_alerts = not_(callbacks.c.type.in_([ALERT_RAISED, ALERT_RESOLVED]))
    failed = select(func.count()).where(
        is_value(callbacks.c.status, "failed"), callbacks.c.id >= first, not_alerts
    )
    retrying = select(func.count()).where(
        is_value(callbacks.c.status, "pending"),
        callbacks.c.id >= first,
        callbacks.c.attempts > 0,
        not_alerts,
    )
    return FailingCallbacks(
        failed=int((await conn.execute(failed)).scalar_one()),
        retrying=int((await conn.execute(retrying)).scalar_one()),
    )


@dataclass(frozen=True)
class WaitingBatch:
    """A batch with messages that have been due a while, and when any of its messages last moved."""

    batch_id: str
    waiting: int
    """Its messages due since before the cut-off."""
    oldest_due: datetime
    last_activity: datetime


async def waiting_batches(conn: AsyncConnection, due_before: datetime) -> list[WaitingBatch]:
    """The batches with messages due since before ``due_before`` and still waiting, with the last
    time any of their messages changed (a batch moving slowly through a rate limit changes all
    the while; a stalled one does not)."""
    waiting = (
        select(messages.c.batch_id, func.count(), func.min(messages.c.next_attempt_at))
        .where(
            is_value(messages.c.status, Status.PENDING.value),
            messages.c.next_attempt_at < due_before,
            messages.c.batch_id.is_not(None),
        )
        .group_by(messages.c.batch_id)
    )
    found = {str(b): (int(count), oldest) for b, count, oldest in (await conn.execute(waiting)).all()}
    if not found:
        return []
    batch_ids: Sequence[str] = sorted(found)
    moved = (
        select(messages.c.batch_id, func.max(messages.c.updated_at))
        .where(messages.c.batch_id.in_(batch_ids))
        .group_by(messages.c.batch_id)
    )
    last = {str(b): at for b, at in (await conn.execute(moved)).all()}
    return [
        WaitingBatch(batch_id=b, waiting=found[b][0], oldest_due=found[b][1], last_activity=last[b])
        for b in batch_ids
    ]
