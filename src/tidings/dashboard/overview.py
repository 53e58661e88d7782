"""The overview: how today went, at a glance."""

from __future__ import annotations

from datetime import timedelta

from fastapi import APIRouter, Request
from fastapi.responses import Response

from tidings.clock import utcnow
from tidings.dashboard.web import Operator, ServiceDep, render

router = APIRouter()


@router.get("/")
async def overview(request: Request, _session: Operator, service: ServiceDep) -> Response:
    now = utcnow()
    since = now.replace(hour=0, minute=0, second=0, microsecond=0)
    summary = await service.stats.messages(since=since, until=now + timedelta(seconds=1))
    return render(request, "overview.html", page="overview", summary=summary, since=since)
