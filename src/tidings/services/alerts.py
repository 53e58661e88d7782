"""Alerts: every worker checks the rules of the ``[alerts]`` settings every ``alert_interval``.

A rule measures (the totals of ``store/stats.py``, the figures of ``store/measures.py``) and
reads each subject it is about: the whole installation (subject ``''``), a provider, an Android
gateway or a batch. A subject over the rule's threshold raises an alert, once; while it stays
over, each check records the figure on the open alert; when it clears (or the rule is switched
off) the alert is resolved. Raising and resolving are compare-and-sets in the database
(``store/alerts.py``), so workers checking at the same moment raise and resolve each alert once,
and each raise and resolve queues a signed callback to every admin key with a callback URL in the
same transaction. Raises are logged as warnings, resolves as information.

A rule whose measurement fails leaves its alerts as they are until a check succeeds: an error is
not taken for the condition clearing.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

from tidings.clock import to_api, utcnow
from tidings.config import (
    AlertRule,
    BatchStalledRule,
    CallbacksFailingRule,
    DeliveryRateRule,
    FailoverRule,
    FailureRateRule,
    GatewaySilentRule,
    OldestWaitingRule,
    PendingRule,
    Settings,
    WebhooksFailingRule,
)
from tidings.providers.base import Provider
from tidings.providers.gateway import GatewaySettings
from tidings.store import Store, measures
from tidings.store.stats import Totals, totals
from tidings.worker.periodic import every

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Reading:
    """What a rule measured about one subject, and whether that is over its threshold."""

    subject: str
    firing: bool
    value: float
    threshold: float
    message: str
    detail: dict[str, Any]


@dataclass
class Evaluation:
    """What one check of the rules did."""

    raised: list[dict[str, Any]] = field(default_factory=list)
    resolved: list[dict[str, Any]] = field(default_factory=list)
    failed: list[str] = field(default_factory=list)
    """Rules whose measurement failed (their alerts were left as they were)."""


def span(seconds: float) -> str:
    """A duration for a person: ``24 h``, ``15 min``, ``40 s``."""
    if abs(seconds) >= 3600:
        return f"{seconds / 3600:.3g} h"
    if abs(seconds) >= 60:
        return f"{seconds / 60:.3g} min"
    return f"{seconds:.3g} s"


def _totals_detail(found: Totals, window: float) -> dict[str, Any]:
    return {
        "window_seconds": window,
        "total": found.total,
        "attempted": found.attempted,
        "delivered": found.delivered,
        "failed": found.failed,
        "pending": found.pending,
    }


class AlertService:
    def __init__(self, store: Store, settings: Settings, providers: Mapping[str, Provider]) -> None:
        self.store = store
        self.settings = settings
        self.providers = providers

    async def evaluate(self, now: datetime | None = None) -> Evaluation:
        """Check every rule once, as at ``now``: raise, confirm and resolve alerts."""
        now = now or utcnow()
        result = Evaluation()
        open_alerts: dict[str, dict[str, dict[str, Any]]] = {}
        for alert in await self.store.alerts.open_alerts():
            open_alerts.setdefault(alert["rule"], {})[alert["subject"]] = alert
        windows: dict[float, Totals] = {}
        rules = self.settings.alerts
        for name in type(rules).model_fields:
            rule: AlertRule = getattr(rules, name)
            readings: list[Reading] = []
            if rule.enabled:
                try:
                    readings = await self._measure(rule, now, windows)
                except Exception:
                    log.exception(
                        "alert rule %s could not be checked; its alerts stay as they are",
                        name,
                        extra={"action": "alert", "rule": name},
                    )
                    result.failed.append(name)
                    continue
            await self._apply(name, readings, open_alerts.get(name, {}), now, result, enabled=rule.enabled)
        return result

    async def run(self, stop: asyncio.Event) -> None:
        """Check the rules every ``alert_interval`` until ``stop`` is set."""
        await every(
            self.settings.alert_interval,
            stop,
            self.evaluate,
            failed="alert check failed; trying again later",
            action="alert",
        )

    async def search(
        self, *, status: str | None, rule: str | None, since: datetime | None, cursor: str | None, limit: int
    ) -> tuple[list[dict[str, Any]], str | None]:
        """A page of alerts, newest first, and the next page's cursor."""
        rows = await self.store.alerts.search(
            status=status, rule=rule, since=since, before_id=cursor, limit=limit + 1
        )
        page = rows[:limit]
        return page, (page[-1]["id"] if len(rows) > limit else None)

    async def _apply(
        self,
        name: str,
        readings: list[Reading],
        open_now: dict[str, dict[str, Any]],
        now: datetime,
        result: Evaluation,
        *,
        enabled: bool,
    ) -> None:
        alerts = self.store.alerts
        found = {r.subject: r for r in readings}
        # In one order on every worker, so that concurrent checks take row locks in the same order.
        for subject in sorted(found.keys() | open_now.keys()):
            reading = found.get(subject)
            alert = open_now.get(subject)
            if reading is not None and reading.firing:
                if alert is not None and await alerts.confirm(
                    alert["id"], value=reading.value, detail=reading.detail, now=now
                ):
                    continue
                raised = await alerts.raise_alert(
                    rule=name,
                    subject=subject,
                    value=reading.value,
                    threshold=reading.threshold,
                    detail=reading.detail,
                    message=reading.message,
                    now=now,
                )
                if raised is not None:
                    result.raised.append(raised)
                    log.warning("alert raised: %s", raised["message"], extra=_fields(raised))
            elif alert is not None:
                resolved = await alerts.resolve(
                    alert["id"],
                    now=now,
                    value=reading.value if reading is not None else None,
                    detail=reading.detail if reading is not None else None,
                )
                if resolved is not None:
                    result.resolved.append(resolved)
                    why = "cleared" if enabled else "its rule is switched off"
                    log.info("alert resolved (%s): %s", why, resolved["message"], extra=_fields(resolved))

    async def _measure(self, rule: AlertRule, now: datetime, windows: dict[float, Totals]) -> list[Reading]:
        if isinstance(rule, DeliveryRateRule | FailureRateRule | PendingRule):
            window = rule.window_seconds
            if window not in windows:
                async with self.store.transaction() as conn:
                    windows[window] = await totals(conn, now - timedelta(seconds=window), now)
            return _judge_totals(rule, windows[window])
        if isinstance(rule, OldestWaitingRule):
            return await self._oldest_waiting(rule, now)
        if isinstance(rule, FailoverRule):
            return await self._failover(rule, now)
        if isinstance(rule, GatewaySilentRule):
            return await self._gateway_silent(rule, now)
        if isinstance(rule, WebhooksFailingRule):
            return await self._webhooks_failing(rule, now)
        if isinstance(rule, CallbacksFailingRule):
            return await self._callbacks_failing(rule, now)
        if isinstance(rule, BatchStalledRule):
            return await self._batch_stalled(rule, now)
        raise TypeError(f"no measurement for {type(rule).__name__}")

    async def _oldest_waiting(self, rule: OldestWaitingRule, now: datetime) -> list[Reading]:
        readings = []
        async with self.store.transaction() as conn:
            for provider in sorted(self.providers):
                oldest = await measures.oldest_due(conn, provider, now)
                if oldest is None:
                    continue
                waited = (now - oldest).total_seconds()
                readings.append(
                    Reading(
                        subject=provider,
                        firing=waited > rule.seconds,
                        value=waited,
                        threshold=rule.seconds,
                        message=(
                            f"messages for provider {provider} have waited {span(waited)} for a worker "
                            f"(more than {span(rule.seconds)}): the oldest came due at {to_api(oldest)}"
                        ),
                        detail={"provider": provider, "oldest_due_at": to_api(oldest)},
                    )
                )
        return readings

    async def _failover(self, rule: FailoverRule, now: datetime) -> list[Reading]:
        window = rule.window_seconds
        async with self.store.transaction() as conn:
            counts = await measures.failovers(conn, now - timedelta(seconds=window), now)
        return [
            Reading(
                subject=provider,
                firing=count > rule.above,
                value=count,
                threshold=rule.above,
                message=(
                    f"provider {provider} passed {count} messages on to the next provider of their "
                    f"route in the last {span(window)} (more than {rule.above})"
                ),
                detail={"provider": provider, "failovers": count, "window_seconds": window},
            )
            for provider, count in sorted(counts.items())
        ]

    async def _gateway_silent(self, rule: GatewaySilentRule, now: datetime) -> list[Reading]:
        readings = []
        for name, provider in sorted(self.providers.items()):
            settings = provider.settings
            if not isinstance(settings, GatewaySettings):
                continue
            last = await self.store.gateways.last_poll(name)
            if last is None:
                continue  # never polled: a phone not set up yet has nothing to miss
            limit = rule.seconds if rule.seconds is not None else settings.silent_after_seconds
            silent = (now - last).total_seconds()
            readings.append(
                Reading(
                    subject=name,
                    firing=silent > limit,
                    value=silent,
                    threshold=limit,
                    message=(
                        f"Android gateway {name} has not polled for {span(silent)} "
                        f"(more than {span(limit)}): its last poll was at {to_api(last)}"
                    ),
                    detail={"gateway": name, "last_poll_at": to_api(last)},
                )
            )
        return readings

    async def _webhooks_failing(self, rule: WebhooksFailingRule, now: datetime) -> list[Reading]:
        window = rule.window_seconds
        async with self.store.transaction() as conn:
            outcomes = await measures.webhook_outcomes(conn, now - timedelta(seconds=window), now)
        readings = []
        for provider, outcome in sorted(outcomes.items()):
            share = outcome.failed_share
            if share is None:
                continue
            readings.append(
                Reading(
                    subject=provider,
                    firing=outcome.finished > rule.min_requests and share > rule.above,
                    value=share,
                    threshold=rule.above,
                    message=(
                        f"{outcome.failed} of the {outcome.finished} webhooks from provider {provider} "
                        f"in the last {span(window)} were refused or failed ({share:.1%}, more than "
                        f"{rule.above:.1%})"
                    ),
                    detail={
                        "provider": provider,
                        "finished": outcome.finished,
                        "failed": outcome.failed,
                        "window_seconds": window,
                    },
                )
            )
        return readings

    async def _callbacks_failing(self, rule: CallbacksFailingRule, now: datetime) -> list[Reading]:
        window = rule.window_seconds
        async with self.store.transaction() as conn:
            found = await measures.failing_callbacks(conn, now - timedelta(seconds=window))
        count = found.failed + found.retrying
        return [
            Reading(
                subject="",
                firing=count > rule.above,
                value=count,
                threshold=rule.above,
                message=(
                    f"{count} callbacks queued in the last {span(window)} failed ({found.failed}) or "
                    f"wait for another attempt ({found.retrying}) (more than {rule.above})"
                ),
                detail={"failed": found.failed, "retrying": found.retrying, "window_seconds": window},
            )
        ]

    async def _batch_stalled(self, rule: BatchStalledRule, now: datetime) -> list[Reading]:
        cutoff = now - timedelta(seconds=rule.seconds)
        async with self.store.transaction() as conn:
            batches = await measures.waiting_batches(conn, cutoff)
        readings = []
        for batch in batches:
            quiet = (now - batch.last_activity).total_seconds()
            readings.append(
                Reading(
                    subject=batch.batch_id,
                    firing=batch.last_activity < cutoff,
                    value=quiet,
                    threshold=rule.seconds,
                    message=(
                        f"batch {batch.batch_id} has {batch.waiting} messages waiting and none of its "
                        f"messages moved for {span(quiet)} (more than {span(rule.seconds)})"
                    ),
                    detail={
                        "batch_id": batch.batch_id,
                        "waiting": batch.waiting,
                        "oldest_due_at": to_api(batch.oldest_due),
                        "last_activity_at": to_api(batch.last_activity),
                    },
                )
            )
        return readings


def _judge_totals(rule: DeliveryRateRule | FailureRateRule | PendingRule, found: Totals) -> list[Reading]:
    """The seed's three rules, on the totals of their window (definitions: ``store/stats.py``)."""
    window = rule.window_seconds
    detail = _totals_detail(found, window)
    if isinstance(rule, PendingRule):
        return [
            Reading(
                subject="",
                firing=found.pending > rule.above,
                value=found.pending,
                threshold=rule.above,
                message=(
                    f"{found.pending} of the messages accepted in the last {span(window)} have no final "
                    f"status yet (more than {rule.above})"
                ),
                detail=detail,
            )
        ]
    enough = found.attempted > rule.min_messages
    if isinstance(rule, DeliveryRateRule):
        rate = found.delivery_rate
        if rate is None:
            return []
        return [
            Reading(
                subject="",
                firing=enough and rate < rule.below,
                value=rate,
                threshold=rule.below,
                message=(
                    f"delivery rate {rate:.1%} is below {rule.below:.1%}: {found.delivered} of the "
                    f"{found.attempted} messages accepted in the last {span(window)} were delivered"
                ),
                detail=detail,
            )
        ]
    rate = found.failure_rate
    if rate is None:
        return []
    return [
        Reading(
            subject="",
            firing=enough and rate > rule.above,
            value=rate,
            threshold=rule.above,
            message=(
                f"failure rate {rate:.1%} is above {rule.above:.1%}: {found.failed} of the "
                f"{found.attempted} messages accepted in the last {span(window)} failed"
            ),
            detail=detail,
        )
    ]


def _fields(alert: Mapping[str, Any]) -> dict[str, Any]:
    """An alert's fields for a log line's ``extra``."""
    return {
        "action": "alert",
        "alert_id": alert["id"],
        "rule": alert["rule"],
        "subject": alert["subject"],
        "alert_status": alert["status"],
        "value": alert["value"],
        "threshold": alert["threshold"],
    }
