"""Reading and cancelling messages, for every transport."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime
from typing import Any

from tidings import ids
from tidings.clock import utc_field
from tidings.domain.phone import normalize_e164
from tidings.domain.search import cost_range, number_prefix, search_terms
from tidings.domain.status import Status
from tidings.errors import NotCancellable, NotFound, printable
from tidings.store import Store
from tidings.store.messages import MessageFilter


def message_filter(
    *,
    region: str | None,
    q: str | None = None,
    statuses: Sequence[Status] = (),
    to: str | None = None,
    to_prefix: str | None = None,
    tags: Sequence[str] = (),
    provider: str | None = None,
    channel: str | None = None,
    batch: str | None = None,
    created_after: datetime | None = None,
    created_before: datetime | None = None,
    currency: str | None = None,
    cost_min: str | None = None,
    cost_max: str | None = None,
) -> MessageFilter:
    """The filter a client asked for, each value checked (:class:`InvalidInput` naming the
    parameter at fault); ``region`` reads numbers written without their country code."""
    code, low, high = cost_range(currency, cost_min, cost_max)
    return MessageFilter(
        # Only letters, digits and marks are kept of q: no NUL or surrogate reaches a database.
        terms=search_terms(q, "q") if q is not None else (),
        statuses=tuple(statuses),
        to=normalize_e164(to, region) if to else None,
        to_prefix=number_prefix(to_prefix)[0] if to_prefix is not None else None,
        tags=tuple(printable(t, "tag") or "" for t in tags),
        provider=printable(provider, "provider"),
        channel=channel,
        batch=printable(batch, "batch"),
        created_after=utc_field(created_after, "created_after"),
        created_before=utc_field(created_before, "created_before"),
        currency=code,
        cost_min=low,
        cost_max=high,
    )


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
