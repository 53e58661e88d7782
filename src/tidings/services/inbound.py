"""Inbound messages and what they set off, and the opt-out list.

Every inbound message from every provider (a webhook, or an Android phone's poll) is stored once
per provider id, and in the same transaction: its callbacks are queued, and when it is a keyword
alone the sender is opted out (their waiting messages cancelled) or back in, and the configured
auto-reply is queued. Applications manage the list directly too (a patient who asked on paper).
"""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, Literal

from sqlalchemy.ext.asyncio import AsyncConnection

from tidings import metrics
from tidings.clock import utcnow
from tidings.config import Settings
from tidings.domain.addresses import normalize_email, normalize_sender
from tidings.domain.content import Channel
from tidings.domain.keywords import Action, Keywords
from tidings.domain.messages import NewMessage
from tidings.domain.phone import phone_number
from tidings.domain.reports import InboundMessage
from tidings.errors import InvalidInput, NotFound, printable
from tidings.store import Store, messages, optouts
from tidings.store.callbacks import queue_inbound_callbacks
from tidings.store.inbound import inbound_row, store_rows
from tidings.store.messages import ALL_SENDERS

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class InboundPolicy:
    """What tidings does with inbound messages (from the settings)."""

    keywords: Keywords
    scope: Literal["all", "sender"] = "all"
    replies: Mapping[Action, str] = field(default_factory=dict)
    max_attempts: int = 11

    def scope_for(self, our_number: str | None) -> str:
        return our_number if self.scope == "sender" and our_number else ALL_SENDERS

    @classmethod
    def from_settings(cls, settings: Settings) -> InboundPolicy:
        replies = {
            Action.OPT_OUT: settings.opt_out_reply,
            Action.OPT_IN: settings.opt_in_reply,
            Action.HELP: settings.help_reply,
        }
        return cls(
            keywords=Keywords(settings.opt_out_keywords, settings.opt_in_keywords, settings.help_keywords),
            scope=settings.opt_out_scope,
            replies={action: text for action, text in replies.items() if text},
            max_attempts=settings.max_attempts,
        )


SENDER_CHARS = 64
"""The longest sender an opt-out may be scoped to."""
NOTE_CHARS = 1000
"""The longest note an opt-out may carry."""


@dataclass(frozen=True)
class OptOutTarget:
    """What an opt-out names: an address on a channel, from one of our senders or from all."""

    channel: Channel
    address: str
    scope: str = ALL_SENDERS


def address_channel(address: str) -> Channel:
    """The channel an address written alone is on: an email address has an ``@``, a number not."""
    return Channel.EMAIL if "@" in address else Channel.SMS


def opt_out_target(
    channel: Channel, address: str, sender: str | None, *, region: str | None, field: str
) -> OptOutTarget:
    """Read an address as the opt-out list keeps it (a number in E.164, an email address
    normalised), and the sender it is scoped to (none: every sender); the errors name ``field``
    (and ``sender``). The API and the dashboard read opt-outs, and opt-ins, through this."""
    if sender is not None and len(sender) > SENDER_CHARS:
        raise InvalidInput(f"sender has more than {SENDER_CHARS} characters", field="sender")
    if channel is Channel.EMAIL:
        email = normalize_email(address, field)
        return OptOutTarget(channel, email, normalize_sender(sender, "sender") if sender else ALL_SENDERS)
    number = phone_number(address, region, field)
    return OptOutTarget(channel, number, printable(sender, "sender") or ALL_SENDERS)


def opt_out_note(note: str | None) -> str | None:
    """An opt-out's note as kept (``None`` when blank); :class:`InvalidInput` when too long."""
    if note is None or not note.strip():
        return None
    if len(note) > NOTE_CHARS:
        raise InvalidInput(f"note has more than {NOTE_CHARS} characters", field="note")
    return printable(note, "note")


@dataclass(frozen=True)
class Received:
    """What one batch of inbound messages did."""

    stored: list[dict[str, Any]]
    duplicates: int
    replies: int = 0
    """Automatic replies queued (SMS, through the provider the messages came from)."""


class InboundService:
    def __init__(self, store: Store, policy: InboundPolicy) -> None:
        self.store = store
        self.policy = policy

    async def receive(
        self, provider: str, items: Sequence[InboundMessage], *, webhook_log_id: int | None = None
    ) -> Received:
        """Store ``items`` from ``provider`` and what they set off, in one transaction."""
        if not items:
            return Received(stored=[], duplicates=0)
        async with self.store.transaction() as conn:
            received = await self.keep(conn, provider, items, webhook_log_id=webhook_log_id)
        metrics.accepted(provider, Channel.SMS.value, received.replies)
        return received

    async def keep(
        self,
        conn: AsyncConnection,
        provider: str,
        items: Sequence[InboundMessage],
        *,
        webhook_log_id: int | None = None,
    ) -> Received:
        """Store ``items`` once each (a provider's resend is skipped) and run what each new one
        sets off, in ``conn``'s transaction."""
        now = utcnow()
        rows = [
            inbound_row(
                provider=provider,
                sender=item.sender,
                body=item.body,
                now=now,
                to=item.to,
                provider_message_id=item.provider_message_id,
                sent_at=item.sent_at,
                raw=item.raw,
                webhook_log_id=webhook_log_id,
            )
            for item in items
        ]
        stored = await store_rows(conn, rows)
        await queue_inbound_callbacks(conn, stored)
        replies = 0
        for row in stored:
            replies += await self._act_on_keyword(conn, row)
        if len(stored) < len(rows):
            log.info(
                "%d inbound messages already stored; skipped",
                len(rows) - len(stored),
                extra={"action": "inbound", "provider": provider},
            )
        if stored:
            log.info(
                "%d inbound messages stored",
                len(stored),
                extra={"action": "inbound", "provider": provider},
            )
        return Received(stored=stored, duplicates=len(rows) - len(stored), replies=replies)

    async def _act_on_keyword(self, conn: AsyncConnection, sms: Mapping[str, Any]) -> bool:
        """Act on a keyword alone in ``sms``; returns whether an automatic reply was queued."""
        found = self.policy.keywords.match(sms["body"])
        if found is None:
            return False
        number, scope = sms["from"], self.policy.scope_for(sms.get("to"))
        now = sms["received_at"]
        if found.action is Action.OPT_OUT:
            await optouts.suppress(
                conn,
                Channel.SMS.value,
                number,
                scope,
                source="keyword",
                cancel_source="opt_out:keyword",
                reason=f"the recipient opted out ({found.keyword})",
                keyword=found.keyword,
                inbound_id=sms["id"],
                now=now,
            )
        elif found.action is Action.OPT_IN:
            await optouts.remove(conn, Channel.SMS.value, number, scope)
        reply = self.policy.replies.get(found.action)
        if reply:
            # The reply to a STOP is exempt from the suppression list: it confirms the opt-out.
            new = NewMessage.sms(
                to=number,
                text=reply,
                provider=sms["provider"],
                max_attempts=self.policy.max_attempts,
                sender=sms.get("to"),
                tags=["auto-reply", found.action.value],
                metadata={"in_reply_to": sms["id"]},
                exempt_from_opt_out=True,
            )
            refused = await messages.insert_many(conn, [(messages.new_row(new, now), new)])
            return refused == [None]
        return False

    async def search(
        self,
        *,
        sender: str | None = None,
        to: str | None = None,
        since: datetime | None = None,
        until: datetime | None = None,
        cursor: str | None = None,
        limit: int = 50,
    ) -> tuple[list[dict[str, Any]], str | None]:
        """A page of inbound messages, newest first, and the next page's cursor."""
        rows = await self.store.inbound.search(
            sender=sender, to=to, since=since, until=until, after_id=cursor, limit=limit + 1
        )
        page = rows[:limit]
        return page, (page[-1]["id"] if len(rows) > limit else None)

    # -- the opt-out list, managed by applications ------------------------------------------------

    async def opt_outs(
        self, *, target: OptOutTarget | None = None, cursor: str | None = None, limit: int = 50
    ) -> tuple[list[dict[str, Any]], str | None]:
        """A page of the list, newest first (only ``target``'s address when given, whatever its
        scope), and the next page's cursor."""
        rows = await self.store.opt_outs.search(
            channel=target.channel.value if target else None,
            address=target.address if target else None,
            after_id=cursor,
            limit=limit + 1,
        )
        page = rows[:limit]
        return page, (page[-1]["id"] if len(rows) > limit else None)

    async def opt_out(
        self,
        channel: Channel,
        address: str,
        scope: str = ALL_SENDERS,
        *,
        note: str | None = None,
        source: Literal["api", "dashboard"] = "api",
    ) -> tuple[bool, int]:
        """Put ``address`` on the list and cancel its waiting messages; returns whether it was new
        and how many messages were cancelled. ``source`` says who asked: an application, or an
        operator on the dashboard."""
        now = utcnow()
        async with self.store.transaction() as conn:
            created, cancelled = await optouts.suppress(
                conn,
                channel.value,
                address,
                scope,
                source=source,
                cancel_source=f"opt_out:{source}",
                reason="the recipient opted out",
                note=note,
                now=now,
            )
        return created, len(cancelled)

    async def opt_in(self, channel: Channel, address: str, scope: str = ALL_SENDERS) -> int:
        """Take ``address`` off the list; returns how many entries were removed
        (:class:`NotFound` when it was not on it)."""
        async with self.store.transaction() as conn:
            removed = await optouts.remove(conn, channel.value, address, scope)
        if not removed:
            raise NotFound(f"{address} has not opted out")
        return removed
