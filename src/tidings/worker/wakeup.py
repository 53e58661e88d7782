"""Prompt wake-up of idle workers when a message arrives.

In one process (``tidings serve`` with ``workers = 1``) the API sets an :class:`asyncio.Event`.
When ``tidings serve`` runs its API and its worker in processes of their own, the API processes
also send a datagram to a UNIX socket the worker listens on (:class:`WakeListener`), on any
database. On PostgreSQL the API also sends ``NOTIFY`` in the transaction that stores the
message, and workers in other processes ``LISTEN``. Without any of these, workers still find new
messages at their next poll.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import socket
from typing import Any

import asyncpg

from tidings.store.db import plain_postgres_dsn
from tidings.store.messages import NOTIFY_CHANNEL

log = logging.getLogger(__name__)


class Waker:
    def __init__(self) -> None:
        self._event = asyncio.Event()
        self._socket: socket.socket | None = None
        self._target = ""

    def forward(self, path: str) -> None:
        """Also wake the worker process listening on the UNIX socket ``path``."""
        self._socket = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        self._socket.setblocking(False)
        self._target = path

    def notify(self) -> None:
        self._event.set()
        if self._socket is not None:
            # A lost datagram (the worker restarting, its queue full) costs at most one poll.
            with contextlib.suppress(OSError):
                self._socket.sendto(b"w", self._target)

    async def wait(self, timeout: float) -> bool:
        """Wait until notified or ``timeout`` seconds pass; True when notified."""
        try:
            async with asyncio.timeout(timeout):
                await self._event.wait()
        except TimeoutError:
            return False
        finally:
            self._event.clear()
        return True


class PostgresListener:
    """LISTENs on the messages channel and wakes the local :class:`Waker`.

    The connection is watched: when it closes (a database restart, a network cut) it is opened
    again, with a growing pause between tries, and the worker is woken once it is back, since
    notifications sent meanwhile were lost.
    """

    RETRY_SECONDS = (0.5, 1.0, 2.0, 5.0)

    def __init__(self, database_url: str, waker: Waker) -> None:
        self.dsn = plain_postgres_dsn(database_url)
        self.waker = waker
        self._conn: Any = None
        self._lost = asyncio.Event()
        self._task: asyncio.Task[None] | None = None

    @property
    def listening(self) -> bool:
        return self._conn is not None and not self._conn.is_closed()

    async def start(self) -> None:
        if not await self._connect():
            log.warning("LISTEN unavailable for now, relying on polling", extra={"action": "listen"})
        self._task = asyncio.create_task(self._keep_listening())

    async def _connect(self) -> bool:
        try:
            conn = await asyncpg.connect(self.dsn, timeout=10)
            await conn.add_listener(NOTIFY_CHANNEL, self._on_notify)
            conn.add_termination_listener(self._on_lost)
        except (TimeoutError, OSError, asyncpg.PostgresError, asyncpg.InterfaceError) as exc:
            log.debug("LISTEN connection failed: %s", exc, extra={"action": "listen"})
            return False
        self._conn = conn
        self._lost.clear()
        return True

    async def _keep_listening(self) -> None:
        tries = 0
        while True:
            if self.listening:
                tries = 0
                # Woken when asyncpg sees the connection close; checked now and then regardless.
                with contextlib.suppress(TimeoutError):
                    async with asyncio.timeout(5):
                        await self._lost.wait()
                continue
            if await self._connect():
                if tries:
                    log.info("LISTEN connection is back", extra={"action": "listen"})
                tries = 0
                # Notifications sent while it was away are lost: look for work now.
                self.waker.notify()
                continue
            if tries == 0:
                log.warning("LISTEN connection lost; reconnecting", extra={"action": "listen"})
            await asyncio.sleep(self.RETRY_SECONDS[min(tries, len(self.RETRY_SECONDS) - 1)])
            tries += 1

    def _on_notify(self, *_args: object) -> None:
        self.waker.notify()

    def _on_lost(self, *_args: object) -> None:
        self._lost.set()

    async def close(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None
        if self._conn is not None:
            with contextlib.suppress(Exception):
                await self._conn.close()
            self._conn = None


class WakeListener:
    """Wakes the local :class:`Waker` whenever a datagram reaches the UNIX socket ``path`` (sent
    by :meth:`Waker.forward`'s other end, in the API processes)."""

    def __init__(self, path: str, waker: Waker) -> None:
        self.path = path
        self.waker = waker
        self._socket: socket.socket | None = None

    def start(self) -> None:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(self.path)
        made = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        made.setblocking(False)
        made.bind(self.path)
        self._socket = made
        asyncio.get_running_loop().add_reader(made.fileno(), self._readable)

    def _readable(self) -> None:
        assert self._socket is not None
        with contextlib.suppress(BlockingIOError, InterruptedError):
            while self._socket.recv(64):
                pass
        self.waker.notify()

    def close(self) -> None:
        if self._socket is None:
            return
        asyncio.get_running_loop().remove_reader(self._socket.fileno())
        self._socket.close()
        self._socket = None
        with contextlib.suppress(FileNotFoundError):
            os.unlink(self.path)
