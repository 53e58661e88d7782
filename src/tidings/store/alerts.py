"""Alerts: the conditions the alert rules found (``services/alerts.py`` judges; this module writes).

An alert is raised once: its insert does nothing while the rule has an open alert for the same
subject (the unique partial index ``ix_alerts_open``), so several workers evaluating at the same
moment raise it once. It stays open while its condition holds, each check recording the figure
measured, and is resolved by a compare-and-set on its still being open. A raise or a resolve and
the callbacks that announce it (to every admin key with a callback URL) are one transaction.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import or_, select, update
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.ext.asyncio import AsyncEngine

from tidings import ids
from tidings.domain.callbacks import alert_payload
from tidings.store.callbacks import queue_alert_callbacks
from tidings.store.db import plain
from tidings.store.tables import alerts

OPEN = "open"
RESOLVED = "resolved"


class AlertStore:
    def __init__(self, engine: AsyncEngine) -> None:
        self.engine = engine
        self.is_postgres = engine.dialect.name == "postgresql"

    async def open_alerts(self) -> list[dict[str, Any]]:
        """Every open alert (through ``ix_alerts_open``, which holds only those)."""
        query = select(alerts).where(alerts.c.resolved_at.is_(None)).order_by(alerts.c.id)
        async with self.engine.connect() as conn:
            return [plain(r) for r in (await conn.execute(query)).mappings()]

    async def raise_alert(
        self,
        *,
        rule: str,
        subject: str,
        value: float,
        threshold: float,
        detail: dict[str, Any],
        message: str,
        now: datetime,
    ) -> dict[str, Any] | None:
        """Open an alert of ``rule`` about ``subject`` and queue its ``alert.raised`` callbacks;
        ``None`` when one is open already (raised by an earlier check, or by another worker)."""
        dialect_insert = postgresql.insert if self.is_postgres else sqlite.insert
        statement = (
            dialect_insert(alerts)
            .values(
                id=ids.new_id(),
                rule=rule,
                subject=subject,
                status=OPEN,
                raised_at=now,
                last_checked_at=now,
                value=value,
                threshold=threshold,
                detail=detail,
                message=message,
            )
            .on_conflict_do_nothing(
                index_elements=[alerts.c.rule, alerts.c.subject], index_where=alerts.c.resolved_at.is_(None)
            )
            .returning(*alerts.c)
        )
        return await self._announced(statement, now)

    async def confirm(self, alert_id: str, *, value: float, detail: dict[str, Any], now: datetime) -> bool:
        """Record that an open alert's condition still holds, with the figure measured now;
        ``False`` when it is no longer open (another worker resolved it meanwhile)."""
        async with self.engine.begin() as conn:
            result = await conn.execute(
                update(alerts)
                .where(alerts.c.id == alert_id, alerts.c.resolved_at.is_(None))
                .values(last_checked_at=now, value=value, detail=detail)
            )
        return result.rowcount == 1

    async def resolve(
        self,
        alert_id: str,
        *,
        now: datetime,
        value: float | None = None,
        detail: dict[str, Any] | None = None,
    ) -> dict[str, Any] | None:
        """Resolve an open alert (with the figure measured now, when there is one) and queue its
        ``alert.resolved`` callbacks; ``None`` when it was not open any more (another worker
        resolved it first)."""
        values: dict[str, Any] = {"status": RESOLVED, "resolved_at": now, "last_checked_at": now}
        if value is not None:
            values["value"] = value
        if detail is not None:
            values["detail"] = detail
        statement = (
            update(alerts)
            .where(alerts.c.id == alert_id, alerts.c.resolved_at.is_(None))
            .values(values)
            .returning(*alerts.c)
        )
        return await self._announced(statement, now)

    async def _announced(self, statement: Any, now: datetime) -> dict[str, Any] | None:
        """Run ``statement`` (a raise or a resolve returning the alert) and, when it changed an
        alert, queue the callback announcing it, in one transaction."""
        async with self.engine.begin() as conn:
            row = (await conn.execute(statement)).mappings().first()
            if row is None:
                return None
            alert = plain(row)
            await queue_alert_callbacks(conn, alert_payload(alert), now=now)
        return alert

    async def search(
        self,
        *,
        status: str | None = None,
        rule: str | None = None,
        since: datetime | None = None,
        before_id: str | None = None,
        limit: int = 50,
    ) -> list[dict[str, Any]]:
        """Alerts, newest first; ``since`` keeps those open at some moment since then (still
        open, or resolved after it)."""
        query = select(alerts).order_by(alerts.c.id.desc()).limit(limit)
        if status == OPEN:
            query = query.where(alerts.c.resolved_at.is_(None))
        elif status == RESOLVED:
            query = query.where(alerts.c.resolved_at.is_not(None))
        if rule is not None:
            query = query.where(alerts.c.rule == rule)
        if since is not None:
            query = query.where(or_(alerts.c.resolved_at.is_(None), alerts.c.resolved_at >= since))
        if before_id is not None:
            query = query.where(alerts.c.id < before_id)
        async with self.engine.connect() as conn:
            return [plain(r) for r in (await conn.execute(query)).mappings()]
