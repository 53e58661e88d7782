"""The change feed's reads: messages' status changes in the order their events were numbered
(``services/changes.py`` follows them; the gRPC API streams them)."""

from __future__ import annotations

from typing import Any

from sqlalchemy import func, select
from sqlalchemy.ext.asyncio import AsyncEngine

from tidings.store.db import plain
from tidings.store.tables import message_events, messages


class ChangeStore:
    def __init__(self, engine: AsyncEngine) -> None:
        self.engine = engine

    async def event_ids_after(self, after: int, limit: int) -> list[int]:
        """The ids of the next ``limit`` events after ``after``, of any message (through the
        primary key): what the feed checks for ids not yet committed."""
        query = select(message_events.c.id).where(message_events.c.id > after).order_by(message_events.c.id)
        async with self.engine.connect() as conn:
            return [int(i) for i in (await conn.scalars(query.limit(limit))).all()]

    async def last_event_id(self) -> int:
        async with self.engine.connect() as conn:
            return int(await conn.scalar(select(func.max(message_events.c.id))) or 0)

    async def first_event_id(self, *, message_id: str | None, batch_id: str | None) -> int | None:
        """The first event of a message (through ``ix_message_events_message_id``) or of any
        message of a batch (through ``ix_messages_batch`` as well)."""
        query = select(func.min(message_events.c.id))
        if message_id is not None:
            query = query.where(message_events.c.message_id == message_id)
        if batch_id is not None:
            query = query.join(messages, messages.c.id == message_events.c.message_id).where(
                messages.c.batch_id == batch_id
            )
        async with self.engine.connect() as conn:
            found = await conn.scalar(query)
        return int(found) if found is not None else None

    async def changes(
        self, after: int, through: int, *, message_id: str | None, batch_id: str | None
    ) -> list[dict[str, Any]]:
        """The status changes with ids in ``(after, through]``, oldest first, of one message, of
        one batch's messages, or of all."""
        e = message_events
        query = (
            select(
                e.c.id,
                e.c.message_id,
                e.c.type,
                e.c.status,
                e.c.provider_status,
                e.c.error_code,
                e.c.error_message,
                e.c.failure_reason,
                e.c.occurred_at,
                messages.c.batch_id,
                messages.c.to,
            )
            .join(messages, messages.c.id == e.c.message_id)
            .where(e.c.id > after, e.c.id <= through, e.c.changed.is_(True))
            .order_by(e.c.id)
        )
        if message_id is not None:
            query = query.where(e.c.message_id == message_id)
        if batch_id is not None:
            query = query.where(messages.c.batch_id == batch_id)
        async with self.engine.connect() as conn:
            return [plain(r) for r in (await conn.execute(query)).mappings()]
