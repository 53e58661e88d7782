"""A watch on the test's event loop: when it runs no callback for ``STALL_SECONDS``, the main
thread's stack is recorded, and the session's summary prints every stall with the test it hit.
A wait for a state that takes longer than ``SLOW_WAIT_SECONDS`` (:class:`SlowWait`) is recorded
too, with what every task of the loop was waiting on at that moment.

Live tests run the service and its client in one loop, so a callback that blocks (a synchronous
call, a lock taken without ``await``) stalls both, and the test fails later with a timeout that
names neither. The stack taken during the stall names the culprit.

The loop is found from the main thread's stack (the ``self`` of ``BaseEventLoop._run_once``),
so nothing has to register it; a watcher thread pings it with ``call_soon_threadsafe``, which
wakes an idle loop at once, and samples the main thread while a ping is unanswered.
"""

from __future__ import annotations

import asyncio
import sys
import threading
import time
import traceback
from types import FrameType

import pytest

STALL_SECONDS = 2.0
INTERVAL = 0.25
SLOW_WAIT_SECONDS = 4.0


def _running_loop(frame: FrameType | None) -> asyncio.AbstractEventLoop | None:
    while frame is not None:
        if frame.f_code.co_name == "_run_once":
            candidate = frame.f_locals.get("self")
            if isinstance(candidate, asyncio.AbstractEventLoop):
                return candidate
        frame = frame.f_back
    return None


def _callback_stack(frame: FrameType | None) -> str:
    """The stack of the callback the loop is running (what lies below it is the same every time)."""
    if frame is None:
        return "(no frame)\n"
    summary = traceback.extract_stack(frame)
    runs = [i for i, f in enumerate(summary) if f.name == "_run" and f.filename.endswith("asyncio/events.py")]
    return "".join(traceback.format_list(summary[runs[-1] + 1 :] if runs else summary))


class StallWatch:
    def __init__(self) -> None:
        self.main = threading.main_thread().ident
        self.test = "(no test)"
        self.stalls: list[str] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._watch, name="stall-watch", daemon=True)

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(timeout=2)

    def _main_frame(self) -> FrameType | None:
        return sys._current_frames().get(self.main or -1)

    def _watch(self) -> None:
        answered = threading.Event()
        while not self._stop.wait(INTERVAL):
            loop = _running_loop(self._main_frame())
            if loop is None or loop.is_closed():
                continue
            answered.clear()
            sent = time.monotonic()
            try:
                loop.call_soon_threadsafe(answered.set)
            except RuntimeError:  # closed between the check and the call
                continue
            if answered.wait(STALL_SECONDS):
                continue
            frame = self._main_frame()
            if _running_loop(frame) is not loop:
                continue  # the loop stopped (its test ended) before the ping ran: no stall
            stack = _callback_stack(frame)
            test = self.test
            # Wait for the end of the stall (or of the loop) to say how long it was.
            while not answered.wait(INTERVAL) and not self._stop.is_set():
                if _running_loop(self._main_frame()) is not loop:
                    break
            took = time.monotonic() - sent
            self.stalls.append(f"{test}: the event loop ran nothing for {took:.1f}s; it was in:\n{stack}")


_watch = StallWatch()


def _task_stacks() -> str:
    """Where each task of the running loop waits: the innermost frames of its chain of awaits."""
    lines: list[str] = []
    for task in asyncio.all_tasks():
        lines.append(f"  task {task.get_name()}:\n")
        for frame in task.get_stack()[-8:]:
            code = frame.f_code
            lines.append(f"    {code.co_filename}:{frame.f_lineno} in {code.co_name}\n")
    return "".join(lines)


class SlowWait:
    """Call :meth:`check` on each round of a wait for a state: once the wait has lasted
    ``SLOW_WAIT_SECONDS``, the tasks' stacks are recorded for the session's summary (once). The
    wait goes on to its own deadline: a slow machine is not a failure, but it is shown."""

    def __init__(self, what: str) -> None:
        self.what = what
        self.started = time.monotonic()
        self.noted = False

    def check(self) -> None:
        took = time.monotonic() - self.started
        if self.noted or took < SLOW_WAIT_SECONDS:
            return
        self.noted = True
        tasks = _task_stacks()
        _watch.stalls.append(
            f"{_watch.test}: waiting for {self.what} took over {took:.1f}s; the tasks were at:\n{tasks}"
        )


def pytest_sessionstart(session: pytest.Session) -> None:
    _watch.start()


@pytest.hookimpl(wrapper=True)
def pytest_runtest_protocol(item: pytest.Item, nextitem: pytest.Item | None) -> object:
    _watch.test = item.nodeid
    try:
        return (yield)
    finally:
        _watch.test = "(between tests)"


def pytest_terminal_summary(terminalreporter: pytest.TerminalReporter) -> None:
    _watch.stop()
    if not _watch.stalls:
        return
    terminalreporter.section(
        f"event loop stalls over {STALL_SECONDS:g}s, and waits for a state over {SLOW_WAIT_SECONDS:g}s"
    )
    for stall in _watch.stalls:
        terminalreporter.write(stall + "\n")
