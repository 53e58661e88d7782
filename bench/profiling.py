"""Optional sampling profiles (``--profile``): py-spy attached to the service processes.

py-spy samples a running process from outside (``py-spy record --pid``) while the scenario
measures it. Two choices make its samples mean something here:

- it pauses the process for each sample: with ``--nonblocking`` it fails to read the event loop
  thread's fast-changing stack so often that the samples it keeps misrepresent the process;
- ``--gil``: only the thread holding the GIL is sampled, so samples are Python's CPU time (and
  C code that keeps the GIL, like uvloop's loop and asyncpg's protocol). Without it, aiosqlite's
  threads sleeping in SQLite's busy handler (``clock_nanosleep``) count as busy. SQLite's own C
  work releases the GIL and is not sampled: the result lines' ``cpu_s`` split (main thread vs
  the others) shows how much there is.

The raw output (collapsed stacks) is kept in ``bench/results/profiles/`` next to a summary: the
share of samples by package of the top frame (C code counts to the Python function that called
it, so ``uvloop / event loop`` is the loop itself), the top functions by *self* samples, and
tidings' own functions by *total* samples (anywhere on the stack). ``GIL held`` is samples /
(rate x seconds). Figures from a profiled run are lower than from an unprofiled one; use them
for where the time goes, not for how much there is.
"""

from __future__ import annotations

import re
import shutil
import signal
import sys
import time
from collections import Counter
from dataclasses import dataclass
from pathlib import Path

from harness import REPO, RESULTS_DIR, Processes

PROFILE_DIR = RESULTS_DIR / "profiles"
RATE = 100
"""Samples per second."""
_FRAME = re.compile(r"^(?P<function>.*) \((?P<file>[^()]*?)(?::(?P<line>\d+))?\)$")


def py_spy() -> str | None:
    """The py-spy executable next to the interpreter, or on PATH."""
    beside = Path(sys.executable).with_name("py-spy")
    if beside.exists():
        return str(beside)
    return shutil.which("py-spy")


@dataclass
class _Attached:
    target: str
    raw: Path
    started: float


class Profiler:
    """Attaches py-spy to processes of one scenario run; :meth:`finish` writes the summaries."""

    def __init__(self, processes: Processes, label: str, enabled: bool) -> None:
        self.processes = processes
        self.label = label
        self.enabled = enabled
        self.attached: dict[str, _Attached] = {}
        if enabled and py_spy() is None:
            raise RuntimeError("--profile needs py-spy: .venv/bin/pip install py-spy")

    def attach(self, *names: str) -> None:
        """Sample the started processes ``names``."""
        self.attach_pids({name: self.processes.pid(name) for name in names})

    def attach_pids(self, pids: dict[str, int]) -> None:
        """Sample processes by pid (a supervisor's children), each under its name."""
        if not self.enabled:
            return
        executable = py_spy()
        assert executable is not None
        PROFILE_DIR.mkdir(parents=True, exist_ok=True)
        for name, pid in pids.items():
            raw = PROFILE_DIR / f"{self.label}-{name}.txt"
            self.processes.start(
                f"py-spy-{name}",
                [
                    executable,
                    "record",
                    "--pid",
                    str(pid),
                    "--rate",
                    str(RATE),
                    "--format",
                    "raw",
                    "--gil",
                    "--output",
                    str(raw),
                ],
                {"PATH": "/usr/bin:/bin"},
            )
            self.attached[name] = _Attached(name, raw, time.monotonic())

    def finish(self) -> dict[str, str]:
        """Stop the samplers (SIGINT makes py-spy write its file); summary file per process."""
        summaries: dict[str, str] = {}
        for name, attached in self.attached.items():
            seconds = time.monotonic() - attached.started
            self.processes.stop(f"py-spy-{name}", timeout=30, sig=signal.SIGINT)
            if not attached.raw.exists():
                print(
                    f"bench: py-spy wrote no profile for {name}:\n{self.processes.tail(f'py-spy-{name}')}",
                    file=sys.stderr,
                )
                continue
            text = summarize(attached.raw, seconds, title=f"{self.label} {name}")
            path = attached.raw.with_suffix(".summary.txt")
            path.write_text(text)
            summaries[name] = str(path.relative_to(REPO))
            print(text, file=sys.stderr)
        self.attached.clear()
        return summaries


_PACKAGES = (
    ("aiosqlite/core.py", "aiosqlite thread (sqlite3 C)"),
    ("asyncio/runners.py", "uvloop / event loop"),
    ("tidings/", "tidings"),
    ("sqlalchemy/", "sqlalchemy"),
    ("asyncpg/", "asyncpg"),
    ("aiosqlite/", "aiosqlite"),
    ("starlette/", "fastapi/starlette"),
    ("fastapi/", "fastapi/starlette"),
    ("uvicorn/", "uvicorn"),
    ("pydantic", "pydantic"),
    ("aiohttp/", "aiohttp"),
    ("grpc/", "grpc"),
    ("google/protobuf/", "protobuf"),
    ("alembic/", "alembic"),
    ("stdlib/", "stdlib"),
)


def _short(frame: str) -> str:
    """``function (file:line)`` as ``function (package/module.py)``, without the line."""
    match = _FRAME.match(frame)
    if match is None:
        return frame
    file = match["file"]
    for marker in ("site-packages/", "/src/", "/lib/python3"):
        if marker in file:
            file = file.split(marker, 1)[1]
            if marker == "/lib/python3":
                file = "stdlib" + file[file.find("/") :]
            break
    return f"{match['function']} ({file})"


def _package(frame: str) -> str:
    for marker, package in _PACKAGES:
        if marker in frame:
            return package
    return "other"


def summarize(raw: Path, seconds: float, *, title: str, top: int = 20) -> str:
    """The packages and top functions of a py-spy raw profile (see the module docstring)."""
    own: Counter[str] = Counter()
    total: Counter[str] = Counter()
    packages: Counter[str] = Counter()
    samples = 0
    for line in raw.read_text(errors="replace").splitlines():
        stack, _, count_text = line.rpartition(" ")
        if not stack or not count_text.isdigit():
            continue
        count = int(count_text)
        samples += count
        frames = [_short(f) for f in stack.split(";")]
        own[frames[-1]] += count
        packages[_package(frames[-1])] += count
        for frame in set(frames):
            if frame.endswith("py)") and "(tidings/" in frame and "(tidings/cli.py)" not in frame:
                total[frame] += count
    busy = samples / (RATE * seconds) if seconds > 0 else 0.0
    lines = [f"== {title}: {samples} samples in {seconds:.1f}s, GIL held {busy:.0%} of the time"]
    if samples:

        def share(n: int) -> str:
            return f"{100 * n / samples:5.1f}%"

        lines.append("-- by package (top frame)")
        lines.extend(f"{share(n)}  {package}" for package, n in packages.most_common())
        lines.append(f"-- top {top} functions by self samples")
        lines.extend(f"{share(n)}  {frame}" for frame, n in own.most_common(top))
        lines.append(f"-- top {top} tidings functions by total samples (on the stack)")
        lines.extend(f"{share(n)}  {frame}" for frame, n in total.most_common(top))
    return "\n".join(lines) + "\n"
