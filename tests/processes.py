"""Running ``tidings`` commands as real processes: the CLI once, or a server read line by line."""

from __future__ import annotations

import os
import queue
import re
import signal
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

import httpx
import pytest

KEY_LINE = re.compile(r"^\s+(tdg_\S+)\s*$")


def tidings_command() -> list[str]:
    script = Path(sys.executable).with_name("tidings")
    if script.exists():
        return [str(script)]
    return [sys.executable, "-c", "from tidings.cli import main; main()"]


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def clean_env(**extra: str) -> dict[str, str]:
    """This environment without ``TIDINGS_*`` settings, plus ``extra``; and a free port for the
    gRPC API of ``tidings serve``, so that tests' servers never contend for the default 50051."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("TIDINGS_")}
    env["TIDINGS_GRPC_PORT"] = str(free_port())
    env.update(extra)
    return env


def run_cli(
    directory: Path, *args: str, env: dict[str, str] | None = None, input: str | None = None
) -> subprocess.CompletedProcess[str]:
    """``tidings ARGS`` to its end; ``input`` is its standard input (none when not given)."""
    return subprocess.run(
        [*tidings_command(), *args],
        cwd=directory,
        env=env if env is not None else clean_env(),
        input=input,
        stdin=subprocess.DEVNULL if input is None else None,
        capture_output=True,
        text=True,
        timeout=60,
    )


class Served:
    """A long-running ``tidings`` process; its stdout is read line by line on a thread."""

    def __init__(self, directory: Path, args: list[str], env: dict[str, str], port: int | None) -> None:
        """``port``: the HTTP port it is given (``--port``); ``None`` for a command without one
        (``tidings grpc``)."""
        self.port = port or 0
        self.base_url = f"http://127.0.0.1:{port}"
        self.log_path = directory / f"{args[0]}-{port}-{time.monotonic_ns()}.log"
        with self.log_path.open("wb") as log:
            self.process = subprocess.Popen(
                [*tidings_command(), *args, *(["--port", str(port)] if port is not None else [])],
                cwd=directory,
                env=env,
                stdin=subprocess.DEVNULL,
                stdout=subprocess.PIPE,
                stderr=log,
                text=True,
            )
        self.lines: list[str] = []
        self._queue: queue.Queue[str | None] = queue.Queue()
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()

    def _read(self) -> None:
        assert self.process.stdout is not None
        for line in self.process.stdout:
            self._queue.put(line)
        self._queue.put(None)

    def stderr(self) -> str:
        return self.log_path.read_text(errors="replace")

    def next_line(self, timeout: float) -> str | None:
        """The next stdout line; ``None`` at end of output. Fails after ``timeout``."""
        try:
            line = self._queue.get(timeout=timeout)
        except queue.Empty:
            pytest.fail(f"no output within {timeout}s; stdout so far: {self.lines}\n{self.stderr()}")
        if line is not None:
            self.lines.append(line)
        return line

    def wait_for_key(self, timeout: float = 30) -> str:
        deadline = time.monotonic() + timeout
        while True:
            line = self.next_line(max(0.01, deadline - time.monotonic()))
            if line is None:
                pytest.fail(f"exited ({self.process.wait()}) without printing a key:\n{self.stderr()}")
            found = KEY_LINE.match(line)
            if found:
                return found.group(1)

    def wait_healthy(self, timeout: float = 30) -> None:
        deadline = time.monotonic() + timeout
        while True:
            if self.process.poll() is not None:
                pytest.fail(f"exited with {self.process.returncode}:\n{self.stderr()}")
            try:
                if httpx.get(self.base_url + "/healthz", timeout=2).status_code == 200:
                    return
            except httpx.TransportError:
                pass
            if time.monotonic() > deadline:
                pytest.fail(f"not healthy within {timeout}s:\n{self.stderr()}")
            time.sleep(0.05)

    def terminate(self, timeout: float = 15) -> tuple[int, float]:
        """SIGTERM; the exit code and how long it took. The rest of stdout is read too."""
        started = time.monotonic()
        self.process.send_signal(signal.SIGTERM)
        try:
            code = self.process.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()
            pytest.fail(f"still running {timeout}s after SIGTERM:\n{self.stderr()}")
        took = time.monotonic() - started
        while self.next_line(timeout=5) is not None:
            pass
        return code, took

    def close(self) -> None:
        if self.process.poll() is None:
            self.process.kill()
        self.process.wait()
        self._reader.join(timeout=5)
        if self.process.stdout is not None:
            self.process.stdout.close()
