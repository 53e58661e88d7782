"""The write turn of a SQLite file (``store/writelock.py``): one holder at a time across
processes (two locks on one file stand for two processes: ``flock`` excludes open files, not
processes), handed on when released, never left held by a waiter that was cancelled."""

from __future__ import annotations

import asyncio
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import pytest

from tidings.store import Store
from tidings.store.db import sqlite_file
from tidings.store.writelock import WriteLock, write_lock


async def wait_until(condition: Callable[[], bool], timeout: float = 5) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline
        await asyncio.sleep(0.01)


async def test_one_holder_at_a_time_and_the_next_gets_it_on_release(tmp_path: Path) -> None:
    first, second = WriteLock(tmp_path / "db"), WriteLock(tmp_path / "db")
    order: list[str] = []
    release = asyncio.Event()

    async def hold() -> None:
        async with first.held():
            order.append("first in")
            await release.wait()
            order.append("first out")

    async def wait_turn() -> None:
        async with second.held():
            order.append("second in")

    holder = asyncio.create_task(hold())
    await wait_until(lambda: order == ["first in"])
    waiter = asyncio.create_task(wait_turn())
    await asyncio.sleep(0.2)
    assert order == ["first in"]  # the second waits while the first holds the file
    release.set()
    await asyncio.wait_for(asyncio.gather(holder, waiter), 5)
    assert order == ["first in", "first out", "second in"]
    first.close()
    second.close()


async def test_a_cancelled_waiter_does_not_keep_the_lock(tmp_path: Path) -> None:
    first, second = WriteLock(tmp_path / "db"), WriteLock(tmp_path / "db")
    release = asyncio.Event()
    holding = asyncio.Event()

    async def hold() -> None:
        async with first.held():
            holding.set()
            await release.wait()

    async def wait_turn() -> None:
        async with second.held():
            raise AssertionError("a cancelled waiter ran")

    holder = asyncio.create_task(hold())
    await holding.wait()
    waiter = asyncio.create_task(wait_turn())
    await asyncio.sleep(0.1)
    waiter.cancel()
    with pytest.raises(asyncio.CancelledError):
        await waiter
    release.set()
    await holder
    # The cancelled waiter's thread got the file lock when the holder let go, and gave it back.
    async with asyncio.timeout(5):
        async with first.held():
            pass
    first.close()
    second.close()


async def test_a_task_that_holds_it_may_take_it_again(tmp_path: Path) -> None:
    lock = WriteLock(tmp_path / "db")
    async with asyncio.timeout(5), lock.held(), lock.held():
        pass
    lock.close()


def test_another_process_waits_for_the_turn(tmp_path: Path) -> None:
    """A real second process: it cannot take the file's lock while this one holds it."""
    probe = (
        "import fcntl, os, sys\n"
        "fd = os.open(sys.argv[1], os.O_RDWR)\n"
        "try:\n"
        "    fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)\n"
        "    print('took it')\n"
        "except BlockingIOError:\n"
        "    print('busy')\n"
    )

    async def check() -> list[str]:
        lock = WriteLock(tmp_path / "db")
        seen = []
        async with lock.held():
            run = subprocess.run(
                [sys.executable, "-c", probe, f"{tmp_path / 'db'}-writer"], capture_output=True
            )
            seen.append(run.stdout.decode().strip())
        run = subprocess.run([sys.executable, "-c", probe, f"{tmp_path / 'db'}-writer"], capture_output=True)
        seen.append(run.stdout.decode().strip())
        lock.close()
        return seen

    assert asyncio.run(check()) == ["busy", "took it"]


async def test_a_sqlite_file_store_has_a_turn_and_postgres_none(database_url: str) -> None:
    store = Store.connect(database_url)
    try:
        lock = write_lock(store.engine)
        if database_url.startswith("sqlite"):
            assert lock.path == sqlite_file(database_url)
        else:
            assert lock.path is None
    finally:
        await store.close()
