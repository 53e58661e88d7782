"""The overview: how a range of time went, at a glance, and what is waiting now.

For the chosen range (today, the last 24 hours, 7 or 30 days, or whole days picked by hand) it
shows the messages accepted by what became of them, the delivery and failure rates, the cost per
currency, a chart per hour (ranges up to two days) or per day, and a table per provider. All of it
comes from one call of the statistics service (the one ``GET /v1/stats`` makes), grouped by
bucket and provider and summed here; the percentiles of time, which the overview does not show,
are left out, as they are most of the statistics' cost. Below: the open alerts, and the queue,
which refreshes itself every few seconds as a fragment that reads the queue and nothing else.

A message counts in the bucket and range in which it was *accepted*, whatever happened to it
since; its status is the one it has now. The chart's three series:

- **delivered**: a receipt confirmed it;
- **failed**: the provider refused it or a receipt reported it undelivered;
- **sent, awaiting receipt**: handed to a provider, no receipt yet.

Messages still waiting to be sent and cancelled ones are counted above the chart, not drawn in it.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import date, datetime, timedelta
from typing import Any

from fastapi import APIRouter, Request
from fastapi.responses import Response
from markupsafe import Markup

from tidings.clock import utcnow
from tidings.dashboard.charts import Bucket, Series, line_chart
from tidings.dashboard.web import Operator, ServiceDep, is_fragment, render
from tidings.domain.costs import to_micros
from tidings.domain.status import Status
from tidings.errors import InvalidInput
from tidings.services import Service
from tidings.store.stats import Totals

router = APIRouter()

RANGES = {
    "today": "Today",
    "24h": "Last 24 hours",
    "7d": "Last 7 days",
    "30d": "Last 30 days",
}
"""The ranges offered as links (``?range=``); ``custom`` takes ``since`` and ``until`` dates."""
HOURLY_UP_TO = timedelta(days=2)
"""Ranges up to this long are charted per hour, longer ones per day."""
SERIES = (
    ("delivered", "delivered", Status.DELIVERED),
    ("failed", "failed", Status.FAILED),
    ("sent", "sent, awaiting receipt", Status.SENT),
)
"""The chart's lines: key, label, and the status whose count each draws."""
MAX_ALERTS = 50


@dataclass(frozen=True)
class Span:
    """The range shown: accepted in ``[since, until)``, charted per hour or per day."""

    name: str
    since: datetime
    until: datetime

    @property
    def hourly(self) -> bool:
        return self.until - self.since <= HOURLY_UP_TO

    @property
    def title(self) -> str:
        return RANGES.get(self.name, "Chosen days")


def _date(value: str, name: str) -> date:
    try:
        return date.fromisoformat(value)
    except ValueError as exc:
        raise InvalidInput(f"{name} must be a date such as 2026-11-30", field=name) from exc


def chosen_span(query: Mapping[str, str], now: datetime) -> Span:
    """The range the query string asks for (``today`` when it asks for none). A custom range is
    whole UTC days from ``since`` to ``until`` (both included; ``until`` defaults to today)."""
    name = query.get("range", "").strip() or "today"
    midnight = now.replace(hour=0, minute=0, second=0, microsecond=0)
    if name == "today":
        # A microsecond on, so that the range is never empty, even at midnight itself.
        return Span(name, midnight, now + timedelta(microseconds=1))
    if name == "24h":
        return Span(name, now - timedelta(days=1), now)
    if name == "7d":
        return Span(name, now - timedelta(days=7), now)
    if name == "30d":
        return Span(name, now - timedelta(days=30), now)
    if name != "custom":
        raise InvalidInput(f"range must be one of {', '.join([*RANGES, 'custom'])}", field="range")
    since_text, until_text = query.get("since", "").strip(), query.get("until", "").strip()
    if not since_text:
        raise InvalidInput("since is required for a range of chosen days", field="since")
    since = datetime.combine(_date(since_text, "since"), datetime.min.time())
    last = _date(until_text, "until") if until_text else midnight.date()
    if last == date.max:
        raise InvalidInput("until is too far in the future", field="until")
    return Span(name, since, datetime.combine(last + timedelta(days=1), datetime.min.time()))


def buckets(span: Span) -> list[Bucket]:
    """Every hour or day the range touches, in order, keyed as the statistics key them
    (``2026-11-30T13:00``, ``2026-11-30``): the chart shows one even where nothing was sent.
    Hours are labelled with their day too when the range spans more than one."""
    if span.hourly:
        at, step = span.since.replace(minute=0, second=0, microsecond=0), timedelta(hours=1)
    else:
        at, step = span.since.replace(hour=0, minute=0, second=0, microsecond=0), timedelta(days=1)
    starts = []
    while at < span.until:
        starts.append(at)
        at += step
    if not span.hourly:
        return [Bucket(t.date().isoformat(), t.strftime("%d %b")) for t in starts]
    label = "%H:00" if len({t.date() for t in starts}) == 1 else "%d %b %H:00"
    return [Bucket(t.strftime("%Y-%m-%dT%H:00"), t.strftime(label)) for t in starts]


@dataclass
class Tally:
    """Counts by status and cost by currency (in micros), summed over statistics groups."""

    counts: dict[str, int] = field(default_factory=dict)
    costs: dict[str, int] = field(default_factory=dict)

    def add(self, group: Mapping[str, Any]) -> None:
        for status, count in group["counts"].items():
            self.counts[status] = self.counts.get(status, 0) + count
        for currency, amount in group["cost"].items():
            self.costs[currency] = self.costs.get(currency, 0) + to_micros(amount)

    @property
    def totals(self) -> Totals:
        return Totals.of(self.counts)


def tallies(groups: Sequence[Mapping[str, Any]], key: str) -> dict[str | None, Tally]:
    """The groups summed per value of one of their keys (``provider``, ``hour``…)."""
    found: dict[str | None, Tally] = {}
    for group in groups:
        found.setdefault(group["key"][key], Tally()).add(group)
    return found


def chart(span: Span, per_bucket: Mapping[str | None, Tally], total: int) -> Markup:
    """The chart of the range: one line per outcome of :data:`SERIES` (no line at all when the
    range has no message)."""
    shown = buckets(span) if total else []
    empty = Tally()
    lines = [
        Series(key, label, [per_bucket.get(b.key, empty).counts.get(status.value, 0) for b in shown])
        for key, label, status in SERIES
    ]
    unit = "hour" if span.hourly else "day"
    return line_chart(shown, lines, title=f"Messages accepted per {unit} (UTC), by what became of them")


def waited(seconds: float) -> str:
    """A wait in the two largest units that say it (``2 h 5 min``, ``40 s``)."""
    whole = int(seconds)
    days, rest = divmod(whole, 86_400)
    hours, rest = divmod(rest, 3_600)
    minutes, secs = divmod(rest, 60)
    parts = [f"{n} {unit}" for n, unit in ((days, "d"), (hours, "h"), (minutes, "min"), (secs, "s")) if n]
    return " ".join(parts[:2]) or "0 s"


async def queue(service: Service, now: datetime) -> dict[str, Any]:
    """What is waiting now: messages per waiting status, and per provider how long its oldest
    due message has waited (``None``: none is due)."""
    figures = await service.store.figures.read(providers=sorted(service.providers), gateways=(), now=now)
    oldest = [
        (name, seconds, waited(seconds) if seconds > 0 else None)
        for name, seconds in sorted(figures.oldest_pending.items())
    ]
    return {"queue": figures.queue, "oldest": oldest, "read_at": now}


@router.get("/")
async def overview(request: Request, _session: Operator, service: ServiceDep) -> Response:
    now = utcnow()
    if is_fragment(request):
        # The page's script refreshing the queue panel: read the queue, nothing else.
        return render(request, "overview.html", page="overview", **await queue(service, now))
    span = chosen_span(request.query_params, now)
    since, until = service.stats.check_range(span.since, span.until)
    bucket = "hour" if span.hourly else "day"
    summary = await service.stats.messages(since=since, until=until, by=[bucket, "provider"], times=False)
    totals = Tally()
    totals.add(summary["totals"])
    per_provider = tallies(summary["groups"], "provider")
    alerts = await service.store.alerts.open_alerts()
    return render(
        request,
        "overview.html",
        page="overview",
        span=span,
        ranges=RANGES,
        asked={k: request.query_params.get(k, "") for k in ("since", "until")},
        totals=totals.totals,
        counts=totals.counts,
        costs=sorted(totals.costs.items()),
        chart=chart(span, tallies(summary["groups"], bucket), totals.totals.total),
        providers=sorted(per_provider.items(), key=lambda item: (item[0] is None, item[0] or "")),
        alerts=alerts[:MAX_ALERTS],
        more_alerts=max(0, len(alerts) - MAX_ALERTS),
        **await queue(service, now),
    )
