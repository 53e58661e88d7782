"""What every scenario needs: processes it starts and always stops, a fresh database, settings.

A :class:`Workspace` is one scenario run on one database: a temporary directory (configuration,
logs, a SQLite file), a fresh database (a new SQLite file, or a new PostgreSQL database created
for the run and dropped afterwards) and the processes the scenario started. Leaving it, by success,
failure or Ctrl-C, stops every process (SIGTERM, then SIGKILL) and drops the database. Each child
also gets ``PR_SET_PDEATHSIG``, so even a runner killed with SIGKILL leaves no process behind.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from types import TracebackType
from typing import Any

import aiohttp
import asyncpg
from sqlalchemy.engine import make_url

from tidings.supervisor import die_with_parent

BENCH_DIR = Path(__file__).resolve().parent
REPO = BENCH_DIR.parent
RESULTS_DIR = BENCH_DIR / "results"
POSTGRES_ADMIN_URL = os.environ.get("BENCH_POSTGRES_URL", "postgresql://postgres@127.0.0.1:5432/postgres")


class BenchError(Exception):
    """A scenario could not finish; its line reports this message as ``error``."""


def tidings_command() -> list[str]:
    """The ``tidings`` console script of the interpreter running the benchmarks."""
    script = Path(sys.executable).with_name("tidings")
    if script.exists():
        return [str(script)]
    return [sys.executable, "-c", "from tidings.cli import main; main()"]


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


# -- measurements of other processes ------------------------------------------------------------


def peak_rss_mb(pid: int) -> float | None:
    """The peak resident set size (``VmHWM``) of a running process, in MB."""
    try:
        status = Path(f"/proc/{pid}/status").read_text()
    except OSError:
        return None
    for line in status.splitlines():
        if line.startswith("VmHWM:"):
            return round(int(line.split()[1]) / 1024, 1)
    return None


_CLOCK_TICKS = os.sysconf("SC_CLK_TCK")


def cpu_seconds(pid: int, thread: int | None = None) -> float | None:
    """User plus system CPU time a running process (or one of its threads) has used so far."""
    path = f"/proc/{pid}/task/{thread}/stat" if thread is not None else f"/proc/{pid}/stat"
    try:
        stat = Path(path).read_text()
    except OSError:
        return None
    # The command name (field 2) may hold spaces; the fields after its closing parenthesis don't.
    fields = stat[stat.rindex(")") + 2 :].split()
    return (int(fields[11]) + int(fields[12])) / _CLOCK_TICKS


def percentile(values: Sequence[float], q: float) -> float | None:
    """The nearest-rank ``q`` quantile (0 < q <= 1) of ``values``; ``None`` when there are none."""
    if not values:
        return None
    ordered = sorted(values)
    rank = max(1, min(len(ordered), round(q * len(ordered) + 0.5)))
    return ordered[rank - 1]


# -- processes ----------------------------------------------------------------------------------


@dataclass
class Running:
    name: str
    process: subprocess.Popen[bytes]
    log: Path
    cpu_at_mark: float = 0.0
    main_thread_cpu_at_mark: float = 0.0


class Processes:
    """Child processes with their output in log files; :meth:`close` stops whatever still runs."""

    def __init__(self, directory: Path) -> None:
        self.directory = directory
        self.running: dict[str, Running] = {}

    def start(self, name: str, argv: list[str], env: dict[str, str]) -> subprocess.Popen[bytes]:
        """Start ``argv`` with stdout and stderr in ``NAME.log``, in its own session.

        Its own session keeps a terminal's Ctrl-C away from it: the runner stops it in order.
        """
        if name in self.running:
            raise ValueError(f"a process named {name} is already running")
        log = self.directory / f"{name}.log"
        with log.open("wb") as out:
            process = subprocess.Popen(
                argv,
                env=env,
                cwd=self.directory,
                stdin=subprocess.DEVNULL,
                stdout=out,
                stderr=subprocess.STDOUT,
                start_new_session=True,
                preexec_fn=die_with_parent,
            )
        self.running[name] = Running(name, process, log)
        return process

    def start_tidings(self, name: str, args: list[str], env: dict[str, str]) -> subprocess.Popen[bytes]:
        return self.start(name, [*tidings_command(), *args], env)

    def start_python(self, name: str, args: list[str], env: dict[str, str]) -> subprocess.Popen[bytes]:
        return self.start(name, [sys.executable, *args], env)

    def pid(self, name: str) -> int:
        return self.running[name].process.pid

    def output(self, name: str) -> str:
        return self.running[name].log.read_text(errors="replace")

    def tail(self, name: str, lines: int = 20) -> str:
        return "\n".join(self.output(name).splitlines()[-lines:])

    def check_alive(self, *names: str) -> None:
        """Raise :class:`BenchError` with its log's tail when one of ``names`` has exited."""
        for name in names:
            process = self.running[name].process
            if process.poll() is not None:
                raise BenchError(f"{name} exited with {process.returncode}:\n{self.tail(name)}")

    async def wait_for_line(self, name: str, text: str, timeout: float = 60) -> str:
        """Wait until ``NAME.log`` has a line containing ``text``; return that line."""
        deadline = time.monotonic() + timeout
        while True:
            for line in self.output(name).splitlines():
                if text in line:
                    return line
            self.check_alive(name)
            if time.monotonic() > deadline:
                raise BenchError(f"{name} did not log {text!r} within {timeout:.0f}s:\n{self.tail(name)}")
            await asyncio.sleep(0.02)

    async def wait_exit(self, name: str, timeout: float) -> int:
        """Wait for ``name`` to exit by itself; kill it and fail after ``timeout``."""
        process = self.running[name].process
        deadline = time.monotonic() + timeout
        while process.poll() is None:
            if time.monotonic() > deadline:
                self._kill(process)
                raise BenchError(f"{name} did not finish within {timeout:.0f}s:\n{self.tail(name)}")
            await asyncio.sleep(0.05)
        return process.returncode

    def mark_cpu(self, *names: str) -> None:
        """Start counting CPU time for ``names`` from now (see :meth:`cpu_since_mark`)."""
        for name in names:
            pid = self.pid(name)
            self.running[name].cpu_at_mark = cpu_seconds(pid) or 0.0
            self.running[name].main_thread_cpu_at_mark = cpu_seconds(pid, pid) or 0.0

    def cpu_since_mark(self, name: str) -> dict[str, float] | None:
        """CPU seconds since :meth:`mark_cpu`: the process's, and its main thread's alone.

        In tidings the main thread runs the event loop; on SQLite the others are aiosqlite's
        connection threads, which run SQLite's C code.
        """
        pid = self.pid(name)
        used, main = cpu_seconds(pid), cpu_seconds(pid, pid)
        if used is None or main is None:
            return None
        running = self.running[name]
        return {
            "total": round(used - running.cpu_at_mark, 2),
            "main_thread": round(main - running.main_thread_cpu_at_mark, 2),
        }

    def peak_rss_mb(self, name: str) -> float | None:
        return peak_rss_mb(self.pid(name))

    def error_lines(self, name: str) -> list[str]:
        """Lines a tidings process logged at ERROR or above (``KeyValueFormatter`` layout)."""
        return [line for line in self.output(name).splitlines() if " ERROR " in line or " CRITICAL " in line]

    def stop(self, name: str, timeout: float = 30, sig: int = signal.SIGTERM) -> int:
        """Signal ``name`` (SIGTERM: a clean stop) and wait; SIGKILL after ``timeout`` seconds."""
        process = self.running[name].process
        if process.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                process.send_signal(sig)
            try:
                process.wait(timeout)
            except subprocess.TimeoutExpired:
                self._kill(process)
        return process.returncode

    @staticmethod
    def _kill(process: subprocess.Popen[bytes]) -> None:
        with contextlib.suppress(ProcessLookupError):
            process.kill()
        process.wait()

    def close(self, timeout: float = 15) -> None:
        """Stop every process still running: SIGTERM to all, then SIGKILL to stragglers."""
        alive = [r.process for r in self.running.values() if r.process.poll() is None]
        for process in alive:
            with contextlib.suppress(ProcessLookupError):
                process.send_signal(signal.SIGTERM)
        deadline = time.monotonic() + timeout
        for process in alive:
            try:
                process.wait(max(0.1, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                self._kill(process)


# -- databases ----------------------------------------------------------------------------------


def _asyncpg_dsn(url: str) -> str:
    return make_url(url).set(drivername="postgresql").render_as_string(hide_password=False)


async def _admin(sql: str) -> None:
    conn = await asyncpg.connect(_asyncpg_dsn(POSTGRES_ADMIN_URL), timeout=5)
    try:
        await conn.execute(sql)
    finally:
        await conn.close()


def postgres_unavailable() -> str | None:
    """Why PostgreSQL cannot be used, or ``None`` when it can."""
    try:
        asyncio.run(_admin("SELECT 1"))
    except Exception as exc:
        return f"PostgreSQL at {POSTGRES_ADMIN_URL} is unreachable: {exc!r}"
    return None


@dataclass
class Workspace:
    """One scenario run on one database; use it as a context manager (see the module docstring)."""

    kind: str
    """``sqlite`` or ``postgres``."""
    keep: bool = False
    """Keep the directory (logs, configuration) afterwards, for a look at what happened."""
    directory: Path = field(init=False)
    database_url: str = field(init=False)
    processes: Processes = field(init=False)
    _pg_name: str | None = field(init=False, default=None)

    def __enter__(self) -> Workspace:
        self.directory = Path(tempfile.mkdtemp(prefix=f"tidings-bench-{self.kind}-"))
        self.processes = Processes(self.directory)
        if self.kind == "sqlite":
            self.database_url = f"sqlite:///{self.directory / 'bench.db'}"
        elif self.kind == "postgres":
            self._pg_name = f"tidings_bench_{secrets.token_hex(6)}"
            try:
                asyncio.run(_admin(f'CREATE DATABASE "{self._pg_name}"'))
            except BaseException:
                self._pg_name = None
                self._remove_directory()
                raise
            url = make_url(POSTGRES_ADMIN_URL).set(database=self._pg_name)
            self.database_url = url.render_as_string(hide_password=False)
        else:
            raise ValueError(f"unknown database kind {self.kind!r}")
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        try:
            self.processes.close()
        finally:
            try:
                if self._pg_name is not None:
                    asyncio.run(_admin(f'DROP DATABASE IF EXISTS "{self._pg_name}" WITH (FORCE)'))
            finally:
                self._remove_directory()

    def _remove_directory(self) -> None:
        if self.keep:
            print(f"bench: kept {self.directory}", file=sys.stderr)
        else:
            shutil.rmtree(self.directory, ignore_errors=True)

    # -- tidings configuration ------------------------------------------------------------------

    def service_env(
        self,
        *,
        api_port: int,
        fake_url: str | None = "http://127.0.0.1:9",
        webhook_secret: str = "bench-secret",
        concurrency: int = 100,
        fake_options: Mapping[str, float] | None = None,
        settings: Mapping[str, str] | None = None,
    ) -> dict[str, str]:
        """The environment of a ``tidings`` process of this run.

        One provider, ``fake``, over HTTP to the fake provider server at ``fake_url`` (the
        default address is never used: it is there for processes that send nothing but must
        verify signed receipts, which the fake adapter does only with ``url`` set); with
        ``fake_url`` ``None``, the fake simulates sends and receipts in the process that sends,
        as its ``fake_options`` (``receipt_delay_ms``, ``latency_ms``, …) say. Everything else is
        tidings' own default unless ``settings`` (``NAME: VALUE``, as ``TIDINGS_<NAME>``) says
        otherwise.
        """
        config = self.directory / "tidings.toml"
        lines = ["[providers.fake]", 'kind = "fake"']
        if fake_url is not None:
            lines.append(f'url = "{fake_url}"')
        lines += [f'webhook_secret = "{webhook_secret}"', f"concurrency = {concurrency}"]
        lines += [f"{name} = {value}" for name, value in (fake_options or {}).items()]
        config.write_text("\n".join(lines) + "\n", encoding="utf-8")
        env = {k: v for k, v in os.environ.items() if not k.startswith("TIDINGS_")}
        env.update(
            TIDINGS_CONFIG=str(config),
            TIDINGS_DATABASE_URL=self.database_url,
            TIDINGS_PUBLIC_URL=f"http://127.0.0.1:{api_port}",
            TIDINGS_LOG_LEVEL="INFO",
            # A port of its own for the gRPC API of `tidings serve` (scenarios that measure it
            # read it from here), so that processes of a run never contend for the default.
            TIDINGS_GRPC_PORT=str(free_port()),
            # One process per `tidings api` / `serve`: the scenarios measure one process (or
            # start several themselves); serve_default measures the supervised default.
            TIDINGS_WORKERS="1",
        )
        env.update({f"TIDINGS_{name.upper()}": value for name, value in (settings or {}).items()})
        return env

    def run_tidings(
        self, args: list[str], env: dict[str, str], timeout: float = 120, input: str | None = None
    ) -> str:
        """Run a short ``tidings`` command to completion (``input`` on its stdin); its stdout."""
        done = subprocess.run(
            [*tidings_command(), *args],
            env=env,
            cwd=self.directory,
            input=input,
            capture_output=True,
            text=True,
            timeout=timeout,
            check=False,
            preexec_fn=die_with_parent,
        )
        if done.returncode != 0:
            raise BenchError(f"tidings {' '.join(args)} failed ({done.returncode}):\n{done.stderr}")
        return done.stdout

    def migrate(self, env: dict[str, str]) -> None:
        self.run_tidings(["migrate"], env)

    def create_key(self, env: dict[str, str]) -> str:
        """A new API key's secret (``tidings keys create`` prints it as its last line)."""
        return self.run_tidings(["keys", "create", "bench"], env).strip().splitlines()[-1]


async def wait_healthy(port: int, processes: Processes, name: str, timeout: float = 60) -> None:
    """Wait until the API on ``port`` answers ``/healthz`` with 200."""
    deadline = time.monotonic() + timeout
    async with aiohttp.ClientSession() as session:
        while True:
            with contextlib.suppress(aiohttp.ClientError):
                async with session.get(f"http://127.0.0.1:{port}/healthz") as response:
                    if response.status == 200:
                        return
            processes.check_alive(name)
            if time.monotonic() > deadline:
                raise BenchError(
                    f"{name} did not become healthy within {timeout:.0f}s:\n{processes.tail(name)}"
                )
            await asyncio.sleep(0.05)


def read_json_file(path: Path) -> Any:
    return json.loads(path.read_text())
