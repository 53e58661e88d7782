"""Group commit: concurrent writes share a transaction, and one bad write takes no other down."""

from __future__ import annotations

import asyncio
import sqlite3
from collections.abc import AsyncIterator, Awaitable, Callable
from datetime import datetime
from pathlib import Path
from typing import Any

import asyncpg
import pytest
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncConnection

from tidings.domain.messages import NewMessage
from tidings.domain.status import Status
from tidings.errors import DatabaseUnavailable
from tidings.store import Store
from tidings.store.batcher import WriteBatcher
from tidings.store.db import create_engine, plain_postgres_dsn
from tidings.store.messages import NOTIFY_CHANNEL
from tidings.store.migrate import upgrade


@pytest.fixture
async def batcher(tmp_path: Path) -> AsyncIterator[WriteBatcher]:
    engine = create_engine(f"sqlite:///{tmp_path / 'b.db'}")
    async with engine.begin() as conn:
        await conn.execute(text("CREATE TABLE t (k TEXT PRIMARY KEY, v INTEGER)"))
    writes = WriteBatcher(engine)
    yield writes
    await writes.close()
    await engine.dispose()


def put(key: str, value: int) -> Callable[[AsyncConnection], Awaitable[str]]:
    async def write(conn: AsyncConnection) -> str:
        await conn.execute(text("INSERT INTO t (k, v) VALUES (:k, :v)"), {"k": key, "v": value})
        return key

    return write


async def count(writes: WriteBatcher, table: str) -> int:
    async with writes.engine.connect() as conn:
        return int((await conn.execute(text(f"SELECT count(*) FROM {table}"))).scalar_one())


async def test_concurrent_writes_share_commits_and_all_land(batcher: WriteBatcher) -> None:
    keys = await asyncio.gather(*(batcher.run(put(f"k{n}", n)) for n in range(50)))
    assert keys == [f"k{n}" for n in range(50)]
    assert await count(batcher, "t") == 50
    assert batcher.writes == 50 and batcher.commits < 50


async def test_a_failing_write_fails_alone(batcher: WriteBatcher) -> None:
    await batcher.run(put("taken", 0))
    results = await asyncio.gather(
        batcher.run(put("a", 1)),
        batcher.run(put("taken", 2)),
        batcher.run(put("b", 3)),
        return_exceptions=True,
    )
    assert results[0] == "a" and results[2] == "b"
    assert isinstance(results[1], Exception)
    assert await count(batcher, "t") == 3


async def test_items_are_written_together_and_a_refused_one_fails_alone(batcher: WriteBatcher) -> None:
    calls: list[int] = []

    async def put_many(conn: AsyncConnection, items: list[tuple[str, int]]) -> list[object]:
        calls.append(len(items))
        keep = [{"k": k, "v": v} for k, v in items if v >= 0]
        await conn.execute(text("INSERT INTO t (k, v) VALUES (:k, :v)"), keep)
        return [k if v >= 0 else ValueError(f"{k} is negative") for k, v in items]

    results = await asyncio.gather(
        *(batcher.run_many(put_many, (f"k{n}", n if n != 3 else -1)) for n in range(10)),
        return_exceptions=True,
    )
    assert calls == [10]
    assert isinstance(results[3], ValueError)
    assert [r for n, r in enumerate(results) if n != 3] == [f"k{n}" for n in range(10) if n != 3]
    assert await count(batcher, "t") == 9


async def test_a_batch_of_new_messages_wakes_workers_once_per_provider(postgres_database: str) -> None:
    # A committed batch sends one NOTIFY per provider with due messages, however many messages it
    # holds; scheduled messages wake nobody.
    store = Store.connect(postgres_database)
    await upgrade(store.engine)
    heard: list[str] = []
    listener = await asyncpg.connect(plain_postgres_dsn(postgres_database))
    await listener.add_listener(NOTIFY_CHANNEL, lambda *args: heard.append(args[-1]))
    try:
        due = [
            NewMessage.sms(to="+254712345678", text=f"m{n}", provider="a" if n % 2 else "b", max_attempts=3)
            for n in range(40)
        ]
        later = NewMessage.sms(
            to="+254712345678", text="later", provider="c", max_attempts=3, send_at=datetime(2100, 1, 1)
        )
        # Started together, the inserts all queue before the batcher runs: one batch, one commit.
        await asyncio.gather(*(store.messages.insert(m) for m in [*due, later]))
        assert store.writes.commits == 1
        async with asyncio.timeout(10):
            while len(heard) < 2:
                await asyncio.sleep(0.01)
        await asyncio.sleep(0.2)  # and nothing more arrives
        assert sorted(heard) == ["a", "b"]
    finally:
        await listener.close()
        await store.close()


@pytest.fixture
async def sqlite_store(tmp_path: Path) -> AsyncIterator[Store]:
    store = Store.connect(f"sqlite:///{tmp_path / 's.db'}")
    await upgrade(store.engine)
    yield store
    await store.close()


def failing_commit(store: Store, *, commit_first: bool, times: int = 1) -> list[int]:
    """Make the next ``times`` commits raise as if the database went away at that moment: after
    committing (``commit_first``) or before. Returns the count of failures made so far."""
    dialect = store.engine.sync_engine.dialect
    real = dialect.do_commit
    made: list[int] = []

    def do_commit(dbapi_connection: Any) -> None:
        if len(made) >= times:
            real(dbapi_connection)
            return
        made.append(1)
        if commit_first:
            real(dbapi_connection)
        raise sqlite3.OperationalError("disk I/O error (the connection went away)")

    dialect.do_commit = do_commit  # type: ignore[method-assign]
    return made


async def test_a_commit_that_failed_after_writing_answers_the_truth(sqlite_store: Store) -> None:
    # The commit happened, but its caller heard an error: the ids are read back, the caller gets
    # its message, and it is not written twice.
    made = failing_commit(sqlite_store, commit_first=True)
    new = [NewMessage.sms(to="+254712345678", text=f"m{n}", provider="p", max_attempts=3) for n in range(5)]
    results = await asyncio.gather(*(sqlite_store.messages.insert(m) for m in new))
    assert made == [1]
    assert all(created for _row, created in results)
    assert sum((await sqlite_store.messages.count_by_status()).values()) == 5


async def test_a_commit_that_failed_before_writing_writes_again(sqlite_store: Store) -> None:
    made = failing_commit(sqlite_store, commit_first=False)
    new = [NewMessage.sms(to="+254712345678", text=f"m{n}", provider="p", max_attempts=3) for n in range(5)]
    results = await asyncio.gather(*(sqlite_store.messages.insert(m) for m in new))
    assert made == [1]
    assert all(created for _row, created in results)
    ids = {row["id"] for row, _ in results}
    assert set(await sqlite_store.messages.ids_with_status([Status.PENDING])) == ids


async def test_an_unknown_outcome_that_cannot_be_read_back_is_never_called_a_failure(
    sqlite_store: Store, monkeypatch: pytest.MonkeyPatch
) -> None:
    # A write without a way to verify it (a report) whose commit failed: the caller hears that the
    # outcome is unknown (503, retry), not that it failed.
    failing_commit(sqlite_store, commit_first=True)

    async def note(conn: AsyncConnection) -> str:
        return "written"

    with pytest.raises(DatabaseUnavailable, match="not known"):
        await sqlite_store.writes.run(note)
