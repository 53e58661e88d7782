"""A tidings service on a real socket, inside the test's event loop: the API under uvicorn and,
optionally, a worker. Providers' fake servers post their webhooks to it over real HTTP."""

from __future__ import annotations

import asyncio
import contextlib
import socket
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from dataclasses import dataclass
from typing import Any, TypeVar

import httpx
import pytest
import uvicorn

from tests.conftest import empty_tables, make_settings
from tests.stall_watch import SlowWait
from tidings.api.app import create_app
from tidings.services import Service
from tidings.store import Store

T = TypeVar("T")


async def eventually(
    read: Callable[[], Awaitable[T]], done: Callable[[T], bool], *, timeout: float = 20.0, what: str = ""
) -> T:
    """The first value ``read()`` returns that ``done`` accepts; fails after ``timeout`` seconds,
    showing the last value read.

    For state another task commits after the event a test can see (a receiver got its payload,
    but the sender has not yet marked it delivered, say).
    """
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    slow = SlowWait(what or "a state")
    while True:
        value = await read()
        if done(value):
            return value
        slow.check()
        if loop.time() > deadline:
            pytest.fail(f"{what or 'state'} not reached within {timeout}s; last read: {value!r}")
        await asyncio.sleep(0.02)


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


class _Server(uvicorn.Server):
    @contextlib.contextmanager
    def capture_signals(self) -> Iterator[None]:
        yield


@dataclass
class Live:
    url: str
    service: Service
    client: httpx.AsyncClient
    """An API client with a valid key."""

    async def send(self, **payload: Any) -> dict[str, Any]:
        response = await self.client.post("/v1/messages", json=payload)
        assert response.status_code == 202, response.text
        body: dict[str, Any] = response.json()
        return body

    async def message(self, message_id: str) -> dict[str, Any]:
        response = await self.client.get(f"/v1/messages/{message_id}")
        assert response.status_code == 200, response.text
        body: dict[str, Any] = response.json()
        return body

    async def wait_for(self, message_id: str, *statuses: str, timeout: float = 20.0) -> dict[str, Any]:
        """The message once its status is one of ``statuses``; fails after ``timeout`` seconds."""
        deadline = asyncio.get_running_loop().time() + timeout
        slow = SlowWait(f"message {message_id} to be {statuses}")
        while True:
            message = await self.message(message_id)
            if message["status"] in statuses:
                return message
            slow.check()
            if asyncio.get_running_loop().time() > deadline:
                raise AssertionError(
                    f"message {message_id} is {message['status']}, not {statuses}: {message}"
                )
            await asyncio.sleep(0.02)


@contextlib.asynccontextmanager
async def live_service(
    database_url: str, *, worker: bool = True, empty: bool = True, **overrides: Any
) -> AsyncIterator[Live]:
    """Start a service on a free port with ``overrides`` as settings (on emptied tables, unless
    ``empty`` is false); stop everything on exit."""
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    settings = make_settings(database_url, public_url=url, port=port, **overrides)
    service = Service(settings, store=Store.connect(database_url))
    await service.start()
    if empty:
        await empty_tables(service.store)
    server = _Server(
        uvicorn.Config(
            create_app(service), host="127.0.0.1", port=port, log_level="warning", proxy_headers=False
        )
    )
    serving = asyncio.create_task(server.serve())
    stop = asyncio.Event()
    working = asyncio.create_task(service.run_worker(stop)) if worker else None
    try:
        while not server.started:
            if serving.done():
                serving.result()
            await asyncio.sleep(0.01)
        _key, secret = await service.store.keys.create("live")
        # A generous timeout: a shared machine can pause for seconds (see tests/stall_watch.py).
        async with httpx.AsyncClient(
            base_url=url, headers={"Authorization": f"Bearer {secret}"}, timeout=30
        ) as client:
            yield Live(url=url, service=service, client=client)
    finally:
        stop.set()
        if working is not None:
            await working
        server.should_exit = True
        await serving
        await service.close()
