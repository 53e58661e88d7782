"""The Android gateways' bookkeeping: one row per phone, counted at each poll, and what an
operator asks about a phone (its last poll, how many messages wait for it or sit unacknowledged
in it). The poll itself is ``services/gateway.py``'s, in one transaction."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import func, select
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from tidings.domain.status import Status
from tidings.store.sql import is_value
from tidings.store.tables import gateways, messages

HANDED_OVER = "gateway"
"""``lease_owner`` of a message in a phone's hands."""


async def count_poll(
    conn: AsyncConnection,
    gateway: str,
    *,
    address: str | None,
    now: datetime,
    inbound: int,
    updates: int,
    handed_over: int,
) -> None:
    """Count one poll of ``gateway`` in its row (made at the first poll)."""
    dialect_insert = postgresql.insert if conn.dialect.name == "postgresql" else sqlite.insert
    statement = dialect_insert(gateways).values(
        name=gateway,
        first_poll_at=now,
        last_poll_at=now,
        last_address=address,
        polls=1,
        inbound_received=inbound,
        updates_received=updates,
        messages_handed_over=handed_over,
    )
    await conn.execute(
        statement.on_conflict_do_update(
            index_elements=["name"],
            set_={
                "last_poll_at": now,
                "last_address": address,
                "polls": gateways.c.polls + 1,
                "inbound_received": gateways.c.inbound_received + inbound,
                "updates_received": gateways.c.updates_received + updates,
                "messages_handed_over": gateways.c.messages_handed_over + handed_over,
            },
        )
    )


class GatewayStore:
    def __init__(self, engine: AsyncEngine) -> None:
        self.engine = engine

    async def states(self, names: list[str]) -> dict[str, dict[str, Any]]:
        """For each gateway in ``names``: its last poll and counts (``None`` fields if it never
        polled), how many messages wait for it, and how many it holds unacknowledged."""
        empty = {c.name: None for c in gateways.columns}
        states: dict[str, dict[str, Any]] = {
            n: {**empty, "name": n, "waiting": 0, "unacknowledged": 0} for n in names
        }
        if not names:
            return states
        async with self.engine.connect() as conn:
            for row in (await conn.execute(select(gateways).where(gateways.c.name.in_(names)))).all():
                states[row.name].update(row._mapping)
            waiting = await conn.execute(
                select(messages.c.provider, func.count())
                .where(is_value(messages.c.status, Status.PENDING.value), messages.c.provider.in_(names))
                .group_by(messages.c.provider)
            )
            for provider, count in waiting.all():
                states[provider]["waiting"] = int(count)
            held = await conn.execute(
                select(messages.c.provider, func.count())
                .where(
                    is_value(messages.c.status, Status.SENDING.value),
                    messages.c.provider.in_(names),
                    is_value(messages.c.lease_owner, HANDED_OVER),
                    messages.c.provider_status.is_(None),
                )
                .group_by(messages.c.provider)
            )
            for provider, count in held.all():
                states[provider]["unacknowledged"] = int(count)
        return states

    async def last_poll(self, gateway: str) -> datetime | None:
        async with self.engine.connect() as conn:
            value = await conn.execute(select(gateways.c.last_poll_at).where(gateways.c.name == gateway))
            found: datetime | None = value.scalar_one_or_none()
            return found
