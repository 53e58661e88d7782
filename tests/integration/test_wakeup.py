"""On PostgreSQL, a worker that LISTENs is woken by the NOTIFY of a message accepted by another
service (another process, in production) at once, not at its next poll."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from contextlib import AsyncExitStack

import httpx
import pytest

from tests.conftest import empty_tables, make_settings
from tests.live import eventually
from tidings.api.app import create_app
from tidings.services import Service
from tidings.store import Store
from tidings.worker.wakeup import Waker

pytestmark = pytest.mark.postgres

# Workers poll this seldom, so only a wake-up explains a message taken within WAKE_DEADLINE.
POLL_INTERVAL = 30.0
WAKE_DEADLINE = 5.0


class Waits:
    """Watches a worker's waits for work: ``idle`` is set while its dispatcher waits on its waker,
    and ``ended`` keeps how each wait ended (True: woken; False: the poll interval ran out)."""

    def __init__(self, waker: Waker, monkeypatch: pytest.MonkeyPatch) -> None:
        self.idle = asyncio.Event()
        self.ended: list[bool] = []
        real_wait = waker.wait

        async def wait(timeout: float) -> bool:
            self.idle.set()
            try:
                woken = await real_wait(timeout)
            finally:
                self.idle.clear()
            self.ended.append(woken)
            return woken

        monkeypatch.setattr(waker, "wait", wait)


@pytest.fixture
async def database(postgres_database: str) -> str:
    store = Store.connect(postgres_database)
    try:
        await empty_tables(store)
    finally:
        await store.close()
    return postgres_database


@pytest.fixture
async def stack() -> AsyncIterator[AsyncExitStack]:
    async with AsyncExitStack() as stack:
        yield stack


async def start_worker(
    stack: AsyncExitStack, database: str, monkeypatch: pytest.MonkeyPatch, *, listen: bool
) -> Waits:
    """A service running only a worker, stopped when ``stack`` closes; returns once it is idle."""
    service = Service(make_settings(database, poll_interval=POLL_INTERVAL), store=Store.connect(database))
    await service.start(listen=listen)
    stack.push_async_callback(service.close)
    waits = Waits(service.waker, monkeypatch)
    stop = asyncio.Event()
    working = asyncio.create_task(service.run_worker(stop))

    async def stop_worker() -> None:
        stop.set()
        await asyncio.wait_for(working, timeout=10)

    stack.push_async_callback(stop_worker)
    # Its first claim round found nothing; from here on only a wake-up or the poll makes it claim.
    await asyncio.wait_for(waits.idle.wait(), timeout=10)
    return waits


async def start_api(stack: AsyncExitStack, database: str) -> httpx.AsyncClient:
    """The API of another service over the same database, with no worker of its own."""
    service = Service(make_settings(database), store=Store.connect(database))
    await service.start()
    stack.push_async_callback(service.close)
    _key, secret = await service.store.keys.create("wakeup")
    return await stack.enter_async_context(
        httpx.AsyncClient(
            transport=httpx.ASGITransport(app=create_app(service)),
            base_url="http://tidings.test",
            headers={"Authorization": f"Bearer {secret}"},
        )
    )


async def test_a_listening_worker_takes_a_message_accepted_elsewhere_at_once_and_a_polling_one_sleeps_on(
    database: str, stack: AsyncExitStack, monkeypatch: pytest.MonkeyPatch
) -> None:
    listening = await start_worker(stack, database, monkeypatch, listen=True)
    polling = await start_worker(stack, database, monkeypatch, listen=False)
    api = await start_api(stack, database)

    accepted = await api.post("/v1/messages", json={"to": "+12025550123", "body": "wake up"})
    assert accepted.status_code == 202, accepted.text
    assert accepted.json()["status"] == "pending"

    async def message() -> dict[str, object]:
        response = await api.get(f"/v1/messages/{accepted.json()['id']}")
        assert response.status_code == 200, response.text
        body: dict[str, object] = response.json()
        return body

    taken = await eventually(
        message, lambda m: m["status"] != "pending", timeout=WAKE_DEADLINE, what="the message claimed"
    )
    assert taken["status"] in ("sending", "sent", "delivered"), taken
    assert taken["attempts"] == 1
    # The listening worker's wait ended with a wake-up, not the end of its poll interval...
    assert listening.ended[:1] == [True]
    # ...while the worker without LISTEN heard nothing and is still in its first wait.
    assert polling.ended == []
    assert polling.idle.is_set()
