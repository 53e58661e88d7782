"""serve_default: what a new user's ``make run`` does, ``tidings serve`` with its defaults.

One ``tidings serve`` process (API and worker together, every setting tidings' default) with the
one provider the issue names: the ``fake``, simulated in the process (no fake server), with
``concurrency = 500``. ``--clients`` is not used: 32 concurrent clients post single messages (the
aiohttp load generator, ``loadgen.py messages``) for the warm-up and the measured ``--seconds``,
while the worker dispatches them. Then the scenario waits until every accepted message is final.

Figures: ``messages_per_s`` (202s in the measured window per second) with p50/p99 of those
requests, and ``delivered_per_s`` end to end: every message accepted, warm-up included, over the
seconds from the load generator's start to the moment the last of them was final (polled every
50 ms, so up to 50 ms late); the CPU and peak RSS of the supervisor and of each of its children
(an HTTP process per core and the worker), and the CPU milliseconds per message of all of them.
The issue's targets (issue 18) on this 2-core machine: ≥ 4,000 accepted/s with p99 < 50 ms while
the worker dispatches, and ≥ 3,500 delivered/s end to end.
"""

from __future__ import annotations

import asyncio
import time
from dataclasses import replace
from typing import Any

from harness import BenchError, Workspace, cpu_seconds, free_port, peak_rss_mb, wait_healthy
from profiling import Profiler

from scenarios import Options, counts_by_status, line, machine_load
from scenarios.single_api import post_messages
from tidings.supervisor import children_of

CLIENTS = 32
CONCURRENCY = 500
TARGET_ACCEPTED_PER_S = 4000.0
TARGET_P99_MS = 50.0
TARGET_DELIVERED_PER_S = 3500.0
WAITING = ("scheduled", "pending", "sending", "sent")


def _child_name(command: str) -> str:
    return "worker" if " worker " in f"{command} " else "http"


async def run(ws: Workspace, options: Options, profiler: Profiler) -> list[dict[str, Any]]:
    if ws.kind != "sqlite":
        return []  # the new user's default is SQLite
    load = machine_load()
    procs = ws.processes
    port = free_port()
    env = ws.service_env(api_port=port, fake_url=None, concurrency=CONCURRENCY, settings=options.settings)
    if all(name.lower() != "workers" for name in options.settings):
        del env["TIDINGS_WORKERS"]  # the default: one HTTP process per core
    ws.migrate(env)
    key = ws.create_key(env)
    procs.start_tidings("serve", ["serve", "--port", str(port)], env)
    await wait_healthy(port, procs, "serve")
    procs.mark_cpu("serve")
    group = children_of(procs.pid("serve"))
    if group:
        profiler.attach_pids({f"{_child_name(c)}-{pid}": pid for pid, c in group.items()})
    else:
        profiler.attach("serve")
    cpu_at_mark = {pid: cpu_seconds(pid) or 0.0 for pid in group}
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
    # With several processes the supervisor does little: the work is its children's.
    child_cpu = {
        f"{_child_name(c)}-{pid}": round((cpu_seconds(pid) or 0.0) - cpu_at_mark[pid], 2)
        for pid, c in group.items()
    }
    child_rss = {f"{_child_name(c)}-{pid}": peak_rss_mb(pid) for pid, c in group.items()}
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
            processes=1 + len(group),
            children_cpu_s=child_cpu,
            children_peak_rss_mb=child_rss,
            cpu_ms_per_message=round(
                1000 * ((cpu or {}).get("total", 0.0) + sum(child_cpu.values())) / max(1, stored), 3
            ),
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
