"""What every route module shares: JSON answers, the running service, page cursors."""

from __future__ import annotations

import base64
import math
from datetime import datetime
from typing import Annotated, Any

import orjson
from fastapi import Depends, Request
from fastapi.responses import Response

from tidings import ids
from tidings.api.schemas import ErrorOut
from tidings.clock import to_api, to_db
from tidings.errors import BadRequest, InvalidInput, TidingsError, printable
from tidings.services import Service

ERRORS: dict[int | str, dict[str, Any]] = {
    status: {"model": ErrorOut} for status in (400, 401, 404, 409, 413, 422)
}
"""The error answers routes document."""

URL_PATTERN = r"^https?://[^\s]+$"


def json_response(content: Any, status_code: int = 200) -> Response:
    return Response(content=orjson.dumps(content), status_code=status_code, media_type="application/json")


def error_response(exc: TidingsError) -> Response:
    response = json_response(exc.to_dict(), exc.http_status)
    if exc.retry_after is not None:
        response.headers["Retry-After"] = str(max(1, math.ceil(exc.retry_after)))
    return response


def get_service(request: Request) -> Service:
    service: Service = request.app.state.service
    return service


ServiceDep = Annotated[Service, Depends(get_service)]
"""The running :class:`~tidings.services.Service`, for a route."""


def times(row: dict[str, Any], *names: str) -> dict[str, Any]:
    """``row`` with the columns ``names`` as API timestamps."""
    return {k: (to_api(v) if k in names else v) for k, v in row.items()}


def id_cursor(cursor: str | None) -> str | None:
    """A page cursor that is an id we gave out; 400 otherwise."""
    if cursor is not None and not ids.is_id(cursor):
        raise BadRequest("cursor is not one this API gave out", field="cursor")
    return cursor


def time_cursor(at: datetime, row_id: str) -> str:
    """An opaque cursor for a list ordered by time, then id."""
    return base64.urlsafe_b64encode(f"{at.isoformat()}|{row_id}".encode()).decode().rstrip("=")


def read_time_cursor(cursor: str) -> tuple[datetime, str]:
    """What :func:`time_cursor` made (a time given with an offset is read as that moment in UTC);
    400 for anything else."""
    try:
        raw = base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4)).decode()
        at, row_id = raw.split("|", 1)
        return to_db(datetime.fromisoformat(at)), printable(row_id, "cursor") or ""
    except (ValueError, UnicodeDecodeError, OverflowError, InvalidInput) as exc:
        raise BadRequest("cursor is not one this API gave out", field="cursor") from exc
