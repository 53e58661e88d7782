"""Several real ``tidings worker`` processes on one PostgreSQL queue, sending to the fake HTTP provider.

The fake provider server runs in the test process (so its counters can be read directly), a
``tidings api`` process takes the receipts it posts back, and the workers are the console script,
started and stopped with signals as an operator would.
"""

from __future__ import annotations

import asyncio
import signal
import subprocess
import sys
import time
from collections import Counter
from collections.abc import AsyncIterator, Iterator
from datetime import timedelta
from pathlib import Path
from typing import Any, cast

import aiohttp
import pytest
from sqlalchemy import insert, select, text

from tests.processes import clean_env, free_port
from tidings import ids
from tidings.clock import utcnow
from tidings.domain.status import Status
from tidings.store import Store
from tidings.store.tables import message_events, messages
from tidings.testing.fake_server import FakeProviderServer, FakeServerConfig

pytestmark = [pytest.mark.postgres, pytest.mark.slow]

ORDINARY = "+12025550123"
FINISHED = {"sent", "delivered"}
UNFINISHED = ("pending", "sending", "scheduled")


# -- processes -------------------------------------------------------------------------------------


def tidings_command() -> list[str]:
    script = Path(sys.executable).with_name("tidings")
    if script.exists():
        return [str(script)]
    return [sys.executable, "-c", "from tidings.cli import main; main()"]


class Processes:
    """Subprocesses with their output in log files; whatever still runs is killed at teardown."""

    def __init__(self, directory: Path) -> None:
        self.directory = directory
        self.running: list[tuple[str, subprocess.Popen[bytes]]] = []

    def log_path(self, name: str) -> Path:
        return self.directory / f"{name}.log"

    def start(self, name: str, args: list[str], env: dict[str, str]) -> subprocess.Popen[bytes]:
        with self.log_path(name).open("wb") as log:
            process = subprocess.Popen(
                [*tidings_command(), *args],
                env=env,
                cwd=self.directory,
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
            )
        self.running.append((name, process))
        return process

    def output(self, name: str) -> str:
        return self.log_path(name).read_text(errors="replace")

    def tails(self, lines: int = 15) -> str:
        shown = []
        for name, process in self.running:
            tail = "\n".join(self.output(name).splitlines()[-lines:])
            shown.append(f"--- {name} (pid {process.pid}, exit {process.poll()}) ---\n{tail}")
        return "\n".join(shown)

    async def wait_for_line(self, name: str, text: str, timeout: float = 30) -> None:
        process = dict(self.running)[name]
        deadline = time.monotonic() + timeout
        while text not in self.output(name):
            if process.poll() is not None:
                pytest.fail(f"{name} exited with {process.returncode}:\n{self.output(name)}")
            if time.monotonic() > deadline:
                pytest.fail(f"{name} did not log {text!r} within {timeout}s:\n{self.output(name)}")
            await asyncio.sleep(0.05)

    async def stop(self, process: subprocess.Popen[bytes], timeout: float = 20) -> int:
        """SIGTERM, then wait for the exit code (SIGKILL and fail after ``timeout``)."""
        process.send_signal(signal.SIGTERM)
        deadline = time.monotonic() + timeout
        while process.poll() is None:
            if time.monotonic() > deadline:
                process.kill()
                process.wait()
                pytest.fail(f"pid {process.pid} did not stop within {timeout}s of SIGTERM")
            await asyncio.sleep(0.05)
        return process.returncode

    def close(self) -> None:
        for _name, process in self.running:
            if process.poll() is None:
                process.kill()
            process.wait()


@pytest.fixture
def processes(tmp_path: Path) -> Iterator[Processes]:
    procs = Processes(tmp_path)
    try:
        yield procs
    finally:
        procs.close()


# -- the database ----------------------------------------------------------------------------------


@pytest.fixture
async def pg_store(postgres_database: str) -> AsyncIterator[Store]:
    """The module's database as a fresh install: schema dropped, then ``tidings migrate``.

    Fresh tables also mean fresh planner statistics, as on a new user's first day.
    """
    store = Store.connect(postgres_database)
    try:
        async with store.engine.begin() as conn:
            await conn.execute(text("DROP SCHEMA public CASCADE"))
            await conn.execute(text("CREATE SCHEMA public"))
        done = await asyncio.to_thread(
            subprocess.run,
            [*tidings_command(), "migrate"],
            env=clean_env(TIDINGS_DATABASE_URL=postgres_database),
            capture_output=True,
            text=True,
            timeout=60,
        )
        assert done.returncode == 0, done.stderr
        assert "database is at revision" in done.stdout
        assert await store.messages.count_by_status() == {}
        yield store
    finally:
        await store.close()


async def bulk_insert(store: Store, count: int) -> list[str]:
    """``count`` pending messages for the fake provider, in one transaction.

    As if they had arrived one after another just now: ids and due times rise together.
    """
    first = utcnow() - timedelta(seconds=1)
    message_ids = sorted(ids.new_id() for _ in range(count))
    rows: list[dict[str, Any]] = []
    for i, message_id in enumerate(message_ids):
        at = first + timedelta(microseconds=i)
        rows.append(
            {
                "id": message_id,
                "channel": "sms",
                "to": ORDINARY,
                "body": f"load test message {i}",
                "segments": 1,
                "encoding": "GSM-7",
                "status": "pending",
                "provider": "fake",
                "attempts": 0,
                "max_attempts": 5,
                "next_attempt_at": at,
                "created_at": at,
                "updated_at": at,
                "tags": [],
                "metadata": {},
            }
        )
    async with store.engine.begin() as conn:
        for start in range(0, count, 1000):
            await conn.execute(insert(messages), rows[start : start + 1000])
    return message_ids


async def wait_until_done(
    store: Store, procs: Processes, workers: list[subprocess.Popen[bytes]], timeout: float
) -> dict[str, int]:
    """Poll until no message is left to send; fail early if a worker dies."""
    deadline = time.monotonic() + timeout
    while True:
        counts = await store.messages.count_by_status()
        if not any(counts.get(s, 0) for s in UNFINISHED):
            return counts
        for worker in workers:
            if worker.poll() is not None:
                pytest.fail(f"worker {worker.pid} died ({worker.returncode}): {counts}\n{procs.tails()}")
        if time.monotonic() > deadline:
            pytest.fail(f"messages still unsent after {timeout}s: {counts}\n{procs.tails()}")
        await asyncio.sleep(0.2)


async def claims_by_worker_pid(store: Store) -> Counter[str]:
    """How many claims each worker process made (worker names are host:pid:random)."""
    query = select(message_events.c.detail).where(message_events.c.type == "claimed")
    async with store.engine.connect() as conn:
        details = (await conn.execute(query)).scalars().all()
    return Counter(str(d["worker"]).split(":")[1] for d in details)


# -- the fake provider and the receipt endpoint ----------------------------------------------------


@pytest.fixture
async def fake_server(request: pytest.FixtureRequest) -> AsyncIterator[FakeProviderServer]:
    """The fake provider; ``indirect`` parametrization passes ``(latency_ms, receipt_delay_ms)``."""
    latency_ms, receipt_delay_ms = getattr(request, "param", (0.0, 20.0))
    server = FakeProviderServer(FakeServerConfig(latency_ms=latency_ms, receipt_delay_ms=receipt_delay_ms))
    await server.start()
    try:
        yield server
    finally:
        await server.stop()


def stat(server: FakeProviderServer, name: str) -> int:
    return cast(int, server.stats[name])


def write_config(directory: Path, fake_url: str, concurrency: int) -> Path:
    path = directory / "tidings.toml"
    path.write_text(
        f'[providers.fake]\nkind = "fake"\nurl = "{fake_url}"\nlatency_ms = 0\nconcurrency = {concurrency}\n',
        encoding="utf-8",
    )
    return path


async def healthy(url: str, procs: Processes, timeout: float = 30) -> None:
    """Wait until ``url`` answers ``/healthz`` with 200; fail after ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    async with aiohttp.ClientSession() as session:
        while True:
            try:
                async with session.get(f"{url}/healthz") as response:
                    if response.status == 200:
                        return
            except aiohttp.ClientError:
                pass
            if time.monotonic() > deadline:
                pytest.fail(f"{url} did not become healthy:\n{procs.tails()}")
            await asyncio.sleep(0.1)


async def start_api(procs: Processes, env: dict[str, str], port: int) -> None:
    procs.start("api", ["api", "--port", str(port)], env)
    await healthy(f"http://127.0.0.1:{port}", procs)


def service_env(
    tmp_path: Path, database_url: str, fake_url: str, api_port: int, **extra: str
) -> dict[str, str]:
    return clean_env(
        TIDINGS_CONFIG=str(write_config(tmp_path, fake_url, concurrency=50)),
        TIDINGS_DATABASE_URL=database_url,
        TIDINGS_PUBLIC_URL=f"http://127.0.0.1:{api_port}",
        TIDINGS_LOG_LEVEL="INFO",
        TIDINGS_POLL_INTERVAL="0.2",
        TIDINGS_MAINTENANCE_INTERVAL="0.5",
        # Five processes (four workers and the API), each up to 2 x pool_size connections plus
        # one to LISTEN: 85, under PostgreSQL's default max_connections of 100.
        TIDINGS_POOL_SIZE="8",
        **extra,
    )


async def all_delivered_after_receipts(store: Store, server: FakeProviderServer, count: int) -> None:
    """Every receipt the fake posted reached the API, and every message is delivered."""
    await server.wait_for_receipts(60)
    stats = server.stats
    assert stats["receipts_failed"] == 0, stats
    assert stats["receipts_sent"] == stats["accepted"], stats
    counts = await store.messages.count_by_status()
    assert counts == {"delivered": count}, counts


# -- the tests -------------------------------------------------------------------------------------


# No receipts in this test: they would be posted long after it ends (and are cancelled then), so
# no `tidings api` process is needed and the workers alone decide every status.
@pytest.mark.parametrize("fake_server", [(0.0, 600_000.0)], indirect=True)
async def test_four_workers_send_every_message_exactly_once(
    tmp_path: Path,
    postgres_database: str,
    pg_store: Store,
    fake_server: FakeProviderServer,
    processes: Processes,
) -> None:
    total = 5000
    env = service_env(tmp_path, postgres_database, fake_server.url, api_port=free_port())
    workers = [processes.start(f"worker{i}", ["worker"], env) for i in range(4)]
    for i in range(4):
        await processes.wait_for_line(f"worker{i}", "worker started")

    started = time.monotonic()
    await bulk_insert(pg_store, total)
    counts = await wait_until_done(pg_store, processes, workers, timeout=120)
    elapsed = time.monotonic() - started

    codes = [await processes.stop(w) for w in workers]
    assert codes == [0, 0, 0, 0], processes.tails()
    # Nothing went wrong on the way (a failed claim or record would be logged as an error).
    for i in range(4):
        assert " ERROR " not in processes.output(f"worker{i}"), processes.tails(40)

    assert counts == {"sent": total}, counts
    stats = fake_server.stats
    assert stats["requests"] == total, stats
    assert stats["accepted"] == total, stats
    assert stats["references"] == total, stats
    assert stats["duplicates"] == [], stats

    async with pg_store.engine.connect() as conn:
        attempts = Counter((await conn.execute(select(messages.c.attempts))).scalars())
    assert attempts == {1: total}

    # Each worker claims only what it has free slots for, so all four share the queue.
    claims = await claims_by_worker_pid(pg_store)
    assert sum(claims.values()) == total
    assert set(claims) == {str(w.pid) for w in workers}, (claims, f"{elapsed:.1f}s")
    assert max(claims.values()) < total / 2, claims


@pytest.mark.parametrize("fake_server", [(50.0, 20.0)], indirect=True)
async def test_a_killed_worker_loses_nothing(
    tmp_path: Path,
    postgres_database: str,
    pg_store: Store,
    fake_server: FakeProviderServer,
    processes: Processes,
) -> None:
    total = 2000
    concurrency = 50
    api_port = free_port()
    env = service_env(tmp_path, postgres_database, fake_server.url, api_port, TIDINGS_LEASE_SECONDS="2")
    await start_api(processes, env, api_port)
    doomed = processes.start("doomed", ["worker"], env)
    await processes.wait_for_line("doomed", "worker started")

    await bulk_insert(pg_store, total)
    deadline = time.monotonic() + 60
    while stat(fake_server, "requests") < 300:
        assert time.monotonic() < deadline, f"the worker is not sending: {fake_server.stats}"
        assert doomed.poll() is None, processes.tails()
        await asyncio.sleep(0.01)
    doomed.kill()
    doomed.wait()
    assert doomed.returncode == -signal.SIGKILL
    seen_at_kill = stat(fake_server, "requests")
    assert seen_at_kill < total, "the worker finished before it could be killed"

    # What the dead worker held: nobody else may touch it until its leases expire.
    in_flight = set(await pg_store.messages.ids_with_status([Status.SENDING]))
    assert len(in_flight) <= concurrency, (
        f"the killed worker held {len(in_flight)} messages in sending; its concurrency is {concurrency}"
    )

    fresh = processes.start("fresh", ["worker"], env)
    counts = await wait_until_done(pg_store, processes, [fresh], timeout=60)
    assert await processes.stop(fresh) == 0, processes.tails()

    assert set(counts) <= FINISHED, counts
    assert sum(counts.values()) == total
    stats = fake_server.stats
    duplicates = set(cast(list[str], stats["duplicates"]))
    assert stats["references"] == total, stats
    assert len(duplicates) <= concurrency, stats
    # Only a message that was in flight at the kill may have reached the provider twice.
    assert duplicates <= in_flight, duplicates - in_flight
    assert stats["requests"] == total + len(duplicates), stats

    async with pg_store.engine.connect() as conn:
        rows = (await conn.execute(select(messages.c.id, messages.c.attempts))).all()
    for message_id, attempts in rows:
        if message_id not in in_flight:
            assert attempts == 1, (message_id, attempts)
        else:
            assert attempts in (1, 2), (message_id, attempts)

    await all_delivered_after_receipts(pg_store, fake_server, total)
