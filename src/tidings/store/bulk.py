"""Many rows into one table, at the driver's speed.

SQLAlchemy's ``executemany`` spends most of a large insert in Python, building and converting
each row's parameters. For many rows this module skips it: PostgreSQL gets ``COPY`` (asyncpg's
binary copy, inside the caller's transaction) and SQLite a driver-level ``executemany`` of plain
tuples, with values converted the way SQLAlchemy stores them (times as ``YYYY-MM-DD
HH:MM:SS.ffffff``, JSON as text), so that what is read back is the same either way. Fewer rows
than :data:`BULK_MIN` go through SQLAlchemy as before.
"""

from __future__ import annotations

import functools
import operator
from collections.abc import Mapping, Sequence
from datetime import datetime
from typing import Any

import orjson
from sqlalchemy import JSON, Table, insert
from sqlalchemy.ext.asyncio import AsyncConnection

BULK_MIN = 64
"""Fewer rows than this are inserted through SQLAlchemy (a COPY costs a round trip of its own)."""


def _json(value: Any) -> str | None:
    return None if value is None else orjson.dumps(value).decode()


@functools.lru_cache(maxsize=4096)
def _sqlite_time(value: datetime | None) -> str | None:
    # Cached: a batch's rows share their times.
    return None if value is None else value.isoformat(sep=" ", timespec="microseconds")


async def insert_rows(conn: AsyncConnection, table: Table, rows: Sequence[Mapping[str, Any]]) -> None:
    """Insert ``rows`` (each with the same keys, all columns of ``table`` or a subset) into
    ``table`` in ``conn``'s transaction."""
    if not rows:
        return
    if len(rows) < BULK_MIN:
        await conn.execute(insert(table), [dict(r) for r in rows])
        return
    names = list(rows[0])
    columns = [table.c[name] for name in names]
    postgres = conn.dialect.name == "postgresql"
    # Values the driver cannot take as they are: JSON everywhere, times on SQLite.
    converted = [
        (i, _json if isinstance(c.type, JSON) else _sqlite_time)
        for i, c in enumerate(columns)
        if isinstance(c.type, JSON) or (not postgres and _is_time(c))
    ]
    pick = operator.itemgetter(*names)
    records: list[tuple[Any, ...]] = []
    for row in rows:
        values = list(pick(row)) if len(names) > 1 else [row[names[0]]]
        for i, convert in converted:
            values[i] = convert(values[i])
        records.append(tuple(values))
    if postgres:
        raw = await conn.get_raw_connection()
        driver: Any = raw.driver_connection
        await driver.copy_records_to_table(table.name, records=records, columns=names)
        return
    quoted = ", ".join(f'"{n}"' for n in names)
    marks = ", ".join("?" for _ in names)
    await conn.exec_driver_sql(f'INSERT INTO "{table.name}" ({quoted}) VALUES ({marks})', records)


def _is_time(column: Any) -> bool:
    try:
        return bool(column.type.python_type is datetime)
    except NotImplementedError:
        return False
