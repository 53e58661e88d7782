"""Reading and cancelling messages, for every transport."""

from __future__ import annotations

from typing import Any

from tidings import ids
from tidings.errors import NotCancellable, NotFound
from tidings.store import Store
from tidings.store.messages import MessageFilter


class MessageService:
    def __init__(self, store: Store) -> None:
        self.store = store

    async def get(self, message_id: str, *, with_history: bool = True) -> tuple[dict[str, Any], list[Any]]:
        """A message and its history (oldest first); :class:`NotFound` when there is none."""
        row = await self.store.messages.get(message_id) if ids.is_id(message_id) else None
        if row is None:
            raise NotFound(f"no message {message_id}")
        history = await self.store.messages.events(message_id) if with_history else []
        return row, history

    async def list(
        self, filters: MessageFilter, *, cursor: str | None = None, limit: int = 50
    ) -> tuple[list[dict[str, Any]], str | None]:
        """A page of messages, newest first, and the cursor of the next page (``None``: last)."""
        rows = await self.store.messages.search(filters, after_id=cursor, limit=limit + 1)
        page = rows[:limit]
        return page, (page[-1]["id"] if len(rows) > limit else None)

    async def cancel(self, message_id: str, *, reason: str = "cancelled by the client") -> dict[str, Any]:
        """Cancel a message that is still ``scheduled`` or ``pending``; :class:`NotCancellable`
        once it is being sent or beyond."""
        if not ids.is_id(message_id):
            raise NotFound(f"no message {message_id}")
        cancelled = await self.store.messages.cancel(message_id, reason=reason)
        row = await self.store.messages.get(message_id)
        if row is None:
            raise NotFound(f"no message {message_id}")
        if not cancelled:
            raise NotCancellable(f"message {message_id} is {row['status']} and can no longer be cancelled")
        return row
