"""backlog: whether claiming and the service's memory stay flat as the queue grows.

For each size in ``--backlog-sizes`` (10,000 / 100,000 / 1,000,000), smallest first, the queue is
topped up until that many messages are ``pending`` and due (bulk-loaded, timed as ``load_seconds``
but not part of any figure). Then:

1. with no service running, the benchmark process calls the store's own claim
   (``MessageStore.claim``: one statement that leases ``claim_batch`` (100) messages, plus their
   ``claimed`` events, in one transaction) 5 times in a row; ``claim_ms`` is the median,
   ``claim_first_ms`` the first (coldest);
2. a ``tidings api`` and a ``tidings worker`` (sending to the fake provider server, receipts back
   to the API) run for ``backlog_window`` seconds over that backlog; ``peak_rss_mb`` is the larger
   of their peak RSS, and ``sent_in_window`` how much the worker sent meanwhile.

A last line (``"size": "summary"``) gives ``claim_ratio`` = claim_ms(largest) / claim_ms(smallest),
whose target is at most 2, and the largest RSS, whose target is under 300 MB.
"""

from __future__ import annotations

import asyncio
import secrets
import statistics
import time
from typing import Any

import aiohttp
import seed
from harness import Workspace, free_port, wait_healthy
from profiling import Profiler

from scenarios import Options, line, machine_load
from scenarios.dispatch import fake_stats, start_fake
from tidings.config import Settings
from tidings.store import Store

CLAIMS = 5
TARGET_RATIO = 2.0
TARGET_RSS_MB = 300.0


async def _time_claims(store: Store, batch: int) -> list[float]:
    """Milliseconds each of ``CLAIMS`` consecutive claims took; each must fill its batch."""
    timings: list[float] = []
    for _ in range(CLAIMS):
        started = time.perf_counter()
        claimed = await store.queue.claim("fake", worker="bench", limit=batch, lease_seconds=3600)
        timings.append((time.perf_counter() - started) * 1000)
        assert len(claimed) == batch, f"claimed {len(claimed)} of {batch}"
    return timings


async def run(ws: Workspace, options: Options, profiler: Profiler) -> list[dict[str, Any]]:
    load = machine_load()
    procs = ws.processes
    batch = Settings().claim_batch
    secret = secrets.token_hex(16)
    api_port = free_port()
    ws.migrate(ws.service_env(api_port=api_port, settings=options.settings))
    fake_url = await start_fake(ws, secret, 50.0)
    env = ws.service_env(
        api_port=api_port,
        fake_url=fake_url,
        webhook_secret=secret,
        concurrency=options.concurrency,
        settings=options.settings,
    )
    lines: list[dict[str, Any]] = []
    store = Store.connect(ws.database_url)
    try:
        for size in options.backlog_sizes:
            pending = (await store.messages.count_by_status()).get("pending", 0)
            load_started = time.perf_counter()
            await seed.load_messages(ws.database_url, max(0, size - pending))
            load_seconds = time.perf_counter() - load_started

            timings = await _time_claims(store, batch)
            claim_ms = statistics.median(timings)

            api, worker = f"api-{size}", f"worker-{size}"
            procs.start_tidings(api, ["api", "--port", str(api_port)], env)
            await wait_healthy(api_port, procs, api)
            procs.start_tidings(worker, ["worker"], env)
            await procs.wait_for_line(worker, "worker started")
            profiler.attach(api, worker)
            async with aiohttp.ClientSession() as session:
                sent_before = (await fake_stats(session, fake_url))["requests"]
                await asyncio.sleep(options.backlog_window)
                procs.check_alive(api, worker)
                rss = {"api": procs.peak_rss_mb(api), "worker": procs.peak_rss_mb(worker)}
                profiles = profiler.finish()
                errors = len(procs.error_lines(api)) + len(procs.error_lines(worker))
                procs.stop(worker)
                procs.stop(api)
                sent = (await fake_stats(session, fake_url))["requests"] - sent_before
            known = [v for v in rss.values() if v is not None]
            lines.append(
                line(
                    "backlog",
                    ws.kind,
                    messages=size,
                    seconds=None,
                    peak_rss_mb=max(known) if known else None,
                    size=size,
                    claim_batch=batch,
                    claim_ms=round(claim_ms, 2),
                    claim_first_ms=round(timings[0], 2),
                    claim_all_ms=[round(t, 2) for t in timings],
                    rss_mb=rss,
                    load_seconds=round(load_seconds, 2),
                    load_rows_per_s=round(max(1, size - pending) / load_seconds),
                    window_seconds=options.backlog_window,
                    sent_in_window=sent,
                    errors_logged=errors,
                    loadavg_1m=load,
                    profiles=profiles,
                )
            )
    finally:
        await store.close()

    smallest, largest = lines[0], lines[-1]
    ratio = largest["claim_ms"] / smallest["claim_ms"]
    worst_rss = max((x["peak_rss_mb"] for x in lines if x["peak_rss_mb"] is not None), default=None)
    lines.append(
        line(
            "backlog",
            ws.kind,
            messages=largest["size"],
            seconds=None,
            peak_rss_mb=worst_rss,
            size="summary",
            claim_ratio=round(ratio, 2),
            claim_ratio_sizes=[largest["size"], smallest["size"]],
            target=f"claim_ratio <= {TARGET_RATIO:.0f}, RSS < {TARGET_RSS_MB:.0f} MB",
            met=ratio <= TARGET_RATIO and worst_rss is not None and worst_rss < TARGET_RSS_MB,
        )
    )
    return lines
