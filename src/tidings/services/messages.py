"""Reading and cancelling messages, for every transport."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from tidings import ids
from tidings.clock import utc_field
from tidings.domain.batches import FINAL
from tidings.domain.phone import normalize_e164
from tidings.domain.search import cost_range, number_prefix, search_terms
from tidings.domain.status import Status
from tidings.errors import NotCancellable, NotFound, printable
from tidings.store import Store
from tidings.store.messages import MessageFilter

PAGE_DEFAULT = 50
PAGE_MAX = 500
"""The most rows one page of a list holds (every transport)."""


@dataclass(frozen=True)
class Answer:
    """A yes-or-no question about a message (seed 001: "did you send it?", "was it delivered?"),
    answered from what is stored: ``final`` says whether the answer can still change, ``reason``
    why it is no, once that is final (the provider's words when it gave some)."""

    yes: bool
    final: bool
    status: Status
    reason: str | None = None
    error_code: str | None = None


def _why_not(row: dict[str, Any]) -> str:
    if row["status"] == Status.CANCELLED.value:
        return row.get("error_message") or "it was cancelled before it was sent"
    return row.get("error_message") or row.get("failure_reason") or row.get("error_code") or "it failed"


def was_sent(row: dict[str, Any]) -> Answer:
    """Whether a provider accepted the message: it is sent or delivered, or failed after it was
    sent (a receipt said so). No, for good, once it failed without being sent or was cancelled."""
    status = Status(row["status"])
    sent = status in (Status.SENT, Status.DELIVERED) or row.get("sent_at") is not None
    final = sent or status in FINAL
    if sent or not final:
        return Answer(sent, final, status)
    return Answer(False, True, status, _why_not(row), row.get("error_code"))


def was_delivered(row: dict[str, Any]) -> Answer:
    """Whether the message reached its recipient; no, for good, once it failed or was cancelled
    (with the provider's reason), and not yet before."""
    status = Status(row["status"])
    if status is Status.DELIVERED:
        return Answer(True, True, status)
    if status not in FINAL:
        return Answer(False, False, status)
    return Answer(False, True, status, _why_not(row), row.get("error_code"))


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
