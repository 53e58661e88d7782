"""dispatch: how fast queued messages go out and come back ``delivered``, end to end over HTTP.

``--messages`` (100,000) ``pending`` messages are loaded straight into the database first (not
timed; see ``seed.py``). Then, each in its own process: the fake provider server
(``python -m tidings.testing.fake_server``, receipts signed, ``--receipt-delay-ms`` 50 after
each accepted send), one ``tidings api`` that takes the receipts on its webhook, and
``--workers`` (1) ``tidings worker`` processes with ``concurrency`` (100) sends in flight each.
The clock starts when every worker has logged ``worker started`` and stops when the fake server
has had a 2xx answer to a receipt for every message (the API commits a receipt before it
answers), polled every 0.1 s at first and every second after 3 minutes.

Figures: ``messages_per_s`` = messages / seconds; each process's peak RSS and CPU time; the fake
server's counters, which must show exactly one send per message (``fake_requests`` ==
``messages``, ``duplicates`` == 0, ``missing`` == 0); and the final statuses in the database,
which must all be ``delivered``.
"""

from __future__ import annotations

import asyncio
import os
import secrets
import time
from typing import Any

import aiohttp
import seed
from harness import BenchError, Workspace, free_port, wait_healthy
from profiling import Profiler

from scenarios import Options, counts_by_status, line, machine_load

TARGET_PER_S = 5000.0
STALL_SECONDS = 60.0
"""Give up when neither a send nor a receipt happened for this long."""


def _poll_interval(elapsed: float) -> float:
    """0.1 s at first, growing to 1 s: ``GET /_stats`` costs the fake server time in proportion to
    the messages it has seen, and the clock's error stays under 0.5 % of the elapsed time."""
    return min(1.0, 0.1 + elapsed / 200)


async def start_fake(ws: Workspace, secret: str, receipt_delay_ms: float) -> str:
    """Start the fake provider server as process ``fake``; its base URL."""
    ws.processes.start_python(
        "fake",
        [
            "-m",
            "tidings.testing.fake_server",
            "--port",
            "0",
            "--webhook-secret",
            secret,
            "--receipt-delay-ms",
            str(receipt_delay_ms),
        ],
        dict(os.environ),
    )
    announced = await ws.processes.wait_for_line("fake", "listening on ")
    return announced.split("listening on ", 1)[1].strip()


async def fake_stats(session: aiohttp.ClientSession, fake_url: str) -> dict[str, Any]:
    async with session.get(f"{fake_url}/_stats") as response:
        stats: dict[str, Any] = await response.json()
        return stats


async def wait_for_receipts(
    ws: Workspace,
    session: aiohttp.ClientSession,
    fake_url: str,
    total: int,
    services: list[str],
    started: float,
) -> None:
    """Wait until the fake server has had an answer to a receipt for ``total`` messages; fails
    when a process dies or nothing moves for ``STALL_SECONDS``."""
    progress, progressed_at = -1, time.monotonic()
    while True:
        stats = await fake_stats(session, fake_url)
        answered = stats["receipts_sent"] + stats["receipts_failed"]
        if answered >= total:
            return
        ws.processes.check_alive(*services)
        if stats["requests"] + answered != progress:
            progress, progressed_at = stats["requests"] + answered, time.monotonic()
        elif time.monotonic() - progressed_at > STALL_SECONDS:
            counts = await counts_by_status(ws.database_url)
            raise BenchError(f"no progress for {STALL_SECONDS:.0f}s: fake {stats}, database {counts}")
        await asyncio.sleep(_poll_interval(time.perf_counter() - started))


async def run(ws: Workspace, options: Options, profiler: Profiler) -> list[dict[str, Any]]:
    load = machine_load()
    procs = ws.processes
    total = options.messages
    secret = secrets.token_hex(16)
    api_port = free_port()
    ws.migrate(ws.service_env(api_port=api_port, settings=options.settings))
    seed_started = time.perf_counter()
    await seed.load_messages(ws.database_url, total)
    seed_seconds = time.perf_counter() - seed_started

    fake_url = await start_fake(ws, secret, options.receipt_delay_ms)
    env = ws.service_env(
        api_port=api_port,
        fake_url=fake_url,
        webhook_secret=secret,
        concurrency=options.concurrency,
        settings=options.settings,
    )
    procs.start_tidings("api", ["api", "--port", str(api_port)], env)
    await wait_healthy(api_port, procs, "api")
    workers = [f"worker{i}" for i in range(options.workers)]
    launched = time.perf_counter()
    for worker in workers:
        procs.start_tidings(worker, ["worker"], env)
    for worker in workers:
        await procs.wait_for_line(worker, "worker started")
    started = time.perf_counter()
    services = ["api", *workers, "fake"]
    profiler.attach(*services)
    procs.mark_cpu(*services)

    async with aiohttp.ClientSession() as session:
        await wait_for_receipts(ws, session, fake_url, total, services, started)
        seconds = time.perf_counter() - started
        rss = {name: procs.peak_rss_mb(name) for name in services}
        cpu = {name: procs.cpu_since_mark(name) for name in services}
        profiles = profiler.finish()
        stats = await fake_stats(session, fake_url)

    errors = sum(len(procs.error_lines(name)) for name in ("api", *workers))
    for worker in workers:
        procs.stop(worker)
    procs.stop("api")
    procs.stop("fake")
    counts = await counts_by_status(ws.database_url)
    delivered = counts.get("delivered", 0)
    duplicates = stats["duplicates"]
    service_rss = [v for name, v in rss.items() if name != "fake" and v is not None]
    return [
        line(
            "dispatch",
            ws.kind,
            messages=delivered,
            seconds=seconds,
            peak_rss_mb=max(service_rss) if service_rss else None,
            queued=total,
            statuses=counts,
            fake_requests=stats["requests"],
            fake_accepted=stats["accepted"],
            duplicates=len(duplicates),
            duplicate_examples=duplicates[:5],
            missing=total - stats["references"],
            receipts_sent=stats["receipts_sent"],
            receipts_failed=stats["receipts_failed"],
            workers=options.workers,
            concurrency=options.concurrency,
            receipt_delay_ms=options.receipt_delay_ms,
            rss_mb=rss,
            cpu_s=cpu,
            errors_logged=errors,
            seed_seconds=round(seed_seconds, 2),
            startup_seconds=round(started - launched, 2),
            target=f">= {TARGET_PER_S:.0f}/s delivered, every message sent exactly once",
            met=delivered / seconds >= TARGET_PER_S
            and delivered == total
            and stats["requests"] == total
            and not duplicates,
            loadavg_1m=load,
            profiles=profiles,
        )
    ]
