"""receipts: how many delivery receipts one ``tidings api`` process applies per second.

``--messages`` (100,000) ``sent`` messages, each with a provider id, are loaded straight into the
database first (not timed). One ``tidings api`` process then takes one signed ``delivered``
receipt per message on ``POST /webhooks/fake/fake/status``, posted exactly as the fake provider
server posts them (``X-Fake-Signature``) by the load generator (``loadgen.py receipts``, its own
process) over 32 concurrent connections. Each receipt is verified, matched to its message and
applied through the status machine (a compare-and-set plus an event row) before its answer.

Figures: ``messages_per_s`` = receipts applied per second (from the first post to the last
answer), ``p50_ms``/``p99_ms`` per receipt, the API's peak RSS and CPU time. Afterwards every
message must be ``delivered`` in the database.
"""

from __future__ import annotations

import secrets
import time
from typing import Any

import seed
from harness import BENCH_DIR, BenchError, Workspace, free_port, read_json_file, wait_healthy
from profiling import Profiler

from scenarios import Options, counts_by_status, line, machine_load

TARGET_PER_S = 10_000.0


async def run(ws: Workspace, options: Options, profiler: Profiler) -> list[dict[str, Any]]:
    load = machine_load()
    procs = ws.processes
    total = options.messages
    secret = secrets.token_hex(16)
    port = free_port()
    env = ws.service_env(api_port=port, webhook_secret=secret, settings=options.settings)
    ws.migrate(env)
    pairs = ws.directory / "pairs.txt"
    seed_started = time.perf_counter()
    await seed.load_messages(ws.database_url, total, status="sent", pairs_file=pairs)
    seed_seconds = time.perf_counter() - seed_started

    procs.start_tidings("api", ["api", "--port", str(port)], env)
    await wait_healthy(port, procs, "api")
    profiler.attach("api")
    procs.mark_cpu("api")
    out = ws.directory / "receipts.json"
    procs.start_python(
        "loadgen",
        [
            str(BENCH_DIR / "loadgen.py"),
            "receipts",
            "--url",
            f"http://127.0.0.1:{port}/webhooks/fake/fake/status",
            "--secret",
            secret,
            "--input",
            str(pairs),
            "--concurrency",
            str(options.receipt_clients),
            "--out",
            str(out),
        ],
        env,
    )
    code = await procs.wait_exit("loadgen", timeout=600 + total / 100)
    if code != 0:
        raise BenchError(f"the receipt client failed ({code}):\n{procs.tail('loadgen')}")
    procs.check_alive("api")
    result = read_json_file(out)
    rss = procs.peak_rss_mb("api")
    cpu = procs.cpu_since_mark("api")
    profiles = profiler.finish()
    errors = procs.error_lines("api")
    procs.stop("api")

    counts = await counts_by_status(ws.database_url)
    delivered = counts.get("delivered", 0)
    seconds = result["seconds"]
    return [
        line(
            "receipts",
            ws.kind,
            messages=delivered,
            seconds=seconds,
            p50_ms=result["p50_ms"],
            p99_ms=result["p99_ms"],
            peak_rss_mb=rss,
            posted=result["posted"],
            answered_2xx=result["ok"],
            statuses=result["statuses"],
            client_failures=result["failures"],
            database_statuses=counts,
            connections=options.receipt_clients,
            api_cpu_s=cpu,
            client_cpu_s=result["client_cpu_s"],
            errors_logged=len(errors),
            seed_seconds=round(seed_seconds, 2),
            target=f">= {TARGET_PER_S:.0f}/s, all delivered",
            met=delivered / seconds >= TARGET_PER_S and delivered == total,
            loadavg_1m=load,
            profiles=profiles,
        )
    ]
