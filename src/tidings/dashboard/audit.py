"""The audit log: who did what from the dashboard (signed in, cancelled, replayed, opted out…),
newest first."""

from __future__ import annotations

from fastapi import APIRouter, Request
from fastapi.responses import Response

from tidings.dashboard.web import Operator, ServiceDep, query_string, render
from tidings.dashboard.webhooks import int_cursor

router = APIRouter()

PAGE_SIZE = 50


@router.get("/audit")
async def audit_log(request: Request, _session: Operator, service: ServiceDep) -> Response:
    cursor = int_cursor(request.query_params.get("cursor"))
    rows = await service.store.operators.audit(before_id=cursor, limit=PAGE_SIZE + 1)
    entries = rows[:PAGE_SIZE]
    return render(
        request,
        "audit.html",
        page="audit",
        entries=entries,
        next_link=query_string({}, cursor=entries[-1]["id"]) if len(rows) > PAGE_SIZE else None,
        first_link="" if cursor else None,
    )
