"""The tidings benchmark suite: ``python bench/run.py`` (``make bench``), never part of ``make test``.

Runs each scenario on SQLite and on PostgreSQL, each time on a fresh database with processes of
its own, and prints one JSON object per line to stdout (also written to
``bench/results/latest.jsonl``). Progress and a summary table go to stderr. Scenarios:

- ``single_api``: one ``tidings api`` process accepting ``POST /v1/messages`` from 64 clients;
- ``dispatch``: queued messages sent by ``tidings worker`` to the fake provider server, until its
  receipts have made every one ``delivered``;
- ``receipts``: signed receipts posted to the webhook of one ``tidings api`` process;
- ``backlog``: one claim with 10k / 100k / 1M messages waiting, and the service's RSS;
- ``batch_ingest``: batches of 1k / 10k / 100k recipients, JSON and MessagePack, to one ``tidings api``;
- ``batch_dispatch``: one 100k-recipient batch from its request to every message ``delivered``;
- ``email_dispatch``: 10k emails through the ``smtp`` provider to a fake SMTP server, with and
  without a PDF per recipient;
- ``search``: ``GET /v1/messages`` queries (text, tags, number prefix, batch, cost, a second
  page) over 1M messages;
- ``grpc_single``: unary ``SendMessage`` calls from 32 callers to one ``tidings grpc`` process,
  beside REST sends from 32 clients to one ``tidings api``;
- ``grpc_watch``: one ``WatchMessages`` stream following 10,000 status changes as a worker makes
  them;
- ``scale`` (PostgreSQL): 1, 2 and 4 HTTP processes by 1, 2 and 4 workers on one database, with
  CPU, statements, transactions and WAL bytes per message.

Each module in ``bench/scenarios/`` says exactly what it measures. ``--quick`` makes every size
small (for development); ``--profile`` attaches py-spy to the service processes. The exit status
is 1 when a scenario failed (its line has an ``error``), 130 after Ctrl-C or SIGTERM; either way
every process the suite started is stopped and every database it created is dropped.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import platform
import signal
import subprocess
import sys
import time
import traceback
from collections.abc import Sequence
from dataclasses import replace
from pathlib import Path
from types import FrameType
from typing import Any, TextIO

from harness import REPO, RESULTS_DIR, BenchError, Workspace, postgres_unavailable
from profiling import Profiler
from scenarios import (
    Options,
    Scenario,
    backlog,
    batches,
    dashboard,
    dispatch,
    email,
    grpc_api,
    metrics_scrape,
    receipts,
    scale,
    search,
    serve_default,
    single_api,
    stats,
)

SCENARIOS: dict[str, Scenario | None] = {
    "single_api": single_api.run,
    "dispatch": dispatch.run,
    "receipts": receipts.run,
    "backlog": backlog.run,
    "batch_ingest": batches.ingest,
    "batch_dispatch": batches.dispatch,
    "email_dispatch": email.run,
    "stats": stats.run,
    "metrics_scrape": metrics_scrape.run,
    "search": search.run,
    "dashboard": dashboard.run,
    "serve_default": serve_default.run,
    "grpc_single": grpc_api.single,
    "grpc_watch": grpc_api.watch,
    "scale": scale.run,
}
QUICK = Options(
    messages=2000,
    seconds=3.0,
    warmup=0.5,
    backlog_sizes=(1000, 10_000),
    backlog_window=2.0,
    batch_sizes=(1000, 10_000),
    email_messages=1000,
    email_pdf_messages=200,
    stats_messages=50_000,
    search_messages=20_000,
    watch_changes=2000,
)


def _parse(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="python bench/run.py",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument(
        "--scenario",
        action="append",
        choices=list(SCENARIOS),
        help="run only this scenario (repeatable; default: all)",
    )
    parser.add_argument("--database", choices=["sqlite", "postgres", "both"], default="both")
    parser.add_argument(
        "--quick", action="store_true", help="small sizes: 2,000 messages, 3 s, backlog 1k/10k"
    )
    parser.add_argument("--messages", type=int, help="messages in dispatch and receipts (default 100,000)")
    parser.add_argument("--seconds", type=float, help="measured seconds of single_api (default 20)")
    parser.add_argument(
        "--backlog-sizes", help="comma-separated waiting-message counts (default 10000,100000,1000000)"
    )
    parser.add_argument("--clients", type=int, help="concurrent clients of single_api (default 64)")
    parser.add_argument(
        "--search-messages", type=int, help="messages in the table search searches (default 1,000,000)"
    )
    parser.add_argument(
        "--grpc-channels",
        type=int,
        help="gRPC channels (connections) grpc_single's callers share (default 1)",
    )
    parser.add_argument("--workers", type=int, help="tidings worker processes in dispatch (default 1)")
    parser.add_argument(
        "--concurrency", type=int, help="the fake provider's sends in flight per worker (default 100)"
    )
    parser.add_argument(
        "--set",
        dest="settings",
        action="append",
        default=[],
        metavar="NAME=VALUE",
        help="a tidings setting for every service process, e.g. --set sqlite_synchronous=NORMAL",
    )
    parser.add_argument("--profile", action="store_true", help="attach py-spy to the service processes")
    parser.add_argument("--keep", action="store_true", help="keep each run's directory (logs, config)")
    parser.add_argument(
        "--output",
        type=Path,
        default=RESULTS_DIR / "latest.jsonl",
        help="where the JSON lines are also written (default bench/results/latest.jsonl)",
    )
    return parser.parse_args(argv)


def _options(args: argparse.Namespace) -> Options:
    options = QUICK if args.quick else Options()
    changes: dict[str, Any] = {}
    for name in (
        "messages",
        "seconds",
        "clients",
        "workers",
        "concurrency",
        "search_messages",
        "grpc_channels",
    ):
        if getattr(args, name) is not None:
            changes[name] = getattr(args, name)
    if args.backlog_sizes:
        changes["backlog_sizes"] = tuple(sorted(int(s) for s in args.backlog_sizes.split(",")))
    settings: dict[str, str] = {}
    for item in args.settings:
        name, sep, value = item.partition("=")
        if not sep:
            raise SystemExit(f"--set wants NAME=VALUE, not {item!r}")
        settings[name.strip().lower()] = value.strip()
    changes["settings"] = settings
    return replace(options, **changes)


def _interrupt(signum: int, _frame: FrameType | None) -> None:
    # SIGTERM takes the same path as Ctrl-C: every `finally` and `with` below cleans up.
    raise KeyboardInterrupt(f"signal {signum}")


def _commit() -> str:
    """The code measured: ``git describe --always --dirty`` of the repository, now.

    Asked again as each scenario starts: its processes import the code as it is then.
    """
    done = subprocess.run(
        ["git", "describe", "--always", "--dirty"], cwd=REPO, capture_output=True, text=True, check=False
    )
    return done.stdout.strip() or "unknown"


class Output:
    """JSON lines to stdout and to the results file, as they come; each names the commit measured
    (:attr:`commit`, which the runner updates as each scenario starts)."""

    def __init__(self, path: Path) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        self.file: TextIO = path.open("w", encoding="utf-8")
        self.lines: list[dict[str, Any]] = []
        self.commit = _commit()

    def emit(self, line: dict[str, Any]) -> None:
        line = {**line, "commit": self.commit}
        text = json.dumps(line)
        print(text, flush=True)
        self.file.write(text + "\n")
        self.file.flush()
        self.lines.append(line)

    def close(self) -> None:
        self.file.close()


def _run_one(
    name: str, scenario: Scenario, kind: str, options: Options, args: argparse.Namespace
) -> list[dict[str, Any]]:
    with Workspace(kind, keep=args.keep) as ws:
        profiler = Profiler(ws.processes, f"{name}-{kind}", args.profile)
        return asyncio.run(scenario(ws, options, profiler))


def _cell(line: dict[str, Any], key: str, width: int) -> str:
    value = line.get(key)
    return f"{'-' if value is None else value:>{width}}"


def _summary(lines: list[dict[str, Any]]) -> str:
    """The figures as a table, for people (stderr)."""
    header = ("scenario", "database", "messages", "msg/s", "p50 ms", "p99 ms", "RSS MB")
    rows = ["{:14} {:16} {:>9} {:>9} {:>8} {:>8} {:>7}  met".format(*header)]
    for line in lines:
        if "skipped" in line or "error" in line:
            state = f"skipped: {line['skipped']}" if "skipped" in line else "ERROR"
            rows.append(f"{line['scenario']:14} {line.get('database') or '-':16} {state}")
            continue
        cells = [_cell(line, key, width) for key, width in _COLUMNS]
        met = line.get("met")
        label = line["database"]
        for detail in ("size", "transport"):
            if detail in line:
                label += f" {line[detail]}"
        rows.append(f"{line['scenario']:14} {label:16} {' '.join(cells)}  {'' if met is None else met}")
    return "\n".join(rows)


_COLUMNS = (("messages", 9), ("messages_per_s", 9), ("p50_ms", 8), ("p99_ms", 8), ("peak_rss_mb", 7))


def main(argv: Sequence[str] | None = None) -> int:
    args = _parse(argv)
    options = _options(args)
    names = args.scenario or list(SCENARIOS)
    kinds = ["sqlite", "postgres"] if args.database == "both" else [args.database]
    signal.signal(signal.SIGTERM, _interrupt)
    output = Output(args.output)
    print(
        f"bench: {', '.join(names)} on {', '.join(kinds)}; commit {output.commit}; "
        f"python {platform.python_version()}; {options}",
        file=sys.stderr,
    )
    failed = False
    try:
        postgres_problem = postgres_unavailable() if "postgres" in kinds else None
        for name in names:
            scenario = SCENARIOS[name]
            if scenario is None:
                output.emit({"scenario": name, "skipped": "no batch endpoint yet"})
                continue
            for kind in kinds:
                if kind == "postgres" and postgres_problem is not None:
                    output.emit({"scenario": name, "database": kind, "error": postgres_problem})
                    failed = True
                    continue
                output.commit = _commit()
                print(f"bench: {name} on {kind} at {output.commit} ...", file=sys.stderr)
                started = time.monotonic()
                try:
                    lines = _run_one(name, scenario, kind, options, args)
                except BenchError as exc:
                    lines = [{"scenario": name, "database": kind, "error": str(exc)}]
                except Exception as exc:
                    traceback.print_exc()
                    lines = [{"scenario": name, "database": kind, "error": repr(exc)}]
                for line in lines:
                    output.emit(line)
                    failed = failed or "error" in line
                print(f"bench: {name} on {kind} took {time.monotonic() - started:.0f}s", file=sys.stderr)
    except KeyboardInterrupt:
        print("bench: interrupted; every process and database of the run was cleaned up", file=sys.stderr)
        return 130
    finally:
        output.close()
    print(_summary(output.lines), file=sys.stderr)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
