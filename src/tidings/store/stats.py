"""Aggregates over messages: how many were sent, delivered and failed in a time range.

The definitions live here once, for the statistics API, the CLI and the alert rules:

- a message belongs to the range its ``created_at`` (when it was accepted) falls in;
- ``total`` counts every message in the range, ``attempted`` those not cancelled;
- ``pending`` are the attempted messages with no final status yet (``delivered``, ``failed``);
- the delivery rate is ``delivered / attempted`` and the failure rate ``failed / attempted``
  (``None`` when nothing was attempted).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

import phonenumbers
from sqlalchemy import Select, case, func, literal_column, or_, select
from sqlalchemy.ext.asyncio import AsyncConnection

from tidings.domain.status import Status
from tidings.store.tables import message_tags, messages, webhook_log


@dataclass(frozen=True)
class Totals:
    """Counts of the messages accepted in a range, by what became of them."""

    total: int = 0
    delivered: int = 0
    failed: int = 0
    cancelled: int = 0

    @property
    def attempted(self) -> int:
        return self.total - self.cancelled

    @property
    def pending(self) -> int:
        return self.attempted - self.delivered - self.failed

    @property
    def delivery_rate(self) -> float | None:
        return self.delivered / self.attempted if self.attempted else None

    @property
    def failure_rate(self) -> float | None:
        return self.failed / self.attempted if self.attempted else None


async def totals(
    conn: AsyncConnection, since: datetime, until: datetime, *, provider: str | None = None
) -> Totals:
    """The messages accepted in ``[since, until)`` (of one provider, if given), by final status.
    Reads through the ``created_at`` index."""
    query = (
        select(messages.c.status, func.count())
        .where(messages.c.created_at >= since, messages.c.created_at < until)
        .group_by(messages.c.status)
    )
    if provider is not None:
        query = query.where(messages.c.provider == provider)
    counts = {str(status): int(count) for status, count in (await conn.execute(query)).all()}
    return Totals(
        total=sum(counts.values()),
        delivered=counts.get(Status.DELIVERED.value, 0),
        failed=counts.get(Status.FAILED.value, 0),
        cancelled=counts.get(Status.CANCELLED.value, 0),
    )


# -- statistics grouped by any of several keys ------------------------------------------------

GROUP_KEYS = ("day", "hour", "provider", "channel", "status", "error_code", "tag", "batch", "country")
"""What ``GET /v1/stats`` may group by."""

PERCENTILES = (50, 95)
"""The percentiles of time to sent and to delivered reported per group (nearest rank: each is a
time some message actually took, so the figure is exact on both databases)."""


@dataclass(frozen=True)
class StatsFilter:
    """Which messages the statistics cover: accepted in ``[since, until)``, optionally of one
    provider, channel or batch."""

    since: datetime
    until: datetime
    provider: str | None = None
    channel: str | None = None
    batch: str | None = None


@dataclass
class Group:
    """The figures of one group: counts by status, segments, cost by currency, and percentiles of
    seconds from acceptance to ``sent`` and to ``delivered``."""

    key: dict[str, Any]
    counts: dict[str, int] = field(default_factory=dict)
    segments: int = 0
    costs: dict[str, int] = field(default_factory=dict)
    to_sent: dict[int, float] = field(default_factory=dict)
    to_delivered: dict[int, float] = field(default_factory=dict)

    @property
    def totals(self) -> Totals:
        return Totals(
            total=sum(self.counts.values()),
            delivered=self.counts.get(Status.DELIVERED.value, 0),
            failed=self.counts.get(Status.FAILED.value, 0),
            cancelled=self.counts.get(Status.CANCELLED.value, 0),
        )


_SHORT_CALLING_CODES = {
    1: sorted(str(c) for c in phonenumbers.COUNTRY_CODE_TO_REGION_CODE if c < 10),
    2: sorted(str(c) for c in phonenumbers.COUNTRY_CODE_TO_REGION_CODE if 10 <= c < 100),
}


def _calling_code(to: Any) -> Any:
    """The country calling code of an E.164 number in SQL: calling codes are prefix-free, so the
    first one to three digits that form one are it."""
    return case(
        (func.substr(to, 2, 1).in_(_SHORT_CALLING_CODES[1]), func.substr(to, 2, 1)),
        (func.substr(to, 2, 2).in_(_SHORT_CALLING_CODES[2]), func.substr(to, 2, 2)),
        else_=func.substr(to, 2, 3),
    )


def _seconds_between(conn: AsyncConnection, start: Any, end: Any) -> Any:
    if conn.dialect.name == "postgresql":
        return func.extract("epoch", end - start)
    return (func.julianday(end) - func.julianday(start)) * 86_400.0


def _bucket(conn: AsyncConnection, column: Any, hourly: bool) -> Any:
    if conn.dialect.name == "postgresql":
        return func.to_char(column, 'YYYY-MM-DD"T"HH24:00' if hourly else "YYYY-MM-DD")
    return func.strftime("%Y-%m-%dT%H:00" if hourly else "%Y-%m-%d", column)


def _key_column(conn: AsyncConnection, name: str) -> Any:
    """The SQL expression of one group key."""
    if name in ("day", "hour"):
        return _bucket(conn, messages.c.created_at, hourly=name == "hour")
    if name == "tag":
        return message_tags.c.tag
    if name == "batch":
        return messages.c.batch_id
    if name == "country":
        return case((messages.c.channel == "sms", _calling_code(messages.c.to)), else_=None)
    return messages.c[name]


def _key_columns(conn: AsyncConnection, by: Sequence[str]) -> list[Any]:
    """One labelled SQL expression per group key."""
    return [_key_column(conn, name).label(f"k_{name}") for name in by]


def _scope(query: Select[Any], filters: StatsFilter, by: Sequence[str]) -> Select[Any]:
    if "tag" in by:
        query = query.select_from(
            messages.outerjoin(message_tags, message_tags.c.message_id == messages.c.id)
        )
    conditions = [messages.c.created_at >= filters.since, messages.c.created_at < filters.until]
    if filters.provider is not None:
        conditions.append(messages.c.provider == filters.provider)
    if filters.channel is not None:
        conditions.append(messages.c.channel == filters.channel)
    if filters.batch is not None:
        conditions.append(messages.c.batch_id == filters.batch)
    return query.where(*conditions)


def _label(by: Sequence[str], values: Sequence[Any]) -> tuple[Any, ...]:
    return tuple(None if v is None else str(v) for v in values[: len(by)])


async def grouped(conn: AsyncConnection, filters: StatsFilter, by: Sequence[str]) -> list[Group]:
    """The statistics of the messages ``filters`` covers, one :class:`Group` per combination of
    the ``by`` keys that occurs, in key order. Three statements whatever the size: counts,
    segments and costs grouped in the database; each percentile picked by rank with a window
    function, so no message row comes back to Python."""
    keys = _key_columns(conn, by)
    groups: dict[tuple[Any, ...], Group] = {}

    def group(values: Sequence[Any]) -> Group:
        label = _label(by, values)
        found = groups.get(label)
        if found is None:
            found = groups[label] = Group(key=dict(zip(by, label, strict=True)))
        return found

    counts = _scope(
        select(
            *keys,
            messages.c.status,
            messages.c.currency,
            func.count(),
            func.coalesce(func.sum(messages.c.segments), 0),
            func.sum(messages.c.cost_micros),
        ),
        filters,
        by,
    ).group_by(*(literal_column(k.name) for k in keys), messages.c.status, messages.c.currency)
    for row in (await conn.execute(counts)).all():
        *values, status, currency, count, segments, cost = row
        found = group(values)
        found.counts[status] = found.counts.get(status, 0) + int(count)
        found.segments += int(segments)
        if cost is not None and currency is not None:
            found.costs[currency] = found.costs.get(currency, 0) + int(cost)
    for column, attribute in ((messages.c.sent_at, "to_sent"), (messages.c.delivered_at, "to_delivered")):
        for values, percentile, seconds in await _percentiles(conn, filters, by, keys, column):
            getattr(group(values), attribute)[percentile] = round(float(seconds), 3)
    return [groups[label] for label in sorted(groups, key=lambda k: tuple((v is None, v or "") for v in k))]


def _nearest_rank(size: Any, percentile: int) -> Any:
    """The rank of the ``percentile``-th value of ``size`` (nearest rank: ceil(p * n / 100)), in
    integer arithmetic, the same in SQL and in Python."""
    return (size * percentile + 99) // 100


async def _at_ranks(
    conn: AsyncConnection, timed: Any, partition: Sequence[str], value: str, percentiles: Sequence[int]
) -> list[tuple[tuple[Any, ...], int, float]]:
    """``(partition values, percentile, value)`` for each partition of the subquery ``timed`` and
    each of ``percentiles``: the ``value`` at that rank, picked in the database with a window
    function so that no other row comes back."""
    columns = [timed.c[name] for name in partition]
    ranked = select(
        *columns,
        timed.c[value].label("value"),
        func.row_number().over(partition_by=columns or None, order_by=timed.c[value]).label("rank"),
        func.count().over(partition_by=columns or None).label("size"),
    ).subquery()
    query = select(*(ranked.c[name] for name in partition), ranked.c.rank, ranked.c.size, ranked.c.value)
    query = query.where(or_(*(ranked.c.rank == _nearest_rank(ranked.c.size, p) for p in percentiles)))
    found = []
    for row in (await conn.execute(query)).all():
        *values, rank, size, picked = row
        found += [(tuple(values), p, float(picked)) for p in percentiles if rank == _nearest_rank(size, p)]
    return found


async def _percentiles(
    conn: AsyncConnection, filters: StatsFilter, by: Sequence[str], keys: list[Any], until: Any
) -> list[tuple[tuple[Any, ...], int, float]]:
    """``(key values, percentile, seconds)`` for each group and each of :data:`PERCENTILES`: the
    time from acceptance to ``until`` that the message at that rank took."""
    seconds = _seconds_between(conn, messages.c.created_at, until).label("seconds")
    timed = _scope(select(*keys, seconds), filters, by).where(until.is_not(None)).subquery()
    return await _at_ranks(conn, timed, [k.name for k in keys], "seconds", PERCENTILES)


# -- webhook processing (seed 002's "webhook processing performance") -------------------------


@dataclass
class WebhookGroup:
    """One provider's webhooks of one event in a range: how many came, what became of them
    (``processed``; ``rejected``: refused by its checks; ``failed``: processing failed;
    ``unfinished``: cut off before it finished, to replay), and how long processing took (ms)."""

    provider: str
    event: str
    received: int = 0
    processed: int = 0
    rejected: int = 0
    failed: int = 0
    unfinished: int = 0
    mean_ms: float | None = None
    p95_ms: float | None = None


async def webhooks(conn: AsyncConnection, since: datetime, until: datetime) -> list[WebhookGroup]:
    """Webhook figures per provider and event for requests received in ``[since, until)``,
    through the ``received_at`` index."""
    log = webhook_log.c
    in_range = (log.received_at >= since, log.received_at < until)
    state = case(
        (log.processed.is_(True), "processed"),
        (log.verified.is_(False), "rejected"),
        (log.response_status.is_not(None), "failed"),
        else_="unfinished",
    ).label("state")
    counts = (
        select(
            log.provider,
            log.event,
            state,
            func.count(),
            func.sum(log.duration_ms),
            func.count(log.duration_ms),
        )
        .where(*in_range)
        .group_by(log.provider, log.event, literal_column("state"))
    )
    groups: dict[tuple[str, str], WebhookGroup] = {}
    sums: dict[tuple[str, str], tuple[float, int]] = {}
    for provider, event, outcome, count, took, timed_count in (await conn.execute(counts)).all():
        found = groups.setdefault((provider, event), WebhookGroup(provider, event))
        found.received += int(count)
        setattr(found, outcome, getattr(found, outcome) + int(count))
        total, n = sums.get((provider, event), (0.0, 0))
        sums[(provider, event)] = (total + float(took or 0), n + int(timed_count))
    timed = (
        select(log.provider, log.event, log.duration_ms.label("ms"))
        .where(*in_range, log.duration_ms.is_not(None))
        .subquery()
    )
    for (provider, event), _p, ms in await _at_ranks(conn, timed, ["provider", "event"], "ms", [95]):
        groups[(provider, event)].p95_ms = round(ms, 3)
    for key, (total, n) in sums.items():
        groups[key].mean_ms = round(total / n, 3) if n else None
    return [groups[k] for k in sorted(groups)]
