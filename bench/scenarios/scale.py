"""scale: tidings scaled out by process on one PostgreSQL, and what each message costs.

For every pair in ``API_PROCESSES`` by ``WORKER_PROCESSES`` (1, 2, 4 by 1, 2, 4): one supervised
``tidings api`` with that many HTTP processes (the ``workers`` setting) and that many ``tidings
worker`` processes, each worker sending through the in-process ``fake`` (``concurrency = 500``,
receipts simulated in the worker). The load generator's ``--clients`` (64) post single messages
for the warm-up and ``--seconds``; then the cell waits until every message is final. All cells
share one database (each cell's figures are differences over it).

Per cell:

- ``messages_per_s`` (202s in the measured window), p50/p99, and ``delivered_per_s`` end to end
  (the cell's messages over the seconds from the load's start to the last one final);
- ``cpu_ms_per_message``: CPU milliseconds per message of the HTTP processes, of the workers, of
  PostgreSQL (every ``postgres`` process on the machine) and of the load generator;
- ``statements_per_message``: statements tidings sent (``tidings_database_statements_total``,
  summed over every process through one shared ``metrics_dir``), in all and by role;
- ``transactions_per_message`` (PostgreSQL's ``xact_commit``) and ``wal_bytes_per_message``
  (``pg_current_wal_lsn()`` before and after).

PostgreSQL only: SQLite's one writer is ``serve_default``'s subject.
"""

from __future__ import annotations

import asyncio
import time
from pathlib import Path
from typing import Any

import asyncpg
import httpx
from harness import BenchError, Workspace, cpu_seconds, free_port, wait_healthy
from profiling import Profiler

from scenarios import Options, counts_by_status, line, machine_load
from scenarios.single_api import post_messages
from tidings.store.db import plain_postgres_dsn
from tidings.supervisor import children_of

API_PROCESSES = (1, 2, 4)
WORKER_PROCESSES = (1, 2, 4)
CONCURRENCY = 500
WAITING = ("scheduled", "pending", "sending", "sent")
STATEMENTS = "tidings_database_statements_total"


def postgres_pids() -> list[int]:
    """Every PostgreSQL server process on this machine (the server and its backends)."""
    found = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                if (entry / "comm").read_text().strip() == "postgres":
                    found.append(int(entry.name))
            except OSError:
                continue
    return found


def cpu_of(pids: list[int]) -> dict[int, float]:
    return {pid: cpu_seconds(pid) or 0.0 for pid in pids}


def used(before: dict[int, float], after: dict[int, float]) -> float:
    """CPU seconds the processes used between two readings (a process that ended is lost)."""
    return sum(max(0.0, after.get(pid, 0.0) - start) for pid, start in before.items()) + sum(
        seconds for pid, seconds in after.items() if pid not in before
    )


async def database_figures(url: str) -> tuple[int, int]:
    """PostgreSQL's WAL position (bytes) and committed transactions of this database so far."""
    conn = await asyncpg.connect(plain_postgres_dsn(url))
    try:
        lsn = await conn.fetchval("SELECT pg_current_wal_lsn() - '0/0'::pg_lsn")
        await conn.execute("SELECT pg_stat_clear_snapshot()")
        commits = await conn.fetchval(
            "SELECT xact_commit FROM pg_stat_database WHERE datname = current_database()"
        )
        return int(lsn), int(commits)
    finally:
        await conn.close()


async def statements(port: int, key: str) -> dict[str, float]:
    """``tidings_database_statements_total`` by role, summed over every process."""
    async with httpx.AsyncClient(headers={"Authorization": f"Bearer {key}"}) as client:
        answer = await client.get(f"http://127.0.0.1:{port}/metrics")
        if answer.status_code != 200:
            raise BenchError(f"GET /metrics answered {answer.status_code}: {answer.text[:200]}")
        text = answer.text
    found: dict[str, float] = {}
    for row in text.splitlines():
        if row.startswith(STATEMENTS + "{"):
            labels, value = row.rsplit(" ", 1)
            role = labels.split('role="', 1)[1].split('"', 1)[0]
            found[role] = found.get(role, 0.0) + float(value)
    return found


async def run(ws: Workspace, options: Options, profiler: Profiler) -> list[dict[str, Any]]:
    if ws.kind != "postgres":
        return []
    results = []
    for apis in API_PROCESSES:
        for workers in WORKER_PROCESSES:
            results.append(await _cell(ws, options, apis, workers))
    return results


async def _cell(ws: Workspace, options: Options, apis: int, workers: int) -> dict[str, Any]:
    load = machine_load()
    procs = ws.processes
    port = free_port()
    env = ws.service_env(api_port=port, fake_url=None, concurrency=CONCURRENCY, settings=options.settings)
    env["TIDINGS_METRICS_DIR"] = str(ws.directory / f"metrics-{apis}-{workers}")
    Path(env["TIDINGS_METRICS_DIR"]).mkdir()
    ws.migrate(env)
    key = ws.create_key(env)
    env_api = {**env, "TIDINGS_WORKERS": str(apis)}
    api = f"api-{apis}x{workers}"
    procs.start_tidings(api, ["api", "--port", str(port)], env_api)
    worker_names = [f"worker{n}-{apis}x{workers}" for n in range(workers)]
    for name in worker_names:
        procs.start_tidings(name, ["worker"], env)
    await wait_healthy(port, procs, api)
    for name in worker_names:
        await procs.wait_for_line(name, "worker started")
    http = list(children_of(procs.pid(api))) if apis > 1 else [procs.pid(api)]
    worker_pids = [procs.pid(name) for name in worker_names]
    database = postgres_pids()
    before_counts = sum((await counts_by_status(ws.database_url)).values())
    wal_before, commits_before = await database_figures(ws.database_url)
    statements_before = await statements(port, key)
    cpu_before = {"http": cpu_of(http), "workers": cpu_of(worker_pids), "postgres": cpu_of(database)}

    started = time.perf_counter()
    result = await post_messages(ws, options, port, key, env, name=f"loadgen-{apis}x{workers}")
    posted = time.perf_counter()
    while True:
        counts = await counts_by_status(ws.database_url)
        if not any(counts.get(s, 0) for s in WAITING):
            break
        if time.perf_counter() > posted + 600:
            raise BenchError(f"{apis} API by {workers} workers: messages still waiting after 600 s: {counts}")
        procs.check_alive(api, *worker_names)
        await asyncio.sleep(0.05)
    finished = time.perf_counter()

    cpu = {
        "http": used(cpu_before["http"], cpu_of(http)),
        "workers": used(cpu_before["workers"], cpu_of(worker_pids)),
        "postgres": used(cpu_before["postgres"], cpu_of(postgres_pids())),
        "loadgen": result["client_cpu_s"],
    }
    wal_after, commits_after = await database_figures(ws.database_url)
    statements_after = await statements(port, key)
    errors = sum(len(procs.error_lines(name)) for name in (api, *worker_names))
    for name in (api, *worker_names):
        procs.stop(name)

    total = sum(counts.values())
    messages = max(1, total - before_counts)
    delivered = counts.get("delivered", 0) - before_counts
    stated = {
        role: round((statements_after.get(role, 0.0) - statements_before.get(role, 0.0)) / messages, 2)
        for role in statements_after
    }
    return line(
        "scale",
        ws.kind,
        messages=result["accepted"],
        seconds=options.seconds,
        p50_ms=result["p50_ms"],
        p99_ms=result["p99_ms"],
        api_processes=apis,
        worker_processes=workers,
        clients=options.clients,
        statuses=result["statuses"],
        total_accepted=result["total_accepted"],
        lost=max(0, result["total_accepted"] - messages),
        delivered_per_s=round(delivered / (finished - started), 1),
        end_to_end_seconds=round(finished - started, 2),
        cpu_s=cpu,
        cpu_ms_per_message={name: round(1000 * seconds / messages, 3) for name, seconds in cpu.items()},
        statements_per_message={"all": round(sum(stated.values()), 2), **stated},
        transactions_per_message=round((commits_after - commits_before) / messages, 2),
        wal_bytes_per_message=round((wal_after - wal_before) / messages),
        errors_logged=errors,
        loadavg_1m=load,
    )
