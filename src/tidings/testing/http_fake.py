"""What the fake provider servers have in common, apart from the wire format each one fakes.

Every fake in this package listens on a real socket, answers a provider's API, and later posts
something back on its own (a receipt, a status callback, a notification) with retries. The plumbing
for that, and for running one standalone with ``python -m``, lives here once, so that each fake's
module only says what its provider says on the wire.
"""

from __future__ import annotations

import abc
import argparse
import asyncio
import contextlib
import logging
import signal
import sys
import time
from collections import deque
from collections.abc import Coroutine, Mapping
from dataclasses import dataclass
from typing import Any

import aiohttp
import orjson
from aiohttp import web

__all__ = [
    "JSON",
    "FakeHttpServer",
    "PostPolicy",
    "cli_parser",
    "json_response",
    "over_rate",
    "post_once",
    "run_until_signalled",
]

JSON = "application/json"


def json_response(status: int, payload: object, headers: dict[str, str] | None = None) -> web.Response:
    """A JSON answer serialised with orjson, which keeps a benchmark's hot path cheap."""
    return web.Response(status=status, body=orjson.dumps(payload), content_type=JSON, headers=headers)


def over_rate(window: deque[float], limit: float | None) -> bool:
    """Whether one more request now exceeds ``limit`` per second; when it does not, it is counted.

    ``window`` holds the monotonic times of the requests admitted in the last second: a sliding
    window, so no burst of twice the limit gets through across a second's boundary. ``None`` means
    no limit.
    """
    if limit is None:
        return False
    now = time.monotonic()
    while window and window[0] <= now - 1.0:
        window.popleft()
    if len(window) >= limit:
        return True
    window.append(now)
    return False


async def post_once(
    session: aiohttp.ClientSession, url: str, data: bytes, headers: Mapping[str, str]
) -> tuple[int, bytes]:
    """Post once, without retrying, and return the answer's status and body.

    For the webhooks a test fires by hand: it wants to see exactly what the receiver answered.
    """
    async with session.post(url, data=data, headers=headers) as response:
        return response.status, await response.read()


@dataclass(frozen=True)
class PostPolicy:
    """How a fake posts what it sends back on its own: each provider retries a little differently."""

    kind: str
    """What one post is called in the debug log, like ``"receipt"``."""
    attempts: int
    """Posts of one item before giving up, the first one included."""
    backoff_s: float
    """The pause after the first failed post; it doubles after each failure."""
    timeout_s: float
    """The time allowed to connect, and to wait for each read, when posting one item."""
    connection_limit: int
    """At most this many posts in flight at once."""


class FakeHttpServer(abc.ABC):
    """A fake provider on a real socket: :meth:`start` it, talk to it, then :meth:`stop` it.

    A subclass adds its API's routes, its counters and how a reset clears them; this class owns the
    listening socket, the client session the posts go out on, and the background tasks that post
    them, so that stopping the server never leaves a post running.
    """

    def __init__(self, name: str, policy: PostPolicy) -> None:
        self._name = name
        """Like ``"fake Twilio server"``: for errors and the log."""
        self._policy = policy
        # The fake's own module logger, so its log lines keep the name they always had.
        self._logger = logging.getLogger(type(self).__module__)
        self._tasks: set[asyncio.Task[None]] = set()
        self._runner: web.AppRunner | None = None
        self._session: aiohttp.ClientSession | None = None
        self._url: str | None = None

    @property
    def url(self) -> str:
        """The base URL, like ``http://127.0.0.1:54321``; only known once started."""
        if self._url is None:
            raise RuntimeError(f"the {self._name} is not started")
        return self._url

    @property
    @abc.abstractmethod
    def stats(self) -> dict[str, object]:
        """The same counters as ``GET /_stats``."""

    @abc.abstractmethod
    def _add_routes(self, router: web.UrlDispatcher) -> None:
        """Add the routes of the provider's API."""

    @abc.abstractmethod
    def _reset(self) -> None:
        """Clear the counters (and whatever else the fake stores) for ``POST /_reset``."""

    def _build_app(self) -> web.Application:
        app = web.Application()
        self._add_routes(app.router)
        app.router.add_get("/_stats", self._handle_stats)
        app.router.add_post("/_reset", self._handle_reset)
        app.router.add_get("/", self._handle_health)
        return app

    async def start(self, host: str = "127.0.0.1", port: int = 0) -> str:
        """Listen on ``host``:``port`` (0 picks a free port) and return the base URL."""
        if self._runner is not None:
            raise RuntimeError(f"the {self._name} is already started")
        policy = self._policy
        self._session = aiohttp.ClientSession(
            connector=aiohttp.TCPConnector(limit=policy.connection_limit),
            cookie_jar=aiohttp.DummyCookieJar(),
            # Socket-level limits only: a "total" timeout would also count the wait for a pooled
            # connection, and time out (then duplicate) posts queued behind the connection limit.
            timeout=aiohttp.ClientTimeout(
                total=None, sock_connect=policy.timeout_s, sock_read=policy.timeout_s
            ),
        )
        runner = web.AppRunner(self._build_app(), access_log=None)
        await runner.setup()
        try:
            site = web.TCPSite(runner, host, port)
            await site.start()
        except BaseException:
            await runner.cleanup()
            await self._session.close()
            self._session = None
            raise
        self._runner = runner
        bound_port = runner.addresses[0][1]
        shown_host = f"[{host}]" if ":" in host else host
        self._url = f"http://{shown_host}:{bound_port}"
        self._logger.info("%s listening on %s", self._name, self._url)
        return self._url

    async def stop(self) -> None:
        """Stop listening, cancel the posts still pending and close the client session."""
        runner, self._runner = self._runner, None
        if runner is not None:
            await runner.cleanup()
        tasks = list(self._tasks)
        for task in tasks:
            task.cancel()
        if tasks:
            await asyncio.gather(*tasks, return_exceptions=True)
        self._tasks.clear()
        session, self._session = self._session, None
        if session is not None:
            await session.close()
        self._url = None

    def _spawn(self, work: Coroutine[Any, Any, None]) -> asyncio.Task[None]:
        """Run ``work`` in the background, where :meth:`stop` and :meth:`_wait_for_tasks` can find it."""
        task = asyncio.create_task(work)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)
        return task

    async def _wait_for_tasks(self, timeout: float) -> None:
        """Wait until no background task is pending; raise :class:`TimeoutError` after ``timeout`` s.

        A task may start another before it ends, so the pending set is taken again until it is empty.
        """
        async with asyncio.timeout(timeout):
            while pending := {task for task in self._tasks if not task.done()}:
                await asyncio.wait(pending)

    async def _post_with_retries(self, url: str, data: bytes, headers: Mapping[str, str]) -> bool:
        """Post one item as the provider would, retrying; true when the receiver answered 2xx.

        Connection errors, timeouts and 5xx answers are retried with a doubling back-off; any other
        answer is final, as a receiver that refuses an item would refuse it again.
        """
        session = self._session
        if session is None:
            return False
        policy = self._policy
        backoff = policy.backoff_s
        for attempt in range(1, policy.attempts + 1):
            try:
                async with session.post(url, data=data, headers=headers) as response:
                    answer = response.status
            except (aiohttp.ClientError, TimeoutError) as exc:
                self._logger.debug("%s to %s, attempt %d: %r", policy.kind, url, attempt, exc)
            else:
                if answer < 500:
                    if not 200 <= answer < 300:
                        self._logger.debug("%s to %s refused with %d", policy.kind, url, answer)
                    return 200 <= answer < 300
                self._logger.debug("%s to %s, attempt %d: HTTP %d", policy.kind, url, attempt, answer)
            if attempt < policy.attempts:
                await asyncio.sleep(backoff)
                backoff *= 2
        self._logger.debug("gave up posting a %s to %s", policy.kind, url)
        return False

    async def _post_once(self, url: str, data: bytes, headers: Mapping[str, str]) -> tuple[int, bytes]:
        """:func:`post_once` on the server's own session; raises when the server is not started."""
        session = self._session
        if session is None:
            raise RuntimeError(f"the {self._name} is not started")
        return await post_once(session, url, data, headers)

    async def _handle_stats(self, request: web.Request) -> web.Response:
        return json_response(200, self.stats)

    async def _handle_reset(self, request: web.Request) -> web.Response:
        self._reset()
        return web.Response(status=204)

    async def _handle_health(self, request: web.Request) -> web.Response:
        return json_response(200, {"status": "ok"})


# --- command line ---------------------------------------------------------------------------------


def cli_parser(module: str, description: str) -> argparse.ArgumentParser:
    """A parser for ``python -m <module>`` with the ``--host`` and ``--port`` every fake takes."""
    parser = argparse.ArgumentParser(prog=f"python -m {module}", description=description)
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=0, help="0 picks a free port")
    return parser


async def _serve(server: FakeHttpServer, host: str, port: int) -> None:
    stopping = asyncio.Event()
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGTERM, signal.SIGINT):
        with contextlib.suppress(NotImplementedError):  # not available on Windows
            loop.add_signal_handler(signum, stopping.set)
    url = await server.start(host, port)
    try:
        # The one line a parent process reads to learn the port when it asked for port 0.
        sys.stdout.write(f"listening on {url}\n")
        sys.stdout.flush()
        await stopping.wait()
    finally:
        await server.stop()


def run_until_signalled(server: FakeHttpServer, host: str, port: int) -> None:
    """Serve ``server`` on ``host``:``port`` until SIGTERM or SIGINT, then stop it cleanly.

    It prints ``listening on <url>`` once it listens, and uses uvloop when it is installed, so that a
    benchmark measures the service rather than the fake.
    """
    logging.basicConfig(level=logging.WARNING, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    try:
        import uvloop
    except ImportError:
        asyncio.run(_serve(server, host, port))
    else:
        uvloop.run(_serve(server, host, port))
