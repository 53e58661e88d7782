"""The callback sender: delivers the outbox of signed callbacks to client applications.

It runs beside the dispatcher in every worker. A callback is taken under a lease (a sender that
dies leaves it to be taken again: at-least-once), posted as JSON with a ``Tidings-Signature``, and
then marked delivered, scheduled again (connection errors, timeouts, 429 and 5xx, with jittered
exponential back-off) or failed (any other answer, or attempts used up). Failed callbacks stay
visible in ``GET /v1/callbacks?status=failed`` and can be queued again.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import random
from datetime import timedelta

import aiohttp
import orjson

from tidings.clock import utcnow
from tidings.config import Settings
from tidings.domain.retry import RetryPolicy
from tidings.signatures import HEADER, sign
from tidings.store import Store
from tidings.store.callbacks import DueCallback
from tidings.worker.wakeup import Waker

log = logging.getLogger(__name__)

REAP_EVERY_SECONDS = 5.0


class CallbackSender:
    def __init__(self, store: Store, settings: Settings, waker: Waker | None = None) -> None:
        self.store = store
        self.settings = settings
        self.waker = waker or Waker()
        self._tasks: set[asyncio.Task[None]] = set()
        self._rng = random.Random()
        self._session: aiohttp.ClientSession | None = None

    def _policy(self, max_attempts: int) -> RetryPolicy:
        return RetryPolicy(
            max_attempts=max_attempts,
            base_seconds=self.settings.callback_retry_base_seconds,
            cap_seconds=self.settings.callback_retry_cap_seconds,
        )

    async def run(self, stop: asyncio.Event) -> None:
        """Deliver callbacks until ``stop`` is set, then let the deliveries in flight finish."""
        self._session = aiohttp.ClientSession(
            connector=aiohttp.TCPConnector(limit=self.settings.callback_concurrency),
            cookie_jar=aiohttp.DummyCookieJar(),
            timeout=aiohttp.ClientTimeout(total=self.settings.callback_timeout_seconds),
        )
        last_reap = 0.0
        loop = asyncio.get_running_loop()
        try:
            while not stop.is_set():
                taken = 0
                try:
                    if loop.time() - last_reap > REAP_EVERY_SECONDS:
                        await self.store.callbacks.reap()
                        last_reap = loop.time()
                    taken = await self.send_once()
                except Exception:
                    log.exception("callback delivery round failed; retrying", extra={"action": "callback"})
                if taken == 0:
                    with contextlib.suppress(TimeoutError):
                        async with asyncio.timeout(self.settings.poll_interval):
                            await stop.wait()
        finally:
            if self._tasks:
                await asyncio.wait(self._tasks, timeout=self.settings.callback_timeout_seconds + 1)
            await self._session.close()
            self._session = None

    async def send_once(self) -> int:
        """Take the due callbacks there is room for and start delivering them."""
        free = self.settings.callback_concurrency - len(self._tasks)
        if free <= 0:
            return 0
        due = await self.store.callbacks.take_due(
            limit=free, lease_seconds=self.settings.callback_timeout_seconds + 30
        )
        for callback in due:
            task = asyncio.create_task(self._deliver(callback))
            self._tasks.add(task)
            task.add_done_callback(self._tasks.discard)
        return len(due)

    async def _deliver(self, callback: DueCallback) -> None:
        assert self._session is not None
        body = orjson.dumps(callback.payload)
        headers = {
            "Content-Type": "application/json",
            "User-Agent": "tidings",
            "Tidings-Callback-Id": callback.id,
        }
        if callback.secret:
            headers[HEADER] = sign(body, callback.secret)
        status: int | None = None
        try:
            async with self._session.post(callback.url, data=body, headers=headers) as response:
                status = response.status
                text = (await response.read())[:300].decode("utf-8", "replace")
        except (aiohttp.ClientError, TimeoutError) as exc:
            await self._failed(callback, f"{type(exc).__name__}: {exc}", None, retry=True)
            return
        except Exception as exc:  # a URL aiohttp cannot even try, say
            await self._failed(callback, f"{type(exc).__name__}: {exc}", None, retry=False)
            return
        if 200 <= status < 300:
            await self.store.callbacks.delivered(callback.id, status)
            return
        temporary = status == 429 or status >= 500
        await self._failed(callback, f"HTTP {status}: {text}", status, retry=temporary)

    async def _failed(self, callback: DueCallback, error: str, status: int | None, *, retry: bool) -> None:
        retry_at = None
        if retry:
            decision = self._policy(callback.max_attempts).decide(callback.attempts, utcnow(), self._rng)
            retry_at = decision.retry_at if decision is not None else None
        await self.store.callbacks.not_delivered(
            callback.id, error=error, status_code=status, retry_at=retry_at
        )
        if retry_at is None:
            log.error(
                "callback %s to %s failed for good after %d attempts: %s",
                callback.id,
                callback.url,
                callback.attempts,
                error,
                extra={"action": "callback", "callback_id": callback.id},
            )
        else:
            log.info(
                "callback %s not delivered (%s); next try in %.0f s",
                callback.id,
                error,
                (retry_at - utcnow()) / timedelta(seconds=1),
                extra={"action": "callback", "callback_id": callback.id},
            )
