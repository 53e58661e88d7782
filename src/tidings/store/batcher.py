"""Group commit: many concurrent small writes share one transaction, so they share one commit.

A commit waits for the disk (SQLite with ``synchronous=FULL``, PostgreSQL with
``synchronous_commit``): done once per accepted message, that wait caps a process at a few hundred
messages a second however fast everything else is. :class:`WriteBatcher` queues writes; one task
runs whatever has queued up in a single transaction and commits once, and only then tells each
caller its write is done. So the guarantee does not change (a caller hears back only after its
write is durable); only the number of commits does. Batches form by themselves: while one commits,
the next fills up.

If any write in a batch fails, the whole transaction is rolled back and each write of that batch
is run again alone, so one bad write (a unique-key race, say) never takes others down with it.

A write may also ask for a statement to run ``once`` per transaction, however many writes of the
batch ask (the same ``NOTIFY`` for a hundred new messages, say): it runs after the writes, before
the commit.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Awaitable, Callable, Hashable
from typing import Any, TypeVar

from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

log = logging.getLogger(__name__)

T = TypeVar("T")
Write = Callable[[AsyncConnection], Awaitable[Any]]
Once = tuple[Hashable, Write]

MAX_BATCH = 256
"""Most writes committed together (bounds how long one batch holds the write lock)."""


class WriteBatcher:
    def __init__(self, engine: AsyncEngine, max_batch: int = MAX_BATCH) -> None:
        self.engine = engine
        self.max_batch = max_batch
        self._queue: list[tuple[Write, Once | None, asyncio.Future[Any]]] = []
        self._wake: asyncio.Event | None = None
        self._task: asyncio.Task[None] | None = None
        self.commits = 0
        self.writes = 0

    async def run(self, write: Callable[[AsyncConnection], Awaitable[T]], *, once: Once | None = None) -> T:
        """Run ``write`` in a shared transaction; returns its result once that is committed.

        ``once`` is ``(key, write)``: run that write once per transaction for each distinct key.
        """
        loop = asyncio.get_running_loop()
        if self._task is None or self._task.done() or self._task.get_loop() is not loop:
            self._wake = asyncio.Event()
            self._task = loop.create_task(self._drain())
        future: asyncio.Future[T] = loop.create_future()
        self._queue.append((write, once, future))
        assert self._wake is not None
        self._wake.set()
        return await future

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

    async def _commit(self, batch: list[tuple[Write, Once | None, asyncio.Future[Any]]]) -> None:
        results: list[Any] = []
        try:
            async with self.engine.begin() as conn:
                finals: dict[Hashable, Write] = {}
                for write, once, _future in batch:
                    results.append(await write(conn))
                    if once is not None:
                        finals.setdefault(*once)
                for final in finals.values():
                    await final(conn)
        except asyncio.CancelledError:
            for _write, _once, future in batch:
                if not future.done():
                    future.cancel()
            raise
        except Exception as exc:
            if len(batch) == 1:
                if not batch[0][2].done():
                    batch[0][2].set_exception(exc)
                return
            # One of them failed and took the transaction with it: each alone, then.
            for write, once, future in batch:
                await self._alone(write, once, future)
            return
        self.commits += 1
        self.writes += len(batch)
        for (_write, _once, future), result in zip(batch, results, strict=True):
            if not future.done():
                future.set_result(result)

    async def _alone(self, write: Write, once: Once | None, future: asyncio.Future[Any]) -> None:
        try:
            async with self.engine.begin() as conn:
                result = await write(conn)
                if once is not None:
                    await once[1](conn)
        except Exception as exc:
            if not future.done():
                future.set_exception(exc)
            return
        self.commits += 1
        self.writes += 1
        if not future.done():
            future.set_result(result)
