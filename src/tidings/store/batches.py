"""Batches: a batch's row is written in the same transaction as its messages (so a batch is
stored whole or not at all), claims its group id, and answers "how is the group getting on" from
its messages."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import Select, and_, case, func, insert, literal_column, select, update
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from tidings.domain.status import Status
from tidings.store.db import plain
from tidings.store.sql import is_value
from tidings.store.tables import batch_tags, batches, messages

CHUNK = 2000
"""Messages written per statement group: keeps each statement under every driver's parameter limit."""


@dataclass(frozen=True)
class BatchFilter:
    tag: str | None = None
    created_after: datetime | None = None
    created_before: datetime | None = None


async def claim(conn: AsyncConnection, row: dict[str, Any]) -> None:
    """Write the batch's row, claiming its group id for its owner (``IntegrityError`` when taken)."""
    await conn.execute(insert(batches), row)
    tags = [{"batch_id": row["id"], "tag": t} for t in row["tags"]]
    if tags:
        await conn.execute(insert(batch_tags), tags)


async def settle(
    conn: AsyncConnection, batch_id: str, *, accepted: int, refused: list[dict[str, Any]]
) -> None:
    """Record how many recipients were accepted and which were refused (the batch's answer)."""
    await conn.execute(
        update(batches).where(batches.c.id == batch_id).values(accepted=accepted, refused=refused)
    )


async def message_ids(conn: AsyncConnection, batch_id: str) -> list[str]:
    query = select(messages.c.id).where(messages.c.batch_id == batch_id)
    return [str(m) for m in (await conn.execute(query)).scalars()]


async def mark_cancelled(conn: AsyncConnection, batch_id: str, now: datetime) -> None:
    await conn.execute(
        update(batches)
        .where(batches.c.id == batch_id, batches.c.cancelled_at.is_(None))
        .values(cancelled_at=now)
    )


class BatchStore:
    def __init__(self, engine: AsyncEngine) -> None:
        self.engine = engine

    async def by_group(self, owner: str, group_id: str) -> dict[str, Any] | None:
        query = select(batches).where(batches.c.owner == owner, batches.c.group_id == group_id)
        async with self.engine.connect() as conn:
            row = (await conn.execute(query)).mappings().first()
        return plain(row) if row is not None else None

    async def get(self, batch_id: str) -> dict[str, Any] | None:
        async with self.engine.connect() as conn:
            row = (await conn.execute(select(batches).where(batches.c.id == batch_id))).mappings().first()
        return plain(row) if row is not None else None

    async def progress(self, batch_id: str) -> dict[str, Any]:
        """The batch's messages by status (count and segments), its first and last activity, and
        what they cost so far."""
        return (await self.progress_of([batch_id]))[batch_id]

    async def progress_of(self, batch_ids: Sequence[str]) -> dict[str, dict[str, Any]]:
        """:meth:`progress` of each of ``batch_ids``: one pass over their messages through
        ``ix_messages_batch``, so it costs the messages of those batches and a caller bounds how
        many it asks about.

        The pass groups by batch only, counting each status with a filtered count: rows arrive in
        batch order from the index, so SQLite aggregates as it reads instead of sorting every
        message into a temporary tree first (half the time for a batch of 100,000). A batch whose
        costs are in several currencies has them summed by currency in a second statement."""
        found: dict[str, dict[str, Any]] = {
            b: {"counts": {}, "segments": 0, "first_activity": None, "last_activity": None, "costs": {}}
            for b in batch_ids
        }
        if not batch_ids:
            return found
        wanted = list(batch_ids)
        charged = case((messages.c.cost_micros.is_not(None), messages.c.currency))
        query = (
            select(
                messages.c.batch_id,
                func.coalesce(func.sum(messages.c.segments), 0),
                func.min(messages.c.created_at),
                func.max(messages.c.updated_at),
                func.sum(messages.c.cost_micros),
                func.min(charged),
                func.max(charged),
                *(func.count().filter(is_value(messages.c.status, s.value)) for s in Status),
            )
            .where(messages.c.batch_id.in_(wanted))
            .group_by(messages.c.batch_id)
        )
        mixed: list[str] = []
        async with self.engine.connect() as conn:
            for batch_id, parts, first, last, micros, low, high, *counts in (await conn.execute(query)).all():
                one = found[str(batch_id)]
                one["counts"] = {s.value: int(n) for s, n in zip(Status, counts, strict=True) if n}
                one.update(segments=int(parts), first_activity=first, last_activity=last)
                if low is not None and low == high:
                    # PostgreSQL sums BIGINT into NUMERIC (a Decimal here): whole micros either way.
                    one["costs"] = {str(low): int(micros)}
                elif low is not None:
                    mixed.append(str(batch_id))
            if mixed:
                by_currency = (
                    select(messages.c.batch_id, messages.c.currency, func.sum(messages.c.cost_micros))
                    .where(messages.c.batch_id.in_(mixed), messages.c.cost_micros.is_not(None))
                    .group_by(messages.c.batch_id, messages.c.currency)
                )
                for batch_id, currency, micros in (await conn.execute(by_currency)).all():
                    found[str(batch_id)]["costs"][str(currency)] = int(micros)
        for one in found.values():
            costs = one["costs"]
            single = next(iter(costs.items())) if len(costs) == 1 else (None, None)
            one["currency"], one["cost_micros"] = single
        return found

    async def failures(self, batch_id: str, *, limit: int) -> list[dict[str, Any]]:
        """The batch's failed messages grouped by error code and failure reason, the commonest
        first, at most ``limit`` groups, each with how many and one of its error messages.

        Reached through ``ix_messages_batch`` (the batch's messages, their status checked on
        each): on SQLite, which keeps no statistics to choose by, the status is written so that
        no index on it can be used, or every failed message of the store could be read instead."""
        async with self.engine.connect() as conn:
            status: Any = messages.c.status
            if conn.dialect.name == "sqlite":
                status = literal_column('+messages."status"', messages.c.status.type)
            count = func.count().label("n")
            query = (
                select(
                    messages.c.error_code,
                    messages.c.failure_reason,
                    count,
                    func.max(messages.c.error_message),
                )
                .where(messages.c.batch_id == batch_id, is_value(status, Status.FAILED.value))
                .group_by(messages.c.error_code, messages.c.failure_reason)
                .order_by(count.desc(), messages.c.error_code)
                .limit(limit)
            )
            rows = (await conn.execute(query)).all()
        return [
            {"error_code": code, "failure_reason": reason, "count": int(n), "example": example}
            for code, reason, n, example in rows
        ]

    async def search(
        self, filters: BatchFilter, *, after_id: str | None = None, limit: int = 50
    ) -> list[dict[str, Any]]:
        """Batches matching ``filters``, newest first, after the cursor ``after_id``."""
        query: Select[Any] = select(batches)
        if filters.tag is not None:
            query = query.join(
                batch_tags, and_(batch_tags.c.batch_id == batches.c.id, batch_tags.c.tag == filters.tag)
            )
        conditions = []
        if filters.created_after is not None:
            conditions.append(batches.c.created_at >= filters.created_after)
        if filters.created_before is not None:
            conditions.append(batches.c.created_at < filters.created_before)
        if after_id is not None:
            conditions.append(batches.c.id < after_id)
        query = query.where(*conditions).order_by(batches.c.id.desc()).limit(limit)
        async with self.engine.connect() as conn:
            return [plain(r) for r in (await conn.execute(query)).mappings()]


def chunks(items: Sequence[Any], size: int = CHUNK) -> list[Sequence[Any]]:
    return [items[i : i + size] for i in range(0, len(items), size)]
