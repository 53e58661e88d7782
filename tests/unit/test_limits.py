"""The rate limiter never lets more than ``rate`` sends into any one-second window."""

from __future__ import annotations

import asyncio
import time

import pytest

from tidings.worker.limits import RateLimiter


@pytest.mark.parametrize("rate", [5.0, 2.5, 0.8])
async def test_no_window_holds_more_than_the_rate(rate: float) -> None:
    limiter = RateLimiter(rate)
    times: list[float] = []

    async def one() -> None:
        await limiter.acquire()
        times.append(time.monotonic())

    count = 8 if rate >= 1 else 2
    await asyncio.gather(*(one() for _ in range(count)))
    times.sort()
    span = 1.0 if rate >= 1 else 1 / rate
    allowed = max(1, int(rate * span))
    for i, start in enumerate(times):
        inside = [t for t in times[i:] if t - start < span]
        assert len(inside) <= allowed
    # And it is not slower than it needs to be: the first ``allowed`` go at once.
    assert times[allowed - 1] - times[0] < 0.05


def test_a_rate_must_be_positive() -> None:
    with pytest.raises(ValueError, match="positive"):
        RateLimiter(0)


async def test_a_slow_send_holds_its_place_until_a_window_after_it_ends() -> None:
    # The provider counts a request when it arrives, anywhere between its start and its answer:
    # the next send may only start a full window after the previous one's answer.
    limiter = RateLimiter(1)
    starts: list[float] = []
    ends: list[float] = []

    async def one(duration: float) -> None:
        async with limiter.slot():
            starts.append(time.monotonic())
            await asyncio.sleep(duration)
            ends.append(time.monotonic())

    await asyncio.gather(one(0.3), one(0.0))
    assert starts[1] - ends[0] >= limiter.window - 0.005


async def test_slots_in_flight_count_against_the_rate() -> None:
    limiter = RateLimiter(2)
    inside = 0
    most = 0

    async def one() -> None:
        nonlocal inside, most
        async with limiter.slot():
            inside += 1
            most = max(most, inside)
            await asyncio.sleep(0.05)
            inside -= 1

    await asyncio.gather(*(one() for _ in range(4)))
    assert most == 2
