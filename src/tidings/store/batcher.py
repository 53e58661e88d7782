"""Group commit: many concurrent small writes share one transaction, so they share one commit.

A commit waits for the disk (SQLite with ``synchronous=FULL``, PostgreSQL with
``synchronous_commit``): done once per accepted message, that wait caps a process at a few hundred
messages a second however fast everything else is. :class:`WriteBatcher` queues writes; one task
runs whatever has queued up in a single transaction and commits once, and only then tells each
caller its write is done. So the guarantee does not change (a caller hears back only after its
write is durable); only the number of commits does. Batches form by themselves: while one commits,
the next fills up.

Two kinds of write:

- :meth:`WriteBatcher.run` takes a function of the connection, run as it is;
- :meth:`WriteBatcher.run_many` takes an *item* and a bulk function: the items of one batch that
  name the same bulk function are written together, in a constant number of statements, and the
  bulk function says per item whether it was written or refused (so one refused message does not
  fail its neighbours).

If the transaction fails, it is rolled back and each write of that batch runs again alone, so one
bad write (a unique-key race, say) never takes others down with it.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from typing import Any, TypeVar

from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

log = logging.getLogger(__name__)

T = TypeVar("T")
Write = Callable[[AsyncConnection], Awaitable[Any]]
Bulk = Callable[[AsyncConnection, list[Any]], Awaitable[Sequence[Any]]]
"""Writes items together; returns one result per item, an exception instance for a refused one."""

MAX_BATCH = 256
"""Most writes committed together (bounds how long one batch holds the write lock)."""


@dataclass
class _Entry:
    future: asyncio.Future[Any]
    write: Write | None = None
    bulk: Bulk | None = None
    item: Any = None


class WriteBatcher:
    def __init__(self, engine: AsyncEngine, max_batch: int = MAX_BATCH) -> None:
        self.engine = engine
        self.max_batch = max_batch
        self._queue: list[_Entry] = []
        self._wake: asyncio.Event | None = None
        self._task: asyncio.Task[None] | None = None
        self.commits = 0
        self.writes = 0

    async def run(self, write: Callable[[AsyncConnection], Awaitable[T]]) -> T:
        """Run ``write`` in a shared transaction; returns its result once that is committed."""
        result: T = await self._enqueue(_Entry(future=self._future(), write=write))
        return result

    async def run_many(self, bulk: Bulk, item: Any) -> Any:
        """Write ``item`` together with the other items of the batch for the same ``bulk``
        function; returns its result once committed, or raises the exception it was refused with."""
        return await self._enqueue(_Entry(future=self._future(), bulk=bulk, item=item))

    def _future(self) -> asyncio.Future[Any]:
        return asyncio.get_running_loop().create_future()

    async def _enqueue(self, entry: _Entry) -> Any:
        loop = asyncio.get_running_loop()
        if self._task is None or self._task.done() or self._task.get_loop() is not loop:
            self._wake = asyncio.Event()
            self._task = loop.create_task(self._drain())
        self._queue.append(entry)
        assert self._wake is not None
        self._wake.set()
        return await entry.future

    async def close(self) -> None:
        """Finish what is queued, then stop."""
        task, self._task = self._task, None
        if task is None or task.done():
            return
        while self._queue:
            await asyncio.sleep(0)
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task

    async def _drain(self) -> None:
        assert self._wake is not None
        while True:
            await self._wake.wait()
            self._wake.clear()
            while self._queue:
                batch, self._queue = self._queue[: self.max_batch], self._queue[self.max_batch :]
                await self._commit(batch)

    async def _write(self, conn: AsyncConnection, batch: list[_Entry]) -> list[tuple[_Entry, Any, bool]]:
        """Run ``batch`` in ``conn``; each entry with its result and whether that is a refusal."""
        done: list[tuple[_Entry, Any, bool]] = []
        groups: dict[Bulk, list[_Entry]] = {}
        for entry in batch:
            if entry.bulk is not None:
                groups.setdefault(entry.bulk, []).append(entry)
            else:
                assert entry.write is not None
                done.append((entry, await entry.write(conn), False))
        for bulk, entries in groups.items():
            results = await bulk(conn, [e.item for e in entries])
            for entry, result in zip(entries, results, strict=True):
                done.append((entry, result, isinstance(result, BaseException)))
        return done

    async def _commit(self, batch: list[_Entry]) -> None:
        try:
            async with self.engine.begin() as conn:
                done = await self._write(conn, batch)
        except asyncio.CancelledError:
            for entry in batch:
                if not entry.future.done():
                    entry.future.cancel()
            raise
        except Exception as exc:
            if len(batch) == 1:
                if not batch[0].future.done():
                    batch[0].future.set_exception(exc)
                return
            # One of them failed and took the transaction with it: each alone, then.
            for entry in batch:
                await self._commit([entry])
            return
        self.commits += 1
        self.writes += len(batch)
        for entry, result, refused in done:
            if entry.future.done():
                continue
            if refused:
                entry.future.set_exception(result)
            else:
                entry.future.set_result(result)
