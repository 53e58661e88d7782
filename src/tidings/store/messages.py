"""Messages as rows: storing new ones (the one insert path), reading, listing, cancelling.

The queue's statements (claim, retry, reap…) are in ``store/queue.py``, the status writer for
reports in ``store/reports.py``, a message's history in ``store/events.py``.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import ColumnElement, Select, and_, func, literal_column, select, text, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from tidings import ids
from tidings.clock import utcnow
from tidings.domain.content import EmailContent, SmsContent
from tidings.domain.failures import reason_for
from tidings.domain.messages import NewMessage
from tidings.domain.search import number_prefix
from tidings.domain.status import CANCELLABLE, Status
from tidings.errors import IdempotencyConflict, RecipientOptedOut
from tidings.store import bulk, events, search
from tidings.store.batcher import WriteBatcher
from tidings.store.db import plain
from tidings.store.sql import in_values
from tidings.store.tables import message_attachments, message_provider_ids, message_tags, messages, opt_outs

log = logging.getLogger(__name__)

NOTIFY_CHANNEL = "tidings_messages"
"""The PostgreSQL channel on which a new or moved due message wakes workers (payload: provider)."""

ALL_SENDERS = "*"
"""The scope of an opt-out from every sender."""

_MESSAGE_COLUMNS = tuple(str(c.name) for c in messages.columns)


@dataclass(frozen=True)
class MessageFilter:
    """What a list of messages is narrowed to; every field given must hold (``None``: any).

    ``terms`` are the words of a text query (``domain.search.search_terms``): all must be in the
    body or subject. ``tags``: the message has all of them. ``statuses``: any of them.
    ``to_prefix``: the recipient's number starts with it. ``cost_min``/``cost_max`` bound the
    cost (both inclusive, in millionths) of messages priced in ``currency``, which a cost bound
    requires: amounts in different currencies do not compare.
    """

    statuses: tuple[Status, ...] = ()
    to: str | None = None
    to_prefix: str | None = None
    tags: tuple[str, ...] = ()
    provider: str | None = None
    channel: str | None = None
    created_after: datetime | None = None
    created_before: datetime | None = None
    batch: str | None = None
    terms: tuple[str, ...] = ()
    currency: str | None = None
    cost_min: int | None = None
    cost_max: int | None = None

    def __post_init__(self) -> None:
        if (self.cost_min is not None or self.cost_max is not None) and self.currency is None:
            raise ValueError("a cost bound needs the currency its amounts are in")


@dataclass(frozen=True)
class Recipient:
    """Whose messages a cancellation concerns: ``address`` on ``channel``, from every sender
    (``scope`` ``*``) or from one."""

    channel: str
    address: str
    scope: str = ALL_SENDERS


async def notify(conn: AsyncConnection, provider: str) -> None:
    """Wake workers in other processes (PostgreSQL ``NOTIFY``, sent when the transaction commits)."""
    if conn.dialect.name == "postgresql":
        await conn.execute(text("SELECT pg_notify(:c, :p)"), {"c": NOTIFY_CHANNEL, "p": provider})


def new_row(
    new: NewMessage,
    now: datetime,
    *,
    api_key_id: str | None = None,
    idempotency_key: str | None = None,
    request_hash: str | None = None,
) -> dict[str, Any]:
    """The row of a message about to be stored."""
    scheduled = new.send_at is not None and new.send_at > now
    sms = new.content if isinstance(new.content, SmsContent) else None
    email = new.content if isinstance(new.content, EmailContent) else None
    return {
        "id": ids.new_id(),
        "channel": new.channel.value,
        "to": new.to,
        "sender": new.sender,
        "body": (email.text or "") if email else new.text,
        "segments": sms.segments if sms else None,
        "encoding": sms.encoding if sms else None,
        "status": (Status.SCHEDULED if scheduled else Status.PENDING).value,
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
        "exempt_from_opt_out": new.exempt_from_opt_out,
        "subject": email.subject if email else None,
        "html": email.html if email else None,
        "reply_to": email.reply_to if email else None,
        "headers": dict(email.headers) if email and email.headers else None,
        "batch_id": new.batch_id,
        "template_id": new.template_id,
        "template_version": new.template_version,
    }


async def suppressed(
    conn: AsyncConnection, wanted: Sequence[tuple[str, str, str | None]]
) -> set[tuple[str, str, str | None]]:
    """Which of ``wanted`` (channel, address, sender) may not be sent, in one statement: the
    address opted out of that channel from every sender, or from that sender."""
    if not wanted:
        return set()
    found = await conn.execute(
        select(opt_outs.c.channel, opt_outs.c.address, opt_outs.c.scope).where(
            opt_outs.c.address.in_(sorted({address for _channel, address, _sender in wanted}))
        )
    )
    listed = {(r.channel, r.address, r.scope) for r in found.all()}
    return {
        (channel, address, sender)
        for channel, address, sender in wanted
        if (channel, address, ALL_SENDERS) in listed
        or (sender is not None and (channel, address, sender) in listed)
    }


async def insert_many(
    conn: AsyncConnection, items: Sequence[tuple[dict[str, Any], NewMessage]]
) -> list[RecipientOptedOut | None]:
    """The one way messages are stored: rows, tags and first events in a constant number of
    statements in ``conn``'s transaction, then one NOTIFY per provider with due messages.

    A message to an address that opted out is refused (its result is the exception) and the rest
    written. The check is a read before the insert, so an opt-out stored in between is not seen
    here (nor does its cancelling see this message): ``queue.claim`` checks the list again before
    anything is sent. Only a message marked ``exempt_from_opt_out`` (the confirmation of an
    opt-out) skips both checks.
    """
    blocked = await suppressed(
        conn, [(new.channel.value, new.to, new.sender) for _row, new in items if not new.exempt_from_opt_out]
    )
    results: list[RecipientOptedOut | None] = []
    rows: list[dict[str, Any]] = []
    tags: list[dict[str, Any]] = []
    files: list[dict[str, Any]] = []
    accepted: list[dict[str, Any]] = []
    due: set[str] = set()
    for row, new in items:
        channel = new.channel.value
        if not new.exempt_from_opt_out and (channel, new.to, new.sender) in blocked:
            results.append(RecipientOptedOut(f"{new.to} opted out of messages", field="to"))
            continue
        results.append(None)
        rows.append(row)
        tags.extend({"message_id": row["id"], "tag": t} for t in set(new.tags))
        if isinstance(new.content, EmailContent):
            files.extend(
                {
                    "message_id": row["id"],
                    "position": position,
                    "filename": a.filename,
                    "content_type": a.content_type,
                    "size": len(a.data),
                    "data": a.data,
                }
                for position, a in enumerate(new.content.attachments)
            )
        accepted.append(
            events.event_row(
                row["id"],
                type="accepted",
                source="api",
                status=Status(row["status"]),
                changed=True,
                at=row["created_at"],
            )
        )
        if row["status"] == Status.PENDING.value:
            due.add(row["provider"])
    if rows:
        await bulk.insert_rows(conn, messages, rows)
        await bulk.insert_rows(conn, message_tags, tags)
        await bulk.insert_rows(conn, message_attachments, files)
        await events.record_events(conn, accepted)
        for provider in sorted(due):
            await notify(conn, provider)
    return results


async def inserted(conn: AsyncConnection, items: Sequence[tuple[dict[str, Any], NewMessage]]) -> list[bool]:
    """Which of ``items`` are stored: after a commit whose outcome is unknown, their ids (ours)
    are read back."""
    wanted = [row["id"] for row, _new in items]
    found = set((await conn.execute(select(messages.c.id).where(messages.c.id.in_(wanted)))).scalars())
    return [message_id in found for message_id in wanted]


async def cancel(
    conn: AsyncConnection,
    *,
    ids: Sequence[str] | None = None,
    recipient: Recipient | None = None,
    source: str,
    reason: str | None,
    error_code: str | None = None,
    now: datetime,
) -> list[str]:
    """The one cancellation: the ``scheduled`` and ``pending`` messages among ``ids``, or to
    ``recipient``, become ``cancelled`` (compare-and-set on those statuses), each with an event;
    returns the ids cancelled."""
    condition = [in_values(messages.c.status, [s.value for s in CANCELLABLE])]
    if ids is not None:
        condition.append(messages.c.id.in_(list(ids)))
    if recipient is not None:
        condition += [messages.c.channel == recipient.channel, messages.c.to == recipient.address]
        if recipient.scope != ALL_SENDERS:
            condition.append(messages.c.sender == recipient.scope)
    if ids is None and recipient is None:
        raise ValueError("cancel needs ids or a recipient")
    failure_reason = reason_for(error_code, {}).value if error_code else None
    cancelled = list(
        (
            await conn.execute(
                update(messages)
                .where(*condition)
                .values(
                    status=Status.CANCELLED.value,
                    cancelled_at=now,
                    updated_at=now,
                    error_code=error_code,
                    error_message=reason,
                    failure_reason=failure_reason,
                )
                .returning(messages.c.id)
            )
        ).scalars()
    )
    await events.record_events(
        conn,
        [
            events.event_row(
                m,
                type="cancelled",
                source=source,
                status=Status.CANCELLED,
                changed=True,
                at=now,
                error_code=error_code,
                error_message=reason,
                failure_reason=failure_reason,
            )
            for m in cancelled
        ],
    )
    return cancelled


async def of_provider(conn: AsyncConnection, message_ids: Sequence[str], provider: str) -> set[str]:
    """Which of ``message_ids`` exist and belong to ``provider``."""
    if not message_ids:
        return set()
    query = select(messages.c.id).where(messages.c.id.in_(list(message_ids)), messages.c.provider == provider)
    return {str(m) for m in (await conn.execute(query)).scalars()}


def _start_conditions(filters: MessageFilter, *, indexed: bool = True) -> dict[search.Start, list[Any]]:
    """The conditions of the filters whose indexes find rows out of id order (besides the text),
    by filter; with ``indexed`` false, on ``+column`` (see :func:`_unindexed`)."""
    column = messages.c.__getitem__ if indexed else _unindexed
    found: dict[search.Start, list[Any]] = {}
    if filters.to_prefix is not None:
        low, high = number_prefix(filters.to_prefix)
        found["to_prefix"] = [column("to") >= low, *([column("to") < high] if high is not None else [])]
    if filters.provider is not None:
        found["provider"] = [column("provider") == filters.provider]
    created = []
    if filters.created_after is not None:
        created.append(column("created_at") >= filters.created_after)
    if filters.created_before is not None:
        created.append(column("created_at") < filters.created_before)
    if created:
        found["created"] = created
    if filters.currency is not None:
        found["cost"] = [
            column("currency") == filters.currency,
            *([column("cost_micros") >= filters.cost_min] if filters.cost_min is not None else []),
            *([column("cost_micros") <= filters.cost_max] if filters.cost_max is not None else []),
        ]
    return found


def sqlite_starts(filters: MessageFilter) -> dict[search.Start, Select[Any]]:
    """Where a SQLite search with ``filters`` may start: each filter whose index finds rows out
    of id order, as the query of its matches (see :func:`tidings.store.search.sqlite_access`)."""
    starts: dict[search.Start, Select[Any]] = {
        name: select(messages.c.id).where(*conditions)
        for name, conditions in _start_conditions(filters).items()
    }
    if filters.terms:
        starts["text"] = search.text_matches(filters.terms)
    return starts


def _unindexed(name: str) -> Any:
    # SQLite uses no index for a term on +column; it checks it on the rows it reaches otherwise.
    return literal_column(f'+messages."{name}"', messages.c[name].type)


def search_query(
    dialect: str,
    filters: MessageFilter,
    *,
    access: search.Access = search.POSTGRES,
    after_id: str | None = None,
    limit: int = 50,
) -> Select[Any]:
    """The statement that lists messages matching ``filters``, newest first, after ``after_id``,
    reaching its rows as ``access`` says (see :class:`~tidings.store.search.Access`).

    On SQLite the statement steers the planner, which has no statistics to choose by: a term on
    ``+column`` cannot use an index, so only the index of the filter the search starts from is
    usable (and ``ORDER BY +id`` makes it sort what it found rather than walk the primary key);
    in a walk, only one index in id order is, the first there is of recipient, batch, first tag
    and status, and the primary key otherwise. Which filter an index serves is in the README
    (Searching messages)."""
    walk: str | None = None
    if not access.planned and access.start is None:
        present = {
            "to": filters.to,
            "batch_id": filters.batch,
            "tag": filters.tags,
            "status": filters.statuses,
        }
        walk = next((name for name, value in present.items() if value), "id")

    def column(name: str) -> Any:
        return messages.c[name] if access.planned or name == walk else _unindexed(name)

    query: Select[Any] = select(messages)
    tagged = [message_tags.alias(f"tag_{i}") for i in range(len(filters.tags))]
    for alias, tag in zip(tagged, filters.tags, strict=True):
        # One join per tag, on the (message_id, tag) key: a message has each tag at most once.
        # On +id when a tag does not lead: each row reached looks its tags up.
        joined = messages.c.id if access.planned or walk == "tag" else _unindexed("id")
        query = query.join(alias, and_(alias.c.message_id == joined, alias.c.tag == tag))
    conditions: list[ColumnElement[bool]] = []
    for name, checks in _start_conditions(filters, indexed=access.planned).items():
        conditions += _start_conditions(filters)[name] if name == access.start else checks
    if filters.statuses:
        conditions.append(in_values(column("status"), sorted({s.value for s in filters.statuses})))
    if filters.to is not None:
        conditions.append(column("to") == filters.to)
    if filters.to_prefix is not None:
        # The range above is what ix_messages_to serves; this is the exact test.
        conditions.append(func.substr(messages.c.to, 1, len(filters.to_prefix)) == filters.to_prefix)
    if filters.channel is not None:
        conditions.append(messages.c.channel == filters.channel)
    if filters.batch is not None:
        conditions.append(column("batch_id") == filters.batch)
    if filters.terms:
        conditions.append(search.matches(dialect, filters.terms, access))
    # What the page is ordered by: the ids; on SQLite, sorted after the start's index found the
    # rows (+id), or walked through the first tag's index (SQLite does not see that it gives the
    # same order).
    order = messages.c.id
    if not access.planned and access.start is not None:
        order = _unindexed("id")
    elif walk == "tag":
        order = tagged[0].c.message_id
    if after_id is not None:
        conditions.append(order < after_id)
    return query.where(*conditions).order_by(order.desc()).limit(limit)


class MessageStore:
    def __init__(self, engine: AsyncEngine, writes: WriteBatcher | None = None) -> None:
        self.engine = engine
        self.writes = writes or WriteBatcher(engine)

    async def insert(
        self,
        new: NewMessage,
        *,
        api_key_id: str | None = None,
        idempotency_key: str | None = None,
        request_hash: str | None = None,
        now: datetime | None = None,
    ) -> tuple[dict[str, Any], bool]:
        """Store a message, its tags and its first event, committed before this returns.

        Returns the stored row and whether it was created. With an ``idempotency_key`` already
        used by the same API key, returns the earlier message when the request hash matches and
        raises :class:`IdempotencyConflict` when it does not.
        """
        if idempotency_key is not None:
            existing = await self._by_idempotency_key(api_key_id, idempotency_key, request_hash)
            if existing is not None:
                return existing, False
        row = new_row(
            new,
            now or utcnow(),
            api_key_id=api_key_id,
            idempotency_key=idempotency_key,
            request_hash=request_hash,
        )
        try:
            # Group commit: concurrent requests share one transaction and one commit, and the
            # batch's messages are written together (a few statements however many there are).
            await self.writes.run_many(insert_many, (row, new), verify=inserted)
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
        """The message's history, oldest first."""
        async with self.engine.connect() as conn:
            return await events.history(conn, message_id)

    async def search(
        self, filters: MessageFilter, *, after_id: str | None = None, limit: int = 50
    ) -> list[dict[str, Any]]:
        """Messages matching ``filters``, newest first, starting after the cursor ``after_id``."""
        dialect = self.engine.dialect.name
        async with self.engine.connect() as conn:
            access = search.POSTGRES
            if dialect == "sqlite":
                access = await search.sqlite_access(conn, sqlite_starts(filters), filters.terms, after_id)
            query = search_query(dialect, filters, access=access, after_id=after_id, limit=limit)
            return [plain(r) for r in (await conn.execute(query)).mappings()]

    async def count_by_status(self) -> dict[str, int]:
        query = select(messages.c.status, func.count()).group_by(messages.c.status)
        async with self.engine.connect() as conn:
            return {str(status): int(count) for status, count in (await conn.execute(query)).all()}

    async def ids_with_status(self, statuses: Sequence[Status]) -> list[str]:
        """Ids of the messages in ``statuses`` (for tests and tools; not for hot paths)."""
        query = select(messages.c.id).where(messages.c.status.in_([s.value for s in statuses]))
        async with self.engine.connect() as conn:
            return list((await conn.execute(query)).scalars())

    # -- finding the message a report is about ---------------------------------------------------

    async def find_by_provider_id(self, provider: str, provider_message_id: str) -> str | None:
        """The message ``provider`` knows as ``provider_message_id`` (its main id, or one of the
        others it gave, such as one per SMS part)."""
        main = select(messages.c.id).where(
            messages.c.provider == provider, messages.c.provider_message_id == provider_message_id
        )
        other = select(message_provider_ids.c.message_id).where(
            message_provider_ids.c.provider == provider,
            message_provider_ids.c.provider_message_id == provider_message_id,
        )
        async with self.engine.connect() as conn:
            found: str | None = (await conn.execute(main)).scalar_one_or_none()
            if found is None:
                found = (await conn.execute(other)).scalar_one_or_none()
            return found

    async def find_recent_sent(self, provider: str, to: str, since: datetime) -> str | None:
        """The most recent message to ``to`` sent through ``provider`` since ``since`` that is still
        ``sent`` (awaiting its receipt): where a receipt that lost our id most likely belongs."""
        query = (
            select(messages.c.id)
            .where(
                in_values(messages.c.status, [Status.SENT.value]),
                messages.c.provider == provider,
                messages.c.to == to,
                messages.c.sent_at >= since,
            )
            .order_by(messages.c.sent_at.desc(), messages.c.id.desc())
            .limit(1)
        )
        async with self.engine.connect() as conn:
            return (await conn.execute(query)).scalar_one_or_none()

    async def cancel(self, message_id: str, *, source: str = "api", reason: str | None = None) -> bool:
        """Cancel one ``scheduled`` or ``pending`` message; whether it was cancelled."""
        async with self.engine.begin() as conn:
            done = await cancel(conn, ids=[message_id], source=source, reason=reason, now=utcnow())
        return bool(done)
