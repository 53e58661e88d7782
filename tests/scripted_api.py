"""A provider's HTTP API on 127.0.0.1 whose answers each test writes: for testing the HTTP plumbing
every adapter shares (``providers/http.py``, ``providers/oauth.py``) against a real socket; and an
adapter started for the length of a block."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from typing import TypeVar

from aiohttp import web

from tidings.providers.base import Provider

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]
P = TypeVar("P", bound=Provider)


@dataclass(frozen=True)
class Seen:
    """One request the API received."""

    method: str
    path: str
    headers: dict[str, str]
    body: bytes


@dataclass
class ScriptedApi:
    """Routes ``(method, path)`` to the handler a test sets; every request is recorded in ``seen``."""

    routes: dict[tuple[str, str], Handler] = field(default_factory=dict)
    seen: list[Seen] = field(default_factory=list)
    url: str = ""
    release: asyncio.Event = field(default_factory=asyncio.Event)
    """Set on stop: a handler that waits on it (to fake a provider that never answers) ends then."""

    def route(self, method: str, path: str, handler: Handler) -> None:
        self.routes[(method, path)] = handler

    def hits(self, path: str) -> int:
        return sum(1 for s in self.seen if s.path == path)

    async def _handle(self, request: web.Request) -> web.StreamResponse:
        body = await request.read()
        self.seen.append(Seen(request.method, request.path, dict(request.headers), body))
        handler = self.routes.get((request.method, request.path))
        if handler is None:
            return web.json_response({"message": "no such route"}, status=404)
        return await handler(request)


@asynccontextmanager
async def scripted_api() -> AsyncIterator[ScriptedApi]:
    api = ScriptedApi()
    app = web.Application()
    app.router.add_route("*", "/{tail:.*}", api._handle)
    runner = web.AppRunner(app, access_log=None, shutdown_timeout=1)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    api.url = f"http://127.0.0.1:{runner.addresses[0][1]}"
    try:
        yield api
    finally:
        api.release.set()
        await runner.cleanup()


def answer(status: int, payload: object = None, headers: dict[str, str] | None = None) -> Handler:
    """A handler that always gives the same JSON answer (no body when ``payload`` is ``None``)."""

    async def handler(_request: web.Request) -> web.StreamResponse:
        if payload is None:
            return web.Response(status=status, headers=headers)
        return web.json_response(payload, status=status, headers=headers)

    return handler


@asynccontextmanager
async def running(provider: P) -> AsyncIterator[P]:
    """``provider`` started, and closed when the block ends."""
    await provider.start()
    try:
        yield provider
    finally:
        await provider.close()
