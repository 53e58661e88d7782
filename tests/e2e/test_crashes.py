"""Crashes and outages under load, over real processes: ``tidings serve`` killed mid-dispatch on
SQLite, and the PostgreSQL server restarted mid-load. After each, every acknowledged message
exists, none is stuck, the provider saw a message twice only if it was in flight at the crash,
and no request was answered with an error for a message that was stored.

Clients behave as the README asks: a request that got no answer, or a 503, is sent again with the
same ``Idempotency-Key``.
"""

from __future__ import annotations

import asyncio
import io
import signal
import time
from collections import Counter
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, cast

import aiohttp
import orjson
import pytest
from sqlalchemy import func, select

from tests.e2e.test_multiprocess import Processes, clean_env, free_port, healthy, processes, stat
from tests.pg_cluster import Cluster
from tidings.store import Store
from tidings.store.tables import api_keys, batches, messages
from tidings.testing.fake_server import FakeProviderServer, FakeServerConfig

pytestmark = [pytest.mark.slow]
__all__ = ["processes"]  # the fixture, shared with test_multiprocess

TO = "+12025550123"
WAITING = ("scheduled", "pending", "sending")


@pytest.fixture
async def fake_server() -> AsyncIterator[FakeProviderServer]:
    server = FakeProviderServer(FakeServerConfig(latency_ms=20.0, receipt_delay_ms=20.0))
    await server.start()
    try:
        yield server
    finally:
        await server.stop()


@dataclass
class Load:
    """Clients posting messages, each with its own Idempotency-Key, recording every answer."""

    url: str
    key: str
    count: int
    answers: dict[str, list[Any]] = field(default_factory=dict)
    """Per idempotency key: each answer, an HTTP status or the name of a transport error."""
    acknowledged: dict[str, str] = field(default_factory=dict)
    """Per idempotency key: the message id of a 2xx."""
    errors: list[tuple[str, int, dict[str, Any]]] = field(default_factory=list)
    """Requests answered with an HTTP error: key, status, body."""
    spans: list[tuple[float, float, str, Any]] = field(default_factory=list)
    """Every request: when it was sent and answered (``time.monotonic``), its key, its answer."""

    def answered_between(self, start: float, end: float) -> list[tuple[str, Any]]:
        """Key and answer of each request that was waiting for its answer at some moment of
        ``[start, end]``."""
        return [(key, answer) for sent, done, key, answer in self.spans if sent <= end and done >= start]

    async def post(self, session: aiohttp.ClientSession, n: int) -> bool:
        sent = time.monotonic()
        try:
            return await self._post(session, n)
        finally:
            key = f"load-{n}"
            self.spans.append((sent, time.monotonic(), key, self.answers.get(key, [None])[-1]))

    async def _post(self, session: aiohttp.ClientSession, n: int) -> bool:
        key = f"load-{n}"
        try:
            async with session.post(
                f"{self.url}/v1/messages",
                json={"to": TO, "body": f"message {n}", "provider": "fake"},
                headers={"Authorization": f"Bearer {self.key}", "Idempotency-Key": key},
                timeout=aiohttp.ClientTimeout(total=30),
            ) as response:
                body = await response.json(content_type=None)
                self.answers.setdefault(key, []).append(response.status)
                if response.status in (200, 202):
                    self.acknowledged[key] = body["id"]
                    return True
                self.errors.append((key, response.status, body))
                return False
        except (aiohttp.ClientError, TimeoutError) as exc:
            self.answers.setdefault(key, []).append(type(exc).__name__)
            return False

    async def run(self, clients: int, until_done: bool, deadline: float) -> None:
        """Post every message once (or, with ``until_done``, until each is acknowledged)."""
        pending = asyncio.Queue[int]()
        for n in range(self.count):
            if f"load-{n}" not in self.acknowledged:
                pending.put_nowait(n)

        async def client(session: aiohttp.ClientSession) -> None:
            while not pending.empty():
                n = pending.get_nowait()
                ok = await self.post(session, n)
                if not ok and until_done and time.monotonic() < deadline:
                    await asyncio.sleep(0.2)
                    pending.put_nowait(n)

        async with aiohttp.ClientSession() as session:
            await asyncio.gather(*(client(session) for _ in range(clients)))


async def wait_settled(store: Store, timeout: float) -> dict[str, int]:
    """Until no message is waiting to be sent."""
    deadline = time.monotonic() + timeout
    while True:
        counts = await store.messages.count_by_status()
        if not any(counts.get(s, 0) for s in WAITING) or time.monotonic() > deadline:
            return counts
        await asyncio.sleep(0.2)


async def rows(store: Store) -> list[Any]:
    async with store.engine.connect() as conn:
        return list(
            (
                await conn.execute(
                    select(
                        messages.c.id,
                        messages.c.status,
                        messages.c.idempotency_key,
                        messages.c.lease_expires_at,
                        messages.c.lease_owner,
                        messages.c.next_attempt_at,
                    )
                )
            ).all()
        )


async def check_nothing_lost_or_stuck(store: Store, load: Load) -> list[Any]:
    """Every acknowledged message exists (once per key), and none is stuck."""
    found = await rows(store)
    by_key = Counter(r.idempotency_key for r in found)
    assert all(n == 1 for n in by_key.values()), [k for k, n in by_key.items() if n > 1]
    stored = {r.idempotency_key: r.id for r in found}
    for key, message_id in load.acknowledged.items():
        assert stored.get(key) == message_id, (key, message_id)
    for r in found:
        # Final, handed to the provider, or waiting with a lease or a due time: never stuck.
        if r.status == "sending":
            assert r.lease_expires_at is not None or r.lease_owner == "gateway", r
        elif r.status == "pending":
            assert r.next_attempt_at is not None, r
    return found


async def load_key(store: Store) -> str:
    """An API key for the load (``serve`` printed its first one on its stdout; this is another)."""
    _key, secret = await store.keys.create("load")
    return secret


def serve_env(tmp_path: Path, database_url: str, fake_url: str, port: int) -> dict[str, str]:
    # One process: what these tests kill is the process that holds the work (a supervised group's
    # children are tested in test_supervised.py).
    return clean_env(
        TIDINGS_WORKERS="1",
        TIDINGS_CONFIG=str(write_config(tmp_path, fake_url)),
        TIDINGS_DATABASE_URL=database_url,
        TIDINGS_PUBLIC_URL=f"http://127.0.0.1:{port}",
        TIDINGS_LEASE_SECONDS="2",
        TIDINGS_POLL_INTERVAL="0.2",
        TIDINGS_MAINTENANCE_INTERVAL="0.3",
        TIDINGS_RETRY_BASE_SECONDS="0.2",
        TIDINGS_RETRY_CAP_SECONDS="1",
    )


def write_config(directory: Path, fake_url: str) -> Path:
    path = directory / "tidings.toml"
    path.write_text(
        f'[providers.fake]\nkind = "fake"\nurl = "{fake_url}"\nlatency_ms = 0\nconcurrency = 20\n',
        encoding="utf-8",
    )
    return path


async def test_serve_killed_mid_dispatch_on_sqlite_loses_and_strands_nothing(
    tmp_path: Path, fake_server: FakeProviderServer, processes: Processes
) -> None:
    database_url = f"sqlite:///{tmp_path / 'crash.db'}"
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    env = serve_env(tmp_path, database_url, fake_server.url, port)
    first = processes.start("serve-1", ["serve", "--port", str(port)], env)
    await healthy(url, processes)
    store = Store.connect(database_url)
    try:
        load = Load(url=url, key=await load_key(store), count=600)
        posting = asyncio.create_task(load.run(clients=12, until_done=False, deadline=0))
        deadline = time.monotonic() + 60
        while stat(fake_server, "requests") < 150:
            assert time.monotonic() < deadline, fake_server.stats
            await asyncio.sleep(0.01)
        first.send_signal(signal.SIGKILL)
        first.wait()
        in_flight = {r.id for r in await rows(store) if r.status == "sending"}
        await posting
        assert load.acknowledged, "nothing was acknowledged before the kill"
        assert in_flight, "nothing was being sent at the kill"
        assert len(load.acknowledged) < load.count, "everything was acknowledged before the kill"

        processes.start("serve-2", ["serve", "--port", str(port)], env)
        await healthy(url, processes)
        # The clients send again what got no answer, with the same keys.
        await load.run(clients=12, until_done=True, deadline=time.monotonic() + 60)
        assert len(load.acknowledged) == load.count
        counts = await wait_settled(store, timeout=60)
        assert not any(counts.get(s, 0) for s in WAITING), counts
        await check_nothing_lost_or_stuck(store, load)

        # No request was answered with an error (a crash is a dropped connection, not an answer).
        assert load.errors == [], load.errors[:5]
        stats = fake_server.stats
        duplicates = set(cast(list[str], stats["duplicates"]))
        assert duplicates <= in_flight, (duplicates - in_flight, len(in_flight))
        assert stats["references"] == load.count, stats
    finally:
        await store.close()


async def test_a_database_restart_mid_load_answers_503_never_resets_and_loses_nothing(
    tmp_path: Path, own_postgres: Cluster, fake_server: FakeProviderServer, processes: Processes
) -> None:
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    env = serve_env(tmp_path, own_postgres.url, fake_server.url, port)
    processes.start("serve", ["serve", "--port", str(port)], env)
    await healthy(url, processes)
    store = Store.connect(own_postgres.url)
    try:
        # Enough that the load outlasts the restart: at a few thousand accepts a second, 800
        # could all be answered before the database went down, and no request met the outage.
        load = Load(url=url, key=await load_key(store), count=5000)
        await store.engine.dispose()
        posting = asyncio.create_task(load.run(clients=12, until_done=False, deadline=0))
        deadline = time.monotonic() + 60
        while len(load.acknowledged) < 100:
            assert time.monotonic() < deadline and not posting.done(), load.answers
            await asyncio.sleep(0.01)
        await asyncio.to_thread(own_postgres.stop, "immediate")
        down = time.monotonic()
        assert not posting.done(), "the load was over before the database went down"
        # Down for long enough that requests arrive while it is.
        await asyncio.sleep(1.0)
        back = time.monotonic()
        await asyncio.to_thread(own_postgres.start)
        await posting
        # Never a reset or a 500: a transport error is a dropped connection.
        transport = [a for answers in load.answers.values() for a in answers if isinstance(a, str)]
        assert transport == [], Counter(transport)
        # A request that met the outage is answered one of two ways, depending on where its write
        # was when the database went: held in the group commit, which waits for the database to
        # come back and then finds out what its commit did (202), or 503 with the error contract.
        met = load.answered_between(down, back)
        assert met, "no request was waiting for its answer while the database was down"
        assert {answer for _key, answer in met} <= {202, 503}, Counter(a for _k, a in met)
        assert {status for _key, status, _body in load.errors} <= {503}, load.errors[:5]
        for _key, _status, body in load.errors:
            assert body["error"]["code"] == "database_unavailable"

        await load.run(clients=12, until_done=True, deadline=time.monotonic() + 60)
        assert len(load.acknowledged) == load.count
        counts = await wait_settled(store, timeout=90)
        assert not any(counts.get(s, 0) for s in WAITING), (counts, processes.tails())
        await check_nothing_lost_or_stuck(store, load)
        # A 503 that said "nothing was stored" was true: the retry that stored its key created the
        # message (202), it did not find it there already (200).
        said_nothing = {
            key for key, _s, body in load.errors if "nothing was stored" in body["error"]["message"]
        }
        for key in said_nothing:
            assert load.answers[key][-1] == 202, (key, load.answers[key])
        stats = fake_server.stats
        assert stats["references"] == load.count, stats
        assert stats["duplicates"] == [], stats
        async with store.engine.connect() as conn:
            assert (await conn.execute(select(api_keys.c.id))).all()
    finally:
        await store.close()


async def test_serve_killed_in_the_middle_of_a_batch_leaves_none_of_it_and_takes_it_whole_after(
    tmp_path: Path, fake_server: FakeProviderServer, processes: Processes
) -> None:
    database_url = f"sqlite:///{tmp_path / 'batch.db'}"
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    env = serve_env(tmp_path, database_url, fake_server.url, port)
    first = processes.start("serve-1", ["serve", "--port", str(port)], env)
    await healthy(url, processes)
    store = Store.connect(database_url)
    total = 60_000
    batch = {
        "group_id": "crash",
        "template": "Hello {{ first_name }}",
        "send_at": "2099-01-01T00:00:00Z",
        "recipients": [{"to": f"+2547{i:08d}", "first_name": f"P{i}"} for i in range(total)],
    }
    try:
        headers = {"Authorization": f"Bearer {await load_key(store)}"}
        async with aiohttp.ClientSession(headers=headers) as session:
            body = orjson.dumps(batch)
            json_type = {"Content-Type": "application/json"}

            async def post() -> int | str:
                try:
                    async with session.post(
                        f"{url}/v1/batches", data=io.BytesIO(body), headers=json_type
                    ) as response:
                        return response.status
                except aiohttp.ClientError as exc:
                    return type(exc).__name__

            posting = asyncio.create_task(post())
            # Killed once the batch's transaction has begun (it takes seconds to write).
            await processes.wait_for_line("serve-1", "storing 60000 recipients", timeout=60)
            first.send_signal(signal.SIGKILL)
            first.wait()
            answer = await posting
            assert not isinstance(answer, int), f"the batch was answered ({answer}) before the kill"
            assert await counts(store) == (0, 0)

            processes.start("serve-2", ["serve", "--port", str(port)], env)
            await healthy(url, processes)
            # The client sends it again: the group id was not used up, and it is stored whole.
            async with session.post(
                f"{url}/v1/batches", data=io.BytesIO(body), headers=json_type
            ) as response:
                assert response.status == 202, await response.text()
                assert (await response.json())["accepted"] == total
            assert await counts(store) == (total, 1)
    finally:
        await store.close()


async def counts(store: Store) -> tuple[int, int]:
    """Messages and batches stored."""
    async with store.engine.connect() as conn:
        stored = (await conn.execute(select(func.count()).select_from(messages))).scalar_one()
        kept = (await conn.execute(select(func.count()).select_from(batches))).scalar_one()
    return int(stored), int(kept)
