"""Every SQL statement of the Android gateway protocol: one poll is one transaction.

A poll stores the SMS the phone received, applies its status updates in order, hands over the
messages due for it and counts all that in the ``gateways`` row. Doing it in one transaction makes
a failed request leave nothing behind, so the app's resend of the same data is harmless; and a
resend after a *lost response* is harmless too, because every step is idempotent: inbound SMS are
unique per (gateway, id), an update already recorded is skipped, and a message handed over but not
acknowledged is simply handed over again.

Handed over means ``sending`` with ``lease_owner = 'gateway'`` and no lease expiry (the reaper
leaves it alone: the phone has it), and no ``provider_status`` until the phone's first update.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from sqlalchemy import and_, bindparam, func, literal_column, select, update
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from tidings import ids
from tidings.clock import utcnow
from tidings.domain.reports import Report
from tidings.domain.status import Status, apply_report
from tidings.providers.gateway import GatewaySms, GatewayUpdate
from tidings.store.inbound import inbound_row, store_rows
from tidings.store.messages import MessageStore, _event_row, _status_columns, _status_is
from tidings.store.optouts import InboundPolicy
from tidings.store.outbox import record_events
from tidings.store.tables import gateways, inbound_messages, message_events, messages

log = logging.getLogger(__name__)

HANDED_OVER = "gateway"
"""``lease_owner`` of a message in a phone's hands."""

UPDATE_EVENT = "gateway_update"
_ATTEMPTS = 10


@dataclass(frozen=True)
class Outgoing:
    id: str
    to: str
    body: str


@dataclass
class Exchange:
    """What one poll did."""

    inbound_stored: int = 0
    inbound_duplicates: int = 0
    updates_applied: int = 0
    updates_repeated: int = 0
    updates_unknown: list[str] = field(default_factory=list)
    outgoing: list[Outgoing] = field(default_factory=list)
    handed_over_again: int = 0


_TRACKED = (
    "status",
    "provider_status",
    "error_code",
    "error_message",
    "sent_at",
    "delivered_at",
    "failed_at",
    "lease_owner",
    "lease_expires_at",
)
"""The columns a gateway update may change."""


class _Moved(Exception):
    """A message changed under the poll; the poll is run again."""


def _advance(row: dict[str, Any], after: Status, report: Report) -> None:
    """Apply one update to a message's columns held in ``row``."""
    row["_touched"] = True
    # Even an update that keeps the status acknowledges the handover (provider_status).
    row["provider_status"] = report.provider_status
    if after.value != row["status"]:
        row.update(_status_columns(after, report, row["sent_at"]))


def _overlap(
    recorded: list[tuple[str | None, str | None]], incoming: list[tuple[str | None, str | None]]
) -> int:
    """How many of ``incoming`` were recorded already: the longest start of ``incoming`` that the
    recorded updates end with (the app resends what it sent when our answer was lost)."""
    for size in range(min(len(recorded), len(incoming)), 0, -1):
        if recorded[-size:] == incoming[:size]:
            return size
    return 0


class GatewayStore:
    def __init__(self, engine: AsyncEngine, messages_store: MessageStore) -> None:
        self.engine = engine
        self.messages = messages_store
        self.is_postgres = engine.dialect.name == "postgresql"

    async def exchange(
        self,
        gateway: str,
        *,
        inbound: list[GatewaySms],
        updates: list[GatewayUpdate],
        limit: int,
        address: str | None = None,
        now: datetime | None = None,
        policy: InboundPolicy | None = None,
    ) -> Exchange:
        """Process one poll of ``gateway`` in one transaction; see the module docstring."""
        now = now or utcnow()
        for _ in range(_ATTEMPTS):
            result = Exchange()
            try:
                async with self.engine.begin() as conn:
                    await self._store_inbound(conn, gateway, inbound, now, result, policy)
                    await self._apply_updates(conn, gateway, updates, now, result)
                    await self._hand_over(conn, gateway, limit, now, result)
                    await self._count(conn, gateway, address, now, len(inbound), len(updates), result)
            except _Moved:
                continue
            return result
        raise RuntimeError(f"messages of gateway {gateway} kept changing during a poll")

    async def _store_inbound(
        self,
        conn: AsyncConnection,
        gateway: str,
        inbound: list[GatewaySms],
        now: datetime,
        result: Exchange,
        policy: InboundPolicy | None,
    ) -> None:
        if not inbound:
            return
        candidates = [
            inbound_row(
                provider=gateway,
                sender=sms.sender,
                body=sms.body,
                now=now,
                provider_message_id=sms.id,
                sent_at=sms.sent_at,
                raw=sms.raw,
            )
            for sms in inbound
        ]
        known = set(
            (
                await conn.execute(
                    select(inbound_messages.c.provider_message_id).where(
                        inbound_messages.c.provider == gateway,
                        inbound_messages.c.provider_message_id.in_(
                            sorted({r["provider_message_id"] for r in candidates})
                        ),
                    )
                )
            ).scalars()
        )
        rows = []
        for row in candidates:
            if row["provider_message_id"] in known:
                continue
            known.add(row["provider_message_id"])
            rows.append(row)
        stored = await store_rows(conn, rows, policy, self.messages)
        result.inbound_stored += len(stored)
        result.inbound_duplicates += len(candidates) - len(stored)

    async def _apply_updates(
        self,
        conn: AsyncConnection,
        gateway: str,
        updates: list[GatewayUpdate],
        now: datetime,
        result: Exchange,
    ) -> None:
        if not updates:
            return
        wanted = sorted({u.id for u in updates if ids.is_id(u.id)})
        query = select(*(messages.c[name] for name in ("id", *_TRACKED))).where(
            messages.c.id.in_(wanted), messages.c.provider == gateway
        )
        if self.is_postgres:
            query = query.with_for_update()
        rows = {r.id: dict(r._mapping) for r in (await conn.execute(query)).all()}
        recorded: dict[str, list[tuple[str | None, str | None]]] = {m: [] for m in rows}
        history = (
            select(
                message_events.c.message_id, message_events.c.provider_status, message_events.c.error_message
            )
            .where(message_events.c.message_id.in_(list(rows)), message_events.c.type == UPDATE_EVENT)
            .order_by(message_events.c.id)
        )
        for event in (await conn.execute(history)).all():
            recorded[event.message_id].append((event.provider_status, event.error_message))
        # Per message, skip the updates this request repeats from one whose answer was lost.
        skip = {m: _overlap(recorded[m], [u.key for u in updates if u.id == m]) for m in rows}
        before = {m: r["status"] for m, r in rows.items()}
        events: list[dict[str, Any]] = []
        for item in updates:
            row = rows.get(item.id)
            if row is None:
                result.updates_unknown.append(item.id)
                continue
            if skip[item.id] > 0:
                skip[item.id] -= 1
                result.updates_repeated += 1
                continue
            report = Report(
                status=item.status,
                source=f"gateway:{gateway}",
                occurred_at=now,
                provider_status=item.word,
                error_code=item.word if item.status is Status.FAILED else None,
                error_message=item.reason,
                detail={"gateway_status": item.label or "unrecognised", "update": item.raw},
            )
            status = Status(row["status"])
            after = apply_report(status, item.status)
            _advance(row, after, report)
            result.updates_applied += 1
            events.append(
                _event_row(
                    item.id,
                    type=UPDATE_EVENT,
                    source=report.source,
                    status=item.status or status,
                    changed=after != status,
                    at=now,
                    provider_status=item.word,
                    error_code=report.error_code,
                    error_message=item.reason,
                    detail=report.detail,
                )
            )
        touched = [row for row in rows.values() if row.get("_touched")]
        if touched:
            statement = (
                update(messages)
                .where(messages.c.id == bindparam("b_id"), messages.c.status == bindparam("b_before"))
                .values({name: bindparam(f"b_{name}") for name in _TRACKED} | {"updated_at": now})
            )
            params = [
                {"b_id": r["id"], "b_before": before[r["id"]]} | {f"b_{n}": r[n] for n in _TRACKED}
                for r in touched
            ]
            done = await conn.execute(statement, params)
            # On PostgreSQL the rows are locked since they were read (FOR UPDATE), and asyncpg
            # reports no count for a batch. SQLite reads outside the write lock, so another
            # writer may have moved one since: then start the whole poll again on what is there.
            if not self.is_postgres and done.rowcount != len(touched):
                raise _Moved()
        if events:
            await record_events(conn, events)

    async def _hand_over(
        self, conn: AsyncConnection, gateway: str, limit: int, now: datetime, result: Exchange
    ) -> None:
        # Handed over before and never acknowledged (the answer may have been lost) come first.
        again = (
            select(messages.c.id)
            .where(
                _status_is(Status.SENDING),
                messages.c.provider == gateway,
                messages.c.lease_owner == HANDED_OVER,
                messages.c.provider_status.is_(None),
            )
            .order_by(messages.c.id)
            .limit(limit)
        )
        due = (
            select(messages.c.id)
            .where(
                _status_is(Status.PENDING), messages.c.provider == gateway, messages.c.next_attempt_at <= now
            )
            .order_by(messages.c.next_attempt_at, messages.c.id)
            .limit(limit)
        )
        if self.is_postgres:
            again = again.with_for_update(skip_locked=True)
            due = due.with_for_update(skip_locked=True)
        repeat_ids = list((await conn.execute(again)).scalars())
        new_ids = (
            list((await conn.execute(due.limit(limit - len(repeat_ids)))).scalars())
            if len(repeat_ids) < limit
            else []
        )
        if new_ids:
            handed = (
                await conn.execute(
                    update(messages)
                    .where(messages.c.id.in_(new_ids), _status_is(Status.PENDING))
                    .values(
                        status=Status.SENDING.value,
                        attempts=messages.c.attempts + 1,
                        lease_owner=HANDED_OVER,
                        lease_expires_at=None,
                        provider_status=None,
                        updated_at=now,
                    )
                    .returning(messages.c.id)
                )
            ).scalars()
            new_ids = list(handed)
            if new_ids:
                await record_events(
                    conn,
                    [
                        _event_row(
                            m,
                            type="handed_to_gateway",
                            source=f"gateway:{gateway}",
                            status=Status.SENDING,
                            changed=True,
                            at=now,
                            detail={"gateway_status": "forwarded-to-gateway"},
                        )
                        for m in new_ids
                    ],
                )
        chosen = repeat_ids + new_ids
        if not chosen:
            return
        rows = (
            await conn.execute(
                select(messages.c.id, messages.c.to, messages.c.body).where(messages.c.id.in_(chosen))
            )
        ).all()
        by_id = {r.id: r for r in rows}
        result.outgoing = [Outgoing(id=m, to=by_id[m].to, body=by_id[m].body) for m in chosen if m in by_id]
        result.handed_over_again = len(repeat_ids)

    async def _count(
        self,
        conn: AsyncConnection,
        gateway: str,
        address: str | None,
        now: datetime,
        inbound: int,
        updates: int,
        result: Exchange,
    ) -> None:
        dialect_insert = postgresql.insert if self.is_postgres else sqlite.insert
        handed = len(result.outgoing) - result.handed_over_again
        statement = dialect_insert(gateways).values(
            name=gateway,
            first_poll_at=now,
            last_poll_at=now,
            last_address=address,
            polls=1,
            inbound_received=inbound,
            updates_received=updates,
            messages_handed_over=handed,
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
                    "messages_handed_over": gateways.c.messages_handed_over + handed,
                },
            )
        )

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
                .where(_status_is(Status.PENDING), messages.c.provider.in_(names))
                .group_by(messages.c.provider)
            )
            for provider, count in waiting.all():
                states[provider]["waiting"] = int(count)
            held = await conn.execute(
                select(messages.c.provider, func.count())
                .where(
                    and_(
                        _status_is(Status.SENDING),
                        messages.c.provider.in_(names),
                        messages.c.lease_owner == literal_column(f"'{HANDED_OVER}'"),
                        messages.c.provider_status.is_(None),
                    )
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
