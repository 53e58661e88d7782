"""The callback sender: delivers the outbox of signed callbacks to client applications.

It runs beside the dispatcher in every worker. A callback is taken under a lease (a sender that
dies leaves it to be taken again: at-least-once), posted as JSON with a ``Tidings-Signature``, and
then marked delivered, scheduled again (connection errors, timeouts, 429 and 5xx, with jittered
exponential back-off) or failed (any other answer, or attempts used up). Failed callbacks stay
visible in ``GET /v1/callbacks?status=failed`` and can be queued again, with only the answer's
status and a short reason (the receiver's body is not kept: every key may read the list).

Before connecting, the destination is checked again (``domain/destinations.py``): a literal
address in the URL, and every address its name resolves to (:class:`CheckedResolver`).
"""

from __future__ import annotations

import asyncio
import contextlib
import ipaddress
import logging
import random
import socket
from collections.abc import Sequence
from datetime import timedelta

import aiohttp
import orjson
from aiohttp.abc import ResolveResult

from tidings import metrics
from tidings.clock import utcnow
from tidings.config import Settings
from tidings.domain.destinations import Network, address_refusal, networks, url_refusal
from tidings.domain.retry import RetryPolicy
from tidings.signatures import HEADER, sign
from tidings.store import Store
from tidings.store.callbacks import DueCallback
from tidings.worker.wakeup import Waker

log = logging.getLogger(__name__)

REAP_EVERY_SECONDS = 5.0


class DestinationRefused(OSError):
    """A callback's host resolved only to addresses tidings may not connect to."""


class CheckedResolver(aiohttp.ThreadedResolver):
    """Resolves names, then keeps only the addresses callbacks may go to: a name that points
    inside (DNS rebinding) is refused when tidings connects, not only when the URL is accepted."""

    def __init__(self, allowed: Sequence[Network]) -> None:
        super().__init__()
        self.allowed = list(allowed)

    async def resolve(
        self, host: str, port: int = 0, family: socket.AddressFamily = socket.AF_INET
    ) -> list[ResolveResult]:
        found = await super().resolve(host, port, family)
        kept = [r for r in found if address_refusal(ipaddress.ip_address(r["host"]), self.allowed) is None]
        if not kept:
            refusals = {address_refusal(ipaddress.ip_address(r["host"]), self.allowed) for r in found}
            raise DestinationRefused(f"{host}: {'; '.join(sorted(r for r in refusals if r))}")
        return kept


def _failure(exc: Exception) -> tuple[str, bool]:
    """A short reason for a failed delivery, safe to show to any API key, and whether to retry."""
    if isinstance(exc, aiohttp.ClientConnectorError) and isinstance(exc.os_error, DestinationRefused):
        return f"not sent: destination not allowed ({exc.os_error})", False
    if isinstance(exc, TimeoutError):
        return "timed out", True
    if isinstance(exc, aiohttp.ClientConnectorDNSError):
        return "host name not found", True
    if isinstance(exc, aiohttp.ClientConnectorCertificateError | aiohttp.ClientConnectorSSLError):
        return "TLS error", True
    if isinstance(exc, aiohttp.ClientConnectorError):
        return "could not connect", True
    if isinstance(exc, aiohttp.ClientError):
        return f"connection failed ({type(exc).__name__})", True
    return f"not sent ({type(exc).__name__})", False


class CallbackSender:
    def __init__(self, store: Store, settings: Settings, waker: Waker | None = None) -> None:
        self.store = store
        self.settings = settings
        self.waker = waker or Waker()
        self._tasks: set[asyncio.Task[None]] = set()
        self._rng = random.Random()
        self._session: aiohttp.ClientSession | None = None
        self._allowed = networks(settings.callback_allow_networks)

    def _policy(self, max_attempts: int) -> RetryPolicy:
        return RetryPolicy(
            max_attempts=max_attempts,
            base_seconds=self.settings.callback_retry_base_seconds,
            cap_seconds=self.settings.callback_retry_cap_seconds,
        )

    async def run(self, stop: asyncio.Event) -> None:
        """Deliver callbacks until ``stop`` is set, then let the deliveries in flight finish."""
        self._session = aiohttp.ClientSession(
            connector=aiohttp.TCPConnector(
                limit=self.settings.callback_concurrency, resolver=CheckedResolver(self._allowed)
            ),
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
        if not callback.secrets:
            # Every key has a secret from its creation; a callback that cannot be signed is not sent.
            await self._failed(callback, "not sent: its API key has no signing secret", None, retry=False)
            return
        headers[HEADER] = sign(body, callback.secrets)
        refused = url_refusal(callback.url, self._allowed)
        if refused is not None:
            await self._failed(callback, f"not sent: destination not allowed ({refused})", None, retry=False)
            return
        try:
            async with self._session.post(callback.url, data=body, headers=headers) as response:
                # Only the status is kept: the answer's body is the receiver's, not ours to show.
                status, reason = response.status, response.reason or ""
        except Exception as exc:
            reason, retry = _failure(exc)
            await self._failed(callback, reason, None, retry=retry)
            return
        if 200 <= status < 300:
            await self.store.callbacks.delivered(callback.id, status)
            metrics.callback("delivered")
            return
        temporary = status == 429 or status >= 500
        await self._failed(callback, f"HTTP {status} {reason[:60]}".strip(), status, retry=temporary)

    async def _failed(self, callback: DueCallback, error: str, status: int | None, *, retry: bool) -> None:
        retry_at = None
        if retry:
            decision = self._policy(callback.max_attempts).decide(callback.attempts, utcnow(), self._rng)
            retry_at = decision.retry_at if decision is not None else None
        await self.store.callbacks.not_delivered(
            callback.id, error=error, status_code=status, retry_at=retry_at
        )
        metrics.callback("failed" if retry_at is None else "retry")
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
