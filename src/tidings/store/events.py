"""A message's history: one row per step in ``message_events``, written in the transaction of
the step, together with the callbacks that step calls for."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from datetime import datetime
from typing import Any

from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncConnection

from tidings.domain.status import Status
from tidings.store import bulk
from tidings.store.callbacks import Recipient, queue_status_callbacks
from tidings.store.db import plain
from tidings.store.tables import message_events

SILENT_TYPES = frozenset({"accepted"})
"""Event types not worth a callback: the client learnt of them from our answer."""


def event_row(
    message_id: str,
    *,
    type: str,
    source: str,
    status: Status,
    changed: bool,
    at: datetime,
    recorded_at: datetime | None = None,
    provider_status: str | None = None,
    error_code: str | None = None,
    error_message: str | None = None,
    failure_reason: str | None = None,
    detail: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """The row of one event: ``status`` is the status it reports, ``changed`` whether it moved
    the message."""
    return {
        "message_id": message_id,
        "type": type,
        "source": source,
        "status": status.value,
        "changed": changed,
        "provider_status": provider_status,
        "error_code": error_code,
        "error_message": error_message,
        "failure_reason": failure_reason,
        "detail": detail or {},
        "occurred_at": at,
        "recorded_at": recorded_at or at,
    }


async def record_events(
    conn: AsyncConnection,
    events: dict[str, Any] | Sequence[dict[str, Any]],
    recipients: Mapping[str, Recipient | None] | None = None,
) -> None:
    """Insert ``events`` and queue the callbacks their status changes call for, in ``conn``'s
    transaction. ``recipients`` may give each message's callback target (``None``: it has none);
    messages it does not cover are looked up."""
    if isinstance(events, dict):
        events = [events]
    if not events:
        return
    await bulk.insert_rows(conn, message_events, events)
    changed = [e for e in events if e["changed"] and e["type"] not in SILENT_TYPES]
    if changed:
        await queue_status_callbacks(conn, changed, recipients or {})


async def history(conn: AsyncConnection, message_id: str) -> list[dict[str, Any]]:
    """A message's events, oldest first."""
    query = (
        select(message_events).where(message_events.c.message_id == message_id).order_by(message_events.c.id)
    )
    return [plain(r) for r in (await conn.execute(query)).mappings()]


async def recorded_words(
    conn: AsyncConnection, message_ids: Sequence[str], type: str
) -> dict[str, list[tuple[str | None, str | None]]]:
    """For each message, the ``(provider_status, error_message)`` of its events of ``type``, oldest
    first: what a source already told us, to recognise a repeated request."""
    recorded: dict[str, list[tuple[str | None, str | None]]] = {m: [] for m in message_ids}
    if not message_ids:
        return recorded
    query = (
        select(message_events.c.message_id, message_events.c.provider_status, message_events.c.error_message)
        .where(message_events.c.message_id.in_(list(message_ids)), message_events.c.type == type)
        .order_by(message_events.c.id)
    )
    for event in (await conn.execute(query)).all():
        recorded[event.message_id].append((event.provider_status, event.error_message))
    return recorded
