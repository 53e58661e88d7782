"""Inbound messages: every SMS people send to our numbers, stored once per provider id."""

from __future__ import annotations

from collections.abc import Mapping
from datetime import datetime
from typing import Any

from sqlalchemy import select
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.ext.asyncio import AsyncEngine

from tidings import ids
from tidings.clock import utcnow
from tidings.store.messages import MessageStore
from tidings.store.optouts import InboundPolicy, after_inbound
from tidings.store.tables import inbound_messages


class InboundStore:
    def __init__(self, engine: AsyncEngine, messages: MessageStore) -> None:
        self.engine = engine
        self.messages = messages
        self.is_postgres = engine.dialect.name == "postgresql"

    async def insert(
        self,
        *,
        provider: str,
        sender: str,
        body: str,
        to: str | None = None,
        provider_message_id: str | None = None,
        sent_at: datetime | None = None,
        raw: dict[str, Any] | None = None,
        webhook_log_id: int | None = None,
        policy: InboundPolicy | None = None,
    ) -> str | None:
        """Store one inbound message and, in the same transaction, what it sets off (callbacks,
        keywords: see ``store/optouts.py``); returns its id, or ``None`` when the provider already
        delivered a message with this ``provider_message_id`` (a resent webhook)."""
        now = utcnow()
        row: dict[str, Any] = {
            "id": ids.new_id(),
            "provider": provider,
            "provider_message_id": provider_message_id,
            "from": sender,
            "to": to,
            "body": body,
            "sent_at": sent_at,
            "received_at": now,
            "raw": raw or {},
            "webhook_log_id": webhook_log_id,
        }
        dialect_insert = postgresql.insert if self.is_postgres else sqlite.insert
        statement = (
            dialect_insert(inbound_messages)
            .values(row)
            .on_conflict_do_nothing(index_elements=["provider", "provider_message_id"])
            .returning(inbound_messages.c.id)
        )
        async with self.engine.begin() as conn:
            stored = (await conn.execute(statement)).scalar_one_or_none()
            if stored is not None:
                await after_inbound(conn, self.messages, row, policy, now)
        return str(stored) if stored is not None else None

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
        if since is not None:
            query = query.where(inbound_messages.c.received_at >= since)
        if until is not None:
            query = query.where(inbound_messages.c.received_at < until)
        if after_id is not None:
            query = query.where(inbound_messages.c.id < after_id)
        async with self.engine.connect() as conn:
            rows = (await conn.execute(query)).all()
        return [_plain(r._mapping) for r in rows]


def _plain(row: Mapping[Any, Any]) -> dict[str, Any]:
    return {str(k): v for k, v in row.items()}
