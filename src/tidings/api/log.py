"""``/v1/log``: the message log (seed 003), everything that crossed the wire."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Query
from fastapi.responses import Response

from tidings.api.auth import Reader
from tidings.api.common import (
    AUTHENTICATED,
    PARAMETERS,
    ServiceDep,
    errors,
    json_response,
    phone_number,
    read_time_cursor,
    time_cursor,
    times,
)
from tidings.api.schemas import LogPage
from tidings.clock import utc_field
from tidings.domain.requests import TIME_PARAMETER, Timestamp
from tidings.errors import BadRequest, InvalidInput, InvalidPhoneNumber, printable
from tidings.store.log import Kind, LogFilter

router = APIRouter(tags=["log"])


@router.get(
    "/v1/log",
    operation_id="listLog",
    response_model=LogPage,
    responses=errors(*AUTHENTICATED, *PARAMETERS, BadRequest, InvalidInput, InvalidPhoneNumber),
)
async def message_log(
    _key: Reader,
    service: ServiceDep,
    kind: Kind | None = None,
    number: Annotated[str | None, Query(max_length=64)] = None,
    message_id: Annotated[str | None, Query(max_length=64)] = None,
    since: Annotated[Timestamp | None, Query(description=TIME_PARAMETER)] = None,
    until: Annotated[Timestamp | None, Query(description=TIME_PARAMETER)] = None,
    cursor: Annotated[str | None, Query(max_length=200)] = None,
    limit: Annotated[int, Query(ge=1, le=500)] = 50,
) -> Response:
    """Everything that crossed the wire, newest first: ``OUTBOUND`` (send attempts and the
    provider's answer), ``INBOUND`` and ``STATUS_UPDATE`` (receipts with their raw status)."""
    filters = LogFilter(
        kind=kind,
        number=phone_number(number, service.settings.default_region, "number") if number else None,
        message_id=printable(message_id, "message_id"),
        since=utc_field(since, "since"),
        until=utc_field(until, "until"),
    )
    before = read_time_cursor(cursor) if cursor else None
    rows = await service.store.log.search(filters, before=before, limit=limit + 1)
    page = rows[:limit]
    next_cursor = time_cursor(page[-1]["at"], page[-1]["id"]) if len(rows) > limit else None
    return json_response({"data": [times(r, "at") for r in page], "next_cursor": next_cursor})
