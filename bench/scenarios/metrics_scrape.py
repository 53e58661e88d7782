"""metrics_scrape: what ``GET /metrics`` scraped once a second costs the single-message API.

One ``tidings api`` process (no worker, tidings' default settings) takes ``single_api``'s load
(``--clients`` concurrent clients posting ``POST /v1/messages`` for ``--seconds``) four times, in
the order without, with, with, without a scraper: one more client of the load generator that
``GET /metrics`` once a second through the measured window, as Prometheus would. The order cancels
a steady drift (the database grows from run to run; other work on the machine comes and goes).
Since no worker runs, every accepted message stays ``pending``: each scrape counts a queue that
grows by thousands a second, the database work of a busy service's scrape.

Figures: ``per_s_without`` and ``per_s_with`` (202s a second in the measured windows, the two runs
of each kind together), ``loss_pct`` (how much lower the rate is with the scraper; the issue's
target is at most 3 %), ``p99_ms_without``/``p99_ms_with`` (the worse run of each), the API
process's CPU time per accepted message without and with scraping (warm-up included) and how much
more that is (``api_cpu_extra_pct``: less swayed by other work on the machine than the rates; on
PostgreSQL the server's own CPU is not in it), the scrapes' count, median and slowest time (they
queue behind the posts) and size, and ``counted``: ``tidings_messages_accepted_total`` as the last
scrape reads it, which must equal every 202 the API gave (``counted_ok``).

The rates of a short run on a shared two-core machine move by more than 3 % from one run to the
next: ``scrape_cpu_ms`` is steadier. After the runs, the API (idle, over the database the runs
filled) is scraped ``IDLE_SCRAPES`` times a second apart and its CPU time divided by the scrapes;
``scrape_cpu_share_pct`` is that once a second as a part of the CPU the API spent a second under
load without the scraper: what the scraping takes from an API whose CPU is the limit.
"""

from __future__ import annotations

import asyncio
import time
from typing import Any

import aiohttp
from harness import BenchError, Workspace, free_port, wait_healthy
from profiling import Profiler
from prometheus_client.parser import text_string_to_metric_families

from scenarios import Options, line, machine_load
from scenarios.single_api import post_messages

TARGET_LOSS_PCT = 3.0
SCRAPE_EVERY = 1.0
ORDER = (False, True, True, False)
"""With the scraper or not, run by run."""
IDLE_SCRAPES = 10
"""Scrapes of the idle API, one a second, whose CPU time is measured."""


async def scrape(port: int, key: str) -> str:
    async with (
        aiohttp.ClientSession() as session,
        session.get(f"http://127.0.0.1:{port}/metrics", headers={"Authorization": f"Bearer {key}"}) as answer,
    ):
        text = await answer.text()
        if answer.status != 200:
            raise BenchError(f"GET /metrics answered {answer.status}: {text[:300]}")
        return text


async def scrape_cpu_ms(ws: Workspace, port: int, key: str) -> float | None:
    """The API process's CPU time per scrape, with nothing else to do, over a database holding
    every message the runs stored (just over a second apart, so that each reads the database)."""
    ws.processes.mark_cpu("api")
    for _ in range(IDLE_SCRAPES):
        started = time.perf_counter()
        await scrape(port, key)
        await asyncio.sleep(max(0.0, SCRAPE_EVERY + 0.05 - (time.perf_counter() - started)))
    used = ws.processes.cpu_since_mark("api")
    return None if used is None else used["total"] / IDLE_SCRAPES * 1000


async def accepted_counted(port: int, key: str) -> float:
    """``tidings_messages_accepted_total`` summed over its labels, as one scrape reads it."""
    text = await scrape(port, key)
    return sum(
        sample.value
        for family in text_string_to_metric_families(text)
        for sample in family.samples
        if sample.name == "tidings_messages_accepted_total"
    )


async def run(ws: Workspace, options: Options, profiler: Profiler) -> list[dict[str, Any]]:
    load_before = machine_load()
    procs = ws.processes
    port = free_port()
    env = ws.service_env(api_port=port, settings=options.settings)
    ws.migrate(env)
    key = ws.create_key(env)

    procs.start_tidings("api", ["api", "--port", str(port)], env)
    await wait_healthy(port, procs, "api")
    profiler.attach("api")
    runs: list[tuple[bool, dict[str, Any]]] = []
    for number, scraping in enumerate(ORDER, 1):
        name = f"loadgen-{number}-{'with' if scraping else 'without'}"
        every = SCRAPE_EVERY if scraping else None
        procs.mark_cpu("api")
        result = await post_messages(ws, options, port, key, env, name=name, scrape_every=every)
        result["api_cpu_s"] = (procs.cpu_since_mark("api") or {}).get("total")
        runs.append((scraping, result))
        procs.check_alive("api")
    counted = await accepted_counted(port, key)
    per_scrape_ms = await scrape_cpu_ms(ws, port, key)
    rss = procs.peak_rss_mb("api")
    profiles = profiler.finish()
    errors = procs.error_lines("api")
    procs.stop("api")

    def rate(scraping: bool) -> float:
        kept = [r for s, r in runs if s is scraping]
        return sum(r["accepted"] for r in kept) / (options.seconds * len(kept))

    def worst(key: str, scraping: bool = True) -> float | None:
        found = [r[key] for s, r in runs if s is scraping and r[key] is not None]
        return max(found) if found else None

    def cpu_per_message_us(scraping: bool) -> float | None:
        kept = [r for s, r in runs if s is scraping]
        if any(r["api_cpu_s"] is None for r in kept):
            return None
        messages = sum(r["total_accepted"] for r in kept)
        return sum(r["api_cpu_s"] for r in kept) / messages * 1e6 if messages else None

    without, with_scraper = rate(False), rate(True)
    loss = (without - with_scraper) / without * 100 if without else None
    cpu_without, cpu_with = cpu_per_message_us(False), cpu_per_message_us(True)
    cpu_extra = (cpu_with - cpu_without) / cpu_without * 100 if cpu_with and cpu_without else None
    # What scraping once a second takes of the CPU the API spends a second under load.
    share = None
    if per_scrape_ms is not None and cpu_without:
        share = per_scrape_ms / 1000 / SCRAPE_EVERY / (cpu_without / 1e6 * without) * 100
    scraped = [r for s, r in runs if s]
    total_accepted = sum(r["total_accepted"] for _s, r in runs)
    return [
        line(
            "metrics_scrape",
            ws.kind,
            messages=sum(r["accepted"] for r in scraped),
            seconds=options.seconds * len(scraped),
            p50_ms=worst("p50_ms"),
            p99_ms=worst("p99_ms"),
            peak_rss_mb=rss,
            clients=options.clients,
            per_s_without=round(without, 1),
            per_s_with=round(with_scraper, 1),
            loss_pct=None if loss is None else round(loss, 2),
            api_cpu_us_per_message_without=None if cpu_without is None else round(cpu_without, 1),
            api_cpu_us_per_message_with=None if cpu_with is None else round(cpu_with, 1),
            api_cpu_extra_pct=None if cpu_extra is None else round(cpu_extra, 2),
            scrape_cpu_ms=None if per_scrape_ms is None else round(per_scrape_ms, 2),
            scrape_cpu_share_pct=None if share is None else round(share, 2),
            p99_ms_without=worst("p99_ms", False),
            p99_ms_with=worst("p99_ms"),
            per_s_by_run=[
                {"scraping": s, "per_s": round(r["accepted"] / options.seconds, 1)} for s, r in runs
            ],
            scrape_every_s=SCRAPE_EVERY,
            scrapes=sum(r["scrapes"] for r in scraped),
            scrape_statuses=[r["scrape_statuses"] for r in scraped],
            scrape_p50_ms=worst("scrape_p50_ms"),
            scrape_max_ms=worst("scrape_max_ms"),
            scrape_bytes=scraped[-1]["scrape_bytes"],
            total_accepted=total_accepted,
            counted=counted,
            counted_ok=counted == total_accepted,
            client_failures=[r["failures"] for _s, r in runs],
            errors_logged=len(errors),
            target=f"loss <= {TARGET_LOSS_PCT:g} %",
            met=loss is not None and loss <= TARGET_LOSS_PCT and counted == total_accepted,
            loadavg_1m=load_before,
            profiles=profiles,
        )
    ]
