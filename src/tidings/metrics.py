"""Every metric ``GET /metrics`` reports, in the Prometheus text format (``prometheus_client``).

Two kinds:

- **Counted in process**, as things happen: messages accepted, sent, delivered and failed, send
  and delivery times, provider errors, webhooks and callbacks. The code that makes them happen
  calls this module's functions (:func:`accepted`, :func:`message_sent`, …) once the change is
  committed. They cost a dictionary lookup and an addition: no database work.
- **Read from the database when scraped** (:class:`Figures`, read by ``store/figures.py``): queue
  depth, the oldest due message's wait, the Android gateways' last polls, batch progress, open
  alerts. :class:`Exposition` reads them at most once a second, however many scrapes come.

Several processes: prometheus_client keeps a process's values in its memory, so a scrape of one
process sees only that process's counts. With ``metrics_dir`` set, every process writes its values
to files in that directory (prometheus_client's multiprocess mode) and a scrape of any of them sums
the files of all. prometheus_client decides how a metric keeps its value when the metric is
created (``values.ValueClass``, chosen when it is imported, from ``PROMETHEUS_MULTIPROC_DIR``), so
:func:`configure` fixes the mode first and the metrics are created only afterwards, on first use.
"""

from __future__ import annotations

import asyncio
import logging
import os
import re
import time
from collections.abc import Awaitable, Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from prometheus_client import (
    CollectorRegistry,
    Counter,
    Histogram,
    ProcessCollector,
    disable_created_metrics,
    generate_latest,
    values,
)
from prometheus_client.metrics_core import GaugeMetricFamily, Metric
from prometheus_client.multiprocess import MultiProcessCollector
from sqlalchemy import event
from sqlalchemy.ext.asyncio import AsyncEngine

from tidings.errors import ConfigError

log = logging.getLogger(__name__)

SEND_BUCKETS = (0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0)
"""Seconds a provider takes to answer a send (its default timeout is 30 s)."""
DELIVERY_BUCKETS = (
    *(0.1, 0.5, 1.0, 2.0, 5.0, 10.0, 30.0, 60.0, 120.0, 300.0, 600.0),
    *(1800.0, 3600.0, 4 * 3600.0, 12 * 3600.0, 86_400.0),
)
"""Seconds from the provider's accepting a message to its receipt of delivery."""
WEBHOOK_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0)

MAX_CODES_PER_PROVIDER = 50
"""Distinct error codes a process reports per provider; more are counted as ``other``."""
_CODE = re.compile(r"[A-Za-z0-9_.:-]{1,40}")
OTHER = "other"


class _Labelled:
    """A metric with labels, its children kept: ``labels()`` validates and locks on every call."""

    def __init__(self, metric: Any) -> None:
        self.metric = metric
        self.children: dict[tuple[str, ...], Any] = {}

    def of(self, *labels: str) -> Any:
        child = self.children.get(labels)
        if child is None:
            child = self.children[labels] = self.metric.labels(*labels)
        return child


class _Metrics:
    """The process's counters and histograms (one set per process, made by :func:`_metrics`)."""

    def __init__(self, registry: CollectorRegistry | None) -> None:
        def counter(name: str, documentation: str, labels: Sequence[str]) -> _Labelled:
            return _Labelled(Counter(name, documentation, labels, registry=registry))

        def histogram(
            name: str, documentation: str, labels: Sequence[str], buckets: Sequence[float]
        ) -> _Labelled:
            return _Labelled(Histogram(name, documentation, labels, registry=registry, buckets=buckets))

        by = ("provider", "channel")
        self.accepted = counter("tidings_messages_accepted_total", "Messages stored, ready to be sent.", by)
        self.sent = counter(
            "tidings_messages_sent_total", "Messages a provider accepted (their sent_at was set).", by
        )
        self.delivered = counter("tidings_messages_delivered_total", "Messages that became delivered.", by)
        self.failed = counter("tidings_messages_failed_total", "Messages that became failed.", by)
        self.send_seconds = histogram(
            "tidings_send_seconds", "Time a provider took to answer a send.", ("provider",), SEND_BUCKETS
        )
        self.delivery_seconds = histogram(
            "tidings_accepted_to_delivered_seconds",
            "From the provider accepting a message (sent_at) to its delivery (delivered_at).",
            ("provider",),
            DELIVERY_BUCKETS,
        )
        self.provider_errors = counter(
            "tidings_provider_errors_total",
            "Sends a provider refused or failed, by its code.",
            ("provider", "code"),
        )
        self.webhooks = counter(
            "tidings_webhooks_total", "Webhook requests by outcome.", ("provider", "event", "outcome")
        )
        self.webhook_seconds = histogram(
            "tidings_webhook_seconds",
            "Time to check, log and apply one webhook.",
            ("provider",),
            WEBHOOK_BUCKETS,
        )
        self.callbacks = counter("tidings_callbacks_total", "Callback deliveries by outcome.", ("outcome",))
        self.statements = counter(
            "tidings_database_statements_total",
            "Statements sent to the database (an executemany is one), by the role of the process.",
            ("role",),
        )
        self.codes: dict[str, set[str]] = {}

    def code(self, provider: str, code: str | None) -> str:
        """``code`` as a label: a provider's short code as it is; anything long or odd, and codes
        beyond :data:`MAX_CODES_PER_PROVIDER`, as ``other``."""
        if not code:
            return "none"
        if not _CODE.fullmatch(code):
            return OTHER
        seen = self.codes.setdefault(provider, set())
        if code not in seen:
            if len(seen) >= MAX_CODES_PER_PROVIDER:
                return OTHER
            seen.add(code)
        return code


_directory: str | None = None
"""The multiprocess directory, or ``""`` for in-process metrics; ``None`` until decided."""
_registry = CollectorRegistry()
"""The process's own metrics, when they are kept in process."""
_built: _Metrics | None = None


def configure(directory: str | None) -> None:
    """Decide, once per process and before any metric exists, where metrics are kept: in process
    (``None``) or in ``directory``, shared with the other processes of the machine."""
    global _directory
    wanted = os.path.abspath(directory) if directory else ""
    if _directory is not None:
        if _directory != wanted:
            raise ConfigError(
                "setting metrics_dir: this process already keeps its metrics "
                + (f"in {_directory}" if _directory else "in memory")
            )
        return
    if wanted:
        try:
            os.makedirs(wanted, exist_ok=True)
        except OSError as exc:
            raise ConfigError(f"setting metrics_dir: cannot create {wanted}: {exc.strerror or exc}") from exc
        os.environ["PROMETHEUS_MULTIPROC_DIR"] = wanted
        values.ValueClass = values.MultiProcessValue()  # type: ignore[no-untyped-call]
    else:
        # Whatever the environment said when prometheus_client was imported: the setting decides.
        values.ValueClass = values.MutexValue
    _directory = wanted


def _metrics() -> _Metrics:
    global _built
    if _built is None:
        if _directory is None:
            configure(None)
        multiprocess = bool(_directory)
        # A ``_created`` series beside each counter would double what a scrape carries.
        disable_created_metrics()  # type: ignore[no-untyped-call]
        if not multiprocess:
            ProcessCollector(registry=_registry)
        _built = _Metrics(None if multiprocess else _registry)
    return _built


# -- counted in process ----------------------------------------------------------------------------


def accepted(provider: str, channel: str, count: int = 1) -> None:
    """``count`` messages for ``provider`` on ``channel`` were stored (committed)."""
    if count:
        _metrics().accepted.of(provider, channel).inc(count)


def accepted_counts(counts: Mapping[tuple[str, str], int]) -> None:
    """Messages stored, by ``(provider, channel)``."""
    for (provider, channel), count in counts.items():
        accepted(provider, channel, count)


def message_sent(provider: str, channel: str) -> None:
    """A provider accepted a message (its ``sent_at`` was set), committed."""
    _metrics().sent.of(provider, channel).inc()


def message_delivered(provider: str, channel: str, seconds_since_sent: float | None) -> None:
    """A message became ``delivered``, committed; ``seconds_since_sent``: from ``sent_at``."""
    found = _metrics()
    found.delivered.of(provider, channel).inc()
    if seconds_since_sent is not None:
        found.delivery_seconds.of(provider).observe(max(0.0, seconds_since_sent))


def message_failed(provider: str, channel: str) -> None:
    """A message became ``failed``, committed."""
    _metrics().failed.of(provider, channel).inc()


def send_seconds(provider: str, seconds: float) -> None:
    """How long one send call to ``provider`` took, whatever its answer."""
    _metrics().send_seconds.of(provider).observe(seconds)


def provider_error(provider: str, code: str | None) -> None:
    """``provider`` refused a send, or it failed, with ``code``."""
    found = _metrics()
    found.provider_errors.of(provider, found.code(provider, code)).inc()


def webhook(provider: str, event: str, outcome: str, seconds: float) -> None:
    """One webhook request of ``provider`` (``event``: one of its webhooks, else ``unknown``) and
    its ``outcome`` (``processed``, ``failed``, or the code it was refused with)."""
    found = _metrics()
    found.webhooks.of(provider, event, outcome).inc()
    found.webhook_seconds.of(provider).observe(seconds)


def callback(outcome: str) -> None:
    """One callback delivery: ``delivered``, ``retry`` (to be tried again) or ``failed`` (for good)."""
    _metrics().callbacks.of(outcome).inc()


_role = "other"


def set_role(role: str) -> None:
    """What this process is (``api``, ``worker``, ``serve``, ``grpc``): the label its database
    statements are counted under."""
    global _role
    _role = role


def count_statements(engine: AsyncEngine) -> None:
    """Count every statement ``engine`` sends (``tidings_database_statements_total``)."""

    def counted(*_args: Any) -> None:
        _metrics().statements.of(_role).inc()

    event.listen(engine.sync_engine, "after_cursor_execute", counted)


# -- read from the database when scraped ------------------------------------------------------------


@dataclass(frozen=True)
class BatchProgress:
    id: str
    total: int
    """Messages the batch stored."""
    unfinished: int
    """Of those, how many are not yet delivered, failed or cancelled."""


@dataclass(frozen=True)
class Figures:
    """What the database says at one moment (see ``store/figures.py``)."""

    queue: Mapping[str, int]
    """Messages by status: ``scheduled``, ``pending``, ``sending``, ``sent``."""
    oldest_pending: Mapping[str, float]
    """Per provider, seconds its oldest due ``pending`` message has waited (0: none is due)."""
    gateway_last_poll: Mapping[str, float]
    """Per Android gateway that has polled, seconds since its last poll."""
    batches: Sequence[BatchProgress]
    """Recent batches with unfinished messages, newest first."""
    open_alerts: Mapping[str, int] | None
    """Open alerts by rule; ``None`` where there is no alerts table."""


class _FiguresCollector:
    """The figures read for the scrape in progress, as gauges."""

    def __init__(self) -> None:
        self.figures: Figures | None = None

    def collect(self) -> Iterator[Metric]:
        figures = self.figures
        up = GaugeMetricFamily(
            "tidings_database_up", "Whether the figures below could be read from the database."
        )
        up.add_metric([], 0.0 if figures is None else 1.0)
        yield up
        if figures is None:
            return
        yield _gauge(
            "tidings_queue_messages",
            "Messages in each waiting status.",
            "status",
            figures.queue,
        )
        yield _gauge(
            "tidings_oldest_pending_seconds",
            "How long the provider's oldest due pending message has waited (0: none is due).",
            "provider",
            figures.oldest_pending,
        )
        yield _gauge(
            "tidings_gateway_last_poll_age_seconds",
            "Seconds since each Android gateway last polled.",
            "gateway",
            figures.gateway_last_poll,
        )
        yield _gauge(
            "tidings_batch_progress_ratio",
            "Of a recent batch's messages, the part that is final (delivered, failed or cancelled).",
            "batch",
            {b.id: (b.total - b.unfinished) / b.total if b.total else 1.0 for b in figures.batches},
        )
        yield _gauge(
            "tidings_batch_unfinished_messages",
            "A recent batch's messages that are not final yet.",
            "batch",
            {b.id: b.unfinished for b in figures.batches},
        )
        if figures.open_alerts is not None:
            yield _gauge("tidings_open_alerts", "Alerts not resolved, by rule.", "rule", figures.open_alerts)


def _gauge(name: str, documentation: str, label: str, found: Mapping[str, float]) -> GaugeMetricFamily:
    family = GaugeMetricFamily(name, documentation, labels=[label])
    for value, figure in sorted(found.items()):
        family.add_metric([value], float(figure))
    return family


class _InProcess:
    """The counted metrics: this process's, or (multiprocess mode) every process's from the files."""

    def collect(self) -> Iterable[Metric]:
        _metrics()
        if _directory:
            files = MultiProcessCollector(None, path=_directory)  # type: ignore[no-untyped-call]
            found: Iterable[Metric] = files.collect()  # type: ignore[no-untyped-call]
            return found
        return _registry.collect()


class Exposition:
    """What ``GET /metrics`` answers for one service: the counted metrics and the database's
    figures, read by ``read`` at most once every ``ttl`` seconds (concurrent scrapes wait for the
    one read in progress)."""

    def __init__(
        self,
        read: Callable[[], Awaitable[Figures]],
        *,
        ttl: float = 1.0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        _metrics()
        self.read = read
        self.ttl = ttl
        self.clock = clock
        self._figures = _FiguresCollector()
        self.registry = CollectorRegistry()
        self.registry.register(_InProcess())
        self.registry.register(self._figures)
        self._lock = asyncio.Lock()
        self._read_at: float | None = None
        self._last: Figures | None = None

    async def figures(self) -> Figures | None:
        """The database's figures, at most ``ttl`` seconds old (``None``: it could not be read)."""
        async with self._lock:
            if self._read_at is not None and self.clock() - self._read_at < self.ttl:
                return self._last
            try:
                self._last = await self.read()
            except Exception as exc:
                log.warning(
                    "metrics: cannot read the database's figures: %s", exc, extra={"action": "metrics"}
                )
                self._last = None
            self._read_at = self.clock()
            return self._last

    async def render(self) -> bytes:
        """The text of one scrape."""
        figures = await self.figures()
        # No await from here on: the figures set are the ones this scrape shows.
        self._figures.figures = figures
        return generate_latest(self.registry)
