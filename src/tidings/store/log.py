"""The message log (seed 003): one queryable list of everything that crossed the wire.

It is a view over rows that already exist, so it cannot drift from them: ``OUTBOUND`` is each
send attempt's outcome (the events the worker records), ``STATUS_UPDATE`` each report from a
provider or gateway with its raw status, and ``INBOUND`` each inbound SMS.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Any, Literal

from sqlalchemy import String, cast, literal, null, or_, select, union_all
from sqlalchemy.ext.asyncio import AsyncEngine

from tidings.store.db import plain
from tidings.store.tables import inbound_messages, message_events, messages

Kind = Literal["OUTBOUND", "INBOUND", "STATUS_UPDATE"]

OUTBOUND_EVENTS = (
    "send_accepted",
    "send_failed",
    "send_error",
    "retry_scheduled",
    "failed_over",
    "handed_to_gateway",
)
STATUS_EVENTS = ("report", "gateway_update")


@dataclass(frozen=True)
class LogFilter:
    kind: Kind | None = None
    number: str | None = None
    message_id: str | None = None
    since: datetime | None = None
    until: datetime | None = None


class LogStore:
    def __init__(self, engine: AsyncEngine) -> None:
        self.engine = engine

    async def search(
        self, filters: LogFilter, *, before: tuple[datetime, str] | None = None, limit: int = 50
    ) -> list[dict[str, Any]]:
        """Log rows, newest first; ``before`` is the (time, id) of the last row of the previous page."""
        branches = []
        for kind, types in (("OUTBOUND", OUTBOUND_EVENTS), ("STATUS_UPDATE", STATUS_EVENTS)):
            if filters.kind not in (None, kind):
                continue
            query = (
                select(
                    literal(kind).label("kind"),
                    (literal("e") + cast(message_events.c.id, String)).label("id"),
                    message_events.c.occurred_at.label("at"),
                    messages.c.to.label("number"),
                    message_events.c.message_id.label("message_id"),
                    messages.c.provider.label("provider"),
                    message_events.c.type.label("event"),
                    message_events.c.status.label("status"),
                    message_events.c.provider_status.label("provider_status"),
                    message_events.c.error_code.label("error_code"),
                    message_events.c.error_message.label("error_message"),
                    messages.c.body.label("body"),
                    message_events.c.detail.label("detail"),
                )
                .select_from(message_events.join(messages, messages.c.id == message_events.c.message_id))
                .where(message_events.c.type.in_(types))
            )
            if filters.number is not None:
                query = query.where(messages.c.to == filters.number)
            if filters.message_id is not None:
                query = query.where(message_events.c.message_id == filters.message_id)
            if filters.since is not None:
                query = query.where(message_events.c.occurred_at >= filters.since)
            if filters.until is not None:
                query = query.where(message_events.c.occurred_at < filters.until)
            branches.append(query)
        if filters.kind in (None, "INBOUND") and filters.message_id is None:
            query = select(
                literal("INBOUND").label("kind"),
                (literal("i") + inbound_messages.c.id).label("id"),
                inbound_messages.c.received_at.label("at"),
                inbound_messages.c["from"].label("number"),
                null().label("message_id"),
                inbound_messages.c.provider.label("provider"),
                literal("inbound").label("event"),
                null().label("status"),
                null().label("provider_status"),
                null().label("error_code"),
                null().label("error_message"),
                inbound_messages.c.body.label("body"),
                inbound_messages.c.raw.label("detail"),
            )
            if filters.number is not None:
                query = query.where(inbound_messages.c["from"] == filters.number)
            if filters.since is not None:
                query = query.where(inbound_messages.c.received_at >= filters.since)
            if filters.until is not None:
                query = query.where(inbound_messages.c.received_at < filters.until)
            branches.append(query)
        if not branches:
            return []
        rows = union_all(*branches).subquery("log")
        page = select(rows).order_by(rows.c.at.desc(), rows.c.id.desc()).limit(limit)
        if before is not None:
            at, row_id = before
            page = page.where(or_(rows.c.at < at, (rows.c.at == at) & (rows.c.id < row_id)))
        async with self.engine.connect() as conn:
            return [plain(r._mapping) for r in (await conn.execute(page)).all()]
