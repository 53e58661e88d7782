"""Every SQL statement about messages: accepting, claiming, reporting, cancelling, listing.

The messages table is the queue. A due message is ``pending`` with ``next_attempt_at`` in the
past; a worker claims a batch in one statement (``FOR UPDATE SKIP LOCKED`` on PostgreSQL; SQLite
serialises writers), which moves it to ``sending`` under a lease. Every status change is a
compare-and-set on the status it was read in, and is recorded in ``message_events`` in the same
transaction.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import (
    ColumnElement,
    Select,
    and_,
    bindparam,
    case,
    exists,
    false,
    func,
    insert,
    literal_column,
    or_,
    select,
    text,
    update,
)
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from tidings import ids
from tidings.clock import utcnow
from tidings.domain.content import SmsContent
from tidings.domain.reports import Report
from tidings.domain.status import CANCELLABLE, Status, apply_report
from tidings.errors import IdempotencyConflict, NotCancellable, NotFound, RecipientOptedOut
from tidings.store.batcher import WriteBatcher
from tidings.store.db import plain
from tidings.store.outbox import Recipient, record_events
from tidings.store.tables import message_events, message_tags, messages, opt_outs

log = logging.getLogger(__name__)

NOTIFY_CHANNEL = "tidings_messages"

# The column that records when a message reached each status.
_STATUS_TIMESTAMP = {
    Status.SENT: "sent_at",
    Status.DELIVERED: "delivered_at",
    Status.FAILED: "failed_at",
    Status.CANCELLED: "cancelled_at",
}

_CAS_RETRIES = 20
_MESSAGE_COLUMNS = tuple(str(c.name) for c in messages.columns)


@dataclass(frozen=True)
class NewMessage:
    """A validated message, ready to be stored."""

    to: str
    body: str
    segments: int
    encoding: str
    provider: str
    max_attempts: int
    sender: str | None = None
    send_at: datetime | None = None
    tags: list[str] = field(default_factory=list)
    metadata: dict[str, Any] = field(default_factory=dict)
    channel: str = "sms"
    route: list[str] | None = None
    """The providers to try in order (the first is ``provider``); ``None``: only ``provider``."""
    ordered: bool = False
    callback_url: str | None = None


@dataclass(frozen=True)
class Claimed:
    """A message a worker has claimed and must now send."""

    id: str
    to: str
    sender: str | None
    body: str
    provider: str
    attempts: int
    max_attempts: int
    route: list[str] | None = None
    provider_failures: int = 0
    segments: int = 1
    encoding: str = "GSM-7"

    @property
    def content(self) -> SmsContent:
        return SmsContent(text=self.body, segments=self.segments, encoding=self.encoding)

    def next_provider(self) -> str | None:
        """The provider after the current one in the route, if there is one."""
        if not self.route or self.provider not in self.route:
            return None
        position = self.route.index(self.provider)
        return self.route[position + 1] if position + 1 < len(self.route) else None


@dataclass(frozen=True)
class AwaitingReceipt:
    """A sent message whose receipt is late, taken to be polled."""

    id: str
    to: str
    sender: str | None
    provider: str
    provider_message_id: str


@dataclass(frozen=True)
class ReportOutcome:
    """What applying one report did."""

    message_id: str
    status_before: Status
    status_after: Status

    @property
    def changed(self) -> bool:
        return self.status_before != self.status_after


@dataclass(frozen=True)
class MessageFilter:
    status: Status | None = None
    to: str | None = None
    tag: str | None = None
    provider: str | None = None
    created_after: datetime | None = None
    created_before: datetime | None = None


def _status_is(status: Status) -> ColumnElement[bool]:
    # A literal, not a bound parameter: the queue's partial indexes (WHERE status = 'pending')
    # are only used when the planner can see the value when it plans (SQLite always, and
    # PostgreSQL once it switches a prepared statement to a generic plan).
    return messages.c.status == literal_column(f"'{status.value}'")


def _event_row(
    message_id: str,
    *,
    type: str,
    source: str,
    status: Status,
    changed: bool,
    at: datetime,
    recorded_at: datetime | None = None,
    provider_status: str | None = None,
    error_code: str | None = None,
    error_message: str | None = None,
    detail: dict[str, Any] | None = None,
) -> dict[str, Any]:
    return {
        "message_id": message_id,
        "type": type,
        "source": source,
        "status": status.value,
        "changed": changed,
        "provider_status": provider_status,
        "error_code": error_code,
        "error_message": error_message,
        "detail": detail or {},
        "occurred_at": at,
        "recorded_at": recorded_at or at,
    }


_REPORTED = (
    "status",
    "provider_status",
    "provider_message_id",
    "error_code",
    "error_message",
    "sent_at",
    "delivered_at",
    "failed_at",
    "lease_owner",
    "lease_expires_at",
)
"""The columns a report may change."""


@dataclass(frozen=True)
class _ReportItem:
    message_id: str
    report: Report
    type: str
    extra: dict[str, Any] | None
    always_extra: bool


def _status_columns(status: Status, report: Report, sent_at: datetime | None) -> dict[str, Any]:
    """The columns that change when a report moves a message to ``status``: its timestamp, the
    provider's words, the error (set on failure, cleared on delivery: the truth wins) and the
    lease, given the ``sent_at`` it had."""
    values: dict[str, Any] = {"status": status.value}
    if report.provider_status is not None:
        values["provider_status"] = report.provider_status
    column = _STATUS_TIMESTAMP.get(status)
    if column is not None:
        values[column] = report.occurred_at
    if status in (Status.SENT, Status.DELIVERED):
        values["sent_at"] = sent_at or report.occurred_at
    if status is Status.FAILED:
        values["error_code"] = report.error_code
        values["error_message"] = report.error_message
    elif status is Status.DELIVERED:
        values["error_code"] = None
        values["error_message"] = None
    if status in (Status.SENT, Status.FAILED, Status.DELIVERED):
        values["lease_owner"] = None
        values["lease_expires_at"] = None
    return values


class _Moved(Exception):
    """The message changed between reading its status and writing the new one."""


class MessageStore:
    def __init__(self, engine: AsyncEngine, writes: WriteBatcher | None = None) -> None:
        self.engine = engine
        self.writes = writes or WriteBatcher(engine)
        self.is_postgres = engine.dialect.name == "postgresql"

    def _picked(self, query: Select[Any]) -> Any:
        """The ids ``query`` picks, evaluated exactly once.

        As a plain ``IN (SELECT … LIMIT n FOR UPDATE SKIP LOCKED)``, PostgreSQL may plan a
        semi-join that re-runs the subquery per row, skipping the rows the statement already
        updated, so the LIMIT is lost and one worker claims the whole queue. A materialised CTE
        is evaluated once.
        """
        if not self.is_postgres:
            return query.scalar_subquery()
        picked = query.cte("picked").prefix_with("MATERIALIZED")
        return select(picked.c.id)

    # -- accepting -------------------------------------------------------------------------------

    async def insert(
        self,
        new: NewMessage,
        *,
        api_key_id: str | None = None,
        idempotency_key: str | None = None,
        request_hash: str | None = None,
        now: datetime | None = None,
    ) -> tuple[dict[str, Any], bool]:
        """Store a message, its tags and its first event in one transaction.

        Returns the stored row and whether it was created. With an ``idempotency_key`` already
        used by the same API key, returns the earlier message when the request hash matches and
        raises :class:`IdempotencyConflict` when it does not.
        """
        if idempotency_key is not None:
            existing = await self._by_idempotency_key(api_key_id, idempotency_key, request_hash)
            if existing is not None:
                return existing, False
        now = now or utcnow()
        row = self.new_row(
            new, now, api_key_id=api_key_id, idempotency_key=idempotency_key, request_hash=request_hash
        )
        try:
            # Group commit: concurrent requests share one transaction and one commit, and the
            # batch's messages are written together (a few statements however many there are);
            # NOTIFY goes once per provider per batch.
            await self.writes.run_many(
                self._insert_many,
                (row, new),
                once=(("notify", new.provider), self._notifier(new.provider))
                if self._notifies(row)
                else None,
            )
        except IntegrityError:
            # Two requests with the same key raced: the other one won, answer with its message.
            if idempotency_key is None:
                raise
            existing = await self._by_idempotency_key(api_key_id, idempotency_key, request_hash)
            if existing is None:
                raise
            return existing, False
        # What was written is what a read would return: no second round trip.
        stored = dict.fromkeys(_MESSAGE_COLUMNS)
        stored.update(row)
        return stored, True

    def _notifies(self, row: dict[str, Any]) -> bool:
        return self.is_postgres and row["status"] == Status.PENDING.value

    def _notifier(self, provider: str) -> Callable[[AsyncConnection], Awaitable[None]]:
        async def notify(conn: AsyncConnection) -> None:
            await conn.execute(text("SELECT pg_notify(:c, :p)"), {"c": NOTIFY_CHANNEL, "p": provider})

        return notify

    async def _insert_many(
        self, conn: AsyncConnection, items: list[tuple[dict[str, Any], NewMessage]]
    ) -> list[RecipientOptedOut | None]:
        """Write a batch of new messages in a constant number of statements; a message to a
        number that opted out is refused (its result is the exception) and the rest written."""
        # Checked in the insert's own transaction: no race with an opt-out arriving meanwhile.
        numbers = sorted({new.to for _row, new in items})
        found = await conn.execute(
            select(opt_outs.c.number, opt_outs.c.scope).where(opt_outs.c.number.in_(numbers))
        )
        blocked = {(r.number, r.scope) for r in found.all()}
        results: list[RecipientOptedOut | None] = []
        rows: list[dict[str, Any]] = []
        tags: list[dict[str, Any]] = []
        events: list[dict[str, Any]] = []
        for row, new in items:
            if (new.to, "*") in blocked or (new.sender is not None and (new.to, new.sender) in blocked):
                results.append(RecipientOptedOut(f"{new.to} opted out of messages", field="to"))
                continue
            results.append(None)
            rows.append(row)
            tags.extend({"message_id": row["id"], "tag": t} for t in set(new.tags))
            events.append(
                _event_row(
                    row["id"],
                    type="accepted",
                    source="api",
                    status=Status(row["status"]),
                    changed=True,
                    at=row["created_at"],
                )
            )
        if rows:
            await conn.execute(insert(messages), rows)
            if tags:
                await conn.execute(insert(message_tags), tags)
            await record_events(conn, events)
        return results

    async def write_new(
        self, conn: AsyncConnection, row: dict[str, Any], new: NewMessage, *, notify: bool = True
    ) -> None:
        """Insert a new message's row, tags and first event in ``conn``'s transaction."""
        await conn.execute(insert(messages), row)
        if new.tags:
            await conn.execute(
                insert(message_tags), [{"message_id": row["id"], "tag": t} for t in set(new.tags)]
            )
        status = Status(row["status"])
        await record_events(
            conn,
            _event_row(
                row["id"], type="accepted", source="api", status=status, changed=True, at=row["created_at"]
            ),
        )
        if notify and self._notifies(row):
            await self._notifier(new.provider)(conn)

    def new_row(
        self,
        new: NewMessage,
        now: datetime,
        *,
        api_key_id: str | None = None,
        idempotency_key: str | None = None,
        request_hash: str | None = None,
    ) -> dict[str, Any]:
        """The row of a message about to be stored."""
        message_id = ids.new_id()
        scheduled = new.send_at is not None and new.send_at > now
        status = Status.SCHEDULED if scheduled else Status.PENDING
        return {
            "id": message_id,
            "channel": new.channel,
            "to": new.to,
            "sender": new.sender,
            "body": new.body,
            "segments": new.segments,
            "encoding": new.encoding,
            "status": status.value,
            "provider": new.provider,
            "attempts": 0,
            "max_attempts": new.max_attempts,
            "next_attempt_at": new.send_at if scheduled and new.send_at else now,
            "send_at": new.send_at,
            "created_at": now,
            "updated_at": now,
            "tags": list(new.tags),
            "metadata": dict(new.metadata),
            "api_key_id": api_key_id,
            "idempotency_key": idempotency_key,
            "request_hash": request_hash,
            "route": list(new.route) if new.route and len(new.route) > 1 else None,
            "ordered": new.ordered,
            "callback_url": new.callback_url,
            "provider_failures": 0,
            "polls": 0,
        }

    async def _by_idempotency_key(
        self, api_key_id: str | None, key: str, request_hash: str | None
    ) -> dict[str, Any] | None:
        query = select(messages).where(
            messages.c.idempotency_key == key,
            messages.c.api_key_id.is_(None) if api_key_id is None else messages.c.api_key_id == api_key_id,
        )
        async with self.engine.connect() as conn:
            row = (await conn.execute(query)).mappings().first()
        if row is None:
            return None
        if row["request_hash"] != request_hash:
            raise IdempotencyConflict(field="Idempotency-Key")
        return plain(row)

    # -- reading ---------------------------------------------------------------------------------

    async def get(self, message_id: str) -> dict[str, Any] | None:
        async with self.engine.connect() as conn:
            row = (await conn.execute(select(messages).where(messages.c.id == message_id))).mappings().first()
        return plain(row) if row is not None else None

    async def events(self, message_id: str) -> list[dict[str, Any]]:
        query = (
            select(message_events)
            .where(message_events.c.message_id == message_id)
            .order_by(message_events.c.id)
        )
        async with self.engine.connect() as conn:
            return [plain(r) for r in (await conn.execute(query)).mappings()]

    async def search(
        self, filters: MessageFilter, *, after_id: str | None = None, limit: int = 50
    ) -> list[dict[str, Any]]:
        """Messages matching ``filters``, newest first, starting after the cursor ``after_id``."""
        query: Select[Any] = select(messages)
        if filters.tag is not None:
            query = query.join(
                message_tags,
                and_(message_tags.c.message_id == messages.c.id, message_tags.c.tag == filters.tag),
            )
        conditions = []
        if filters.status is not None:
            conditions.append(messages.c.status == filters.status.value)
        if filters.to is not None:
            conditions.append(messages.c.to == filters.to)
        if filters.provider is not None:
            conditions.append(messages.c.provider == filters.provider)
        if filters.created_after is not None:
            conditions.append(messages.c.created_at >= filters.created_after)
        if filters.created_before is not None:
            conditions.append(messages.c.created_at < filters.created_before)
        if after_id is not None:
            conditions.append(messages.c.id < after_id)
        query = query.where(*conditions).order_by(messages.c.id.desc()).limit(limit)
        async with self.engine.connect() as conn:
            return [plain(r) for r in (await conn.execute(query)).mappings()]

    async def count_by_status(self) -> dict[str, int]:
        query = select(messages.c.status, func.count()).group_by(messages.c.status)
        async with self.engine.connect() as conn:
            return {str(status): int(count) for status, count in (await conn.execute(query)).all()}

    # -- client actions --------------------------------------------------------------------------

    async def cancel(
        self, message_id: str, *, source: str = "api", reason: str | None = None
    ) -> dict[str, Any]:
        """Cancel a ``scheduled`` or ``pending`` message; :class:`NotCancellable` otherwise."""
        now = utcnow()
        cancellable = [s.value for s in CANCELLABLE]
        async with self.engine.begin() as conn:
            result = await conn.execute(
                update(messages)
                .where(messages.c.id == message_id, messages.c.status.in_(cancellable))
                .values(
                    status=Status.CANCELLED.value,
                    cancelled_at=now,
                    updated_at=now,
                    error_message=reason,
                )
            )
            if result.rowcount == 1:
                await record_events(
                    conn,
                    _event_row(
                        message_id,
                        type="cancelled",
                        source=source,
                        status=Status.CANCELLED,
                        changed=True,
                        at=now,
                        error_message=reason,
                    ),
                )
        row = await self.get(message_id)
        if row is None:
            raise NotFound(f"no message {message_id}")
        if result.rowcount != 1:
            raise NotCancellable(f"message {message_id} is {row['status']} and can no longer be cancelled")
        return row

    # -- the worker's side -----------------------------------------------------------------------

    async def promote_due(self, now: datetime | None = None, limit: int = 1000) -> int:
        """Move ``scheduled`` messages whose ``send_at`` has come to ``pending``."""
        now = now or utcnow()
        due = (
            select(messages.c.id)
            .where(_status_is(Status.SCHEDULED), messages.c.send_at <= now)
            .order_by(messages.c.send_at)
            .limit(limit)
        )
        if self.is_postgres:
            due = due.with_for_update(skip_locked=True)
        async with self.engine.begin() as conn:
            promoted = (
                await conn.execute(
                    update(messages)
                    .where(messages.c.id.in_(self._picked(due)), _status_is(Status.SCHEDULED))
                    .values(status=Status.PENDING.value, next_attempt_at=now, updated_at=now)
                    .returning(messages.c.id, messages.c.provider)
                )
            ).all()
            if promoted:
                await record_events(
                    conn,
                    [
                        _event_row(
                            mid,
                            type="promoted",
                            source="scheduler",
                            status=Status.PENDING,
                            changed=True,
                            at=now,
                        )
                        for mid, _ in promoted
                    ],
                )
        return len(promoted)

    async def claim(
        self, provider: str, *, worker: str, limit: int, lease_seconds: float, now: datetime | None = None
    ) -> list[Claimed]:
        """Claim up to ``limit`` due messages of ``provider`` in one statement."""
        now = now or utcnow()
        # Per-recipient order: an ordered message waits while an earlier message to the same
        # number has not yet been handed over (it is pending or being sent).
        earlier = messages.alias("earlier")
        waits_for_earlier = exists().where(
            earlier.c.to == messages.c.to,
            earlier.c.id < messages.c.id,
            earlier.c.status.in_([literal_column("'pending'"), literal_column("'sending'")]),
        )
        due = (
            select(messages.c.id)
            .where(
                _status_is(Status.PENDING),
                messages.c.provider == provider,
                messages.c.next_attempt_at <= now,
                or_(messages.c.ordered.is_(false()), ~waits_for_earlier),
            )
            .order_by(messages.c.next_attempt_at)
            .limit(limit)
        )
        if self.is_postgres:
            due = due.with_for_update(skip_locked=True, of=messages)
        statement = (
            update(messages)
            # The status condition is repeated so that the claim stays a compare-and-set even
            # where the subquery's snapshot is older than the update (SQLite).
            .where(messages.c.id.in_(self._picked(due)), _status_is(Status.PENDING))
            .values(
                status=Status.SENDING.value,
                attempts=messages.c.attempts + 1,
                lease_owner=worker,
                lease_expires_at=now + timedelta(seconds=lease_seconds),
                updated_at=now,
            )
            .returning(
                messages.c.id,
                messages.c.to,
                messages.c.sender,
                messages.c.body,
                messages.c.provider,
                messages.c.attempts,
                messages.c.max_attempts,
                messages.c.route,
                messages.c.provider_failures,
                messages.c.segments,
                messages.c.encoding,
            )
        )
        async with self.engine.begin() as conn:
            rows = (await conn.execute(statement)).all()
            if rows:
                await record_events(
                    conn,
                    [
                        _event_row(
                            r.id,
                            type="claimed",
                            source="worker",
                            status=Status.SENDING,
                            changed=True,
                            at=now,
                            detail={"worker": worker, "attempt": r.attempts},
                        )
                        for r in rows
                    ],
                )
        return [
            Claimed(
                id=r.id,
                to=r.to,
                sender=r.sender,
                body=r.body,
                provider=r.provider,
                attempts=r.attempts,
                max_attempts=r.max_attempts,
                route=list(r.route) if r.route else None,
                provider_failures=r.provider_failures,
                segments=r.segments,
                encoding=r.encoding,
            )
            for r in rows
        ]

    async def record_accepted(
        self,
        message_id: str,
        *,
        worker: str,
        provider_message_id: str | None,
        provider_status: str | None,
        detail: dict[str, Any] | None = None,
        status: Status = Status.SENT,
    ) -> ReportOutcome | None:
        """The provider accepted the message: keep its id and report ``status`` (usually sent)."""
        now = utcnow()
        report = Report(
            status=status,
            source="worker",
            occurred_at=now,
            provider_status=provider_status,
            detail=detail or {},
        )
        extra: dict[str, Any] = {"lease_owner": None, "lease_expires_at": None}
        if provider_message_id is not None:
            extra["provider_message_id"] = provider_message_id
        return await self.apply_report(
            message_id, report, type="send_accepted", extra=extra, always_extra=True
        )

    async def schedule_retry(
        self,
        message_id: str,
        *,
        worker: str,
        retry_at: datetime,
        error_code: str | None,
        error_message: str | None,
        detail: dict[str, Any] | None = None,
        fail_over_to: str | None = None,
    ) -> bool:
        """The worker's one downward step, ``sending → pending``, as a compare-and-set on its lease.

        Counts a temporary failure on the current provider; with ``fail_over_to`` the message
        moves to that provider instead, with its count reset.
        """
        now = utcnow()
        moved: dict[str, Any] = (
            {"provider": fail_over_to, "provider_failures": 0}
            if fail_over_to is not None
            else {"provider_failures": messages.c.provider_failures + 1}
        )
        async with self.engine.begin() as conn:
            result = await conn.execute(
                update(messages)
                .where(
                    messages.c.id == message_id,
                    _status_is(Status.SENDING),
                    messages.c.lease_owner == worker,
                )
                .values(
                    status=Status.PENDING.value,
                    next_attempt_at=retry_at,
                    error_code=error_code,
                    error_message=error_message,
                    lease_owner=None,
                    lease_expires_at=None,
                    updated_at=now,
                    **moved,
                )
            )
            changed = result.rowcount == 1
            if fail_over_to is not None:
                detail = {**(detail or {}), "provider": fail_over_to}
            if changed and fail_over_to is not None:
                event_type = "failed_over"
            elif changed:
                event_type = "retry_scheduled"
            else:
                event_type = "send_error"
            if fail_over_to is not None and self.is_postgres and changed:
                await conn.execute(text("SELECT pg_notify(:c, :p)"), {"c": NOTIFY_CHANNEL, "p": fail_over_to})
            await record_events(
                conn,
                _event_row(
                    message_id,
                    type=event_type,
                    source="worker",
                    status=Status.PENDING,
                    changed=changed,
                    at=now,
                    error_code=error_code,
                    error_message=error_message,
                    detail={**(detail or {}), "retry_at": retry_at.isoformat() + "Z"},
                ),
            )
        if not changed:
            log.warning(
                "retry not scheduled: the message left sending or its lease moved on",
                extra={"action": "retry", "message_id": message_id},
            )
        return changed

    async def reap_expired_leases(self, now: datetime | None = None, limit: int = 1000) -> int:
        """Return messages whose lease expired (their worker died) to ``pending``.

        The attempt is counted: a message whose attempts are used up fails instead, because
        nobody knows whether the provider got it.
        """
        now = now or utcnow()
        expired = (
            select(messages.c.id)
            .where(_status_is(Status.SENDING), messages.c.lease_expires_at < now)
            .limit(limit)
        )
        if self.is_postgres:
            expired = expired.with_for_update(skip_locked=True)
        exhausted = messages.c.attempts >= messages.c.max_attempts
        new_status = case((exhausted, Status.FAILED.value), else_=Status.PENDING.value)
        async with self.engine.begin() as conn:
            rows = (
                await conn.execute(
                    update(messages)
                    .where(
                        messages.c.id.in_(self._picked(expired)),
                        _status_is(Status.SENDING),
                        messages.c.lease_expires_at < now,
                    )
                    .values(
                        status=new_status,
                        next_attempt_at=now,
                        failed_at=case((exhausted, now), else_=messages.c.failed_at),
                        error_code=case((exhausted, "lease_expired"), else_=messages.c.error_code),
                        error_message=case(
                            (exhausted, "attempts used up; the last one was interrupted"),
                            else_=messages.c.error_message,
                        ),
                        lease_owner=None,
                        lease_expires_at=None,
                        updated_at=now,
                    )
                    .returning(messages.c.id, messages.c.status, messages.c.provider)
                )
            ).all()
            if rows:
                await record_events(
                    conn,
                    [
                        _event_row(
                            r.id,
                            type="lease_expired",
                            source="reaper",
                            status=Status(r.status),
                            changed=True,
                            at=now,
                        )
                        for r in rows
                    ],
                )
        if rows:
            log.warning(
                "returned %d messages whose worker stopped mid-send",
                len(rows),
                extra={"action": "reap", "count": len(rows)},
            )
        return len(rows)

    # -- reports ---------------------------------------------------------------------------------

    async def find_by_provider_id(self, provider: str, provider_message_id: str) -> str | None:
        query = select(messages.c.id).where(
            messages.c.provider == provider, messages.c.provider_message_id == provider_message_id
        )
        async with self.engine.connect() as conn:
            return (await conn.execute(query)).scalar_one_or_none()

    async def fail_over_waiting(
        self, provider: str, *, waiting_since: datetime, now: datetime | None = None
    ) -> int:
        """Move ``pending`` messages of ``provider`` due since before ``waiting_since`` to the next
        provider in their route (those without one stay); returns how many moved."""
        now = now or utcnow()
        query = select(messages.c.id, messages.c.route).where(
            _status_is(Status.PENDING),
            messages.c.provider == provider,
            messages.c.next_attempt_at < waiting_since,
            messages.c.route.is_not(None),
        )
        moved = 0
        async with self.engine.begin() as conn:
            for row in (await conn.execute(query)).all():
                route = list(row.route or [])
                if provider not in route or route.index(provider) + 1 >= len(route):
                    continue
                target = route[route.index(provider) + 1]
                result = await conn.execute(
                    update(messages)
                    .where(
                        messages.c.id == row.id, _status_is(Status.PENDING), messages.c.provider == provider
                    )
                    .values(provider=target, provider_failures=0, next_attempt_at=now, updated_at=now)
                )
                if result.rowcount != 1:
                    continue
                moved += 1
                await record_events(
                    conn,
                    _event_row(
                        row.id,
                        type="failed_over",
                        source="worker",
                        status=Status.PENDING,
                        changed=False,
                        at=now,
                        error_message=f"provider {provider} is silent",
                        detail={"provider": target, "from": provider},
                    ),
                )
            if moved and self.is_postgres:
                await conn.execute(text("SELECT pg_notify(:c, :p)"), {"c": NOTIFY_CHANNEL, "p": "*"})
        return moved

    async def find_recent_sent(self, provider: str, to: str, since: datetime) -> str | None:
        """The most recent message to ``to`` sent through ``provider`` since ``since`` that is still
        ``sent`` (awaiting its receipt): where a receipt that lost our id most likely belongs."""
        query = (
            select(messages.c.id)
            .where(
                _status_is(Status.SENT),
                messages.c.provider == provider,
                messages.c.to == to,
                messages.c.sent_at >= since,
            )
            .order_by(messages.c.sent_at.desc(), messages.c.id.desc())
            .limit(1)
        )
        async with self.engine.connect() as conn:
            return (await conn.execute(query)).scalar_one_or_none()

    async def take_for_polling(
        self,
        provider: str,
        *,
        sent_before: datetime,
        polled_before: datetime,
        max_polls: int,
        limit: int,
        now: datetime | None = None,
    ) -> list[AwaitingReceipt]:
        """Take up to ``limit`` ``sent`` messages of ``provider`` sent before ``sent_before`` whose
        last poll (if any) was before ``polled_before``, marking them polled now, in one statement,
        so that two workers never poll the same message at once."""
        now = now or utcnow()
        late = (
            select(messages.c.id)
            .where(
                _status_is(Status.SENT),
                messages.c.provider == provider,
                messages.c.sent_at < sent_before,
                messages.c.provider_message_id.is_not(None),
                messages.c.polls < max_polls,
                or_(messages.c.polled_at.is_(None), messages.c.polled_at < polled_before),
            )
            .order_by(messages.c.sent_at)
            .limit(limit)
        )
        if self.is_postgres:
            late = late.with_for_update(skip_locked=True)
        statement = (
            update(messages)
            .where(messages.c.id.in_(self._picked(late)), _status_is(Status.SENT))
            .values(polled_at=now, polls=messages.c.polls + 1)
            .returning(
                messages.c.id,
                messages.c.to,
                messages.c.sender,
                messages.c.provider,
                messages.c.provider_message_id,
            )
        )
        async with self.engine.begin() as conn:
            rows = (await conn.execute(statement)).all()
        return [
            AwaitingReceipt(
                id=r.id,
                to=r.to,
                sender=r.sender,
                provider=r.provider,
                provider_message_id=r.provider_message_id,
            )
            for r in rows
        ]

    async def apply_report(
        self,
        message_id: str,
        report: Report,
        *,
        type: str = "report",
        extra: dict[str, Any] | None = None,
        always_extra: bool = False,
    ) -> ReportOutcome | None:
        """Apply one report through the status machine and record it as an event.

        The status only moves up (``domain.status.apply_report``); the write is a compare-and-set
        on the status read, retried if another writer got there first. A report that changes
        nothing is still recorded. Returns ``None`` when the message does not exist.
        """

        item = _ReportItem(message_id, report, type, extra, always_extra)
        for _ in range(_CAS_RETRIES):
            try:
                # Group commit: reports arriving together are applied together, set-based.
                outcome: ReportOutcome | None = await self.writes.run_many(self._apply_many, item)
                return outcome
            except _Moved:
                continue
        raise RuntimeError(f"message {message_id} kept changing while a report was applied")

    async def _apply_many(
        self, conn: AsyncConnection, items: list[_ReportItem]
    ) -> list[ReportOutcome | None]:
        """Apply a batch of reports in a constant number of statements: one read of the messages
        (locked on PostgreSQL), the status machine in memory in arrival order, one compare-and-set
        update per message (as one executemany) and one insert of the events."""
        wanted = sorted({i.message_id for i in items})
        query = select(
            *(messages.c[name] for name in ("id", "callback_url", "api_key_id", "to", *_REPORTED))
        ).where(messages.c.id.in_(wanted))
        if self.is_postgres:
            query = query.with_for_update()
        rows = {r.id: dict(r._mapping) for r in (await conn.execute(query)).all()}
        before = {m: row["status"] for m, row in rows.items()}
        # Only the columns a message's reports changed are written: another writer may have
        # changed others since the read (on SQLite, which reads outside the write lock).
        touched: dict[str, set[str]] = {}
        events: list[dict[str, Any]] = []
        outcomes: list[ReportOutcome | None] = []
        now = utcnow()
        for item in items:
            row = rows.get(item.message_id)
            if row is None:
                outcomes.append(None)
                continue
            current = Status(row["status"])
            report = item.report
            after = apply_report(current, report.status)
            values: dict[str, Any] = {}
            if after != current:
                values.update(_status_columns(after, report, row["sent_at"]))
            elif report.status == current and report.provider_status is not None:
                # Same status in the provider's newer words (e.g. MessageWaiting after
                # DeliveredToNetwork): keep what it said last.
                values["provider_status"] = report.provider_status
            if item.extra and (item.always_extra or after != current):
                values.update(item.extra)
            if values:
                row.update(values)
                touched.setdefault(item.message_id, set()).update(values)
            events.append(
                _event_row(
                    item.message_id,
                    type=item.type,
                    source=report.source,
                    status=report.status or current,
                    changed=after != current,
                    at=report.occurred_at,
                    recorded_at=now,
                    provider_status=report.provider_status,
                    error_code=report.error_code,
                    error_message=report.error_message,
                    detail=report.detail,
                )
            )
            outcomes.append(ReportOutcome(item.message_id, current, after))
        by_columns: dict[frozenset[str], list[str]] = {}
        for message_id, changed in sorted(touched.items()):
            by_columns.setdefault(frozenset(changed), []).append(message_id)
        for columns, message_ids in by_columns.items():
            statement = (
                update(messages)
                .where(messages.c.id == bindparam("b_id"), messages.c.status == bindparam("b_before"))
                .values({name: bindparam(f"b_{name}") for name in sorted(columns)} | {"updated_at": now})
            )
            params = [
                {"b_id": m, "b_before": before[m]} | {f"b_{n}": rows[m][n] for n in columns}
                for m in message_ids
            ]
            done = await conn.execute(statement, params)
            # On PostgreSQL the rows are locked since they were read, and asyncpg reports no count
            # for a batch. SQLite reads outside the write lock: another writer may have moved one.
            if not self.is_postgres and done.rowcount != len(message_ids):
                raise _Moved()
        recipients = {
            m: Recipient(url=row["callback_url"], api_key_id=row["api_key_id"], to=row["to"])
            if row["callback_url"]
            else None
            for m, row in rows.items()
        }
        await record_events(conn, events, recipients)
        return outcomes

    async def ids_with_status(self, statuses: Sequence[Status]) -> list[str]:
        """Ids of the messages in ``statuses`` (for tests and tools; not for hot paths)."""
        query = select(messages.c.id).where(messages.c.status.in_([s.value for s in statuses]))
        async with self.engine.connect() as conn:
            return list((await conn.execute(query)).scalars())
