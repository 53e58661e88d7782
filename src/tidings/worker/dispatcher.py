"""The dispatcher: claims due messages, hands them to their provider, records what happened.

One dispatcher runs per worker process. For each provider it keeps at most ``concurrency`` sends
in flight and at most ``rate_limit`` sends a second. It claims only as many messages as it has
free slots, so a message never waits, leased, behind a busy provider in this process while another
process could send it. Alongside it, the maintenance loop promotes scheduled messages that came
due and returns messages whose lease expired (their worker died) to the queue, and the poller asks
providers about ``sent`` messages whose receipt is late.

After ``failover_after`` temporary failures in a row on one provider, a message with a route moves
to the next provider in it.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import random
import socket
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import timedelta
from typing import TYPE_CHECKING

from tidings import metrics
from tidings.clock import utcnow
from tidings.config import Settings
from tidings.domain.reports import ProviderReport, Report
from tidings.domain.retry import RetryPolicy
from tidings.domain.status import Status
from tidings.errors import ProviderError, TemporaryProviderError
from tidings.providers.base import OutboundMessage, PollRequest, Provider
from tidings.store import Store
from tidings.store.queue import Claimed
from tidings.store.reports import ReportItem
from tidings.worker.limits import RateLimiter
from tidings.worker.periodic import every
from tidings.worker.wakeup import Waker

if TYPE_CHECKING:
    from tidings.services.tracking import Tracker

log = logging.getLogger(__name__)

MAX_RETRY_AFTER_SECONDS = 86_400.0
"""The longest ``Retry-After`` a provider can make a message wait."""


def worker_id() -> str:
    return f"{socket.gethostname()}:{os.getpid()}:{random.getrandbits(24):06x}"


@dataclass
class Lane:
    """The sends in flight for one provider."""

    provider: Provider
    limiter: RateLimiter | None
    tasks: set[asyncio.Task[None]] = field(default_factory=set)

    @property
    def free(self) -> int:
        return self.provider.settings.concurrency - len(self.tasks)

    def slot(self) -> contextlib.AbstractAsyncContextManager[None]:
        """A place in the provider's rate limit for one request, held while it runs."""
        return self.limiter.slot() if self.limiter is not None else contextlib.nullcontext()


class Dispatcher:
    def __init__(
        self,
        store: Store,
        providers: dict[str, Provider],
        settings: Settings,
        waker: Waker | None = None,
        *,
        tracker: Tracker,
        name: str | None = None,
    ) -> None:
        self.store = store
        self.tracker = tracker
        self.settings = settings
        self.waker = waker or Waker()
        self.name = name or worker_id()
        self.policy = RetryPolicy(
            max_attempts=settings.max_attempts,
            base_seconds=settings.retry_base_seconds,
            cap_seconds=settings.retry_cap_seconds,
        )
        self.lanes = {
            name: Lane(
                provider=p,
                limiter=RateLimiter(p.settings.rate_limit) if p.settings.rate_limit else None,
            )
            for name, p in providers.items()
        }
        self._rng = random.Random()

    async def run(self, stop: asyncio.Event) -> None:
        """Claim and send until ``stop`` is set, then let the sends in flight finish."""
        log.info("worker started", extra={"action": "worker_start", "worker": self.name})
        maintenance = asyncio.create_task(self._maintain(stop))
        poller = asyncio.create_task(self._poll_loop(stop))
        try:
            while not stop.is_set():
                try:
                    claimed = await self.claim_once()
                except Exception:
                    log.exception("claim failed; retrying", extra={"action": "claim"})
                    claimed = 0
                if claimed == 0:
                    await self._idle(stop)
        finally:
            for task in (maintenance, poller):
                task.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await task
            await self.drain()
            log.info("worker stopped", extra={"action": "worker_stop", "worker": self.name})

    async def _idle(self, stop: asyncio.Event) -> None:
        stopping = asyncio.ensure_future(stop.wait())
        woken = asyncio.ensure_future(self.waker.wait(self.settings.poll_interval))
        try:
            await asyncio.wait({stopping, woken}, return_when=asyncio.FIRST_COMPLETED)
        finally:
            for task in (stopping, woken):
                task.cancel()
            await asyncio.gather(stopping, woken, return_exceptions=True)

    async def claim_once(self) -> int:
        """One claim per provider with free slots; starts a send for each claimed message."""
        total = 0
        for name, lane in self.lanes.items():
            free = lane.free
            if free <= 0 or lane.provider.pulls:
                continue
            batch = await self.store.queue.claim(
                name,
                worker=self.name,
                limit=min(free, self.settings.claim_batch),
                lease_seconds=self.settings.lease_seconds,
            )
            for message in batch:
                task = asyncio.create_task(self._send(lane, message))
                lane.tasks.add(task)
                task.add_done_callback(self._done(lane))
            total += len(batch)
        return total

    def _done(self, lane: Lane) -> Callable[[asyncio.Task[None]], None]:
        def callback(task: asyncio.Task[None]) -> None:
            lane.tasks.discard(task)
            # A slot came free: claim again without waiting for the poll.
            self.waker.notify()

        return callback

    async def drain(self, timeout: float | None = None) -> None:
        """Wait for every send in flight."""
        tasks = [t for lane in self.lanes.values() for t in lane.tasks]
        if tasks:
            await asyncio.wait(tasks, timeout=timeout)

    async def maintain_once(self) -> None:
        promoted = await self.store.queue.promote_due()
        reaped = await self.store.queue.reap_expired_leases()
        moved = await self._leave_silent_gateways()
        if promoted or reaped or moved:
            self.waker.notify()

    async def _leave_silent_gateways(self) -> int:
        """Move messages that waited too long for a phone that stopped polling to the next
        provider in their route."""
        moved = 0
        now = utcnow()
        for name, lane in self.lanes.items():
            settings = lane.provider.settings
            waited = getattr(settings, "failover_after_seconds", None)
            if not lane.provider.pulls or waited is None:
                continue
            last_poll = await self.store.gateways.last_poll(name)
            silent_after = float(getattr(settings, "silent_after_seconds", 0))
            if last_poll is not None and now - last_poll < timedelta(seconds=silent_after):
                continue
            count = await self.store.queue.fail_over_waiting(
                name, waiting_since=now - timedelta(seconds=float(waited)), now=now
            )
            if count:
                log.warning(
                    "gateway %s is silent (last poll %s): %d waiting messages moved to their next provider",
                    name,
                    last_poll.isoformat() + "Z" if last_poll else "never",
                    count,
                    extra={"action": "failover", "provider": name, "count": count},
                )
            moved += count
        return moved

    async def _maintain(self, stop: asyncio.Event) -> None:
        await every(
            self.settings.maintenance_interval,
            stop,
            self.maintain_once,
            failed="maintenance failed; retrying",
            action="maintenance",
        )

    async def poll_once(self) -> int:
        """Ask providers about one batch each of ``sent`` messages whose receipt is late; returns
        how many reports changed a status."""
        now = utcnow()
        settings = self.settings
        changed = 0
        for name, lane in self.lanes.items():
            provider = lane.provider
            if not (provider.can_poll and provider.settings.poll):
                continue
            batch = await self.store.queue.take_for_polling(
                name,
                sent_before=now - timedelta(seconds=settings.poll_after_seconds),
                polled_before=now - timedelta(seconds=settings.poll_repeat_seconds),
                max_polls=settings.poll_max,
                limit=settings.poll_batch,
                now=now,
            )
            for message in batch:
                try:
                    async with lane.slot():
                        report = await provider.poll(
                            PollRequest(
                                id=message.id,
                                to=message.to,
                                sender=message.sender,
                                provider_message_id=message.provider_message_id,
                            )
                        )
                except Exception as exc:
                    log.warning(
                        "status poll failed: %s",
                        exc,
                        extra={"action": "poll", "message_id": message.id, "provider": name},
                    )
                    continue
                if report is None:
                    continue
                result = await self.tracker.apply(
                    name, [ProviderReport(report=report, message_id=message.id)]
                )
                changed += sum(1 for outcome in result.applied if outcome.changed)
            if batch:
                log.info(
                    "polled %d messages whose receipt is late",
                    len(batch),
                    extra={"action": "poll", "provider": name, "count": len(batch)},
                )
        return changed

    async def _poll_loop(self, stop: asyncio.Event) -> None:
        await every(
            self.settings.poll_check_seconds,
            stop,
            self.poll_once,
            failed="status polling failed; retrying",
            action="poll",
        )

    async def _send(self, lane: Lane, message: Claimed) -> None:
        try:
            await self._send_and_record(lane, message)
        except Exception:
            # Recording failed (e.g. the database went away). The lease will expire and the
            # reaper will return the message to the queue: nothing is lost.
            log.exception(
                "could not record the outcome of a send; the lease will expire and it will be retried",
                extra={"action": "send", "message_id": message.id},
            )

    async def _send_and_record(self, lane: Lane, message: Claimed) -> None:
        provider = lane.provider
        outbound = OutboundMessage(
            id=message.id,
            to=message.to,
            sender=message.sender,
            attempt=message.attempts,
            content=message.content,
        )
        try:
            async with lane.slot():
                started = time.perf_counter()
                try:
                    result = await provider.send(outbound)
                finally:
                    metrics.send_seconds(provider.name, time.perf_counter() - started)
        except ProviderError as exc:
            await self._record_error(message, exc)
            return
        except Exception as exc:
            log.exception(
                "provider adapter raised an unexpected error; treating it as temporary",
                extra={"action": "send", "message_id": message.id, "provider": provider.name},
            )
            await self._record_error(message, TemporaryProviderError(repr(exc), code="adapter_error"))
            return
        await self.store.reports.record_accepted(
            message.id,
            provider_message_ids=result.provider_message_ids,
            provider_status=result.provider_status,
            detail=result.raw,
            status=result.status,
        )

    async def _record_error(self, message: Claimed, exc: ProviderError) -> None:
        metrics.provider_error(message.provider, exc.code)
        now = utcnow()
        detail = {"attempt": message.attempts, "raw": exc.raw}
        if exc.temporary:
            policy = RetryPolicy(
                max_attempts=message.max_attempts,
                base_seconds=self.policy.base_seconds,
                cap_seconds=self.policy.cap_seconds,
            )
            decision = policy.decide(message.attempts, now, self._rng)
            if decision is not None:
                retry_at = decision.retry_at
                if exc.retry_after is not None:
                    # A provider may ask for any wait; more than a day is taken as a day.
                    wait = min(exc.retry_after, MAX_RETRY_AFTER_SECONDS)
                    retry_at = max(retry_at, now + timedelta(seconds=wait))
                fail_over_to = None
                if message.provider_failures + 1 >= self.settings.failover_after:
                    fail_over_to = message.next_provider()
                if fail_over_to is not None:
                    # The next provider has not failed this message: try it now. The event names
                    # the provider it leaves, as the failover alert counts by it.
                    retry_at = now
                    detail["from"] = message.provider
                await self.store.queue.schedule_retry(
                    message.id,
                    worker=self.name,
                    retry_at=retry_at,
                    error_code=exc.code,
                    error_message=exc.message,
                    detail=detail,
                    fail_over_to=fail_over_to,
                )
                if fail_over_to is not None:
                    log.warning(
                        "provider %s failed %d times in a row; message moved to %s",
                        message.provider,
                        message.provider_failures + 1,
                        fail_over_to,
                        extra={"action": "failover", "message_id": message.id, "error_code": exc.code},
                    )
                    self.waker.notify()
                else:
                    log.info(
                        "temporary failure, retry scheduled",
                        extra={"action": "retry", "message_id": message.id, "error_code": exc.code},
                    )
                return
            reason = f"attempts used up ({message.attempts}); last error: {exc.message}"
        else:
            reason = exc.message
        failure = Report(
            status=Status.FAILED,
            source="worker",
            occurred_at=now,
            error_code=exc.code,
            error_message=reason,
            detail=detail,
        )
        lane = self.lanes.get(message.provider)
        if lane is not None:
            failure = lane.provider.explain(failure)
        await self.store.reports.apply(ReportItem(message.id, failure, type="send_failed"))
        log.error(
            "message failed: %s",
            reason,
            extra={"action": "fail", "message_id": message.id, "error_code": exc.code},
        )
