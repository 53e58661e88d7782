"""Gateways and providers: each Android phone's last poll, whether it went silent, what waits for
it and what it holds unacknowledged; each provider's failures, failovers and oldest waiting
message over the last :data:`WINDOW`.

The figures are those of the API and the alert rules, read the same way: ``GET /v1/gateways``
(``GatewayService.states``), ``GET /v1/stats?by=provider`` (``StatsService.messages``), and the
failover and oldest-waiting measures of ``store/measures.py``.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from fastapi import APIRouter, Request
from fastapi.responses import Response

from tidings.clock import utcnow
from tidings.dashboard.web import Operator, ServiceDep, render
from tidings.services import Service
from tidings.store import measures

router = APIRouter()

WINDOW = timedelta(hours=1)
"""The recent past each provider's figures cover."""
REFRESH_SECONDS = 15


@dataclass(frozen=True)
class ProviderHealth:
    """How one provider did over the window, and what waits for it now."""

    name: str
    kind: str
    attempted: int
    """Messages accepted in the window for it and not cancelled."""
    delivered: int
    failed: int
    failure_rate: float | None
    """``failed / attempted`` (``None`` when nothing was attempted), as the statistics give it."""
    failovers: int
    """Its messages passed on to the next provider of their route in the window."""
    oldest_due: datetime | None
    """When its longest-waiting due message came due (``None``: nothing waits)."""


async def provider_health(service: Service, now: datetime) -> list[ProviderHealth]:
    """Every configured provider's :class:`ProviderHealth` over ``[now - WINDOW, now)``."""
    since = now - WINDOW
    figures = await service.stats.messages(since=since, until=now, by=["provider"])
    groups: dict[str, dict[str, Any]] = {g["key"]["provider"]: g for g in figures["groups"]}
    names = sorted(service.providers)
    async with service.store.engine.connect() as conn:
        failovers = await measures.failovers(conn, since, now)
        oldest = {name: await measures.oldest_due(conn, name, now) for name in names}
    found = []
    for name in names:
        group = groups.get(name, {})
        found.append(
            ProviderHealth(
                name=name,
                kind=service.providers[name].kind,
                attempted=int(group.get("total", 0)) - int(group.get("cancelled", 0)),
                delivered=int(group.get("delivered", 0)),
                failed=int(group.get("failed", 0)),
                failure_rate=group.get("failure_rate"),
                failovers=failovers.get(name, 0),
                oldest_due=oldest[name],
            )
        )
    return found


@router.get("/providers")
async def providers(request: Request, _session: Operator, service: ServiceDep) -> Response:
    now = utcnow()
    return render(
        request,
        "providers.html",
        page="providers",
        gateways=await service.gateway.states(),
        health=await provider_health(service, now),
        window_minutes=int(WINDOW.total_seconds() // 60),
        now=now,
        refresh=REFRESH_SECONDS,
    )
