"""``/v1/alerts``: what the alert rules found, open and resolved."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Query
from fastapi.responses import Response

from tidings.api.auth import Reader
from tidings.api.common import AUTHENTICATED, PARAMETERS, ServiceDep, errors, id_cursor, json_response, times
from tidings.api.schemas import AlertPage, AlertStatus
from tidings.clock import utc_field
from tidings.config import RuleName
from tidings.domain.requests import TIME_PARAMETER, Timestamp
from tidings.errors import BadRequest, InvalidInput

router = APIRouter(tags=["alerts"])


@router.get(
    "/v1/alerts",
    operation_id="listAlerts",
    response_model=AlertPage,
    responses=errors(*AUTHENTICATED, *PARAMETERS, BadRequest, InvalidInput),
)
async def list_alerts(
    _key: Reader,
    service: ServiceDep,
    status: AlertStatus | None = None,
    rule: RuleName | None = None,
    since: Annotated[
        Timestamp | None,
        Query(description=f"Only alerts open at some moment since then. {TIME_PARAMETER}"),
    ] = None,
    cursor: Annotated[str | None, Query(max_length=64)] = None,
    limit: Annotated[int, Query(ge=1, le=500)] = 50,
) -> Response:
    """Alerts the rules raised, newest first: those open, and those resolved (``status``); pass
    ``next_cursor`` back as ``cursor``."""
    page, next_cursor = await service.alerts.search(
        status=status, rule=rule, since=utc_field(since, "since"), cursor=id_cursor(cursor), limit=limit
    )
    data = [times(r, "raised_at", "resolved_at", "last_checked_at") for r in page]
    return json_response({"data": data, "next_cursor": next_cursor})
