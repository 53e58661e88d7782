"""The benchmark scenarios. Each module has a docstring saying what it measures and a ``run``.

``run(workspace, options, profiler)`` performs the scenario on the workspace's fresh database and
returns its result lines (dicts); the runner prints them as JSON. Every line starts with the same
fields (see :func:`line`); what does not apply to a scenario is ``null``.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Coroutine
from dataclasses import dataclass, field
from typing import Any

from harness import Workspace
from profiling import Profiler

from tidings.store import Store


@dataclass(frozen=True)
class Options:
    """Sizes and settings of one benchmark run (see ``run.py --help``)."""

    messages: int = 100_000
    """Messages in ``dispatch`` and ``receipts``."""
    seconds: float = 20.0
    """Length of the measured window of ``single_api``."""
    warmup: float = 1.0
    clients: int = 64
    """Concurrent clients of ``single_api``."""
    receipt_clients: int = 32
    """Concurrent connections posting receipts in ``receipts``."""
    backlog_sizes: tuple[int, ...] = (10_000, 100_000, 1_000_000)
    email_messages: int = 10_000
    """Emails in ``email_dispatch`` (without attachments)."""
    email_pdf_messages: int = 2_000
    """Emails with a PDF each in ``email_dispatch`` (fewer: making a PDF costs about 50 ms)."""
    batch_sizes: tuple[int, ...] = (1000, 10_000, 100_000)
    """Recipients per batch in ``batch_ingest``."""
    stats_messages: int = 1_000_000
    """Messages in the store that ``stats`` queries."""
    backlog_window: float = 5.0
    """Seconds the service runs over each backlog in ``backlog`` (for its RSS)."""
    workers: int = 1
    """``tidings worker`` processes in ``dispatch``."""
    concurrency: int = 100
    """The fake provider's ``concurrency`` (sends in flight per worker process)."""
    search_messages: int = 1_000_000
    """Messages in the table ``search`` searches."""
    receipt_delay_ms: float = 50.0
    """How long the fake provider server waits before posting a receipt (and the in-process fake
    before it makes one, in ``grpc_watch``)."""
    grpc_clients: int = 32
    """Concurrent callers of ``grpc_single`` (and clients of the REST run beside it)."""
    grpc_channels: int = 1
    """gRPC channels (each one HTTP/2 connection) those callers share."""
    watch_changes: int = 10_000
    """Status changes ``grpc_watch``'s stream follows (a batch of a quarter as many messages)."""
    settings: dict[str, str] = field(default_factory=dict)
    """Extra tidings settings for every service process (``NAME=VALUE`` from ``--set``)."""


Scenario = Callable[[Workspace, Options, Profiler], Coroutine[Any, Any, list[dict[str, Any]]]]


def line(
    scenario: str,
    database: str,
    *,
    messages: int | None,
    seconds: float | None,
    p50_ms: float | None = None,
    p99_ms: float | None = None,
    peak_rss_mb: float | None = None,
    profiles: dict[str, str] | None = None,
    **extra: Any,
) -> dict[str, Any]:
    """One result line: the common fields first, then the scenario's own, then ``profiles``
    (where the ``--profile`` summaries are), if any."""
    rate = messages / seconds if messages is not None and seconds else None
    result = {
        "scenario": scenario,
        "database": database,
        "messages": messages,
        "seconds": None if seconds is None else round(seconds, 3),
        "messages_per_s": None if rate is None else round(rate, 1),
        "p50_ms": p50_ms,
        "p99_ms": p99_ms,
        "peak_rss_mb": peak_rss_mb,
        **extra,
    }
    if profiles:
        result["profiles"] = profiles
    return result


def machine_load() -> float:
    """The 1-minute load average when a scenario starts: other work on the machine skews figures."""
    return round(os.getloadavg()[0], 2)


async def counts_by_status(database_url: str) -> dict[str, int]:
    store = Store.connect(database_url)
    try:
        return await store.messages.count_by_status()
    finally:
        await store.close()
