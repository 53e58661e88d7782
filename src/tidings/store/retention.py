"""Retention: what tidings keeps, and for how long.

Old webhook-log rows and finished callbacks are deleted; for privacy, message bodies (with their
metadata and the providers' payloads in their history) and inbound texts are redacted once older
than their configured ages, the rest of each row kept (status, times, costs: the record of what
happened). Each statement touches at most ``batch`` rows, picked by id through an index, so it
holds its locks briefly and never stands in the queue's way.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import delete, select, update
from sqlalchemy.ext.asyncio import AsyncEngine

from tidings.domain.status import Status
from tidings.store.sql import in_values
from tidings.store.tables import (
    callbacks,
    inbound_messages,
    message_attachments,
    message_events,
    messages,
    webhook_log,
)

WAITING = (Status.SCHEDULED.value, Status.PENDING.value, Status.SENDING.value)
"""Messages still in the queue: never redacted, whatever their age."""


class RetentionStore:
    def __init__(self, engine: AsyncEngine) -> None:
        self.engine = engine

    async def delete_webhook_log(self, before: datetime, *, batch: int) -> int:
        """Delete up to ``batch`` webhook-log rows received before ``before``."""
        old = select(webhook_log.c.id).where(webhook_log.c.received_at < before).limit(batch)
        return await self._run(delete(webhook_log).where(webhook_log.c.id.in_(old.scalar_subquery())))

    async def delete_callbacks(self, before: datetime, *, batch: int) -> int:
        """Delete up to ``batch`` delivered or failed callbacks last touched before ``before``."""
        old = (
            select(callbacks.c.id)
            .where(in_values(callbacks.c.status, ["delivered", "failed"]), callbacks.c.updated_at < before)
            .limit(batch)
        )
        return await self._run(delete(callbacks).where(callbacks.c.id.in_(old.scalar_subquery())))

    async def redact_messages(self, before: datetime, *, now: datetime, batch: int) -> int:
        """Remove the content, metadata and provider payloads of up to ``batch`` messages created
        before ``before`` that are no longer in the queue: the text, and for an email its HTML
        part, subject, extra headers and attached files too."""
        async with self.engine.begin() as conn:
            picked = list(
                (
                    await conn.execute(
                        select(messages.c.id)
                        .where(
                            messages.c.created_at < before,
                            messages.c.redacted_at.is_(None),
                            messages.c.status.not_in(WAITING),
                        )
                        .limit(batch)
                    )
                ).scalars()
            )
            if not picked:
                return 0
            await conn.execute(
                update(messages)
                .where(messages.c.id.in_(picked), messages.c.status.not_in(WAITING))
                .values(body="", html=None, subject=None, headers=None, metadata={}, redacted_at=now)
            )
            await conn.execute(
                delete(message_attachments).where(message_attachments.c.message_id.in_(picked))
            )
            await conn.execute(
                update(message_events).where(message_events.c.message_id.in_(picked)).values(detail={})
            )
        return len(picked)

    async def redact_inbound(self, before: datetime, *, now: datetime, batch: int) -> int:
        """Remove the text and raw payload of up to ``batch`` inbound messages received before
        ``before``."""
        old = (
            select(inbound_messages.c.id)
            .where(inbound_messages.c.received_at < before, inbound_messages.c.redacted_at.is_(None))
            .limit(batch)
        )
        return await self._run(
            update(inbound_messages)
            .where(inbound_messages.c.id.in_(old.scalar_subquery()))
            .values(body="", raw={}, redacted_at=now)
        )

    async def mark_interrupted_webhooks(self, before: datetime, *, batch: int) -> int:
        """Give an error to up to ``batch`` webhook-log rows that passed their checks before
        ``before`` but were never finished (an outage cut them): they show as failed, to replay."""
        stale = (
            select(webhook_log.c.id)
            .where(
                webhook_log.c.received_at < before,
                webhook_log.c.verified.is_(True),
                webhook_log.c.processed.is_(False),
                webhook_log.c.error.is_(None),
            )
            .limit(batch)
        )
        return await self._run(
            update(webhook_log)
            .where(webhook_log.c.id.in_(stale.scalar_subquery()))
            .values(error="interrupted before it was processed; replay it")
        )

    async def _run(self, statement: Any) -> int:
        async with self.engine.begin() as conn:
            result = await conn.execute(statement)
        return int(result.rowcount or 0)
