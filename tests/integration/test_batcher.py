"""Group commit: concurrent writes share a transaction, and one bad write takes no other down."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path

import pytest
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncConnection

from tidings.store.batcher import WriteBatcher
from tidings.store.db import create_engine


@pytest.fixture
async def batcher(tmp_path: Path) -> AsyncIterator[WriteBatcher]:
    engine = create_engine(f"sqlite:///{tmp_path / 'b.db'}")
    async with engine.begin() as conn:
        await conn.execute(text("CREATE TABLE t (k TEXT PRIMARY KEY, v INTEGER)"))
        await conn.execute(text("CREATE TABLE notes (n INTEGER)"))
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


async def test_a_once_write_runs_once_per_transaction(batcher: WriteBatcher) -> None:
    async def note(conn: AsyncConnection) -> None:
        await conn.execute(text("INSERT INTO notes (n) VALUES (1)"))

    await asyncio.gather(*(batcher.run(put(f"k{n}", n), once=("note", note)) for n in range(20)))
    assert batcher.commits == 1
    assert await count(batcher, "notes") == 1


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
