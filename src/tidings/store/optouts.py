"""The suppression list (opt-outs), per channel.

A row means "do not send to ``address`` on ``channel``": from any of our senders (``scope`` ``*``)
or from the one sender the person wrote to (``scope`` = that sender). :func:`suppress` puts an
address on the list and cancels what still waits for it, in one transaction, for every way an
address gets there (a STOP, the API, a provider's complaint, an unsubscribe link); the
confirmation of a STOP is ``services/inbound.py``'s.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import delete, select
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from tidings import ids
from tidings.store.db import plain
from tidings.store.messages import ALL_SENDERS, Recipient, cancel
from tidings.store.tables import opt_outs


async def add(
    conn: AsyncConnection,
    channel: str,
    address: str,
    scope: str,
    *,
    source: str,
    keyword: str | None = None,
    inbound_id: str | None = None,
    note: str | None = None,
    now: datetime,
) -> bool:
    """Put ``address`` on the list for ``scope``; whether it was not there yet."""
    dialect_insert = postgresql.insert if conn.dialect.name == "postgresql" else sqlite.insert
    added = await conn.execute(
        dialect_insert(opt_outs)
        .values(
            id=ids.new_id(),
            channel=channel,
            address=address,
            scope=scope,
            source=source,
            keyword=keyword,
            inbound_id=inbound_id,
            note=note,
            created_at=now,
        )
        .on_conflict_do_nothing(index_elements=["channel", "address", "scope"])
        .returning(opt_outs.c.id)
    )
    return added.scalar_one_or_none() is not None


OPTED_OUT = "recipient_opted_out"
"""The error code of a message cancelled because its recipient opted out."""


async def suppress(
    conn: AsyncConnection,
    channel: str,
    address: str,
    scope: str,
    *,
    source: str,
    cancel_source: str,
    reason: str,
    keyword: str | None = None,
    inbound_id: str | None = None,
    note: str | None = None,
    now: datetime,
) -> tuple[bool, list[str]]:
    """Put ``address`` on the list for ``scope`` and cancel its ``scheduled`` and ``pending``
    messages from that scope (their events come from ``cancel_source``, with ``reason``); returns
    whether it was not on the list yet, and the ids cancelled."""
    created = await add(
        conn,
        channel,
        address,
        scope,
        source=source,
        keyword=keyword,
        inbound_id=inbound_id,
        note=note,
        now=now,
    )
    cancelled = await cancel(
        conn,
        recipient=Recipient(channel, address, scope),
        source=cancel_source,
        reason=reason,
        error_code=OPTED_OUT,
        now=now,
    )
    return created, cancelled


async def remove(conn: AsyncConnection, channel: str, address: str, scope: str) -> int:
    """Take ``address`` off the list (for ``scope``; opting in to everything lifts every scope)."""
    condition = [opt_outs.c.channel == channel, opt_outs.c.address == address]
    if scope != ALL_SENDERS:
        condition.append(opt_outs.c.scope == scope)
    result = await conn.execute(delete(opt_outs).where(*condition))
    return int(result.rowcount or 0)


class OptOutStore:
    def __init__(self, engine: AsyncEngine) -> None:
        self.engine = engine

    async def search(
        self,
        *,
        channel: str | None = None,
        address: str | None = None,
        after_id: str | None = None,
        limit: int = 50,
    ) -> list[dict[str, Any]]:
        """The list, newest first."""
        query = select(opt_outs).order_by(opt_outs.c.id.desc()).limit(limit)
        if channel is not None:
            query = query.where(opt_outs.c.channel == channel)
        if address is not None:
            query = query.where(opt_outs.c.address == address)
        if after_id is not None:
            query = query.where(opt_outs.c.id < after_id)
        async with self.engine.connect() as conn:
            return [plain(r._mapping) for r in (await conn.execute(query)).all()]
