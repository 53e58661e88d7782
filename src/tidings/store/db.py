"""Connections: one async engine per process, SQLite (default) or PostgreSQL."""

from __future__ import annotations

import os
import sqlite3
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import asyncpg
import sqlalchemy.exc
from sqlalchemy import event
from sqlalchemy.engine import make_url
from sqlalchemy.ext.asyncio import AsyncEngine, create_async_engine
from sqlalchemy.pool import ConnectionPoolEntry

from tidings.errors import ConfigError, DatabaseUnavailable


def async_url(url: str) -> str:
    """The SQLAlchemy URL with the async driver tidings uses for ``url``.

    Users write plain ``sqlite:///path`` or ``postgresql://user@host/db``; tidings picks
    aiosqlite and asyncpg.
    """
    if url.startswith("postgres://"):
        url = "postgresql://" + url[len("postgres://") :]
    parsed = make_url(url)
    backend = parsed.get_backend_name()
    if backend == "sqlite":
        return parsed.set(drivername="sqlite+aiosqlite").render_as_string(hide_password=False)
    if backend == "postgresql":
        return parsed.set(drivername="postgresql+asyncpg").render_as_string(hide_password=False)
    raise ConfigError(
        f"unsupported database {backend!r}: use sqlite:/// or postgresql://", field="database_url"
    )


def plain_postgres_dsn(url: str) -> str:
    """A DSN asyncpg accepts directly (for LISTEN/NOTIFY, which lives outside SQLAlchemy)."""
    parsed = make_url(async_url(url))
    return parsed.set(drivername="postgresql").render_as_string(hide_password=False)


def shown_url(url: str) -> str:
    """``url`` without its password, to show in messages and logs."""
    try:
        return make_url(url).render_as_string(hide_password=True)
    except Exception:
        return "(unreadable URL)"


def sqlite_file(url: str) -> Path | None:
    """The file of a SQLite ``url`` (``None`` for PostgreSQL or an in-memory database)."""
    parsed = make_url(async_url(url))
    if parsed.get_backend_name() != "sqlite" or not parsed.database or parsed.database == ":memory:":
        return None
    return Path(parsed.database).expanduser().resolve()


def create_engine(url: str, *, sqlite_synchronous: str = "FULL", pool_size: int = 10) -> AsyncEngine:
    """An engine for ``url``. SQLite files get WAL mode, a busy timeout and foreign keys.

    A SQLite file's folder must exist: a typo in the path is an error, not a new empty database
    somewhere unexpected."""
    target = async_url(url)
    parsed = make_url(target)
    if parsed.get_backend_name() == "sqlite":
        file = sqlite_file(url)
        if file is not None:
            folder = file.parent
            if not folder.is_dir():
                raise ConfigError(
                    f"setting database_url: the folder {folder} does not exist; create it, or fix the path",
                    field="database_url",
                )
            if not os.access(folder, os.W_OK):
                raise ConfigError(
                    f"setting database_url: the folder {folder} is not writable by this user",
                    field="database_url",
                )
        engine = create_async_engine(
            target,
            connect_args={"timeout": 30, "check_same_thread": False},
            pool_size=pool_size,
            max_overflow=pool_size,
        )

        @event.listens_for(engine.sync_engine, "connect")
        def _sqlite_pragmas(dbapi_conn: Any, _record: ConnectionPoolEntry) -> None:
            cursor = dbapi_conn.cursor()
            cursor.execute("PRAGMA journal_mode=WAL")
            cursor.execute(f"PRAGMA synchronous={sqlite_synchronous}")
            cursor.execute("PRAGMA foreign_keys=ON")
            cursor.execute("PRAGMA busy_timeout=30000")
            cursor.close()

        return engine
    return create_async_engine(target, pool_size=pool_size, max_overflow=pool_size, pool_pre_ping=False)


def unreachable(exc: BaseException) -> bool:
    """Whether ``exc`` (or what caused it) says the database could not be reached or went away,
    rather than that a statement was wrong: the caller should answer "try again soon"."""
    seen: set[int] = set()
    current: BaseException | None = exc
    while current is not None and id(current) not in seen:
        seen.add(id(current))
        if isinstance(current, DatabaseUnavailable):
            return True
        if isinstance(current, sqlalchemy.exc.DBAPIError) and current.connection_invalidated:
            return True
        if isinstance(
            current,
            sqlalchemy.exc.OperationalError
            | sqlalchemy.exc.InterfaceError
            | sqlalchemy.exc.TimeoutError
            | OSError
            | asyncpg.exceptions.PostgresConnectionError
            | asyncpg.exceptions.InterfaceError
            | asyncpg.exceptions.OperatorInterventionError,
        ):
            return True
        current = current.__cause__ or current.__context__
    return False


def is_sqlite(engine: AsyncEngine) -> bool:
    return engine.dialect.name == "sqlite"


SQLITE_BUSY_ERRORS = (sqlite3.OperationalError,)


def fit_text(value: str, limit: int | None = None) -> str:
    """``value`` made to fit a text column: a NUL (which PostgreSQL cannot store) replaced, and
    cut to ``limit`` characters. For what others send us, which must be kept rather than refused
    for ever (a provider resends what failed)."""
    value = value.replace("\x00", "\ufffd")
    return value if limit is None or len(value) <= limit else value[:limit]


def plain(row: Mapping[Any, Any]) -> dict[str, Any]:
    # Result keys are SQLAlchemy's str subclass; JSON encoders want plain str.
    return {str(k): v for k, v in row.items()}
