"""The messages table as a queue: claiming due messages, retries, promotion, reaping, failover
and taking late messages for polling.

A due message is ``pending`` with ``next_attempt_at`` in the past. :func:`claim` is the one way a
message becomes ``sending``: in one statement (``FOR UPDATE SKIP LOCKED`` on PostgreSQL; SQLite
serialises writers) it hands a batch to a consumer, a worker that sends them under a lease, or an
Android phone that pulls them and holds them until it reports. Every status change here is a
compare-and-set on the status it was read in, recorded in ``message_events`` in the same
transaction.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import Integer, Row, bindparam, case, exists, false, or_, select, update
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from tidings import metrics
from tidings.clock import utcnow
from tidings.domain.content import Attachment, Channel, Content, EmailContent, SmsContent
from tidings.domain.failures import FailureReason
from tidings.domain.reports import Report
from tidings.domain.routes import next_provider
from tidings.domain.status import Status
from tidings.store import events
from tidings.store.messages import ALL_SENDERS, notify
from tidings.store.optouts import OPTED_OUT
from tidings.store.reports import ReportItem, ReportOutcome, apply_reports, count_changes
from tidings.store.sql import is_value, picked_once, waits_for_earlier
from tidings.store.tables import message_attachments, messages, opt_outs

log = logging.getLogger(__name__)


def _status_is(status: Status) -> Any:
    return is_value(messages.c.status, status.value)


@dataclass(frozen=True)
class Consumer:
    """Who a claim hands messages to.

    A worker sends them under a lease of ``lease_seconds`` (the reaper returns them if it dies); a
    phone that pulls its messages holds them with no expiry (``lease_seconds`` ``None``) until it
    reports on them.
    """

    owner: str
    lease_seconds: float | None
    event: str = "claimed"
    source: str = "worker"
    detail: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class Claimed:
    """A message handed to a consumer, with what it needs to send it."""

    id: str
    to: str
    sender: str | None
    content: Content
    provider: str
    attempts: int
    max_attempts: int
    route: list[str] | None = None
    provider_failures: int = 0

    def next_provider(self) -> str | None:
        """The provider after the current one in the route, if there is one."""
        return next_provider(self.route, self.provider)

    @property
    def sms(self) -> SmsContent:
        """The SMS content (for a consumer that only takes SMS)."""
        if not isinstance(self.content, SmsContent):
            raise TypeError(f"message {self.id} is not an SMS")
        return self.content


def _claimed(row: Row[Any], files: Mapping[str, list[Attachment]] | None = None) -> Claimed:
    content: Content
    if row.channel == Channel.EMAIL.value:
        content = EmailContent(
            subject=row.subject or "",
            html=row.html,
            text=row.body or None,
            reply_to=row.reply_to,
            headers=dict(row.headers or {}),
            attachments=tuple((files or {}).get(row.id, ())),
        )
    else:
        content = SmsContent(text=row.body, segments=row.segments or 1, encoding=row.encoding or "GSM-7")
    return Claimed(
        id=row.id,
        to=row.to,
        sender=row.sender,
        content=content,
        provider=row.provider,
        attempts=row.attempts,
        max_attempts=row.max_attempts,
        route=list(row.route) if row.route else None,
        provider_failures=row.provider_failures,
    )


@dataclass(frozen=True)
class AwaitingReceipt:
    """A sent message whose receipt is late, taken to be polled."""

    id: str
    to: str
    sender: str | None
    provider: str
    provider_message_id: str


def _claim_statement(is_postgres: bool) -> Any:
    """The claim, made once per dialect with its values as parameters (building it took a
    worker more time than running it)."""
    waits = waits_for_earlier(messages, "to", (Status.PENDING.value, Status.SENDING.value))
    now = bindparam("claim_now", type_=messages.c.updated_at.type)
    due = (
        select(messages.c.id)
        .where(
            _status_is(Status.PENDING),
            messages.c.provider == bindparam("claim_provider"),
            messages.c.next_attempt_at <= now,
            or_(messages.c.ordered.is_(false()), ~waits),
        )
        .order_by(messages.c.next_attempt_at, messages.c.id)
        .limit(bindparam("claim_limit", type_=Integer()))
    )
    if is_postgres:
        due = due.with_for_update(skip_locked=True, of=messages)
    return (
        update(messages)
        # The status condition is repeated so that the claim stays a compare-and-set even where
        # the subquery's snapshot is older than the update (SQLite).
        .where(messages.c.id.in_(picked_once(due, is_postgres=is_postgres)), _status_is(Status.PENDING))
        .values(
            status=Status.SENDING.value,
            attempts=messages.c.attempts + 1,
            lease_owner=bindparam("claim_owner"),
            lease_expires_at=bindparam("claim_expires", type_=messages.c.lease_expires_at.type),
            # A new attempt: what the provider said of earlier ones is in the history. A phone's
            # first update about it fills this again, which is how its hand-over is acknowledged.
            provider_status=None,
            updated_at=now,
        )
        .returning(
            messages.c.id,
            messages.c.channel,
            messages.c.to,
            messages.c.sender,
            messages.c.body,
            messages.c.segments,
            messages.c.encoding,
            messages.c.subject,
            messages.c.html,
            messages.c.reply_to,
            messages.c.headers,
            messages.c.provider,
            messages.c.attempts,
            messages.c.max_attempts,
            messages.c.route,
            messages.c.provider_failures,
            messages.c.exempt_from_opt_out,
            # The suppression list, read again in the claim itself (an index probe per row): the
            # accept's check reads it before its insert, so an opt-out stored in between is
            # missed there, and that opt-out's cancelling misses the message.
            exists()
            .where(
                opt_outs.c.channel == messages.c.channel,
                opt_outs.c.address == messages.c.to,
                or_(opt_outs.c.scope == ALL_SENDERS, opt_outs.c.scope == messages.c.sender),
            )
            .label("opted_out"),
        )
    )


_CLAIMS: dict[bool, Any] = {}
"""The claim statement, by whether it is PostgreSQL's."""


async def claim(
    conn: AsyncConnection,
    provider: str,
    consumer: Consumer,
    *,
    limit: int,
    now: datetime,
    not_sent: list[ReportOutcome] | None = None,
) -> list[Claimed]:
    """Hand up to ``limit`` due messages of ``provider`` to ``consumer``, oldest due first, in one
    statement in ``conn``'s transaction.

    Per-recipient order: an ordered message waits while an earlier message to the same address is
    ``pending`` or ``sending``, so a retry back-off holds the later ones back too.

    A claimed message whose recipient is on the suppression list now (it opted out while the
    message was being accepted) is not handed over: it is ``failed`` with ``failure_reason``
    ``opted_out`` in this transaction, and its outcome added to ``not_sent``, for the caller to
    count once committed. Only a message marked ``exempt_from_opt_out`` (the confirmation of an
    opt-out) goes out anyway.
    """
    is_postgres = conn.dialect.name == "postgresql"
    statement = _CLAIMS.get(is_postgres)
    if statement is None:
        statement = _CLAIMS[is_postgres] = _claim_statement(is_postgres)
    expires = now + timedelta(seconds=consumer.lease_seconds) if consumer.lease_seconds is not None else None
    parameters = {
        "claim_provider": provider,
        "claim_now": now,
        "claim_limit": limit,
        "claim_owner": consumer.owner,
        "claim_expires": expires,
    }
    rows = sorted((await conn.execute(statement, parameters)).all(), key=lambda r: str(r.id))
    stopped = {r.id for r in rows if r.opted_out and not r.exempt_from_opt_out}
    if stopped:
        # Not handed to a provider or a phone: failed as the worker fails a send.
        outcomes = await apply_reports(conn, [_opted_out(m, consumer.source, now) for m in sorted(stopped)])
        if not_sent is not None:
            not_sent.extend(o for o in outcomes if o is not None)
        for message_id in sorted(stopped):
            log.warning(
                "message not sent: its recipient opted out after it was accepted",
                extra={"action": "opt_out", "message_id": message_id, "provider": provider},
            )
        rows = [r for r in rows if r.id not in stopped]
    await events.record_events(
        conn,
        [
            events.event_row(
                r.id,
                type=consumer.event,
                source=consumer.source,
                status=Status.SENDING,
                changed=True,
                at=now,
                detail={**consumer.detail, "attempt": r.attempts},
            )
            for r in rows
        ],
    )
    files = await attachments_of(conn, [r.id for r in rows if r.channel == Channel.EMAIL.value])
    return [_claimed(r, files) for r in rows]


def _opted_out(message_id: str, source: str, now: datetime) -> ReportItem:
    return ReportItem(
        message_id,
        Report(
            status=Status.FAILED,
            source=source,
            occurred_at=now,
            error_code=OPTED_OUT,
            error_message="the recipient opted out after the message was accepted; it was not sent",
            failure_reason=FailureReason.OPTED_OUT,
        ),
        type="send_failed",
    )


async def attachments_of(conn: AsyncConnection, message_ids: Sequence[str]) -> dict[str, list[Attachment]]:
    """The attachments of ``message_ids``, in order, by message."""
    found: dict[str, list[Attachment]] = {}
    if not message_ids:
        return found
    query = (
        select(
            message_attachments.c.message_id,
            message_attachments.c.filename,
            message_attachments.c.content_type,
            message_attachments.c.data,
        )
        .where(message_attachments.c.message_id.in_(list(message_ids)))
        .order_by(message_attachments.c.message_id, message_attachments.c.position)
    )
    for row in (await conn.execute(query)).all():
        found.setdefault(row.message_id, []).append(
            Attachment(filename=row.filename, content_type=row.content_type, data=bytes(row.data))
        )
    return found


async def held_unacknowledged(
    conn: AsyncConnection, provider: str, owner: str, *, limit: int
) -> list[Claimed]:
    """Messages handed to ``owner`` (a phone) that it never reported on, oldest first: its answer
    may have been lost, so they are handed over again."""
    query = (
        select(messages)
        .where(
            _status_is(Status.SENDING),
            messages.c.provider == provider,
            messages.c.lease_owner == owner,
            messages.c.provider_status.is_(None),
        )
        .order_by(messages.c.id)
        .limit(limit)
    )
    if conn.dialect.name == "postgresql":
        query = query.with_for_update(skip_locked=True)
    return [_claimed(r) for r in (await conn.execute(query)).all()]


class QueueStore:
    def __init__(self, engine: AsyncEngine) -> None:
        self.engine = engine
        self.is_postgres = engine.dialect.name == "postgresql"

    async def claim(
        self, provider: str, *, worker: str, limit: int, lease_seconds: float, now: datetime | None = None
    ) -> list[Claimed]:
        """Claim up to ``limit`` due messages of ``provider`` for ``worker``, under a lease."""
        consumer = Consumer(owner=worker, lease_seconds=lease_seconds, detail={"worker": worker})
        not_sent: list[ReportOutcome] = []
        async with self.engine.begin() as conn:
            claimed = await claim(
                conn, provider, consumer, limit=limit, now=now or utcnow(), not_sent=not_sent
            )
        count_changes(not_sent)
        return claimed

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
                    .where(
                        messages.c.id.in_(picked_once(due, is_postgres=self.is_postgres)),
                        _status_is(Status.SCHEDULED),
                    )
                    .values(status=Status.PENDING.value, next_attempt_at=now, updated_at=now)
                    .returning(messages.c.id)
                )
            ).scalars()
            rows = [
                events.event_row(
                    m, type="promoted", source="scheduler", status=Status.PENDING, changed=True, at=now
                )
                for m in promoted
            ]
            await events.record_events(conn, rows)
        return len(rows)

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
                await notify(conn, fail_over_to)
            elif changed:
                event_type = "retry_scheduled"
            else:
                event_type = "send_error"
            await events.record_events(
                conn,
                events.event_row(
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
                        messages.c.id.in_(picked_once(expired, is_postgres=self.is_postgres)),
                        _status_is(Status.SENDING),
                        messages.c.lease_expires_at < now,
                    )
                    .values(
                        status=new_status,
                        next_attempt_at=now,
                        failed_at=case((exhausted, now), else_=messages.c.failed_at),
                        error_code=case((exhausted, "lease_expired"), else_=messages.c.error_code),
                        failure_reason=case(
                            (exhausted, FailureReason.UNKNOWN.value), else_=messages.c.failure_reason
                        ),
                        error_message=case(
                            (exhausted, "attempts used up; the last one was interrupted"),
                            else_=messages.c.error_message,
                        ),
                        lease_owner=None,
                        lease_expires_at=None,
                        updated_at=now,
                    )
                    .returning(messages.c.id, messages.c.status, messages.c.provider, messages.c.channel)
                )
            ).all()
            await events.record_events(
                conn,
                [
                    events.event_row(
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
        for row in rows:
            if row.status == Status.FAILED.value:
                metrics.message_failed(row.provider, row.channel)
        if rows:
            log.warning(
                "returned %d messages whose worker stopped mid-send",
                len(rows),
                extra={"action": "reap", "count": len(rows)},
            )
        return len(rows)

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
        moved: dict[str, list[str]] = {}
        async with self.engine.begin() as conn:
            for row in (await conn.execute(query)).all():
                target = next_provider(row.route, provider)
                if target is None:
                    continue
                result = await conn.execute(
                    update(messages)
                    .where(
                        messages.c.id == row.id, _status_is(Status.PENDING), messages.c.provider == provider
                    )
                    .values(provider=target, provider_failures=0, next_attempt_at=now, updated_at=now)
                )
                if result.rowcount == 1:
                    moved.setdefault(target, []).append(row.id)
            await events.record_events(
                conn,
                [
                    events.event_row(
                        message_id,
                        type="failed_over",
                        source="worker",
                        status=Status.PENDING,
                        changed=False,
                        at=now,
                        error_message=f"provider {provider} is silent",
                        detail={"provider": target, "from": provider},
                    )
                    for target, ids in moved.items()
                    for message_id in ids
                ],
            )
            for target in sorted(moved):
                await notify(conn, target)
        return sum(len(ids) for ids in moved.values())

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
            .where(
                messages.c.id.in_(picked_once(late, is_postgres=self.is_postgres)), _status_is(Status.SENT)
            )
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
