"""Prompt wake-up of idle workers when a message arrives.

In one process (``tidings serve``) the API sets an :class:`asyncio.Event`. On PostgreSQL the API
also sends ``NOTIFY`` in the transaction that stores the message, and workers in other processes
``LISTEN``. Without either, workers still find new messages at their next poll.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from typing import Any

import asyncpg

from tidings.store.db import plain_postgres_dsn
from tidings.store.messages import NOTIFY_CHANNEL

log = logging.getLogger(__name__)


class Waker:
    def __init__(self) -> None:
        self._event = asyncio.Event()

    def notify(self) -> None:
        self._event.set()

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
    """LISTENs on the messages channel and wakes the local :class:`Waker`."""

    def __init__(self, database_url: str, waker: Waker) -> None:
        self.dsn = plain_postgres_dsn(database_url)
        self.waker = waker
        self._conn: Any = None

    async def start(self) -> None:
        try:
            self._conn = await asyncpg.connect(self.dsn)
            await self._conn.add_listener(NOTIFY_CHANNEL, self._on_notify)
        except (OSError, asyncpg.PostgresError) as exc:
            log.warning("LISTEN unavailable, relying on polling: %s", exc, extra={"action": "listen"})
            self._conn = None

    def _on_notify(self, *_args: object) -> None:
        self.waker.notify()

    async def close(self) -> None:
        if self._conn is not None:
            with contextlib.suppress(Exception):
                await self._conn.close()
            self._conn = None
