"""Retry policy for temporary send failures: a pure object, no I/O.

Seed 001 retries a send up to 11 times with a 5 s exponential back-off and jitter. The delay
before attempt ``n + 1`` is ``min(cap, base * 2 ** (n - 1))``, jittered down to half of that at
random, so that a burst of failures does not come back as a burst of retries.
"""

from __future__ import annotations

import random
from dataclasses import dataclass
from datetime import datetime, timedelta


@dataclass(frozen=True)
class RetryDecision:
    """Try again at ``retry_at``."""

    retry_at: datetime
    delay: float


@dataclass(frozen=True)
class RetryPolicy:
    max_attempts: int = 11
    base_seconds: float = 5.0
    cap_seconds: float = 3600.0
    jitter: bool = True

    def delay(self, attempts: int, rng: random.Random | None = None) -> float:
        """Seconds to wait after the ``attempts``-th failed attempt (1-based)."""
        if attempts < 1:
            raise ValueError("attempts starts at 1")
        # Cap the exponent before computing to avoid float overflow on absurd attempt counts.
        exponent = min(attempts - 1, 62)
        ceiling = min(self.cap_seconds, self.base_seconds * (2.0**exponent))
        if not self.jitter:
            return ceiling
        draw = (rng or random).random()
        return ceiling / 2 + draw * ceiling / 2

    def decide(self, attempts: int, now: datetime, rng: random.Random | None = None) -> RetryDecision | None:
        """When to retry after ``attempts`` failed attempts, or ``None`` when they are used up."""
        if attempts >= self.max_attempts:
            return None
        seconds = self.delay(attempts, rng)
        return RetryDecision(retry_at=now + timedelta(seconds=seconds), delay=seconds)
