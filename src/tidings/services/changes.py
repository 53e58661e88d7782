"""Following messages' status changes from what is stored, so that a client that reconnects with
the last change it saw goes on without missing or repeating one.

A change is an event that moved a message (``message_events.changed``); its cursor is the
event's id. Ids are handed out when a row is inserted, not when its transaction commits: on
PostgreSQL a transaction holding id 41 may commit after another has committed 42. A reader that
moved past 42 would never see 41. So the feed moves only through ids without a hole: it reads
the ids after its cursor (any message's, through the primary key) and stops before the first
missing one. A hole that stays longer than ``gap_seconds`` is an id that will never come (a
rolled-back insert, or an event retention deleted) and is stepped over.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from typing import Any

from tidings import ids
from tidings.errors import InvalidInput, NotFound
from tidings.store import Store

CHUNK = 1000
"""Ids the feed moves through at most per read."""


@dataclass(frozen=True)
class Scope:
    """What a feed follows: one message, one batch's messages, or (both ``None``) all."""

    message_id: str | None = None
    batch_id: str | None = None


def read_cursor(cursor: str) -> int | None:
    """A cursor the feed gave out (an event id); ``None`` for none; :class:`InvalidInput` else."""
    if not cursor:
        return None
    if not cursor.isdigit() or len(cursor) > 19:
        raise InvalidInput("cursor is not one this service gave out", field="cursor")
    return int(cursor)


class ChangeFeed:
    def __init__(
        self,
        store: Store,
        *,
        poll_seconds: float = 0.2,
        gap_seconds: float = 2.0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.store = store
        self.poll_seconds = poll_seconds
        self.gap_seconds = gap_seconds
        self.clock = clock

    async def start(self, scope: Scope, cursor: int | None) -> int:
        """The cursor to follow from: the one given; else the start of the message's or batch's
        history; else, for all messages, now. :class:`NotFound` for a message or batch with no
        history (there is no such message, or no message in the batch)."""
        if scope.message_id is not None and scope.batch_id is not None:
            raise InvalidInput("watch a message or a batch, not both", field="batch_id")
        for value, name in ((scope.message_id, "message"), (scope.batch_id, "batch")):
            if value is not None and not ids.is_id(value):
                raise NotFound(f"no {name} {value}")
        if cursor is not None:
            return cursor
        if scope.message_id is None and scope.batch_id is None:
            return await self.store.changes.last_event_id()
        first = await self.store.changes.first_event_id(message_id=scope.message_id, batch_id=scope.batch_id)
        if first is None:
            name = "message" if scope.message_id is not None else "batch"
            raise NotFound(f"no {name} {scope.message_id or scope.batch_id}")
        return first - 1

    async def _through(self, cursor: int, hole: dict[str, Any]) -> int:
        """How far the feed may move from ``cursor``: the last id before the first hole (or past a
        hole older than ``gap_seconds``)."""
        following = await self.store.changes.event_ids_after(cursor, CHUNK)
        through = cursor
        for found in following:
            if found != through + 1:
                now = self.clock()
                if hole.get("at") != through + 1:
                    hole.update(at=through + 1, since=now)
                if now - hole["since"] < self.gap_seconds:
                    break
            through = found
        return through

    async def follow(self, scope: Scope, cursor: int) -> AsyncIterator[list[dict[str, Any]]]:
        """The changes after ``cursor``, a list at a time as they are committed, for ever (the
        caller stops when it has had enough)."""
        hole: dict[str, Any] = {}
        while True:
            through = await self._through(cursor, hole)
            if through > cursor:
                found = await self.store.changes.changes(
                    cursor, through, message_id=scope.message_id, batch_id=scope.batch_id
                )
                cursor = through
                if found:
                    yield found
                continue
            await asyncio.sleep(self.poll_seconds)
