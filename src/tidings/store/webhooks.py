"""The webhook log: every webhook request, stored before it is processed.

A request that passed its checks is written (and committed) before it is processed, then
completed with what came of it: processed or not, the error, the message it concerned and how long
it took. A request that failed part-way stays in the log with its error and can be run again
(``tidings webhooks replay ID``). A refused request is written once, complete, with its body cut
to :data:`REFUSED_BODY_BYTES` (its size and SHA-256 are kept): refusals cannot fill the disk.
"""

from __future__ import annotations

import hashlib
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import bindparam, insert, literal_column, select, update
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine
from sqlalchemy.sql.elements import ColumnElement

from tidings.clock import utcnow
from tidings.store.batcher import WriteBatcher
from tidings.store.db import fit_text
from tidings.store.tables import webhook_log

REFUSED_BODY_BYTES = 1024
"""How much of a refused request's body is kept."""
EVENT_CHARS = 64

# Headers that carry credentials; they are never stored.
_SECRET_HEADERS = frozenset({"authorization", "proxy-authorization", "cookie", "x-api-key"})


def redact_headers(headers: Mapping[str, str]) -> dict[str, str]:
    """The headers worth keeping for an audit, without credentials."""
    return {k.lower(): v for k, v in headers.items() if k.lower() not in _SECRET_HEADERS}


_FINISHED = (
    "verified",
    "processed",
    "response_status",
    "error",
    "message_id",
    "reports",
    "unmatched",
    "inbound",
    "duration_ms",
)


@dataclass(frozen=True)
class WebhookEntry:
    id: int
    provider: str
    kind: str
    event: str
    url: str
    headers: dict[str, str]
    body: bytes
    remote_ip: str | None
    verified: bool | None
    processed: bool
    response_status: int | None
    error: str | None
    message_id: str | None
    reports: int
    unmatched: int
    inbound: int
    received_at: datetime
    body_size: int = 0

    @property
    def state(self) -> str:
        """``processed``, ``refused`` (its checks failed), ``failed`` (processing failed) or
        ``interrupted`` (cut before it was finished: replay it)."""
        if self.processed:
            return "processed"
        if self.verified is False:
            return "refused"
        return "failed" if self.response_status is not None else "interrupted"


_RECORD = insert(webhook_log).returning(webhook_log.c.id, sort_by_parameter_order=True)
_FINISH = (
    update(webhook_log)
    .where(webhook_log.c.id == bindparam("b_id"))
    .values({name: bindparam(f"b_{name}") for name in _FINISHED})
)
"""Made once: a webhook's two writes are the same statements every time."""


class WebhookLogStore:
    def __init__(self, engine: AsyncEngine, writes: WriteBatcher | None = None) -> None:
        self.engine = engine
        self.writes = writes or WriteBatcher(engine)

    async def record(
        self,
        *,
        provider: str,
        kind: str,
        event: str,
        url: str,
        headers: Mapping[str, str],
        body: bytes,
        remote_ip: str | None,
        refused: tuple[int, str] | None = None,
        duration_ms: float | None = None,
    ) -> int:
        """Store a request as it arrived (headers without credentials); returns its id. A request
        that passed its checks is ``verified``; a ``refused`` one, ``(status, error)``, is stored
        complete, with its body cut short."""
        row = {
            "received_at": utcnow(),
            "provider": provider,
            "kind": kind,
            # The event comes from the URL: fit it (a NUL, or any length, may be posted).
            "event": fit_text(event, EVENT_CHARS),
            "url": fit_text(url),
            "headers": redact_headers(headers),
            "body": body if refused is None else body[:REFUSED_BODY_BYTES],
            "body_size": len(body),
            "body_sha256": hashlib.sha256(body).hexdigest(),
            "remote_ip": remote_ip,
            "verified": refused is None,
            "processed": False,
            "response_status": refused[0] if refused else None,
            "error": fit_text(refused[1]) if refused else None,
            "duration_ms": duration_ms,
        }
        entry_id: int = await self.writes.run_many(self._record_many, row)
        return entry_id

    async def _record_many(self, conn: AsyncConnection, rows: list[dict[str, Any]]) -> list[int]:
        # One multi-row INSERT for the batch, its ids back in the order of the rows.
        result = await conn.execute(_RECORD, rows)
        return [int(i) for i in result.scalars()]

    async def finish(
        self,
        entry_id: int,
        *,
        verified: bool | None,
        processed: bool,
        response_status: int,
        error: str | None = None,
        message_id: str | None = None,
        reports: int = 0,
        unmatched: int = 0,
        inbound: int = 0,
        duration_ms: float | None = None,
    ) -> None:
        """Complete an entry with what processing it did."""
        values = {
            "b_id": entry_id,
            "b_verified": verified,
            "b_processed": processed,
            "b_response_status": response_status,
            "b_error": error,
            "b_message_id": message_id,
            "b_reports": reports,
            "b_unmatched": unmatched,
            "b_inbound": inbound,
            "b_duration_ms": duration_ms,
        }
        await self.writes.run_many(self._finish_many, values)

    async def _finish_many(self, conn: AsyncConnection, items: list[dict[str, Any]]) -> list[None]:
        await conn.execute(_FINISH, items)
        return [None] * len(items)

    async def get(self, entry_id: int) -> WebhookEntry | None:
        async with self.engine.connect() as conn:
            row = (await conn.execute(select(webhook_log).where(webhook_log.c.id == entry_id))).first()
        return _entry(row._mapping) if row is not None else None

    async def search(
        self,
        *,
        provider: str | None = None,
        failed: bool = False,
        message_id: str | None = None,
        before_id: int | None = None,
        limit: int = 50,
    ) -> list[WebhookEntry]:
        """Entries, newest first; ``failed`` keeps those that were not processed."""
        query = select(webhook_log).order_by(webhook_log.c.id.desc()).limit(limit)
        if provider is not None:
            named: ColumnElement[Any] = webhook_log.c.provider
            if failed and self.engine.dialect.name == "sqlite":
                # Walk the small index of entries not processed and check the provider on each,
                # not every entry of the provider for the few that failed (+column: no index).
                named = literal_column("+webhook_log.provider", webhook_log.c.provider.type)
            query = query.where(named == provider)
        if failed:
            query = query.where(webhook_log.c.processed.is_(False))
        if message_id is not None:
            query = query.where(webhook_log.c.message_id == message_id)
        if before_id is not None:
            query = query.where(webhook_log.c.id < before_id)
        async with self.engine.connect() as conn:
            rows = (await conn.execute(query)).all()
        return [_entry(r._mapping) for r in rows]


def _entry(row: Mapping[Any, Any]) -> WebhookEntry:
    return WebhookEntry(
        id=int(row["id"]),
        provider=row["provider"],
        kind=row["kind"],
        event=row["event"],
        url=row["url"],
        headers=dict(row["headers"] or {}),
        body=bytes(row["body"]),
        remote_ip=row["remote_ip"],
        verified=row["verified"],
        processed=bool(row["processed"]),
        response_status=row["response_status"],
        error=row["error"],
        message_id=row["message_id"],
        reports=int(row["reports"]),
        unmatched=int(row["unmatched"]),
        inbound=int(row["inbound"]),
        received_at=row["received_at"],
        body_size=int(row["body_size"]),
    )
