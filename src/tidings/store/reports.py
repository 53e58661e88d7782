"""The one status writer: :func:`apply_reports` is the only code that changes a message's status
from a report, whoever reports (a webhook, a status poll, the Android gateway, the worker's own
view of a send).

Each report goes through the status machine (``domain.status``): the status only moves up, and
the result does not depend on arrival order. For a batch of reports the work is a constant number
of statements: one read of the messages (locked on PostgreSQL), the machine in memory in arrival
order, one compare-and-set update per message writing only the columns its reports changed (as
one executemany), and one insert of the events with the callbacks they call for.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import bindparam, select, update
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.ext.asyncio import AsyncConnection

from tidings import metrics
from tidings.clock import utcnow
from tidings.domain.costs import PriceTable
from tidings.domain.failures import FailureReason
from tidings.domain.reports import CLICKED, OPENED, SUPPRESSING_EVENTS, Report
from tidings.domain.routes import tried
from tidings.domain.status import Status, apply_report
from tidings.store import events, optouts
from tidings.store.batcher import WriteBatcher
from tidings.store.callbacks import Recipient
from tidings.store.messages import ALL_SENDERS
from tidings.store.tables import message_provider_ids, messages

_CAS_RETRIES = 20

# The column that records when a message reached each status.
_STATUS_TIMESTAMP = {
    Status.SENT: "sent_at",
    Status.DELIVERED: "delivered_at",
    Status.FAILED: "failed_at",
    Status.CANCELLED: "cancelled_at",
}

_READ = (
    "id",
    "channel",
    "opened_at",
    "clicked_at",
    "provider",
    "route",
    "attempts",
    "callback_url",
    "api_key_id",
    "to",
    "status",
    "provider_status",
    "provider_message_id",
    "error_code",
    "error_message",
    "failure_reason",
    "sent_at",
    "delivered_at",
    "failed_at",
    "lease_owner",
    "lease_expires_at",
    "segments",
    "cost_micros",
    "currency",
)
"""What is read of a message to apply reports to it (the columns a report may change and where
its callbacks go)."""


@dataclass(frozen=True)
class ReportItem:
    """One report about one message.

    ``type`` names it in the message's history (``report``, ``gateway_update``, ``send_accepted``,
    ``send_failed``…). ``provider`` is the provider that reports; it is believed only about a
    message that was handed to it (``None``: the worker's own view of its send, always believed).
    ``provider_message_ids`` are kept when the provider accepted the message (the first is its
    main id; a receipt naming any of them finds the message).
    """

    message_id: str
    report: Report
    type: str = "report"
    provider: str | None = None
    provider_message_ids: tuple[str, ...] = ()


@dataclass(frozen=True)
class ReportOutcome:
    """What applying one report did."""

    message_id: str
    status_before: Status
    status_after: Status
    refused: str | None = None
    """Why the report was not applied (nor recorded) at all: it is not about a message its
    provider had."""
    provider: str | None = None
    channel: str | None = None
    sent_at: datetime | None = None
    delivered_at: datetime | None = None
    """The message's provider, channel and times after the report (for the metrics)."""
    first_sent: bool = False
    """The report set the message's ``sent_at``: the provider has accepted it."""

    @property
    def changed(self) -> bool:
        return self.status_before != self.status_after


class StaleRead(Exception):
    """A message changed between the read and the compare-and-set (SQLite reads outside the write
    lock): the reports are applied again on what is there now."""


_PRICED = frozenset({Status.SENT, Status.DELIVERED})
"""Statuses at which a message has reached its provider and costs what its price table says."""

_ENGAGEMENT_COLUMNS = {OPENED: "opened_at", CLICKED: "clicked_at"}
"""The column each engagement event fills, the first time it happens."""


def handed_to(row: dict[str, Any], provider: str) -> bool:
    """Whether the message in ``row`` was ever handed to ``provider``: the provider it is with,
    or one its route already tried, and at least one attempt made."""
    return bool(row["attempts"]) and provider in tried(row["route"], row["provider"])


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
        values["failure_reason"] = (report.failure_reason or FailureReason.UNKNOWN).value
    elif status is Status.DELIVERED:
        values["error_code"] = None
        values["error_message"] = None
        values["failure_reason"] = None
    if status in (Status.SENT, Status.FAILED, Status.DELIVERED):
        values["lease_owner"] = None
        values["lease_expires_at"] = None
    return values


def _cost_columns(
    row: dict[str, Any], report: Report, after: Status, prices: Mapping[str, PriceTable | None]
) -> dict[str, Any]:
    """The cost columns a report sets: the provider's own figure whenever it gives one, else the
    provider's price table once the message first reaches the provider (sent or delivered)."""
    cost = report.cost
    if cost is None and row["cost_micros"] is None and after in _PRICED:
        table = prices.get(row["provider"])
        cost = table.price(row["channel"], row["to"], row["segments"]) if table is not None else None
    if cost is None or (cost.micros == row["cost_micros"] and cost.currency == row["currency"]):
        return {}
    return {"cost_micros": cost.micros, "currency": cost.currency}


_READS: dict[bool, Any] = {}
"""The read of the reported messages, by whether it is PostgreSQL's (locking them)."""
_UPDATES: dict[frozenset[str], Any] = {}
"""The compare-and-set of a group of messages, by the columns its reports change (statements are
made once: building one took longer than running it)."""


async def apply_reports(
    conn: AsyncConnection,
    items: Sequence[ReportItem],
    prices: Mapping[str, PriceTable | None] | None = None,
) -> list[ReportOutcome | None]:
    """Apply ``items`` in order in ``conn``'s transaction; one outcome per item, ``None`` for a
    message that does not exist. Every report is recorded as an event, also one that changes
    nothing; a report from a provider that never had the message is neither applied nor recorded
    (its outcome says it was refused). ``prices`` are the providers' price tables, for the cost of
    a message its provider does not quote. Raises :class:`StaleRead` when a message moved under us
    (SQLite): run it again."""
    prices = prices or {}
    is_postgres = conn.dialect.name == "postgresql"
    wanted = sorted({i.message_id for i in items})
    query = _READS.get(is_postgres)
    if query is None:
        query = select(*(messages.c[name] for name in _READ)).where(
            messages.c.id.in_(bindparam("b_ids", expanding=True))
        )
        if is_postgres:
            query = query.with_for_update()
        _READS[is_postgres] = query
    rows = {r.id: dict(r._mapping) for r in (await conn.execute(query, {"b_ids": wanted})).all()}
    before = {m: row["status"] for m, row in rows.items()}
    # Only the columns a message's reports changed are written: another writer may have changed
    # others since the read (on SQLite, which reads outside the write lock).
    touched: dict[str, set[str]] = {}
    more_ids: list[dict[str, str]] = []
    suppressed: list[tuple[str, str, str, str]] = []
    recorded: list[dict[str, Any]] = []
    outcomes: list[ReportOutcome | None] = []
    now = utcnow()
    for item in items:
        row = rows.get(item.message_id)
        if row is None:
            outcomes.append(None)
            continue
        current = Status(row["status"])
        if item.provider is not None and not handed_to(row, item.provider):
            outcomes.append(
                ReportOutcome(item.message_id, current, current, refused=f"not handed to {item.provider}")
            )
            continue
        report = item.report
        after = apply_report(current, report.status)
        sent_before = row["sent_at"]
        values: dict[str, Any] = {}
        if after != current:
            values.update(_status_columns(after, report, row["sent_at"]))
        elif report.status == current and report.provider_status is not None:
            # Same status in the provider's newer words (e.g. MessageWaiting after
            # DeliveredToNetwork): keep what it said last.
            values["provider_status"] = report.provider_status
        values.update(_cost_columns(row, report, after, prices))
        engagement = _ENGAGEMENT_COLUMNS.get(item.type)
        if engagement is not None and row[engagement] is None:
            values[engagement] = report.occurred_at
        if item.type in SUPPRESSING_EVENTS:
            suppressed.append((row["channel"], row["to"], item.type, report.source))
        if item.provider_message_ids:
            main, *others = item.provider_message_ids
            previous = row["provider_message_id"]
            if previous is not None and previous != main:
                # Sent again after all (its worker died mid-send): receipts for the earlier
                # send must still find it.
                others.append(previous)
            values["provider_message_id"] = main
            more_ids += [
                {"provider": row["provider"], "provider_message_id": i, "message_id": item.message_id}
                for i in others
            ]
        if values:
            row.update(values)
            touched.setdefault(item.message_id, set()).update(values)
        recorded.append(
            events.event_row(
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
                failure_reason=report.failure_reason.value if report.failure_reason else None,
                detail=report.detail,
            )
        )
        outcomes.append(
            ReportOutcome(
                item.message_id,
                current,
                after,
                provider=row["provider"],
                channel=row["channel"],
                sent_at=row["sent_at"],
                delivered_at=row["delivered_at"],
                first_sent=sent_before is None and row["sent_at"] is not None,
            )
        )
    by_columns: dict[frozenset[str], list[str]] = {}
    for message_id, changed in sorted(touched.items()):
        by_columns.setdefault(frozenset(changed), []).append(message_id)
    for columns, message_ids in by_columns.items():
        statement = _UPDATES.get(columns)
        if statement is None:
            statement = _UPDATES[columns] = (
                update(messages)
                .where(messages.c.id == bindparam("b_id"), messages.c.status == bindparam("b_before"))
                .values(
                    {name: bindparam(f"b_{name}") for name in sorted(columns)}
                    | {"updated_at": bindparam("b_now", type_=messages.c.updated_at.type)}
                )
            )
        params = [
            {"b_id": m, "b_before": before[m], "b_now": now} | {f"b_{n}": rows[m][n] for n in columns}
            for m in message_ids
        ]
        done = await conn.execute(statement, params)
        # On PostgreSQL the rows are locked since they were read, and asyncpg reports no count for
        # a batch. SQLite reads outside the write lock: another writer may have moved one.
        if not is_postgres and done.rowcount != len(message_ids):
            raise StaleRead()
    if more_ids:
        dialect_insert = postgresql.insert if is_postgres else sqlite.insert
        await conn.execute(
            dialect_insert(message_provider_ids).on_conflict_do_nothing(
                index_elements=["provider", "provider_message_id"]
            ),
            more_ids,
        )
    for channel, address, why, source in suppressed:
        # A complaint or an unsubscribe reported by the provider: no more email to the address,
        # from any sender, and what waits for it is cancelled (as an opt-out by reply does).
        await optouts.suppress(
            conn,
            channel,
            address,
            ALL_SENDERS,
            source=source,
            cancel_source=source,
            reason=f"the recipient {why}",
            note=why,
            now=now,
        )
    recipients = {
        m: Recipient(url=row["callback_url"], api_key_id=row["api_key_id"], to=row["to"])
        if row["callback_url"]
        else None
        for m, row in rows.items()
    }
    await events.record_events(conn, recorded, recipients)
    return outcomes


def count_changes(outcomes: Iterable[ReportOutcome | None]) -> None:
    """Count in the metrics the status changes of ``outcomes``, once their transaction is
    committed: each outcome is one change, so each is counted once."""
    for outcome in outcomes:
        if outcome is None or not outcome.changed or outcome.provider is None or outcome.channel is None:
            continue
        if outcome.first_sent:
            metrics.message_sent(outcome.provider, outcome.channel)
        if outcome.status_after is Status.DELIVERED:
            waited = None
            if outcome.sent_at is not None and outcome.delivered_at is not None:
                waited = (outcome.delivered_at - outcome.sent_at).total_seconds()
            metrics.message_delivered(outcome.provider, outcome.channel, waited)
        elif outcome.status_after is Status.FAILED:
            metrics.message_failed(outcome.provider, outcome.channel)


class ReportStore:
    """Applies reports one at a time for its callers, many per transaction underneath."""

    def __init__(self, writes: WriteBatcher) -> None:
        self.writes = writes
        self.prices: dict[str, PriceTable | None] = {}
        """Each provider's price table (set by the service once its providers are built)."""

    async def _apply_many(
        self, conn: AsyncConnection, items: Sequence[ReportItem]
    ) -> list[ReportOutcome | None]:
        return await apply_reports(conn, items, self.prices)

    async def apply(self, item: ReportItem) -> ReportOutcome | None:
        """Apply one report (see :func:`apply_reports`), committed before this returns."""
        for _ in range(_CAS_RETRIES):
            try:
                # Group commit: reports arriving together are applied together, set-based.
                outcome: ReportOutcome | None = await self.writes.run_many(self._apply_many, item)
            except StaleRead:
                continue
            # Committed (a write whose commit went unanswered raises instead, and goes uncounted).
            count_changes([outcome])
            return outcome
        raise RuntimeError(f"message {item.message_id} kept changing while a report was applied")

    async def record_accepted(
        self,
        message_id: str,
        *,
        provider_message_ids: Sequence[str] = (),
        provider_status: str | None,
        detail: dict[str, Any] | None = None,
        status: Status = Status.SENT,
    ) -> ReportOutcome | None:
        """The provider accepted the message: keep its ids and report ``status`` (usually sent)."""
        report = Report(
            status=status,
            source="worker",
            occurred_at=utcnow(),
            provider_status=provider_status,
            detail=detail or {},
        )
        return await self.apply(
            ReportItem(
                message_id,
                report,
                type="send_accepted",
                provider_message_ids=tuple(provider_message_ids),
            )
        )
