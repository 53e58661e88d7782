"""Applying provider reports (receipts, webhook updates) to messages.

Every report from every provider, whether posted to a webhook or produced by the in-process fake,
comes through :meth:`Tracker.apply`: the message is found by our id or by the provider's id, and
the report goes through the status machine in ``store``.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

from tidings.providers.base import ProviderReport
from tidings.store import Store
from tidings.store.messages import ReportOutcome

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class TrackResult:
    applied: list[ReportOutcome]
    unmatched: int


class Tracker:
    def __init__(self, store: Store) -> None:
        self.store = store

    async def apply(self, provider: str, reports: list[ProviderReport]) -> TrackResult:
        """Apply ``reports`` from ``provider`` in order; reports for unknown messages are logged."""
        applied: list[ReportOutcome] = []
        unmatched = 0
        for item in reports:
            message_id = item.message_id
            outcome = None
            if message_id is not None:
                outcome = await self.store.messages.apply_report(message_id, item.report)
            if outcome is None and item.provider_message_id is not None:
                found = await self.store.messages.find_by_provider_id(provider, item.provider_message_id)
                if found is not None:
                    outcome = await self.store.messages.apply_report(found, item.report)
            if outcome is None:
                unmatched += 1
                log.warning(
                    "report for an unknown message",
                    extra={
                        "action": "report",
                        "provider": provider,
                        "message_id": item.message_id,
                        "provider_message_id": item.provider_message_id,
                    },
                )
                continue
            applied.append(outcome)
            log.debug(
                "report applied",
                extra={"action": "report", "message_id": outcome.message_id, "status": outcome.status_after},
            )
        return TrackResult(applied=applied, unmatched=unmatched)

    async def sink(self, provider: str, reports: list[ProviderReport]) -> None:
        """The :data:`~tidings.providers.base.ReportSink` given to provider adapters."""
        await self.apply(provider, reports)
