"""Applying provider reports (receipts, webhook updates, polls) to messages.

Every report from every provider, whether posted to a webhook, produced by the in-process fake or
returned by a status poll, comes through :meth:`Tracker.apply`: the message is found by our id,
else by the provider's id, else (for a receipt that lost both) as the most recent ``sent`` message
to the same number within :data:`RECIPIENT_FALLBACK`, and the report goes to the one status
writer (``store/reports.py``).
"""

from __future__ import annotations

import dataclasses
import logging
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import timedelta

from tidings.clock import utcnow
from tidings.domain.reports import ProviderReport
from tidings.providers.base import Provider
from tidings.store import Store
from tidings.store.reports import ReportItem, ReportOutcome

log = logging.getLogger(__name__)

RECIPIENT_FALLBACK = timedelta(hours=24)
"""How far back a receipt without a usable id is matched by its recipient's number."""


@dataclass(frozen=True)
class TrackResult:
    applied: list[ReportOutcome]
    unmatched: int


class Tracker:
    def __init__(self, store: Store, providers: Mapping[str, Provider]) -> None:
        self.store = store
        self.providers = providers

    async def apply(self, provider: str, reports: list[ProviderReport]) -> TrackResult:
        """Apply ``reports`` from ``provider`` in order; reports for unknown messages are logged."""
        applied: list[ReportOutcome] = []
        unmatched = 0
        adapter = self.providers.get(provider)
        for item in reports:
            if adapter is not None:
                item = dataclasses.replace(item, report=adapter.explain(item.report))
            outcome = None
            if item.message_id is not None:
                outcome = await self._apply(provider, item.message_id, item)
            if outcome is None:
                found = await self._find(provider, item)
                if found is not None:
                    outcome = await self._apply(provider, found, item)
            if outcome is None:
                unmatched += 1
                log.warning(
                    "report for no message of this provider's: recorded on the webhook log only",
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

    async def _apply(self, provider: str, message_id: str, item: ProviderReport) -> ReportOutcome | None:
        """Apply ``item`` to ``message_id``; ``None`` when there is no such message or its provider
        never had it."""
        outcome = await self.store.reports.apply(
            ReportItem(message_id, item.report, item.event, provider=provider)
        )
        return outcome if outcome is not None and outcome.refused is None else None

    async def _find(self, provider: str, item: ProviderReport) -> str | None:
        """The message a report is about when our own id did not find it."""
        messages = self.store.messages
        if item.provider_message_id is not None:
            found = await messages.find_by_provider_id(provider, item.provider_message_id)
            if found is not None:
                return found
        if item.recipient is not None:
            found = await messages.find_recent_sent(provider, item.recipient, utcnow() - RECIPIENT_FALLBACK)
            if found is not None:
                log.info(
                    "receipt matched by recipient: the most recent sent message to that number",
                    extra={"action": "report", "provider": provider, "message_id": found},
                )
                return found
        return None
