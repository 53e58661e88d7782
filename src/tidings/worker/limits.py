"""Per-provider rate limiting, for providers that cap sends per second.

Providers count in a sliding window ("5 messages per second" means no second, wherever it starts,
holds more than 5), so a token bucket that allows a burst on top of the steady rate would overrun
them. :class:`RateLimiter` keeps at most ``floor(rate)`` sends in any one-second window (a
fractional rate is rounded down; below 1, one send per ``1 / rate`` seconds).

The provider counts a request when it *arrives*, which is somewhere between the moment we start
it and the moment its answer comes back; the network and a busy event loop can delay one request
and not the next. So a send holds its place in the window from when it starts until a full window
after it *finishes*: then, wherever in that span the provider counted it, no window of the
provider's can hold more than the rate.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import math
import time
from collections.abc import AsyncIterator

MARGIN_SECONDS = 0.02
"""Added to each window, for the difference between our clock and the provider's."""


class RateLimiter:
    """Allows at most ``rate`` sends in any one-second window (for ``rate`` < 1: one every
    ``1 / rate`` seconds), counting a send from its start until a window after its end."""

    def __init__(self, rate: float) -> None:
        if rate <= 0:
            raise ValueError("rate must be positive")
        self.rate = rate
        self.per_window = max(1, math.floor(rate))
        self.window = (1.0 if rate >= 1 else 1 / rate) + MARGIN_SECONDS
        self._finished: collections.deque[float] = collections.deque()
        self._in_flight = 0
        self._changed = asyncio.Condition()

    @contextlib.asynccontextmanager
    async def slot(self) -> AsyncIterator[None]:
        """Hold a place for one send while the block runs (and a window after it)."""
        await self._take()
        try:
            yield
        finally:
            async with self._changed:
                self._in_flight -= 1
                self._finished.append(time.monotonic())
                self._changed.notify_all()

    async def acquire(self) -> None:
        """Take a place for a send that is over at once (its window starts now)."""
        async with self.slot():
            pass

    async def _take(self) -> None:
        # The condition's lock queues callers in arrival order: first come, first served.
        async with self._changed:
            while True:
                now = time.monotonic()
                while self._finished and now - self._finished[0] >= self.window:
                    self._finished.popleft()
                if self._in_flight + len(self._finished) < self.per_window:
                    self._in_flight += 1
                    return
                # Wait for the oldest finished send to leave the window, or for one in flight to
                # finish.
                timeout = self._finished[0] + self.window - now if self._finished else None
                with contextlib.suppress(TimeoutError):
                    async with asyncio.timeout(timeout):
                        await self._changed.wait()
