"""Client callbacks: the outbox rows, written in the transaction of the change they report, and
the statements the callback sender uses to deliver them.

Every event that changes a message's status goes through ``store.events.record_events``, which
queues one ``message.status`` callback per change for a message with a callback URL. An inbound
message gets an ``inbound`` callback to every API key with a callback URL, and an alert raised or
resolved an ``alert.*`` callback to every admin key with one. A crash after the commit loses
nothing: the rows wait in the table.

Delivery: the oldest pending callback of each message is due first and the next waits for it, so
callbacks for one message arrive in order; a callback that failed for good no longer holds the
next one back.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import insert, or_, select, update
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from tidings import ids
from tidings.clock import utcnow
from tidings.domain.callbacks import inbound_payload, status_payload
from tidings.store.db import plain
from tidings.store.sql import is_value, picked_once, waits_for_earlier
from tidings.store.tables import api_keys, callbacks, messages

MAX_ATTEMPTS = 10
"""Deliveries tried before a callback is left ``failed`` (visible, and retryable by hand)."""


@dataclass(frozen=True)
class Recipient:
    """Where a message's callbacks go."""

    url: str
    api_key_id: str | None
    to: str


def _row(
    *, url: str, api_key_id: str | None, type: str, payload: dict[str, Any], now: datetime, **refs: str | None
) -> dict[str, Any]:
    return {
        "id": ids.new_id(),
        "api_key_id": api_key_id,
        "message_id": refs.get("message_id"),
        "inbound_id": refs.get("inbound_id"),
        "type": type,
        "url": url,
        "payload": payload,
        "status": "pending",
        "attempts": 0,
        "max_attempts": MAX_ATTEMPTS,
        "next_attempt_at": now,
        "created_at": now,
        "updated_at": now,
    }


async def queue_status_callbacks(
    conn: AsyncConnection, changes: Sequence[Mapping[str, Any]], recipients: Mapping[str, Recipient | None]
) -> None:
    """Queue a ``message.status`` callback for each event in ``changes`` whose message has a
    callback URL (from ``recipients``, else looked up)."""
    known: dict[str, Recipient | None] = dict(recipients)
    missing = sorted({e["message_id"] for e in changes} - known.keys())
    if missing:
        rows = await conn.execute(
            select(messages.c.id, messages.c.callback_url, messages.c.api_key_id, messages.c.to).where(
                messages.c.id.in_(missing), messages.c.callback_url.is_not(None)
            )
        )
        for row in rows.all():
            known[row.id] = Recipient(url=row.callback_url, api_key_id=row.api_key_id, to=row.to)
    now = utcnow()
    outbox = []
    for event in changes:
        target = known.get(event["message_id"])
        if target is None:
            continue
        outbox.append(
            _row(
                url=target.url,
                api_key_id=target.api_key_id,
                type="message.status",
                payload=status_payload(event, target.to),
                now=now,
                message_id=event["message_id"],
            )
        )
    if outbox:
        await conn.execute(insert(callbacks), outbox)


async def queue_inbound_callbacks(conn: AsyncConnection, inbound: Sequence[Mapping[str, Any]]) -> int:
    """Queue an ``inbound`` callback for each stored inbound message to every active API key with
    a callback URL; returns how many were queued."""
    if not inbound:
        return 0
    keys = (
        await conn.execute(
            select(api_keys.c.id, api_keys.c.callback_url).where(
                api_keys.c.callback_url.is_not(None), api_keys.c.revoked_at.is_(None)
            )
        )
    ).all()
    if not keys:
        return 0
    now = utcnow()
    rows = [
        _row(
            url=key.callback_url,
            api_key_id=key.id,
            type="inbound",
            payload=inbound_payload(sms),
            now=now,
            inbound_id=sms["id"],
        )
        for sms in inbound
        for key in keys
    ]
    await conn.execute(insert(callbacks), rows)
    return len(rows)


async def queue_alert_callbacks(conn: AsyncConnection, payload: dict[str, Any], *, now: datetime) -> int:
    """Queue ``payload`` (an ``alert.raised`` or ``alert.resolved``) to every active API key with
    the ``admin`` scope and a callback URL; returns how many were queued."""
    keys = (
        await conn.execute(
            select(api_keys.c.id, api_keys.c.callback_url, api_keys.c.scopes).where(
                api_keys.c.callback_url.is_not(None), api_keys.c.revoked_at.is_(None)
            )
        )
    ).all()
    rows = [
        _row(url=key.callback_url, api_key_id=key.id, type=payload["type"], payload=payload, now=now)
        for key in keys
        if "admin" in key.scopes.split()
    ]
    if rows:
        await conn.execute(insert(callbacks), rows)
    return len(rows)


@dataclass(frozen=True)
class DueCallback:
    id: str
    url: str
    payload: dict[str, Any]
    attempts: int
    max_attempts: int
    secrets: tuple[str, ...]
    """What it is signed with: its key's secret, and the previous one during a rotation's grace."""


class CallbackStore:
    def __init__(self, engine: AsyncEngine) -> None:
        self.engine = engine
        self.is_postgres = engine.dialect.name == "postgresql"

    async def take_due(
        self, *, limit: int, lease_seconds: float, now: datetime | None = None
    ) -> list[DueCallback]:
        """Take up to ``limit`` due callbacks for delivery (``delivering``, under a lease), never
        one whose message has an earlier callback still waiting."""
        now = now or utcnow()
        waits = waits_for_earlier(callbacks, "message_id", ("pending", "delivering"))
        due = (
            select(callbacks.c.id)
            .where(
                is_value(callbacks.c.status, "pending"),
                callbacks.c.next_attempt_at <= now,
                or_(callbacks.c.message_id.is_(None), ~waits),
            )
            .order_by(callbacks.c.next_attempt_at, callbacks.c.id)
            .limit(limit)
        )
        if self.is_postgres:
            due = due.with_for_update(skip_locked=True, of=callbacks)
        statement = (
            update(callbacks)
            .where(
                callbacks.c.id.in_(picked_once(due, is_postgres=self.is_postgres)),
                is_value(callbacks.c.status, "pending"),
            )
            .values(
                status="delivering",
                attempts=callbacks.c.attempts + 1,
                lease_expires_at=now + timedelta(seconds=lease_seconds),
                updated_at=now,
            )
            .returning(
                callbacks.c.id,
                callbacks.c.url,
                callbacks.c.payload,
                callbacks.c.attempts,
                callbacks.c.max_attempts,
                callbacks.c.api_key_id,
            )
        )
        async with self.engine.begin() as conn:
            rows = (await conn.execute(statement)).all()
            key_ids = sorted({r.api_key_id for r in rows if r.api_key_id})
            secrets: dict[str, tuple[str, ...]] = {}
            if key_ids:
                found = await conn.execute(
                    select(
                        api_keys.c.id,
                        api_keys.c.callback_secret,
                        api_keys.c.previous_callback_secret,
                        api_keys.c.previous_secret_until,
                    ).where(api_keys.c.id.in_(key_ids))
                )
                for k in found.all():
                    in_grace = k.previous_secret_until is not None and k.previous_secret_until > now
                    previous = k.previous_callback_secret if in_grace else None
                    secrets[k.id] = tuple(s for s in (k.callback_secret, previous) if s)
        return [
            DueCallback(
                id=r.id,
                url=r.url,
                payload=dict(r.payload),
                attempts=r.attempts,
                max_attempts=r.max_attempts,
                secrets=secrets.get(r.api_key_id, ()) if r.api_key_id else (),
            )
            for r in sorted(rows, key=lambda r: str(r.id))
        ]

    async def delivered(self, callback_id: str, status_code: int) -> None:
        now = utcnow()
        async with self.engine.begin() as conn:
            await conn.execute(
                update(callbacks)
                .where(callbacks.c.id == callback_id, is_value(callbacks.c.status, "delivering"))
                .values(
                    status="delivered",
                    delivered_at=now,
                    last_status_code=status_code,
                    last_error=None,
                    lease_expires_at=None,
                    updated_at=now,
                )
            )

    async def not_delivered(
        self, callback_id: str, *, error: str, status_code: int | None, retry_at: datetime | None
    ) -> None:
        """Record a failed delivery: try again at ``retry_at``, or (``None``) give up."""
        now = utcnow()
        async with self.engine.begin() as conn:
            await conn.execute(
                update(callbacks)
                .where(callbacks.c.id == callback_id, is_value(callbacks.c.status, "delivering"))
                .values(
                    status="pending" if retry_at is not None else "failed",
                    next_attempt_at=retry_at or now,
                    last_error=error[:2000],
                    last_status_code=status_code,
                    lease_expires_at=None,
                    updated_at=now,
                )
            )

    async def reap(self, now: datetime | None = None) -> int:
        """Return callbacks whose sender died mid-delivery to ``pending``."""
        now = now or utcnow()
        async with self.engine.begin() as conn:
            result = await conn.execute(
                update(callbacks)
                .where(is_value(callbacks.c.status, "delivering"), callbacks.c.lease_expires_at < now)
                .values(status="pending", next_attempt_at=now, lease_expires_at=None, updated_at=now)
            )
        return int(result.rowcount or 0)

    async def search(
        self,
        *,
        status: str | None = None,
        message_id: str | None = None,
        before_id: str | None = None,
        limit: int = 50,
    ) -> list[dict[str, Any]]:
        query = select(callbacks).order_by(callbacks.c.id.desc()).limit(limit)
        if status is not None:
            query = query.where(callbacks.c.status == status)
        if message_id is not None:
            query = query.where(callbacks.c.message_id == message_id)
        if before_id is not None:
            query = query.where(callbacks.c.id < before_id)
        async with self.engine.connect() as conn:
            return [plain(r._mapping) for r in (await conn.execute(query)).all()]

    async def retry(self, callback_id: str) -> dict[str, Any] | None:
        """Queue a ``failed`` (or ``delivered``) callback again with a fresh set of attempts;
        returns it as it stands afterwards (``None`` when there is no such callback)."""
        now = utcnow()
        async with self.engine.begin() as conn:
            await conn.execute(
                update(callbacks)
                .where(callbacks.c.id == callback_id, callbacks.c.status.in_(["failed", "delivered"]))
                .values(
                    status="pending", attempts=0, next_attempt_at=now, lease_expires_at=None, updated_at=now
                )
            )
            row = (await conn.execute(select(callbacks).where(callbacks.c.id == callback_id))).first()
        return plain(row._mapping) if row is not None else None

    async def set_key_url(self, api_key_id: str, url: str | None) -> None:
        """Set a key's default callback URL."""
        async with self.engine.begin() as conn:
            await conn.execute(update(api_keys).where(api_keys.c.id == api_key_id).values(callback_url=url))

    async def rotate_secret(self, api_key_id: str, secret: str, *, grace_until: datetime) -> None:
        """Give a key a new signing secret; the current one keeps signing too until ``grace_until``."""
        async with self.engine.begin() as conn:
            await conn.execute(
                update(api_keys)
                .where(api_keys.c.id == api_key_id)
                .values(
                    previous_callback_secret=api_keys.c.callback_secret,
                    previous_secret_until=grace_until,
                    callback_secret=secret,
                )
            )

    async def key_settings(self, api_key_id: str) -> dict[str, Any]:
        """A key's callback URL, secret, and previous secret's end of grace."""
        columns = (api_keys.c.callback_url, api_keys.c.callback_secret, api_keys.c.previous_secret_until)
        async with self.engine.connect() as conn:
            row = (await conn.execute(select(*columns).where(api_keys.c.id == api_key_id))).first()
        if row is None:
            return {c.name: None for c in columns}
        return plain(row._mapping)
