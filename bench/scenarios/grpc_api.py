"""grpc_single and grpc_watch: the gRPC API (``tidings.v1.Messaging``) beside the REST figures.

``grpc_single``: how many unary ``SendMessage`` calls one ``tidings grpc`` process (the gRPC API
alone: no worker, no HTTP, tidings' default settings) accepts per second, next to what one
``tidings api`` process accepts over REST under the same load. Both runs use the same database,
one after the other, each with its own process and load generator (a process of its own):

1. REST: ``single_api``'s load (``loadgen.py messages``, ``POST /v1/messages``) from
   ``grpc_clients`` (32) clients, one keep-alive connection each, against ``tidings api``;
2. gRPC: ``loadgen.py grpc-messages``, ``grpc_clients`` (32) callers making ``SendMessage``
   calls back to back over ``grpc_channels`` (1) channels: one HTTP/2 connection carries the 32
   calls side by side, as a gRPC client normally does (``--grpc-channels`` tries more).

Each sends for a warm-up (``--warmup``, 1 s) and then the measured ``--seconds`` (20). REST goes
first, so gRPC's run inserts into the larger table: the order does not favour the transport the
issue expects to win. A message is committed to the database before its answer (``202`` or
``OK``) either way.

Figures, one line per transport (``transport``: ``rest`` or ``grpc``): ``messages_per_s``
(accepted in the window per second), ``p50_ms``/``p99_ms`` of those calls, the serving
process's peak RSS, CPU time (``api_cpu_s``) and CPU time per accepted message (warm-up
included; steadier than the rates when other work shares the machine), the load generator's CPU
time, and ``stored``/``lost``: every accepted message must be in the database. The gRPC line also
has ``rest_messages_per_s``, ``vs_rest`` (its rate over REST's) and ``met``: whether unary gRPC
sends beat REST single sends, as the issue says they should.

``grpc_watch``: one ``WatchMessages`` stream (every message, from now) following
``watch_changes`` (10,000) status changes as they are made. ``tidings grpc`` serves the stream
and the batch; one ``tidings worker`` sends through the fake provider in process (no fake
server: ``latency_ms`` 20, a receipt ``--receipt-delay-ms`` 50 after each send, fed through the
worker's own webhook pipeline). The load generator (``loadgen.py grpc-watch``) opens the stream
after the last change stored before the run (the cursor an empty one would mean, but fixed before
the call, so no change can slip in between the call and the batch), then sends a ``SendBatch`` of
a quarter as many recipients: each message makes four changes (``accepted``, ``claimed``,
``send_accepted``, ``report``).

Figures: ``messages`` = changes received, ``seconds`` from the first change received to the last
(``messages_per_s`` is changes a second: the rate the worker makes them at, which the stream must
keep up with), ``p50_ms``/``p99_ms`` the lag of each change (from its ``occurred_at`` to its
arrival at the client; the feed reads the database every 0.2 s when it has caught up, so about
100 ms of it is waiting for the next read), the same by event, and the checks: ``repeated`` and
``out_of_order`` cursors (the stream gives each change once, oldest first), and, once every
message is final, the ids of the changed events (``message_events.changed``) after the cursor
compared with the cursors received: ``db_changes``, ``missing`` (stored, never received),
``unexpected`` (received, not stored). ``replay_per_s``: the same changes read again by a second
stream from the same cursor once all are stored: how fast the stream itself goes when nothing
waits for the worker (``replay_same``: the same cursors in the same order).
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Coroutine
from dataclasses import replace
from typing import Any

from harness import BENCH_DIR, BenchError, Processes, Workspace, free_port, read_json_file, wait_healthy
from profiling import Profiler
from sqlalchemy import select

from scenarios import Options, counts_by_status, line, machine_load
from scenarios.single_api import post_messages
from tidings.store import Store
from tidings.store.tables import message_events

FAKE_LATENCY_MS = 20.0
"""How long the in-process fake takes to accept a send in ``grpc_watch`` (its default)."""
FINAL_STATUSES = ("delivered", "failed", "cancelled")
SETTLE_SECONDS = 60.0
"""How long ``grpc_watch`` waits, after its stream, for every message to be final."""


async def wait_grpc_listening(processes: Processes, name: str) -> None:
    """Wait until ``name`` (``tidings grpc`` or ``serve``) has logged that its gRPC API listens."""
    await processes.wait_for_line(name, "gRPC API listening")


async def send_messages(
    ws: Workspace, options: Options, grpc_port: int, key: str, env: dict[str, str], *, name: str
) -> dict[str, Any]:
    """Run the load generator's ``grpc-messages`` mode against the gRPC API on ``grpc_port``;
    its result."""
    out = ws.directory / f"{name}.json"
    args = [
        str(BENCH_DIR / "loadgen.py"),
        "grpc-messages",
        *("--target", f"127.0.0.1:{grpc_port}", "--key", key),
        *("--concurrency", str(options.grpc_clients), "--channels", str(options.grpc_channels)),
        *("--seconds", str(options.seconds), "--warmup", str(options.warmup), "--out", str(out)),
    ]
    ws.processes.start_python(name, args, env)
    code = await ws.processes.wait_exit(name, timeout=options.seconds + options.warmup + 120)
    if code != 0:
        raise BenchError(f"the gRPC load generator failed ({code}):\n{ws.processes.tail(name)}")
    result: dict[str, Any] = read_json_file(out)
    return result


async def stored_messages(database_url: str) -> int:
    return sum((await counts_by_status(database_url)).values())


def _per_message_us(cpu: dict[str, float] | None, accepted: int) -> float | None:
    """The serving process's CPU time per accepted message, in microseconds."""
    if cpu is None or not accepted:
        return None
    return round(cpu["total"] / accepted * 1e6, 1)


async def _measure(
    ws: Workspace,
    profiler: Profiler,
    process: str,
    load: Coroutine[Any, Any, dict[str, Any]],
) -> tuple[dict[str, Any], dict[str, Any]]:
    """Run ``load`` (the load generator's coroutine) against ``process`` with its CPU counted and
    py-spy attached; the load's result and the process's figures. Stops ``process`` afterwards."""
    procs = ws.processes
    profiler.attach(process)
    procs.mark_cpu(process)
    result = await load
    procs.check_alive(process)
    figures = {
        "rss": procs.peak_rss_mb(process),
        "cpu": procs.cpu_since_mark(process),
        "profiles": profiler.finish(),
        "errors": len(procs.error_lines(process)),
    }
    procs.stop(process)
    return result, figures


def _transport_line(
    ws: Workspace,
    options: Options,
    transport: str,
    result: dict[str, Any],
    figures: dict[str, Any],
    stored: int,
    load: float,
    **extra: Any,
) -> dict[str, Any]:
    """One ``grpc_single`` line: one transport's figures (see the module docstring)."""
    return line(
        "grpc_single",
        ws.kind,
        messages=result["accepted"],
        seconds=options.seconds,
        p50_ms=result["p50_ms"],
        p99_ms=result["p99_ms"],
        peak_rss_mb=figures["rss"],
        transport=transport,
        clients=options.grpc_clients,
        channels=result.get("channels"),
        statuses=result["statuses"],
        client_failures=result["failures"],
        total_accepted=result["total_accepted"],
        stored=stored,
        lost=max(0, result["total_accepted"] - stored),
        api_cpu_s=figures["cpu"],
        api_cpu_us_per_message=_per_message_us(figures["cpu"], result["total_accepted"]),
        client_cpu_s=result["client_cpu_s"],
        errors_logged=figures["errors"],
        loadavg_1m=load,
        profiles=figures["profiles"],
        **extra,
    )


async def single(ws: Workspace, options: Options, profiler: Profiler) -> list[dict[str, Any]]:
    """``grpc_single``: see the module docstring."""
    load = machine_load()
    procs = ws.processes
    port = free_port()
    env = ws.service_env(api_port=port, settings=options.settings)
    grpc_port = int(env["TIDINGS_GRPC_PORT"])
    ws.migrate(env)
    key = ws.create_key(env)

    procs.start_tidings("api", ["api", "--port", str(port)], env)
    await wait_healthy(port, procs, "api")
    rest_load = post_messages(
        ws, replace(options, clients=options.grpc_clients), port, key, env, name="loadgen-rest"
    )
    rest, rest_figures = await _measure(ws, profiler, "api", rest_load)
    rest_stored = await stored_messages(ws.database_url)

    procs.start_tidings("grpc", ["grpc"], env)
    await wait_grpc_listening(procs, "grpc")
    grpc_load = send_messages(ws, options, grpc_port, key, env, name="loadgen-grpc")
    grpc, grpc_figures = await _measure(ws, profiler, "grpc", grpc_load)
    grpc_stored = await stored_messages(ws.database_url) - rest_stored

    rest_rate = rest["accepted"] / options.seconds
    grpc_rate = grpc["accepted"] / options.seconds
    return [
        _transport_line(ws, options, "rest", rest, rest_figures, rest_stored, load, target=None, met=None),
        _transport_line(
            ws,
            options,
            "grpc",
            grpc,
            grpc_figures,
            grpc_stored,
            load,
            rest_messages_per_s=round(rest_rate, 1),
            vs_rest=round(grpc_rate / rest_rate, 3) if rest_rate else None,
            target="more accepted/s than REST single sends, every accepted message stored",
            met=grpc_rate > rest_rate and grpc["total_accepted"] <= grpc_stored,
        ),
    ]


# -- grpc_watch ---------------------------------------------------------------------------------


async def last_event_id(database_url: str) -> int:
    """The newest event's id: where a stream of every message "from now" starts."""
    store = Store.connect(database_url)
    try:
        return await store.changes.last_event_id()
    finally:
        await store.close()


async def changed_event_ids(database_url: str, after: int) -> list[int]:
    """The ids of the events after ``after`` that changed a message's status, oldest first."""
    store = Store.connect(database_url)
    query = (
        select(message_events.c.id)
        .where(message_events.c.id > after, message_events.c.changed.is_(True))
        .order_by(message_events.c.id)
    )
    try:
        async with store.engine.connect() as conn:
            return [int(i) for i in (await conn.scalars(query)).all()]
    finally:
        await store.close()


async def wait_all_final(ws: Workspace, total: int, services: list[str]) -> dict[str, int]:
    """Wait until ``total`` messages are final (or ``SETTLE_SECONDS`` pass); the counts."""
    deadline = time.monotonic() + SETTLE_SECONDS
    while True:
        counts = await counts_by_status(ws.database_url)
        if sum(counts.get(s, 0) for s in FINAL_STATUSES) >= total or time.monotonic() > deadline:
            return counts
        ws.processes.check_alive(*services)
        await asyncio.sleep(0.2)


async def follow_changes(
    ws: Workspace, options: Options, grpc_port: int, key: str, env: dict[str, str], cursor: int
) -> tuple[dict[str, Any], list[int]]:
    """Run the load generator's ``grpc-watch`` mode; its result and the cursors it received."""
    name = "loadgen-watch"
    out = ws.directory / f"{name}.json"
    cursors_out = ws.directory / "cursors.txt"
    args = [
        str(BENCH_DIR / "loadgen.py"),
        "grpc-watch",
        *("--target", f"127.0.0.1:{grpc_port}", "--key", key, "--cursor", str(cursor)),
        *("--changes", str(options.watch_changes), "--batch", str(options.watch_changes // 4)),
        *("--out", str(out), "--cursors-out", str(cursors_out)),
    ]
    ws.processes.start_python(name, args, env)
    code = await ws.processes.wait_exit(name, timeout=600)
    if code != 0:
        raise BenchError(f"the gRPC watcher failed ({code}):\n{ws.processes.tail(name)}")
    received = [int(c) for c in cursors_out.read_text().split()]
    result: dict[str, Any] = read_json_file(out)
    return result, received


async def watch(ws: Workspace, options: Options, profiler: Profiler) -> list[dict[str, Any]]:
    """``grpc_watch``: see the module docstring."""
    load = machine_load()
    procs = ws.processes
    env = ws.service_env(
        api_port=free_port(),
        fake_url=None,
        concurrency=options.concurrency,
        fake_options={"receipt_delay_ms": options.receipt_delay_ms, "latency_ms": FAKE_LATENCY_MS},
        settings=options.settings,
    )
    grpc_port = int(env["TIDINGS_GRPC_PORT"])
    ws.migrate(env)
    key = ws.create_key(env)
    messages = options.watch_changes // 4

    services = ["grpc", "worker"]
    procs.start_tidings("grpc", ["grpc"], env)
    procs.start_tidings("worker", ["worker"], env)
    await wait_grpc_listening(procs, "grpc")
    await procs.wait_for_line("worker", "worker started")
    cursor = await last_event_id(ws.database_url)
    profiler.attach(*services)
    procs.mark_cpu(*services)
    result, received = await follow_changes(ws, options, grpc_port, key, env, cursor)
    counts = await wait_all_final(ws, messages, services)
    procs.check_alive(*services)
    rss = {name: procs.peak_rss_mb(name) for name in services}
    cpu = {name: procs.cpu_since_mark(name) for name in services}
    profiles = profiler.finish()
    errors = sum(len(procs.error_lines(name)) for name in services)
    for name in reversed(services):
        procs.stop(name)

    stored = await changed_event_ids(ws.database_url, cursor)
    missing = sorted(set(stored) - set(received))
    unexpected = sorted(set(received) - set(stored))
    replay = result["replay"]
    whole = (
        result["received"] == options.watch_changes
        and len(stored) == len(received)
        and not missing
        and not unexpected
        and result["repeated"] == 0
        and result["out_of_order"] == 0
    )
    return [
        line(
            "grpc_watch",
            ws.kind,
            messages=result["received"],
            seconds=result["seconds"],
            p50_ms=result["lag_p50_ms"],
            p99_ms=result["lag_p99_ms"],
            peak_rss_mb=max((v for v in rss.values() if v is not None), default=None),
            changes=options.watch_changes,
            batch_messages=messages,
            ended=result["ended"],
            lag_p90_ms=result["lag_p90_ms"],
            lag_max_ms=result["lag_max_ms"],
            lag_by_event=result["lag_by_event"],
            first_change_after_s=result["first_change_after_s"],
            batch=result["batch"],
            repeated=result["repeated"],
            out_of_order=result["out_of_order"],
            db_changes=len(stored),
            missing=len(missing),
            missing_examples=missing[:5],
            unexpected=len(unexpected),
            replay_per_s=replay["changes_per_s"],
            replay_seconds=replay["seconds"],
            replay_same=replay["same"],
            statuses=counts,
            receipt_delay_ms=options.receipt_delay_ms,
            fake_latency_ms=FAKE_LATENCY_MS,
            rss_mb=rss,
            cpu_s=cpu,
            client_cpu_s=result["client_cpu_s"],
            errors_logged=errors,
            target=f"{options.watch_changes} changes, each once, none missing",
            met=whole,
            loadavg_1m=load,
            profiles=profiles,
        )
    ]
