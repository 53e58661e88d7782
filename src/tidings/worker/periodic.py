"""Work done again and again until the process stops: retention, alert checks, maintenance and
status polling each run one round, wait their interval (or for the stop), and go again."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Awaitable, Callable

log = logging.getLogger(__name__)


async def pause(seconds: float, stop: asyncio.Event) -> None:
    """Wait ``seconds``, or less if ``stop`` is set meanwhile."""
    with contextlib.suppress(TimeoutError):
        async with asyncio.timeout(seconds):
            await stop.wait()


async def every(
    seconds: float, stop: asyncio.Event, round: Callable[[], Awaitable[object]], *, failed: str, action: str
) -> None:
    """Run ``round`` every ``seconds`` until ``stop`` is set. A round that raises is logged with
    ``failed`` (and ``action``) and the next one runs at its time: one bad round stops nothing."""
    while not stop.is_set():
        try:
            await round()
        except Exception:
            log.exception(failed, extra={"action": action})
        await pause(seconds, stop)
