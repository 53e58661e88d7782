"""``tidings serve`` and ``tidings api`` on every core: a supervising process and its children.

The supervisor migrates the database, prints the first API key (once), binds the HTTP port and
starts the children: ``http_processes`` processes of ``tidings api`` that all accept on that one
socket, and, for ``serve``, one ``tidings worker`` that also serves the gRPC API. API processes
wake the worker through a UNIX datagram socket when they accept a message (on PostgreSQL,
``NOTIFY`` does it as well). The processes share a directory for ``GET /metrics``, so that any of
them answers for all.

A child that exits while nothing asked it to is logged and started again, at once if it had run
a while, after a growing pause if it keeps dying young. SIGTERM or SIGINT is passed to every
child; the supervisor waits for them to drain and exits 0. Children get SIGTERM if the supervisor
dies, however it dies.
"""

from __future__ import annotations

import asyncio
import contextlib
import ctypes
import logging
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

log = logging.getLogger(__name__)

STARTUP_FAILED = 2
"""The exit code of a tidings command that could not start (its settings, the database, a port):
a child that ends so the first time is not started again, and the group stops."""
STOP_SECONDS = 30.0
"""How long the children have to drain after SIGTERM before they are killed."""
YOUNG_SECONDS = 10.0
"""A child that dies sooner than this after its start is restarted after a pause."""
MAX_PAUSE = 30.0


_PR_SET_PDEATHSIG = 1
# Resolved once, here: what runs in the child between fork and exec must not load libraries.
# Linux has prctl; elsewhere a child outlives a supervisor killed with SIGKILL.
try:
    _prctl: Any = ctypes.CDLL(None, use_errno=True).prctl
except (OSError, AttributeError):  # pragma: no cover - not Linux
    _prctl = None


def die_with_parent() -> None:  # pragma: no cover - runs in the child before exec
    """A ``preexec_fn``: on Linux the child gets SIGTERM when the process that started it dies,
    however it dies."""
    if _prctl is not None:
        _prctl(_PR_SET_PDEATHSIG, signal.SIGTERM, 0, 0, 0)


def children_of(pid: int) -> dict[int, str]:
    """The processes whose parent is ``pid`` (a supervisor's HTTP and worker processes), by pid,
    with their command lines; read from ``/proc`` (Linux)."""
    found: dict[int, str] = {}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            # The parent is the second field after the command name, which may hold ") ".
            parent = int((entry / "stat").read_text().rsplit(")", 1)[1].split()[1])
            if parent == pid:
                found[int(entry.name)] = (entry / "cmdline").read_bytes().replace(b"\0", b" ").decode()
        except (OSError, IndexError, ValueError):
            continue
    return found


@dataclass
class Child:
    """One supervised process: its name (``http-1``, ``worker``) and its command's arguments."""

    name: str
    args: list[str]
    process: subprocess.Popen[bytes] | None = None
    started_at: float = 0.0
    young_deaths: int = 0
    restarts: int = 0
    due_at: float = 0.0
    pass_fds: tuple[int, ...] = field(default_factory=tuple)


class Supervisor:
    def __init__(self, children: list[Child], env: dict[str, str]) -> None:
        self.children = children
        self.env = env

    def _start(self, child: Child) -> None:
        child.process = subprocess.Popen(
            [sys.executable, "-m", "tidings", *child.args],
            env=self.env,
            pass_fds=child.pass_fds,
            preexec_fn=die_with_parent,
        )
        child.started_at = time.monotonic()
        log.info(
            "started %s (pid %d)",
            child.name,
            child.process.pid,
            extra={"action": "supervise", "child": child.name, "pid": child.process.pid},
        )

    def _exited(self, child: Child, code: int) -> None:
        lived = time.monotonic() - child.started_at
        child.young_deaths = child.young_deaths + 1 if lived < YOUNG_SECONDS else 0
        pause = min(MAX_PAUSE, 0.5 * 2 ** (child.young_deaths - 1)) if child.young_deaths else 0.0
        child.due_at = time.monotonic() + pause
        child.restarts += 1
        child.process = None
        log.error(
            "%s exited with code %d after %.1f s; starting it again in %.1f s",
            child.name,
            code,
            lived,
            pause,
            extra={"action": "supervise", "child": child.name, "exit_code": code, "restart_in": pause},
        )

    async def run(self, stop: asyncio.Event) -> int:
        """Keep every child running until ``stop`` is set; then stop them all. 0 when each
        stopped within :data:`STOP_SECONDS` of SIGTERM."""
        for child in self.children:
            self._start(child)
        while not stop.is_set():
            now = time.monotonic()
            for child in self.children:
                if child.process is None:
                    if now >= child.due_at:
                        self._start(child)
                    continue
                code = child.process.poll()
                if code is None:
                    continue
                if code == STARTUP_FAILED and child.restarts == 0:
                    log.error(
                        "%s could not start (its error is above); stopping",
                        child.name,
                        extra={"action": "supervise", "child": child.name, "exit_code": code},
                    )
                    child.process = None
                    await self._stop_all()
                    return STARTUP_FAILED
                self._exited(child, code)
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(0.2):
                    await stop.wait()
        return await self._stop_all()

    async def _stop_all(self) -> int:
        running = [c for c in self.children if c.process is not None and c.process.poll() is None]
        for child in running:
            assert child.process is not None
            with contextlib.suppress(ProcessLookupError):
                child.process.send_signal(signal.SIGTERM)
        deadline = time.monotonic() + STOP_SECONDS
        failed = 0
        for child in running:
            assert child.process is not None
            while child.process.poll() is None and time.monotonic() < deadline:
                await asyncio.sleep(0.05)
            if child.process.poll() is None:
                log.error(
                    "%s did not stop within %.0f s of SIGTERM; killing it",
                    child.name,
                    STOP_SECONDS,
                    extra={"action": "supervise", "child": child.name},
                )
                child.process.kill()
                child.process.wait()
                failed += 1
        return 1 if failed else 0


@contextlib.contextmanager
def shared_directory() -> Iterator[Path]:
    """A private directory the children share (the wake-up socket, the metrics), removed after."""
    made = Path(tempfile.mkdtemp(prefix="tidings-"))
    try:
        yield made
    finally:
        shutil.rmtree(made, ignore_errors=True)


def child_env(directory: Path, metrics_dir: str | None) -> dict[str, str]:
    """The children's environment: this one, each child one process (``TIDINGS_WORKERS=1``), and a
    metrics directory of the group's own unless one is configured."""
    env = dict(os.environ)
    env["TIDINGS_WORKERS"] = "1"
    if metrics_dir is None:
        metrics = directory / "metrics"
        metrics.mkdir()
        env["TIDINGS_METRICS_DIR"] = str(metrics)
    return env
