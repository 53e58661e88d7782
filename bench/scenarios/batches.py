"""batch_ingest and batch_dispatch: one request, many recipients.

``batch_ingest``: one ``tidings api`` process (tidings' defaults, no worker) takes batches of
``--batch-sizes`` recipients (1,000 / 10,000 / 100,000), each recipient with a per-recipient
template value (``Hello {{ first_name }}, your code is {{ code }}.``) and its own number, sent
once as JSON and once as MessagePack. Each size and format is posted ``repeats`` times (a new
``group_id`` each time) on the same database; the figure is the best and the median time from
request start to the ``202`` (every message committed by then), as messages per second. The
body is built before the clock starts. The API's peak RSS over the run is reported (the issue's
bound: under 500 MB with a 100,000-recipient batch).

``batch_dispatch``: one batch of ``--messages`` (100,000) recipients posted to ``tidings api``
while one ``tidings worker`` sends to the fake provider server over HTTP (as ``dispatch`` does);
the clock runs from the request's start until the fake server has had an answer to a receipt for
every message. Compare its ``messages_per_s`` with ``dispatch``'s (single messages loaded
straight into the database).
"""

from __future__ import annotations

import secrets
import statistics
import time
from typing import Any

import aiohttp
import msgpack
import orjson
from harness import BenchError, Workspace, free_port, wait_healthy
from profiling import Profiler

from scenarios import Options, counts_by_status, line, machine_load
from scenarios.dispatch import fake_stats, start_fake, wait_for_receipts

TARGET_PER_S = {"sqlite": 50_000.0, "postgres": 20_000.0}
TARGET_RSS_MB = 500.0
TEMPLATE = "Hello {{ first_name }}, your code is {{ code }}."


def make_batch(size: int, group_id: str) -> dict[str, Any]:
    return {
        "group_id": group_id,
        "template": TEMPLATE,
        "tags": ["bench"],
        "recipients": [
            {"to": f"+2547{i % 100_000_000:08d}", "first_name": f"Person {i}", "context": {"code": i}}
            for i in range(size)
        ],
    }


def encode(batch: dict[str, Any], fmt: str) -> tuple[bytes, str]:
    if fmt == "msgpack":
        return msgpack.packb(batch), "application/msgpack"
    return orjson.dumps(batch), "application/json"


async def post_batch(
    session: aiohttp.ClientSession, url: str, key: str, body: bytes, content_type: str
) -> tuple[float, dict[str, Any]]:
    """Seconds from the request's start to its answer, and the answer (which must be a 202)."""
    started = time.perf_counter()
    async with session.post(
        f"{url}/v1/batches",
        data=body,
        headers={"Authorization": f"Bearer {key}", "Content-Type": content_type},
        timeout=aiohttp.ClientTimeout(total=600),
    ) as response:
        answer = await response.read()
        seconds = time.perf_counter() - started
        if response.status != 202:
            raise BenchError(f"POST /v1/batches answered {response.status}: {answer[:500]!r}")
    decoded: dict[str, Any] = orjson.loads(answer)
    return seconds, decoded


async def ingest(ws: Workspace, options: Options, profiler: Profiler) -> list[dict[str, Any]]:
    load = machine_load()
    procs = ws.processes
    port = free_port()
    env = ws.service_env(api_port=port, settings=options.settings)
    ws.migrate(env)
    key = ws.create_key(env)
    procs.start_tidings("api", ["api", "--port", str(port)], env)
    await wait_healthy(port, procs, "api")
    profiler.attach("api")
    url = f"http://127.0.0.1:{port}"
    lines: list[dict[str, Any]] = []
    async with aiohttp.ClientSession() as session:
        for size in options.batch_sizes:
            repeats = 3 if size <= 10_000 else 1
            for fmt in ("json", "msgpack"):
                times: list[float] = []
                for repeat in range(repeats):
                    body, content_type = encode(make_batch(size, f"{fmt}-{size}-{repeat}"), fmt)
                    procs.mark_cpu("api")
                    seconds, answer = await post_batch(session, url, key, body, content_type)
                    if answer["accepted"] != size:
                        raise BenchError(f"accepted {answer['accepted']} of {size}: {answer['refused'][:3]}")
                    times.append(seconds)
                    procs.check_alive("api")
                best = min(times)
                lines.append(
                    line(
                        "batch_ingest",
                        ws.kind,
                        messages=size,
                        seconds=best,
                        format=fmt,
                        body_mb=round(len(body) / 1e6, 2),
                        median_s=round(statistics.median(times), 3),
                        runs=len(times),
                        api_cpu_s=procs.cpu_since_mark("api"),
                        peak_rss_mb=procs.peak_rss_mb("api"),
                        target=f">= {TARGET_PER_S[ws.kind]:.0f}/s accepted; API RSS < {TARGET_RSS_MB:.0f} MB",
                        met=size / best >= TARGET_PER_S[ws.kind]
                        and (procs.peak_rss_mb("api") or 0) < TARGET_RSS_MB,
                        loadavg_1m=load,
                    )
                )
    profiles = profiler.finish()
    errors = procs.error_lines("api")
    procs.stop("api")
    stored = sum((await counts_by_status(ws.database_url)).values())
    expected = sum(size * (3 if size <= 10_000 else 1) * 2 for size in options.batch_sizes)
    for result in lines:
        result.update(stored=stored, expected=expected, errors_logged=len(errors))
    if profiles:
        lines[-1]["profiles"] = profiles
    return lines


async def dispatch(ws: Workspace, options: Options, profiler: Profiler) -> list[dict[str, Any]]:
    load = machine_load()
    procs = ws.processes
    total = options.messages
    secret = secrets.token_hex(16)
    port = free_port()
    ws.migrate(ws.service_env(api_port=port, settings=options.settings))
    key = ws.create_key(ws.service_env(api_port=port, settings=options.settings))
    fake_url = await start_fake(ws, secret, options.receipt_delay_ms)
    env = ws.service_env(
        api_port=port,
        fake_url=fake_url,
        webhook_secret=secret,
        concurrency=options.concurrency,
        settings=options.settings,
    )
    procs.start_tidings("api", ["api", "--port", str(port)], env)
    await wait_healthy(port, procs, "api")
    procs.start_tidings("worker", ["worker"], env)
    await procs.wait_for_line("worker", "worker started")
    services = ["api", "worker", "fake"]
    body, content_type = encode(make_batch(total, "dispatch"), "msgpack")
    profiler.attach(*services)
    procs.mark_cpu(*services)
    url = f"http://127.0.0.1:{port}"
    async with aiohttp.ClientSession() as session:
        started = time.perf_counter()
        accept_seconds, answer = await post_batch(session, url, key, body, content_type)
        await wait_for_receipts(ws, session, fake_url, total, services, started)
        seconds = time.perf_counter() - started
        rss = {name: procs.peak_rss_mb(name) for name in services}
        cpu = {name: procs.cpu_since_mark(name) for name in services}
        profiles = profiler.finish()
        stats = await fake_stats(session, fake_url)
    errors = sum(len(procs.error_lines(name)) for name in ("api", "worker"))
    for name in ("worker", "api", "fake"):
        procs.stop(name)
    counts = await counts_by_status(ws.database_url)
    delivered = counts.get("delivered", 0)
    return [
        line(
            "batch_dispatch",
            ws.kind,
            messages=delivered,
            seconds=seconds,
            peak_rss_mb=max(v for n, v in rss.items() if n != "fake" and v is not None),
            accepted=answer["accepted"],
            accept_seconds=round(accept_seconds, 3),
            statuses=counts,
            fake_requests=stats["requests"],
            duplicates=len(stats["duplicates"]),
            rss_mb=rss,
            cpu_s=cpu,
            errors_logged=errors,
            concurrency=options.concurrency,
            receipt_delay_ms=options.receipt_delay_ms,
            target="every message delivered exactly once; compare with dispatch",
            met=delivered == total and stats["requests"] == total and not stats["duplicates"],
            loadavg_1m=load,
            profiles=profiles,
        )
    ]
