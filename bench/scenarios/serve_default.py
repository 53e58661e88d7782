"""serve_default: what a new user's ``make run`` does, ``tidings serve`` with its defaults.

One ``tidings serve`` process (API and worker together, every setting tidings' default) with the
one provider the issue names: the ``fake``, simulated in the process (no fake server), with
``concurrency = 500``. ``--clients`` is not used: 32 concurrent clients post single messages (the
aiohttp load generator, ``loadgen.py messages``) for the warm-up and the measured ``--seconds``,
while the worker dispatches them. Then the scenario waits until every accepted message is final.

Figures: ``messages_per_s`` (202s in the measured window per second) with p50/p99 of those
requests, and ``delivered_per_s`` end to end: every message accepted, warm-up included, over the
seconds from the load generator's start to the moment the last of them was final (polled every
50 ms, so up to 50 ms late). The issue's targets (issue 18) on this 2-core machine: ≥ 4,000
accepted/s with p99 < 50 ms while the worker dispatches, and ≥ 3,500 delivered/s end to end.
"""

from __future__ import annotations

import asyncio
import time
from dataclasses import replace
from typing import Any

from harness import BenchError, Workspace, free_port, wait_healthy
from profiling import Profiler

from scenarios import Options, counts_by_status, line, machine_load
from scenarios.single_api import post_messages

CLIENTS = 32
CONCURRENCY = 500
TARGET_ACCEPTED_PER_S = 4000.0
TARGET_P99_MS = 50.0
TARGET_DELIVERED_PER_S = 3500.0
WAITING = ("scheduled", "pending", "sending", "sent")


async def run(ws: Workspace, options: Options, profiler: Profiler) -> list[dict[str, Any]]:
    if ws.kind != "sqlite":
        return []  # the new user's default is SQLite
    load = machine_load()
    procs = ws.processes
    port = free_port()
    env = ws.service_env(api_port=port, fake_url=None, concurrency=CONCURRENCY, settings=options.settings)
    ws.migrate(env)
    key = ws.create_key(env)
    procs.start_tidings("serve", ["serve", "--port", str(port)], env)
    await wait_healthy(port, procs, "serve")
    profiler.attach("serve")
    procs.mark_cpu("serve")
    started = time.perf_counter()
    result = await post_messages(ws, replace(options, clients=CLIENTS), port, key, env)
    posted = time.perf_counter()
    deadline = posted + 600
    while True:
        counts = await counts_by_status(ws.database_url)
        if not any(counts.get(s, 0) for s in WAITING):
            break
        if time.perf_counter() > deadline:
            raise BenchError(f"messages still waiting 600 s after the load: {counts}")
        procs.check_alive("serve")
        await asyncio.sleep(0.05)
    finished = time.perf_counter()
    cpu = procs.cpu_since_mark("serve")
    rss = procs.peak_rss_mb("serve")
    profiles = profiler.finish()
    errors = procs.error_lines("serve")
    procs.stop("serve")

    stored = sum(counts.values())
    accepted_per_s = result["accepted"] / options.seconds
    delivered_per_s = counts.get("delivered", 0) / (finished - started)
    p99 = result["p99_ms"]
    met = (
        accepted_per_s >= TARGET_ACCEPTED_PER_S
        and p99 is not None
        and p99 < TARGET_P99_MS
        and delivered_per_s >= TARGET_DELIVERED_PER_S
    )
    return [
        line(
            "serve_default",
            ws.kind,
            messages=result["accepted"],
            seconds=options.seconds,
            p50_ms=result["p50_ms"],
            p99_ms=p99,
            peak_rss_mb=rss,
            clients=CLIENTS,
            fake_concurrency=CONCURRENCY,
            statuses=result["statuses"],
            client_failures=result["failures"],
            total_accepted=result["total_accepted"],
            stored=stored,
            lost=max(0, result["total_accepted"] - stored),
            final=counts,
            delivered_per_s=round(delivered_per_s, 1),
            end_to_end_seconds=round(finished - started, 2),
            drain_seconds=round(finished - posted, 2),
            serve_cpu_s=cpu,
            client_cpu_s=result["client_cpu_s"],
            errors_logged=len(errors),
            target=(
                f">= {TARGET_ACCEPTED_PER_S:.0f} accepted/s with p99 < {TARGET_P99_MS:.0f} ms, "
                f">= {TARGET_DELIVERED_PER_S:.0f} delivered/s end to end"
            ),
            met=met,
            loadavg_1m=load,
            profiles=profiles,
        )
    ]
