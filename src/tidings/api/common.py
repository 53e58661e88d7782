"""What every route module shares: JSON answers, the running service, page cursors."""

from __future__ import annotations

import base64
import math
from datetime import datetime
from http import HTTPStatus
from typing import Annotated, Any

import orjson
from fastapi import Depends, Request
from fastapi.responses import Response

from tidings import ids
from tidings.api.schemas import error_schema
from tidings.clock import to_api, to_db
from tidings.domain.phone import phone_number as phone_number
from tidings.errors import (
    BadRequest,
    DatabaseUnavailable,
    Forbidden,
    InvalidInput,
    PayloadTooLarge,
    RateLimited,
    TidingsError,
    Unauthorized,
    ValidationFailed,
    printable,
)
from tidings.services import Service

AUTHENTICATED: tuple[type[TidingsError], ...] = (Unauthorized, Forbidden, RateLimited, DatabaseUnavailable)
"""What any operation that needs an API key can answer: no key, not its scope, over its rate, or
the database out of reach (the key is looked up in it)."""
PARAMETERS: tuple[type[TidingsError], ...] = (ValidationFailed,)
"""What an operation with path, query or header parameters can answer."""
POSTED: tuple[type[TidingsError], ...] = (PayloadTooLarge,)
"""What any POST or PUT can answer, whatever its body (``BodyLimit``)."""
JSON_BODY: tuple[type[TidingsError], ...] = (BadRequest, PayloadTooLarge, ValidationFailed)
"""What an operation that reads a JSON object from its body can answer."""


def errors(*raised: type[TidingsError]) -> dict[int | str, dict[str, Any]]:
    """The error answers of an operation that can raise ``raised``, for its ``responses``: per
    HTTP status, the error contract with ``code`` as the enum of those errors' codes, and an
    example of each."""
    by_status: dict[int, dict[str, type[TidingsError]]] = {}
    for error in raised:
        by_status.setdefault(error.http_status, {}).setdefault(error.code, error)
    answers: dict[int | str, dict[str, Any]] = {}
    for status, by_code in sorted(by_status.items()):
        examples = {code: error().to_dict() for code, error in by_code.items()}
        answer: dict[str, Any] = {
            "description": f"{HTTPStatus(status).phrase}: " + ", ".join(f"`{code}`" for code in by_code),
            "content": {
                "application/json": {
                    "schema": error_schema(list(by_code)),
                    "examples": {code: {"value": value} for code, value in examples.items()},
                }
            },
        }
        if status in (DatabaseUnavailable.http_status, RateLimited.http_status):
            answer["headers"] = {
                "Retry-After": {
                    "description": "Seconds to wait before trying again.",
                    "schema": {"type": "integer", "example": 1},
                }
            }
        answers[status] = answer
    return answers


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
