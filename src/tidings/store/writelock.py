"""One writer at a time on a SQLite file, taken in turn rather than by SQLite's polling.

SQLite lets one transaction write at a time. A connection that finds the file locked sleeps and
tries again (1, 2, 5, 10, 15, 20, 25 ms …), so under load the lock is often free while every
would-be writer sleeps, and the one that wakes first wins whether or not it waited longest. With
several processes on one file (a supervised ``tidings serve``), that polling, not the work, bounds
how many messages a second they accept.

:class:`WriteLock` puts the hot write transactions (group commits and claims) of every tidings
process in line for an ``flock`` on a file beside the database, which the kernel hands to the
next waiter the moment it is released. Inside a process an ``asyncio.Lock`` queues them first, so
one thread per process waits for the file. SQLite's own locking still guards everything (a write
that does not take this lock is as safe as before, only slower under contention). PostgreSQL and
in-memory SQLite need none of it: their lock does nothing.
"""

from __future__ import annotations

import asyncio
import contextlib
import contextvars
import fcntl
import os
import weakref
from collections.abc import AsyncIterator
from pathlib import Path

from sqlalchemy.ext.asyncio import AsyncEngine

_held: contextvars.ContextVar[bool] = contextvars.ContextVar("tidings_write_lock_held", default=False)


class WriteLock:
    """The write turn of one SQLite file (``path``), or nothing to wait for (``None``)."""

    def __init__(self, path: Path | None) -> None:
        self.path = path
        self._fd: int | None = None
        self._local: tuple[asyncio.AbstractEventLoop, asyncio.Lock] | None = None

    @contextlib.asynccontextmanager
    async def held(self) -> AsyncIterator[None]:
        """Hold the file's write turn for the block (at once when this task holds it already)."""
        if self.path is None or _held.get():
            yield
            return
        loop = asyncio.get_running_loop()
        if self._local is None or self._local[0] is not loop:
            self._local = (loop, asyncio.Lock())
        async with self._local[1]:
            fd = self._file()
            waiting = loop.run_in_executor(None, fcntl.flock, fd, fcntl.LOCK_EX)
            try:
                await asyncio.shield(waiting)
            except asyncio.CancelledError:
                # The thread may still get the lock: give it back when it does.
                waiting.add_done_callback(lambda f: _unlock_if_locked(fd, f))
                raise
            token = _held.set(True)
            try:
                yield
            finally:
                _held.reset(token)
                fcntl.flock(fd, fcntl.LOCK_UN)

    def _file(self) -> int:
        if self._fd is None:
            assert self.path is not None
            self._fd = os.open(f"{self.path}-writer", os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
        return self._fd

    def close(self) -> None:
        if self._fd is not None:
            os.close(self._fd)
            self._fd = None


def _unlock_if_locked(fd: int, locking: asyncio.Future[None]) -> None:
    if not locking.cancelled() and locking.exception() is None:
        fcntl.flock(fd, fcntl.LOCK_UN)


_locks: weakref.WeakKeyDictionary[object, WriteLock] = weakref.WeakKeyDictionary()
_NONE = WriteLock(None)


def register(engine: AsyncEngine, path: Path) -> None:
    """Make ``engine``'s hot writes take the write turn of the SQLite file ``path``."""
    _locks[engine.sync_engine] = WriteLock(path)


def write_lock(engine: AsyncEngine) -> WriteLock:
    """The write turn for ``engine`` (one that never waits unless it is a SQLite file's)."""
    return _locks.get(engine.sync_engine, _NONE)
