"""The test suite's own watch (``tests/stall_watch.py``): a blocked event loop and a slow wait
are recorded for the summary, with where they were. Each test takes back what it caused, so the
summary shows only real stalls."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Iterator

import pytest
from tests import stall_watch
from tests.live import eventually


@pytest.fixture
def taken_back() -> Iterator[None]:
    """What the watch records during the test is taken out of the summary afterwards."""
    before = len(stall_watch._watch.stalls)
    yield
    del stall_watch._watch.stalls[before:]


async def test_a_blocked_loop_is_recorded_with_the_call_that_blocked_it(
    request: pytest.FixtureRequest, taken_back: None
) -> None:
    await asyncio.sleep(0)
    time.sleep(stall_watch.STALL_SECONDS + 1.0)  # the deliberate stall
    # The watch notes the stall once the loop runs again.
    deadline = time.monotonic() + 5
    while len(stall_watch._watch.stalls) == 0 or request.node.nodeid not in stall_watch._watch.stalls[-1]:
        assert time.monotonic() < deadline, "the stall was not recorded"
        await asyncio.sleep(0.05)
    entry = stall_watch._watch.stalls[-1]
    assert "the event loop ran nothing for" in entry
    assert "time.sleep(stall_watch.STALL_SECONDS + 1.0)" in entry


async def test_a_slow_wait_is_recorded_with_what_each_task_waited_on(
    request: pytest.FixtureRequest, taken_back: None, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(stall_watch, "SLOW_WAIT_SECONDS", 0.2)
    release = asyncio.Event()

    async def held() -> None:
        await release.wait()

    other = asyncio.create_task(held(), name="the-held-task")
    rounds = [0]

    async def read() -> int:
        await asyncio.sleep(0.05)
        rounds[0] += 1
        return rounds[0]

    await eventually(read, lambda n: n >= 8, what="eight rounds")
    release.set()
    await other
    entries = [e for e in stall_watch._watch.stalls if request.node.nodeid in e]
    assert len(entries) == 1, entries
    assert "waiting for eight rounds took over" in entries[0]
    assert "task the-held-task:" in entries[0]
    assert "in held" in entries[0]
