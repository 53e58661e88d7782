"""Retention: pruning and redacting what is older than the configured ages, in bounded batches.

The worker runs it every ``prune_interval_seconds``; ``tidings prune`` runs it once by hand. Health
programmes must be able to say how long a person's texts are kept: ``message_body_retention_days``
and ``inbound_retention_days`` say it.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable
from datetime import timedelta

from tidings.clock import utcnow
from tidings.config import Settings
from tidings.store import Store
from tidings.worker.periodic import every

log = logging.getLogger(__name__)

INTERRUPTED_AFTER = timedelta(minutes=5)
"""A webhook that passed its checks and was not finished this long after it arrived was cut."""


class Retention:
    def __init__(self, store: Store, settings: Settings) -> None:
        self.store = store
        self.settings = settings

    async def run_once(self) -> dict[str, int]:
        """Prune and redact everything that is due; how many rows of each kind."""
        settings, retention, now = self.settings, self.store.retention, utcnow()
        batch = settings.prune_batch

        def ago(days: float) -> timedelta:
            return timedelta(days=days)

        jobs: dict[str, Callable[[], Awaitable[int]]] = {
            "webhooks_interrupted": lambda: retention.mark_interrupted_webhooks(
                now - INTERRUPTED_AFTER, batch=batch
            ),
        }
        if settings.webhook_log_retention_days is not None:
            cutoff = now - ago(settings.webhook_log_retention_days)
            jobs["webhook_log_deleted"] = lambda: retention.delete_webhook_log(cutoff, batch=batch)
        if settings.callback_retention_days is not None:
            callbacks_cutoff = now - ago(settings.callback_retention_days)
            jobs["callbacks_deleted"] = lambda: retention.delete_callbacks(callbacks_cutoff, batch=batch)
        if settings.message_body_retention_days is not None:
            bodies_cutoff = now - ago(settings.message_body_retention_days)
            jobs["messages_redacted"] = lambda: retention.redact_messages(bodies_cutoff, now=now, batch=batch)
        if settings.inbound_retention_days is not None:
            inbound_cutoff = now - ago(settings.inbound_retention_days)
            jobs["inbound_redacted"] = lambda: retention.redact_inbound(inbound_cutoff, now=now, batch=batch)
        done: dict[str, int] = {}
        for name, job in jobs.items():
            done[name] = 0
            while True:
                count = await job()
                done[name] += count
                if count < batch:
                    break
                await asyncio.sleep(0)  # let other work through between batches
        if any(done.values()):
            log.info(
                "retention: %s",
                ", ".join(f"{n} {k.replace('_', ' ')}" for k, n in done.items() if n),
                extra={"action": "prune", **done},
            )
        return done

    async def run(self, stop: asyncio.Event) -> None:
        """Run every ``prune_interval_seconds`` until ``stop`` is set."""
        await every(
            self.settings.prune_interval_seconds,
            stop,
            self.run_once,
            failed="retention round failed; retrying later",
            action="prune",
        )
