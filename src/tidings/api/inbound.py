"""``/v1/inbound``: messages people sent to our numbers, from every provider."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Query
from fastapi.responses import Response

from tidings.api.auth import Reader
from tidings.api.common import AUTHENTICATED, PARAMETERS, ServiceDep, errors, id_cursor, json_response, times
from tidings.api.schemas import InboundPage
from tidings.clock import utc_field
from tidings.domain.requests import TIME_PARAMETER, Timestamp
from tidings.errors import BadRequest, InvalidInput, printable

router = APIRouter(tags=["inbound"])


@router.get(
    "/v1/inbound",
    operation_id="listInbound",
    response_model=InboundPage,
    responses=errors(*AUTHENTICATED, *PARAMETERS, BadRequest, InvalidInput),
)
async def list_inbound(
    _key: Reader,
    service: ServiceDep,
    sender: Annotated[str | None, Query(alias="from", max_length=64)] = None,
    to: Annotated[str | None, Query(max_length=64)] = None,
    since: Annotated[Timestamp | None, Query(description=TIME_PARAMETER)] = None,
    until: Annotated[Timestamp | None, Query(description=TIME_PARAMETER)] = None,
    cursor: Annotated[str | None, Query(max_length=64)] = None,
    limit: Annotated[int, Query(ge=1, le=500)] = 50,
) -> Response:
    """Inbound SMS from every provider, newest first; pass ``next_cursor`` back as ``cursor``."""
    page, next_cursor = await service.inbound.search(
        sender=printable(sender, "from"),
        to=printable(to, "to"),
        since=utc_field(since, "since"),
        until=utc_field(until, "until"),
        cursor=id_cursor(cursor),
        limit=limit,
    )
    data = [times(r, "sent_at", "received_at", "redacted_at") for r in page]
    return json_response({"data": data, "next_cursor": next_cursor})
