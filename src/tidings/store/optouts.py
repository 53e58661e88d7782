"""Opt-outs (the suppression list) and what an inbound SMS sets off: its callbacks, and for a
keyword, the opt-out or opt-in and the auto-reply, all in the inbound message's transaction.

A row means "do not send to ``number``": from any of our senders (``scope = '*'``), or from the
one sender the person wrote to (``scope`` = that sender), as ``opt_out_scope`` says. Opting out
cancels the number's ``scheduled`` and ``pending`` messages in the same transaction.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Literal

from sqlalchemy import delete, select, update
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from tidings import ids
from tidings.clock import utcnow
from tidings.domain.keywords import Action, Keywords
from tidings.domain.segments import analyze
from tidings.domain.status import CANCELLABLE, Status
from tidings.store.db import plain
from tidings.store.messages import MessageStore, NewMessage, _event_row
from tidings.store.outbox import inbound_callbacks, record_events
from tidings.store.tables import messages, opt_outs

ALL_SENDERS = "*"
OPTED_OUT = "recipient_opted_out"


@dataclass(frozen=True)
class InboundPolicy:
    """What tidings does with inbound SMS (from the settings)."""

    keywords: Keywords
    scope: Literal["all", "sender"] = "all"
    replies: Mapping[Action, str] | None = None
    max_attempts: int = 11

    def scope_for(self, our_number: str | None) -> str:
        return our_number if self.scope == "sender" and our_number else ALL_SENDERS


@dataclass(frozen=True)
class InboundEffect:
    action: Action | None = None
    cancelled: int = 0
    reply_id: str | None = None


async def opt_out(
    conn: AsyncConnection,
    number: str,
    scope: str,
    *,
    source: str,
    keyword: str | None = None,
    inbound_id: str | None = None,
    note: str | None = None,
    now: datetime,
) -> tuple[bool, int]:
    """Add ``number`` to the suppression list and cancel its waiting messages; returns whether it
    was new and how many messages were cancelled."""
    dialect_insert = postgresql.insert if conn.dialect.name == "postgresql" else sqlite.insert
    added = await conn.execute(
        dialect_insert(opt_outs)
        .values(
            id=ids.new_id(),
            number=number,
            scope=scope,
            source=source,
            keyword=keyword,
            inbound_id=inbound_id,
            note=note,
            created_at=now,
        )
        .on_conflict_do_nothing(index_elements=["number", "scope"])
        .returning(opt_outs.c.id)
    )
    created = added.scalar_one_or_none() is not None
    condition = [messages.c.to == number, messages.c.status.in_([s.value for s in CANCELLABLE])]
    if scope != ALL_SENDERS:
        condition.append(messages.c.sender == scope)
    reason = "the recipient opted out" + (f" ({keyword})" if keyword else "")
    cancelled = (
        await conn.execute(
            update(messages)
            .where(*condition)
            .values(
                status=Status.CANCELLED.value,
                cancelled_at=now,
                updated_at=now,
                error_code=OPTED_OUT,
                error_message=reason,
            )
            .returning(messages.c.id)
        )
    ).scalars()
    events = [
        _event_row(
            m,
            type="cancelled",
            source=f"opt_out:{source}",
            status=Status.CANCELLED,
            changed=True,
            at=now,
            error_code=OPTED_OUT,
            error_message=reason,
        )
        for m in cancelled
    ]
    await record_events(conn, events)
    return created, len(events)


async def opt_in(conn: AsyncConnection, number: str, scope: str) -> int:
    """Take ``number`` off the list (for ``scope``; opting in to everything lifts every scope)."""
    condition = [opt_outs.c.number == number]
    if scope != ALL_SENDERS:
        condition.append(opt_outs.c.scope == scope)
    result = await conn.execute(delete(opt_outs).where(*condition))
    return int(result.rowcount or 0)


async def after_inbound(
    conn: AsyncConnection,
    messages_store: MessageStore,
    sms: Mapping[str, Any],
    policy: InboundPolicy | None,
    now: datetime,
) -> InboundEffect:
    """What a newly stored inbound SMS sets off, in its transaction: its callbacks, then for a
    keyword the opt-out or opt-in and the configured auto-reply."""
    await inbound_callbacks(conn, [sms])
    if policy is None:
        return InboundEffect()
    found = policy.keywords.match(sms["body"])
    if found is None:
        return InboundEffect()
    number, scope = sms["from"], policy.scope_for(sms.get("to"))
    cancelled = 0
    if found.action is Action.OPT_OUT:
        _, cancelled = await opt_out(
            conn, number, scope, source="keyword", keyword=found.keyword, inbound_id=sms["id"], now=now
        )
    elif found.action is Action.OPT_IN:
        await opt_in(conn, number, scope)
    reply = (policy.replies or {}).get(found.action)
    reply_id = None
    if reply:
        info = analyze(reply)
        # The reply to a STOP is exempt from the suppression list: it confirms the opt-out.
        new = NewMessage(
            to=number,
            body=reply,
            segments=info.segments,
            encoding=info.encoding.value,
            provider=sms["provider"],
            max_attempts=policy.max_attempts,
            sender=sms.get("to"),
            tags=["auto-reply", found.action.value],
            metadata={"in_reply_to": sms["id"]},
        )
        row = messages_store.new_row(new, now)
        await messages_store.write_new(conn, row, new)
        reply_id = row["id"]
    return InboundEffect(action=found.action, cancelled=cancelled, reply_id=reply_id)


class OptOutStore:
    def __init__(self, engine: AsyncEngine) -> None:
        self.engine = engine

    async def add(self, number: str, scope: str, *, note: str | None = None) -> tuple[bool, int]:
        async with self.engine.begin() as conn:
            return await opt_out(conn, number, scope, source="api", note=note, now=utcnow())

    async def remove(self, number: str, scope: str | None) -> int:
        async with self.engine.begin() as conn:
            return await opt_in(conn, number, scope or ALL_SENDERS)

    async def search(
        self, *, number: str | None = None, after_id: str | None = None, limit: int = 50
    ) -> list[dict[str, Any]]:
        query = select(opt_outs).order_by(opt_outs.c.id.desc()).limit(limit)
        if number is not None:
            query = query.where(opt_outs.c.number == number)
        if after_id is not None:
            query = query.where(opt_outs.c.id < after_id)
        async with self.engine.connect() as conn:
            return [plain(r._mapping) for r in (await conn.execute(query)).all()]
