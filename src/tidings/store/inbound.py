"""Inbound messages: every message people send to our numbers, stored once per provider id.

What a new one sets off (callbacks, keywords) is ``services/inbound.py``'s: it runs in the same
transaction, by calling these functions with its connection.
"""

from __future__ import annotations

import hashlib
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import select
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from tidings import ids
from tidings.store.db import fit_text, plain
from tidings.store.tables import inbound_messages

ADDRESS_CHARS = 64
ID_CHARS = 128
ID_CLOCK_SLACK = timedelta(hours=1)
"""How much later than its ``received_at`` an inbound row's id may have been made (its id is
made a moment after, or later still when the clock stepped back); bounds a search by time."""


def inbound_row(
    *,
    provider: str,
    sender: str,
    body: str,
    now: datetime,
    to: str | None = None,
    provider_message_id: str | None = None,
    sent_at: datetime | None = None,
    raw: dict[str, Any] | None = None,
    webhook_log_id: int | None = None,
) -> dict[str, Any]:
    """The row of one inbound SMS, made to fit its columns (an over-long id is hashed, so a
    resend still finds it)."""
    if provider_message_id is not None and len(provider_message_id) > ID_CHARS:
        provider_message_id = "sha256:" + hashlib.sha256(provider_message_id.encode()).hexdigest()
    return {
        "id": ids.new_id(),
        "provider": provider,
        "provider_message_id": provider_message_id,
        "from": fit_text(sender, ADDRESS_CHARS),
        "to": fit_text(to, ADDRESS_CHARS) if to is not None else None,
        "body": fit_text(body),
        "sent_at": sent_at,
        "received_at": now,
        "raw": raw or {},
        "webhook_log_id": webhook_log_id,
    }


async def store_rows(conn: AsyncConnection, rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Insert inbound rows, skipping those a provider already delivered (a resend, or a
    concurrent request that stored it first); returns the rows stored."""
    if not rows:
        return []
    dialect_insert = postgresql.insert if conn.dialect.name == "postgresql" else sqlite.insert
    result = await conn.execute(
        dialect_insert(inbound_messages)
        .on_conflict_do_nothing(index_elements=["provider", "provider_message_id"])
        .returning(inbound_messages.c.id),
        rows,
    )
    stored_ids = set(result.scalars())
    return [row for row in rows if row["id"] in stored_ids]


async def known_ids(conn: AsyncConnection, provider: str, provider_message_ids: list[str]) -> set[str]:
    """Which of ``provider_message_ids`` of ``provider`` are already stored."""
    if not provider_message_ids:
        return set()
    query = select(inbound_messages.c.provider_message_id).where(
        inbound_messages.c.provider == provider,
        inbound_messages.c.provider_message_id.in_(sorted(set(provider_message_ids))),
    )
    return {str(i) for i in (await conn.execute(query)).scalars()}


class InboundStore:
    def __init__(self, engine: AsyncEngine) -> None:
        self.engine = engine

    async def search(
        self,
        *,
        sender: str | None = None,
        to: str | None = None,
        since: datetime | None = None,
        until: datetime | None = None,
        after_id: str | None = None,
        limit: int = 50,
    ) -> list[dict[str, Any]]:
        """Inbound messages, newest first."""
        query = select(inbound_messages).order_by(inbound_messages.c.id.desc()).limit(limit)
        if sender is not None:
            query = query.where(inbound_messages.c["from"] == sender)
        if to is not None:
            query = query.where(inbound_messages.c.to == to)
        # Ids are made as rows are received, never before: the id bounds let a search by time
        # walk the ids in order rather than sort every row of the range.
        if since is not None:
            query = query.where(
                inbound_messages.c.received_at >= since, inbound_messages.c.id >= ids.lowest_at(since)
            )
        if until is not None:
            query = query.where(
                inbound_messages.c.received_at < until,
                inbound_messages.c.id < ids.lowest_at(until + ID_CLOCK_SLACK),
            )
        if after_id is not None:
            query = query.where(inbound_messages.c.id < after_id)
        async with self.engine.connect() as conn:
            rows = (await conn.execute(query)).all()
        return [plain(r._mapping) for r in rows]
