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
from sqlalchemy import Select, Text, case, func, literal_column, null, select, text, true
from sqlalchemy.ext.asyncio import AsyncConnection

from tidings.domain.status import Status
from tidings.store.tables import messages, webhook_log


@dataclass(frozen=True)
class Totals:
    """Counts of the messages accepted in a range, by what became of them."""

    total: int = 0
    delivered: int = 0
    failed: int = 0
    cancelled: int = 0

    @classmethod
    def of(cls, counts: dict[str, int]) -> Totals:
        """The totals of messages counted by status."""
        return cls(
            total=sum(counts.values()),
            delivered=counts.get(Status.DELIVERED.value, 0),
            failed=counts.get(Status.FAILED.value, 0),
            cancelled=counts.get(Status.CANCELLED.value, 0),
        )

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
    return Totals.of({str(status): int(count) for status, count in (await conn.execute(query)).all()})


# -- statistics grouped by any of several keys ------------------------------------------------

GROUP_KEYS = ("day", "hour", "provider", "channel", "status", "error_code", "tag", "batch", "country")
"""What ``GET /v1/stats`` may group by."""

PERCENTILES = (50, 95)
"""The percentiles of time to sent and to delivered reported per group (nearest rank: each is a
time some message actually took, so the figure is exact on both databases)."""


def nearest_rank(values: list[float], percentile: int) -> float | None:
    """The ``percentile``-th of ``values`` by nearest rank: the ceil(p * n / 100)-th smallest
    (sorts ``values`` in place); ``None`` for no values."""
    if not values:
        return None
    values.sort()
    return values[(len(values) * percentile + 99) // 100 - 1]


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
        return Totals.of(self.counts)

    def add(self, status: str, currency: str | None, count: int, segments: int, cost: int | None) -> None:
        self.counts[status] = self.counts.get(status, 0) + count
        self.segments += segments
        if cost is not None and currency is not None:
            self.costs[currency] = self.costs.get(currency, 0) + cost

    def time(self, to_sent: list[float], to_delivered: list[float]) -> None:
        for p in PERCENTILES:
            for found, values in ((self.to_sent, to_sent), (self.to_delivered, to_delivered)):
                value = nearest_rank(values, p)
                if value is not None:
                    found[p] = round(value, 3)


_CALLING_CODES = frozenset(str(code) for code in phonenumbers.COUNTRY_CODE_TO_REGION_CODE)


def calling_code(digits: str | None) -> str | None:
    """The country calling code that ``digits`` (an E.164 number's first digits) begin with:
    calling codes are prefix-free, so the first one to three digits that form one are it."""
    if not digits:
        return None
    return next((digits[:n] for n in (1, 2, 3) if digits[:n] in _CALLING_CODES), None)


def _seconds_between(conn: AsyncConnection, start: Any, end: Any) -> Any:
    """``end - start`` in seconds, as a float (NULL when ``end`` is)."""
    if conn.dialect.name == "postgresql":
        return func.date_part("epoch", end - start)
    return (func.julianday(end) - func.julianday(start)) * 86_400.0


def _bucket(conn: AsyncConnection, column: Any, hourly: bool) -> Any:
    """The day or hour of a time, as cheaply as each database gives it (labelled by :func:`_shown`):
    PostgreSQL truncates the timestamp; SQLite keeps times as text (``2025-03-14 09:26:53.589``),
    whose first 10 or 13 characters are the day or the hour, with no date to parse."""
    if conn.dialect.name == "postgresql":
        return func.date_trunc("hour" if hourly else "day", column)
    return func.substr(column, 1, 13 if hourly else 10)


def _tags(conn: AsyncConnection) -> Any:
    """Each message's tags as rows, read from its own ``tags`` column (no join with
    ``message_tags``, which PostgreSQL would rather scan whole than probe per message)."""
    if conn.dialect.name == "postgresql":
        return func.json_array_elements_text(messages.c.tags).table_valued("value").lateral("tag_list")
    return func.json_each(messages.c.tags).table_valued("value").alias("tag_list")


def _key_column(conn: AsyncConnection, name: str, tags: Any) -> Any:
    """The SQL expression of one group key."""
    if name in ("day", "hour"):
        return _bucket(conn, messages.c.created_at, hourly=name == "hour")
    if name == "tag":
        return tags.c.value
    if name == "batch":
        return messages.c.batch_id
    if name == "country":
        # The first three digits; their calling code is found in Python (:func:`_shown`), and
        # groups that share one are merged there.
        return case((messages.c.channel == "sms", func.substr(messages.c.to, 2, 3)), else_=None)
    return messages.c[name]


def _scoped(
    conn: AsyncConnection, columns: Sequence[Any], filters: StatsFilter, tags: Any | None
) -> Select[Any]:
    """``SELECT columns`` over the messages ``filters`` covers (each once per tag with ``tags``)."""
    query = select(*columns)
    if tags is not None:
        query = query.select_from(messages.outerjoin(tags, true()))
    else:
        query = query.select_from(messages)
    conditions = [messages.c.created_at >= filters.since, messages.c.created_at < filters.until]
    if filters.provider is not None:
        conditions.append(messages.c.provider == filters.provider)
    if filters.channel is not None:
        conditions.append(messages.c.channel == filters.channel)
    if filters.batch is not None:
        conditions.append(messages.c.batch_id == filters.batch)
    return query.where(*conditions)


async def _no_jit(conn: AsyncConnection) -> None:
    """No JIT compilation for the rest of this transaction (PostgreSQL). These queries read a day
    or a few of rows; the planner's guess for a JSON array's elements (100 a row) makes them look
    big enough to compile, which costs 50 ms and more each time, more than running them."""
    if conn.dialect.name == "postgresql":
        await conn.execute(text("SET LOCAL jit = off"))


def _whole(value: Any) -> int | None:
    return int(value) if value is not None else None


def _shown(name: str, value: Any) -> str | None:
    """A key's value as the API shows it, from what :func:`_key_column` read."""
    if value is None:
        return None
    if name in ("day", "hour"):
        text = value.isoformat(sep="T") if isinstance(value, datetime) else str(value).replace(" ", "T")
        return text[:10] if name == "day" else text[:13] + ":00"
    if name == "country":
        return calling_code(str(value))
    return str(value)


def _label(by: Sequence[str], values: Sequence[Any]) -> tuple[str | None, ...]:
    return tuple(_shown(name, value) for name, value in zip(by, values, strict=True))


def _joined(conn: AsyncConnection, seconds: Any) -> Any:
    """Every value of ``seconds`` in a group as one comma-separated string (NULLs left out): the
    database gathers them, Python ranks them, and no row per message crosses the connection."""
    if conn.dialect.name == "postgresql":
        return func.string_agg(func.cast(seconds, Text()), ",")
    return func.group_concat(seconds, ",")


def _numbers(joined: str | None) -> list[float]:
    return [float(v) for v in joined.split(",")] if joined else []


Label = tuple[str | None, ...]
Gathered = tuple[Label, str, str | None, int, int, int | None, list[float], list[float]]
"""Key values, status, currency, count, segments, cost, seconds to sent, seconds to delivered."""


async def _gathered(
    conn: AsyncConnection, filters: StatsFilter, keys: list[Any], tags: Any | None, *, times: bool = True
) -> list[Gathered]:
    """Per combination of key values, status and currency: the count, segments, cost, and (with
    ``times``) the seconds each message took from acceptance to sent and to delivered. One
    statement."""
    names = [str(k.name).removeprefix("k_") for k in keys]
    to_sent, to_delivered = (
        (
            _joined(conn, _seconds_between(conn, messages.c.created_at, messages.c.sent_at)),
            _joined(conn, _seconds_between(conn, messages.c.created_at, messages.c.delivered_at)),
        )
        if times
        else (null(), null())
    )
    query = _scoped(
        conn,
        [
            *keys,
            messages.c.status,
            messages.c.currency,
            func.count(),
            func.coalesce(func.sum(messages.c.segments), 0),
            func.sum(messages.c.cost_micros),
            to_sent,
            to_delivered,
        ],
        filters,
        tags,
    ).group_by(*(literal_column(k.name) for k in keys), messages.c.status, messages.c.currency)
    found: list[Gathered] = []
    for row in (await conn.execute(query)).all():
        *values, status, currency, count, segments, cost, sent, delivered = row
        found.append(
            (
                _label(names, values),
                str(status),
                currency,
                int(count),
                int(segments),
                # PostgreSQL sums BIGINT into NUMERIC (a Decimal here): whole micros either way.
                _whole(cost),
                _numbers(sent),
                _numbers(delivered),
            )
        )
    return found


async def summarize(
    conn: AsyncConnection, filters: StatsFilter, by: Sequence[str], *, times: bool = True
) -> tuple[Group, list[Group]]:
    """The figures of the messages ``filters`` covers: in total, and one :class:`Group` per
    combination of the ``by`` keys that occurs (in key order).

    One statement groups counts, segments and costs in the database, and gathers each group's
    times to sent and to delivered as one string; they are ranked here, so that the percentiles
    are exact and computed the same way on both databases. Grouped by ``tag``, a message counts in
    each of its tags' groups and once in the total (a second statement, without the tags).

    Without ``times`` the percentiles are left out (``None``): ranking them is most of the work,
    so a caller that shows only counts and costs (the dashboard's overview) pays for those only."""
    await _no_jit(conn)
    tags = _tags(conn) if "tag" in by else None
    keys = [_key_column(conn, name, tags).label(f"k_{name}") for name in by]
    groups: dict[Label, tuple[Group, list[float], list[float]]] = {}
    total = (Group(key={}), list[float](), list[float]())

    def collect(gathered: list[Gathered], *, grouped: bool) -> None:
        for label, status, currency, count, segments, cost, sent, delivered in gathered:
            found = total
            if grouped:
                found = groups.get(label) or groups.setdefault(
                    label, (Group(key=dict(zip(by, label, strict=True))), [], [])
                )
            found[0].add(status, currency, count, segments, cost)
            found[1].extend(sent)
            found[2].extend(delivered)

    gathered = await _gathered(conn, filters, keys, tags, times=times)
    collect(gathered, grouped=True)
    # Grouped by tag, a message may be in several groups: the total is counted on its own.
    collect(
        gathered if tags is None else await _gathered(conn, filters, [], None, times=times), grouped=False
    )
    total[0].time(total[1], total[2])
    for group, sent, delivered in groups.values():
        group.time(sent, delivered)
    ordered = sorted(groups, key=lambda k: tuple((v is None, v or "") for v in k))
    return total[0], [groups[label][0] for label in ordered] if by else []


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
    await _no_jit(conn)
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
    durations = select(log.provider, log.event, log.duration_ms).where(
        *in_range, log.duration_ms.is_not(None)
    )
    taken: dict[tuple[str, str], list[float]] = {}
    for provider, event, ms in (await conn.execute(durations)).all():
        taken.setdefault((provider, event), []).append(float(ms))
    for key, values in taken.items():
        p95 = nearest_rank(values, 95)
        groups[key].p95_ms = round(p95, 3) if p95 is not None else None
    for key, (total, n) in sums.items():
        groups[key].mean_ms = round(total / n, 3) if n else None
    return [groups[k] for k in sorted(groups)]
