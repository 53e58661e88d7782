"""The Android gateway's poll: one transaction per poll.

A poll stores the SMS the phone received (with what they set off), applies its status updates in
order through the one status writer, hands over the messages due for it through the one claim,
and counts all that in the gateway's row. Doing it in one transaction makes a failed request
leave nothing behind, so the app's resend of the same data is harmless; and a resend after a
*lost response* is harmless too, because every step is idempotent: inbound SMS are unique per
(gateway, id), an update already recorded is skipped, and a message handed over but not
acknowledged is simply handed over again.

Handed over means ``sending`` with ``lease_owner = 'gateway'`` and no lease expiry (the reaper
leaves it alone: the phone has it), and no ``provider_status`` until the phone's first update.
"""

from __future__ import annotations

import hmac
import logging
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import timedelta
from typing import Any

from sqlalchemy.ext.asyncio import AsyncConnection

from tidings import metrics
from tidings.clock import utcnow
from tidings.domain.content import Channel
from tidings.domain.reports import ProviderReport
from tidings.providers.base import Provider
from tidings.providers.gateway import UPDATE_EVENT, GatewayPoll, GatewayProvider
from tidings.services.inbound import InboundService
from tidings.store import Store, events, gateways, messages, queue
from tidings.store.reports import ReportItem, ReportOutcome, StaleRead, apply_reports, count_changes

log = logging.getLogger(__name__)

_ATTEMPTS = 10

Words = tuple[str | None, str | None]


@dataclass
class Exchange:
    """What one poll did."""

    inbound_stored: int = 0
    inbound_duplicates: int = 0
    updates_applied: int = 0
    updates_repeated: int = 0
    updates_unknown: list[str] = field(default_factory=list)
    outgoing: list[queue.Claimed] = field(default_factory=list)
    handed_over_again: int = 0
    outcomes: list[ReportOutcome | None] = field(default_factory=list)
    """What each applied update did (counted in the metrics once committed)."""
    replies: int = 0
    """Automatic replies to keywords queued."""


def repeated_prefix(recorded: Sequence[Words], incoming: Sequence[Words]) -> int:
    """How many of ``incoming`` were recorded already: the longest start of ``incoming`` that the
    recorded updates end with (the app resends what it sent when our answer was lost)."""
    for size in range(min(len(recorded), len(incoming)), 0, -1):
        if list(recorded[-size:]) == list(incoming[:size]):
            return size
    return 0


def _words(report: ProviderReport) -> Words:
    return (report.report.provider_status, report.report.error_message)


class GatewayService:
    def __init__(self, store: Store, inbound: InboundService, providers: Mapping[str, Provider]) -> None:
        self.store = store
        self.inbound = inbound
        self.phones = {name: p for name, p in providers.items() if isinstance(p, GatewayProvider)}

    def authenticate(self, username: str, password: str) -> GatewayProvider | None:
        """The phone with these credentials, compared with every phone's in constant time."""
        found = None
        for provider in self.phones.values():
            same_user = hmac.compare_digest(username.encode(), provider.settings.username.encode())
            same_password = hmac.compare_digest(
                password.encode(), provider.settings.password.get_secret_value().encode()
            )
            if same_user and same_password:
                found = provider
        return found

    async def exchange(self, phone: GatewayProvider, poll: GatewayPoll, *, address: str | None) -> Exchange:
        """Process one poll of ``phone`` in one transaction; see the module docstring."""
        for _ in range(_ATTEMPTS):
            try:
                async with self.store.transaction() as conn:
                    result = await self._exchange(conn, phone, poll, address)
            except StaleRead:
                continue
            count_changes(result.outcomes)
            metrics.accepted(phone.name, Channel.SMS.value, result.replies)
            return result
        raise RuntimeError(f"messages of gateway {phone.name} kept changing during a poll")

    async def _exchange(
        self, conn: AsyncConnection, phone: GatewayProvider, poll: GatewayPoll, address: str | None
    ) -> Exchange:
        now = utcnow()
        result = Exchange()
        received = await self.inbound.keep(conn, phone.name, phone.inbound(poll))
        result.inbound_stored = len(received.stored)
        result.inbound_duplicates = received.duplicates
        result.replies = received.replies
        await self._apply_updates(conn, phone, phone.reports(poll), result)
        limit = phone.settings.batch_size
        again = await queue.held_unacknowledged(conn, phone.name, gateways.HANDED_OVER, limit=limit)
        handed: list[queue.Claimed] = []
        if len(again) < limit:
            consumer = queue.Consumer(
                owner=gateways.HANDED_OVER,
                lease_seconds=None,
                event="handed_to_gateway",
                source=f"gateway:{phone.name}",
                detail={"gateway_status": "forwarded-to-gateway"},
            )
            not_sent: list[ReportOutcome] = []
            handed = await queue.claim(
                conn, phone.name, consumer, limit=limit - len(again), now=now, not_sent=not_sent
            )
            # Messages whose recipient opted out meanwhile: failed, counted once committed.
            result.outcomes.extend(not_sent)
        result.outgoing = again + handed
        result.handed_over_again = len(again)
        await gateways.count_poll(
            conn,
            phone.name,
            address=address,
            now=now,
            inbound=len(poll.inbound),
            updates=len(poll.updates),
            handed_over=len(handed),
        )
        return result

    async def _apply_updates(
        self, conn: AsyncConnection, phone: GatewayProvider, reports: list[ProviderReport], result: Exchange
    ) -> None:
        if not reports:
            return
        wanted = sorted({r.message_id for r in reports if r.message_id is not None})
        # Updates for unknown ids or another phone's messages are skipped.
        known = await messages.of_provider(conn, wanted, phone.name)
        recorded = await events.recorded_words(conn, sorted(known), UPDATE_EVENT)
        # Per message, skip the updates this request repeats from one whose answer was lost.
        skip = {
            m: repeated_prefix(recorded[m], [_words(r) for r in reports if r.message_id == m]) for m in known
        }
        items = []
        for report in reports:
            message_id = report.message_id
            if message_id is None or message_id not in known:
                result.updates_unknown.append(str(message_id))
                continue
            if skip[message_id] > 0:
                skip[message_id] -= 1
                result.updates_repeated += 1
                continue
            explained = phone.explain(report.report)
            items.append(ReportItem(message_id, explained, type=UPDATE_EVENT, provider=phone.name))
        outcomes = await apply_reports(conn, items, self.store.reports.prices)
        result.outcomes = outcomes
        result.updates_applied = sum(1 for o in outcomes if o is not None and o.refused is None)

    async def states(self) -> list[dict[str, Any]]:
        """Each configured phone with its first and last poll (naive UTC, ``None`` if it never
        polled), counts, its ``silent_after_seconds`` and whether it went silent."""
        states = await self.store.gateways.states(sorted(self.phones))
        now = utcnow()
        out = []
        for name, state in states.items():
            last = state.get("last_poll_at")
            silent_after = timedelta(seconds=self.phones[name].settings.silent_after_seconds)
            out.append(
                {
                    "name": name,
                    "last_poll_at": last,
                    "first_poll_at": state.get("first_poll_at"),
                    "last_address": state.get("last_address"),
                    "silent": last is None or now - last > silent_after,
                    "silent_after_seconds": silent_after.total_seconds(),
                    "polls": int(state.get("polls") or 0),
                    "inbound_received": int(state.get("inbound_received") or 0),
                    "updates_received": int(state.get("updates_received") or 0),
                    "messages_handed_over": int(state.get("messages_handed_over") or 0),
                    "waiting": state["waiting"],
                    "unacknowledged": state["unacknowledged"],
                }
            )
        return out
