from __future__ import annotations

import random
from datetime import datetime

from hypothesis import given
from hypothesis import strategies as st

from tidings.domain.retry import RetryPolicy

NOW = datetime(2026, 1, 1)


def test_attempts_run_out_at_max_attempts() -> None:
    policy = RetryPolicy(max_attempts=11)
    assert policy.decide(10, NOW) is not None
    assert policy.decide(11, NOW) is None


def test_backoff_doubles_from_base_without_jitter() -> None:
    policy = RetryPolicy(base_seconds=5, cap_seconds=1000, jitter=False)
    assert [policy.delay(n) for n in range(1, 6)] == [5, 10, 20, 40, 80]


def test_backoff_is_capped() -> None:
    policy = RetryPolicy(base_seconds=5, cap_seconds=60, jitter=False)
    assert policy.delay(30) == 60
    assert policy.delay(10_000) == 60


@given(st.integers(min_value=1, max_value=200), st.integers(min_value=0, max_value=2**32))
def test_jittered_delay_stays_between_half_and_full_backoff(attempts: int, seed: int) -> None:
    policy = RetryPolicy(base_seconds=5, cap_seconds=3600)
    ceiling = RetryPolicy(base_seconds=5, cap_seconds=3600, jitter=False).delay(attempts)
    delay = policy.delay(attempts, random.Random(seed))
    assert ceiling / 2 <= delay <= ceiling
