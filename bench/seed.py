"""Bulk loading of messages straight into the database, outside any timed figure.

Rows are written as tidings' own insert writes them (see ``MessageStore.insert``), without the
``accepted`` event: ``executemany`` in one transaction on SQLite, ``COPY`` on PostgreSQL. Values
that SQLite stores as text (times, JSON) go through SQLAlchemy's own bind processors, so the
service reads and compares them exactly as if it had written them.
"""

from __future__ import annotations

import asyncio
import os
import sqlite3
from collections.abc import Callable, Iterator
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

import asyncpg
from sqlalchemy.dialects import sqlite as sqlite_dialect
from sqlalchemy.engine import make_url

from tidings import ids
from tidings.clock import utcnow
from tidings.store.tables import messages

COLUMNS = (
    "id",
    "channel",
    "to",
    "body",
    "segments",
    "encoding",
    "status",
    "provider",
    "provider_message_id",
    "provider_status",
    "attempts",
    "max_attempts",
    "next_attempt_at",
    "created_at",
    "updated_at",
    "sent_at",
    "tags",
    "metadata",
)
CHUNK = 20_000
ORDINARY_NUMBERS = 9000
"""Recipients cycle through +1202555 1000…9999, none of them a fake provider's magic number."""


def recipient(i: int) -> str:
    return f"+1202555{1000 + i % ORDINARY_NUMBERS}"


def body(i: int) -> str:
    return f"Your verification code is {i % 1_000_000:06d}. It expires in 10 minutes."


def _rows(count: int, status: str, start: datetime) -> Iterator[tuple[Any, ...]]:
    """``count`` rows, due one microsecond apart from ``start``; ``sent`` ones carry provider ids."""
    sent = status == "sent"
    for i in range(count):
        at = start + timedelta(microseconds=i)
        yield (
            ids.new_id(),
            "sms",
            recipient(i),
            body(i),
            1,
            "GSM-7",
            status,
            "fake",
            "FK" + os.urandom(16).hex() if sent else None,
            "accepted" if sent else None,
            1 if sent else 0,
            11,
            at,
            at,
            at,
            at if sent else None,
            [],
            {},
        )


def _chunks(count: int, status: str) -> Iterator[list[tuple[Any, ...]]]:
    # Due a little in the past, like messages that arrived one after another just now.
    start = utcnow() - timedelta(seconds=1, microseconds=count)
    chunk: list[tuple[Any, ...]] = []
    for row in _rows(count, status, start):
        chunk.append(row)
        if len(chunk) == CHUNK:
            yield chunk
            chunk = []
    if chunk:
        yield chunk


def _sqlite_converters() -> list[Callable[[Any], Any] | None]:
    dialect = sqlite_dialect.dialect()
    return [messages.c[name].type.dialect_impl(dialect).bind_processor(dialect) for name in COLUMNS]


def _load_sqlite(path: str, count: int, status: str, pairs: list[tuple[str, str]] | None) -> None:
    converters = _sqlite_converters()
    columns = ", ".join(f'"{c}"' for c in COLUMNS)
    statement = f"INSERT INTO messages ({columns}) VALUES ({', '.join('?' * len(COLUMNS))})"
    conn = sqlite3.connect(path, timeout=60)
    try:
        with conn:
            for chunk in _chunks(count, status):
                if pairs is not None:
                    pairs.extend((row[0], row[8]) for row in chunk)
                conn.executemany(
                    statement,
                    [
                        tuple(
                            v if convert is None or v is None else convert(v)
                            for convert, v in zip(converters, row, strict=True)
                        )
                        for row in chunk
                    ],
                )
    finally:
        conn.close()


async def _load_postgres(dsn: str, count: int, status: str, pairs: list[tuple[str, str]] | None) -> None:
    conn = await asyncpg.connect(dsn)
    try:
        async with conn.transaction():
            for chunk in _chunks(count, status):
                if pairs is not None:
                    pairs.extend((row[0], row[8]) for row in chunk)
                # asyncpg sends json columns as text.
                records = [(*row[:-2], "[]", "{}") for row in chunk]
                await conn.copy_records_to_table("messages", records=records, columns=list(COLUMNS))
    finally:
        await conn.close()


async def load_messages(
    database_url: str, count: int, *, status: str = "pending", pairs_file: Path | None = None
) -> None:
    """Insert ``count`` messages of provider ``fake`` in ``status`` (``pending`` and due, or ``sent``).

    With ``pairs_file``, writes one ``MESSAGE_ID PROVIDER_ID`` line per message to it (for
    receipts of ``sent`` messages).
    """
    pairs: list[tuple[str, str]] | None = [] if pairs_file is not None else None
    url = make_url(database_url)
    if url.get_backend_name() == "sqlite":
        await asyncio.to_thread(_load_sqlite, url.database or "", count, status, pairs)
    else:
        dsn = url.set(drivername="postgresql").render_as_string(hide_password=False)
        await _load_postgres(dsn, count, status, pairs)
        # Fresh statistics, as autovacuum would gather them soon after a load this size.
        conn = await asyncpg.connect(dsn)
        try:
            await conn.execute("ANALYZE messages")
        finally:
            await conn.close()
    if pairs_file is not None and pairs is not None:
        pairs_file.write_text("".join(f"{m} {p}\n" for m, p in pairs))
