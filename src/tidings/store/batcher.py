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

If the *commit* fails (the database went away at that moment), nobody knows whether it happened.
A bulk write can say how to find out (``verify``: the ids are ours, so they can be read back):
once the database answers again, the items it holds are reported written, the others are written
again alone. A write that cannot be verified is reported as :class:`DatabaseUnavailable`: never
"failed" when it may have been stored.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from typing import Any, TypeVar

from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from tidings.errors import DatabaseUnavailable

log = logging.getLogger(__name__)

T = TypeVar("T")
Write = Callable[[AsyncConnection], Awaitable[Any]]
Bulk = Callable[[AsyncConnection, list[Any]], Awaitable[Sequence[Any]]]
"""Writes items together; returns one result per item, an exception instance for a refused one."""
Verify = Callable[[AsyncConnection, list[Any]], Awaitable[list[bool]]]
"""Which items of a bulk write the database holds: asked when a commit's outcome is unknown."""

SETTLE_SECONDS = 20.0
"""How long to keep asking a database that went away whether a commit happened."""

MAX_BATCH = 256
"""Most writes committed together (bounds how long one batch holds the write lock)."""


@dataclass
class _Entry:
    future: asyncio.Future[Any]
    write: Write | None = None
    bulk: Bulk | None = None
    item: Any = None
    verify: Verify | None = None


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

    async def run_many(self, bulk: Bulk, item: Any, *, verify: Verify | None = None) -> Any:
        """Write ``item`` together with the other items of the batch for the same ``bulk``
        function; returns its result once committed, or raises the exception it was refused with.
        ``verify`` finds out whether it was written when a commit's outcome is unknown."""
        return await self._enqueue(_Entry(future=self._future(), bulk=bulk, item=item, verify=verify))

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
        unknown: Exception | None = None
        try:
            async with self.engine.connect() as conn:
                transaction = await conn.begin()
                try:
                    done = await self._write(conn, batch)
                except BaseException:
                    with contextlib.suppress(Exception):
                        await transaction.rollback()
                    raise
                try:
                    await transaction.commit()
                except Exception as exc:
                    unknown = exc
                    # Whatever state it is in, this connection is not used again.
                    with contextlib.suppress(Exception):
                        await conn.invalidate()
        except asyncio.CancelledError:
            for entry in batch:
                if not entry.future.done():
                    entry.future.cancel()
            raise
        except Exception as exc:
            if unknown is None:
                await self._failed(batch, exc)
                return
        if unknown is not None:
            await self._settle(done, unknown)
            return
        self.commits += 1
        self.writes += len(batch)
        for entry, result, refused in done:
            _answer(entry, result, refused)

    async def _failed(self, batch: list[_Entry], exc: Exception) -> None:
        """The transaction failed before its commit: nothing of it was written."""
        if len(batch) == 1:
            if not batch[0].future.done():
                batch[0].future.set_exception(exc)
            return
        # One of them failed and took the transaction with it: each alone, then.
        for entry in batch:
            await self._commit([entry])

    async def _settle(self, done: list[tuple[_Entry, Any, bool]], cause: Exception) -> None:
        """The commit's outcome is unknown: find out, then answer the truth."""
        log.warning(
            "a commit's outcome is unknown (%s: %s); reading back what it wrote",
            type(cause).__name__,
            cause,
            extra={"action": "commit"},
        )
        groups: dict[Verify, list[_Entry]] = {}
        for entry, _result, _refused in done:
            if entry.verify is not None:
                groups.setdefault(entry.verify, []).append(entry)
        held: dict[int, bool] = {}
        deadline = asyncio.get_running_loop().time() + SETTLE_SECONDS
        while groups:
            try:
                async with self.engine.connect() as conn:
                    for verify, entries in groups.items():
                        found = await verify(conn, [e.item for e in entries])
                        held.update((id(e), f) for e, f in zip(entries, found, strict=True))
                break
            except Exception:
                if asyncio.get_running_loop().time() > deadline:
                    break
                await asyncio.sleep(0.25)
        again: list[_Entry] = []
        for entry, result, refused in done:
            if id(entry) not in held:
                if not entry.future.done():
                    entry.future.set_exception(
                        DatabaseUnavailable(
                            "the database went away while this was committed, and whether it was "
                            "stored is not known; retry it (with the same Idempotency-Key)"
                        )
                    )
            elif held[id(entry)] or refused:
                _answer(entry, result, refused)
            else:
                again.append(entry)
        for entry in again:
            await self._commit([entry])


def _answer(entry: _Entry, result: Any, refused: bool) -> None:
    if entry.future.done():
        return
    if refused:
        entry.future.set_exception(result)
    else:
        entry.future.set_result(result)
