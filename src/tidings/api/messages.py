"""``/v1/messages``: send, read, list and cancel messages."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Header, Path, Query
from fastapi.responses import Response

from tidings.api.auth import Reader, Sender
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
from tidings.api.schemas import MessageIn, MessageOut, MessagePage, message_json
from tidings.clock import utc_field
from tidings.domain.phone import normalize_e164
from tidings.domain.requests import TIME_PARAMETER, Timestamp
from tidings.domain.status import Status
from tidings.errors import (
    BadRequest,
    BodyTooLong,
    CallbackUrlNotAllowed,
    IdempotencyConflict,
    InvalidAttachment,
    InvalidEmailAddress,
    InvalidInput,
    InvalidPhoneNumber,
    NotCancellable,
    NotFound,
    RecipientOptedOut,
    printable,
)
from tidings.services.accepting import SendRequest
from tidings.store.messages import MessageFilter

router = APIRouter(tags=["messages"])


@router.post(
    "/v1/messages",
    operation_id="sendMessage",
    status_code=202,
    response_model=MessageOut,
    response_description="Accepted: the message is stored and queued.",
    responses={
        200: {"model": MessageOut, "description": "The message sent before with this `Idempotency-Key`."},
        **errors(
            *AUTHENTICATED,
            *JSON_BODY,
            InvalidInput,
            InvalidPhoneNumber,
            InvalidEmailAddress,
            InvalidAttachment,
            BodyTooLong,
            RecipientOptedOut,
            CallbackUrlNotAllowed,
            IdempotencyConflict,
        ),
    },
)
async def send_message(
    payload: MessageIn,
    key: Sender,
    service: ServiceDep,
    idempotency_key: Annotated[str | None, Header(max_length=255)] = None,
) -> Response:
    """Accept a message. It is stored before this answers; with an ``Idempotency-Key`` a retried
    request returns the same message (200), and a different body under the same key is a 409."""
    fields = payload.model_dump(exclude={"attachments", "body"})
    request = SendRequest(
        **fields,
        body=payload.body or "",
        attachments=list(payload.attachments),
    )
    row, created = await service.accepting.accept(request, key=key, idempotency_key=idempotency_key)
    return json_response(message_json(row), 202 if created else 200)


@router.get(
    "/v1/messages/{message_id}",
    operation_id="getMessage",
    response_model=MessageOut,
    responses=errors(*AUTHENTICATED, *PARAMETERS, NotFound),
)
async def get_message(
    message_id: Annotated[str, Path(max_length=64)], _key: Reader, service: ServiceDep
) -> Response:
    """A message with its status, provider status, error, attempts, timestamps and history."""
    row, history = await service.messages.get(message_id)
    return json_response(message_json(row, history))


@router.get(
    "/v1/messages",
    operation_id="listMessages",
    response_model=MessagePage,
    responses=errors(*AUTHENTICATED, *PARAMETERS, BadRequest, InvalidInput, InvalidPhoneNumber),
)
async def list_messages(
    _key: Reader,
    service: ServiceDep,
    status: Status | None = None,
    to: Annotated[str | None, Query(max_length=64)] = None,
    tag: Annotated[str | None, Query(max_length=128)] = None,
    provider: Annotated[str | None, Query(max_length=64)] = None,
    batch: Annotated[str | None, Query(max_length=64, description="A batch's id: its messages.")] = None,
    created_after: Annotated[Timestamp | None, Query(description=TIME_PARAMETER)] = None,
    created_before: Annotated[Timestamp | None, Query(description=TIME_PARAMETER)] = None,
    cursor: Annotated[str | None, Query(max_length=64)] = None,
    limit: Annotated[int, Query(ge=1, le=500)] = 50,
) -> Response:
    """Messages, newest first, a page at a time: pass ``next_cursor`` back as ``cursor``."""
    filters = MessageFilter(
        statuses=(status,) if status is not None else (),
        to=normalize_e164(to, service.settings.default_region) if to else None,
        tags=(printable(tag, "tag") or "",) if tag is not None else (),
        provider=printable(provider, "provider"),
        batch=printable(batch, "batch"),
        created_after=utc_field(created_after, "created_after"),
        created_before=utc_field(created_before, "created_before"),
    )
    page, next_cursor = await service.messages.list(filters, cursor=id_cursor(cursor), limit=limit)
    return json_response({"data": [message_json(r) for r in page], "next_cursor": next_cursor})


@router.post(
    "/v1/messages/{message_id}/cancel",
    operation_id="cancelMessage",
    response_model=MessageOut,
    responses=errors(*AUTHENTICATED, *POSTED, *PARAMETERS, NotFound, NotCancellable),
)
async def cancel_message(
    message_id: Annotated[str, Path(max_length=64)], _key: Sender, service: ServiceDep
) -> Response:
    """Cancel a message that is still ``scheduled`` or ``pending``; 409 once it is sending or beyond."""
    return json_response(message_json(await service.messages.cancel(message_id)))
