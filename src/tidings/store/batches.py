"""Batches: a batch's row is written in the same transaction as its messages (so a batch is
stored whole or not at all), claims its group id, and answers "how is the group getting on" from
its messages."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import Select, and_, func, insert, select, update
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from tidings.store.db import plain
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
        """The batch's messages by status (count and segments), and its first and last activity."""
        query = (
            select(
                messages.c.status,
                func.count(),
                func.coalesce(func.sum(messages.c.segments), 0),
                func.min(messages.c.created_at),
                func.max(messages.c.updated_at),
            )
            .where(messages.c.batch_id == batch_id)
            .group_by(messages.c.status)
        )
        counts: dict[str, int] = {}
        segments = 0
        first: datetime | None = None
        last: datetime | None = None
        async with self.engine.connect() as conn:
            for status, count, parts, created, updated in (await conn.execute(query)).all():
                counts[str(status)] = int(count)
                segments += int(parts)
                first = created if first is None or created < first else first
                last = updated if last is None or updated > last else last
            costs = {
                str(currency): int(micros)
                for currency, micros in (
                    await conn.execute(
                        select(messages.c.currency, func.sum(messages.c.cost_micros))
                        .where(messages.c.batch_id == batch_id, messages.c.cost_micros.is_not(None))
                        .group_by(messages.c.currency)
                    )
                ).all()
            }
        single = next(iter(costs.items())) if len(costs) == 1 else (None, None)
        return {
            "counts": counts,
            "segments": segments,
            "first_activity": first,
            "last_activity": last,
            "costs": costs,
            "currency": single[0],
            "cost_micros": single[1],
        }

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
