"""Per-provider rate limiting, for providers that cap sends per second.

Providers count in a sliding window ("5 messages per second" means no second, wherever it starts,
holds more than 5), so a token bucket that allows a burst on top of the steady rate would overrun
them. :class:`RateLimiter` keeps at most ``floor(rate)`` sends in any one-second window (a
fractional rate is rounded down; below 1, one send per ``1 / rate`` seconds), with a small margin
for the network's jitter between our clock and theirs.
"""

from __future__ import annotations

import asyncio
import collections
import math
import time

MARGIN_SECONDS = 0.02
"""Added to each window: requests sent a window apart may arrive a little closer together."""


class RateLimiter:
    """Allows at most ``rate`` acquisitions in any one-second window (for ``rate`` < 1: one every
    ``1 / rate`` seconds)."""

    def __init__(self, rate: float) -> None:
        if rate <= 0:
            raise ValueError("rate must be positive")
        self.rate = rate
        self.per_window = max(1, math.floor(rate))
        self.window = (1.0 if rate >= 1 else 1 / rate) + MARGIN_SECONDS
        self._recent: collections.deque[float] = collections.deque()
        self._lock = asyncio.Lock()

    async def acquire(self) -> None:
        # The lock queues callers in arrival order, so waiting sends go out first come first served.
        async with self._lock:
            while True:
                now = time.monotonic()
                while self._recent and now - self._recent[0] >= self.window:
                    self._recent.popleft()
                if len(self._recent) < self.per_window:
                    self._recent.append(now)
                    return
                await asyncio.sleep(self._recent[0] + self.window - now)
