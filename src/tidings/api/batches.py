"""``/v1/batches``: one request, many recipients, in JSON or MessagePack; signed or with a bearer key."""

from __future__ import annotations

from typing import Annotated, Any

import msgpack
import orjson
from fastapi import APIRouter, Path, Query, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import Response
from pydantic import ValidationError

from tidings.api.auth import Reader, Sender, SignedSender
from tidings.api.common import (
    AUTHENTICATED,
    JSON_BODY,
    PARAMETERS,
    POSTED,
    ServiceDep,
    errors,
    id_cursor,
    json_response,
)
from tidings.api.schemas import (
    BatchAccepted,
    BatchOut,
    BatchPage,
    batch_json,
    batch_summary_json,
    inline_schema,
)
from tidings.domain.batches import BatchIn
from tidings.domain.requests import TIME_PARAMETER, Timestamp
from tidings.errors import (
    BadRequest,
    BatchRefused,
    CallbackUrlNotAllowed,
    IdempotencyConflict,
    InvalidInput,
    InvalidTemplate,
    NotCancellable,
    NotFound,
    SignatureReused,
    TooManyRecipients,
    UnsupportedMediaType,
)
from tidings.services.batches import batch_filter, fingerprint

router = APIRouter(tags=["batches"])

PATH = "/v1/batches"
JSON_TYPES = ("application/json",)
MSGPACK_TYPES = ("application/msgpack", "application/x-msgpack", "application/vnd.msgpack")


def decode(body: bytes, content_type: str | None) -> dict[str, Any]:
    """The batch object of a request body in JSON or MessagePack (by its ``Content-Type``)."""
    media = (content_type or "application/json").split(";")[0].strip().lower()
    if media in JSON_TYPES:
        try:
            decoded = orjson.loads(body)
        except orjson.JSONDecodeError as exc:
            raise BadRequest("request body is not valid JSON") from exc
    elif media in MSGPACK_TYPES:
        try:
            decoded = msgpack.unpackb(body, raw=False, strict_map_key=True)
        except Exception as exc:  # msgpack raises several unrelated types for broken input
            raise BadRequest("request body is not valid MessagePack") from exc
    else:
        raise UnsupportedMediaType(
            f"send a batch as application/json or application/msgpack, not {media[:100]}",
            field="Content-Type",
        )
    if not isinstance(decoded, dict):
        raise BadRequest("request body must be an object (a map)")
    return decoded


def _batch_body(model: type[BatchIn]) -> dict[str, Any]:
    schema = inline_schema(model)
    return {
        "requestBody": {
            "required": True,
            "content": {"application/json": {"schema": schema}, "application/msgpack": {"schema": schema}},
        }
    }


@router.post(
    PATH,
    operation_id="sendBatch",
    status_code=202,
    response_model=BatchAccepted,
    response_description="Accepted: every accepted recipient's message is stored and queued.",
    openapi_extra=_batch_body(BatchIn),
    responses={
        200: {"model": BatchAccepted, "description": "The batch sent before under this `group_id`."},
        **errors(
            *AUTHENTICATED,
            *JSON_BODY,
            InvalidInput,
            InvalidTemplate,
            BatchRefused,
            TooManyRecipients,
            CallbackUrlNotAllowed,
            IdempotencyConflict,
            SignatureReused,
            UnsupportedMediaType,
        ),
    },
)
async def send_batch(request: Request, key: SignedSender, service: ServiceDep) -> Response:
    """Accept a batch: what its messages share and one entry per recipient, each rendered from the
    template into its own message. Stored whole or not at all before this answers; recipients that
    cannot be accepted are listed by index. The same batch again under its ``group_id`` answers
    200 with the first result; another batch under it is a 409."""
    decoded = decode(await request.body(), request.headers.get("content-type"))
    try:
        spec = BatchIn.model_validate(decoded)
    except ValidationError as exc:
        raise RequestValidationError(exc.errors(include_url=False, include_context=False)) from exc
    row, created = await service.batches.submit(spec, key=key, request_hash=fingerprint(decoded))
    return json_response(batch_json(row), 202 if created else 200)


@router.get(
    PATH + "/{batch_id}",
    operation_id="getBatch",
    response_model=BatchOut,
    responses=errors(*AUTHENTICATED, *PARAMETERS, NotFound),
)
async def get_batch(
    batch_id: Annotated[str, Path(max_length=64)], _key: Reader, service: ServiceDep
) -> Response:
    """A batch: its shared part, its messages by status, progress (final / total), delivery and
    failure rate so far, segments, and its first and last activity. Its messages:
    ``GET /v1/messages?batch=ID``."""
    return json_response(batch_json(await service.batches.get(batch_id)))


@router.get(
    PATH,
    operation_id="listBatches",
    response_model=BatchPage,
    responses=errors(*AUTHENTICATED, *PARAMETERS, BadRequest, InvalidInput),
)
async def list_batches(
    _key: Reader,
    service: ServiceDep,
    tag: Annotated[str | None, Query(max_length=128)] = None,
    created_after: Annotated[Timestamp | None, Query(description=TIME_PARAMETER)] = None,
    created_before: Annotated[Timestamp | None, Query(description=TIME_PARAMETER)] = None,
    cursor: Annotated[str | None, Query(max_length=64)] = None,
    limit: Annotated[int, Query(ge=1, le=500)] = 50,
) -> Response:
    """Batches, newest first, a page at a time: pass ``next_cursor`` back as ``cursor``."""
    filters = batch_filter(tag=tag, created_after=created_after, created_before=created_before)
    page, next_cursor = await service.batches.list(filters, cursor=id_cursor(cursor), limit=limit)
    return json_response({"data": [batch_summary_json(r) for r in page], "next_cursor": next_cursor})


@router.post(
    PATH + "/{batch_id}/cancel",
    operation_id="cancelBatch",
    response_model=BatchOut,
    responses=errors(*AUTHENTICATED, *POSTED, *PARAMETERS, NotFound, NotCancellable),
)
async def cancel_batch(
    batch_id: Annotated[str, Path(max_length=64)], _key: Sender, service: ServiceDep
) -> Response:
    """Cancel every message of the batch still ``scheduled`` or ``pending`` (``cancelled`` says how
    many); 409 when none is left to cancel."""
    return json_response(batch_json(await service.batches.cancel(batch_id)))
