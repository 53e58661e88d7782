"""``/v1/messages``: send, read, list and cancel messages."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Header, Path, Query
from fastapi.responses import Response
from pydantic import StringConstraints

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
from tidings.domain.content import Channel
from tidings.domain.requests import TIME_PARAMETER, Timestamp
from tidings.domain.search import (
    AMOUNT_PATTERN,
    CURRENCY_PATTERN,
    MAX_QUERY_CHARS,
    MAX_TAGS,
    MAX_TERMS,
    PREFIX_PATTERN,
)
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
)
from tidings.services.accepting import MAX_IDEMPOTENCY_KEY
from tidings.services.messages import PAGE_DEFAULT, PAGE_MAX, message_filter

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
    idempotency_key: Annotated[str | None, Header(max_length=MAX_IDEMPOTENCY_KEY)] = None,
) -> Response:
    """Accept a message. It is stored before this answers; with an ``Idempotency-Key`` a retried
    request returns the same message (200), and a different body under the same key is a 409."""
    row, created = await service.accepting.accept(payload.request(), key=key, idempotency_key=idempotency_key)
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


Tag = Annotated[str, StringConstraints(max_length=128)]


@router.get(
    "/v1/messages",
    operation_id="listMessages",
    response_model=MessagePage,
    responses=errors(*AUTHENTICATED, *PARAMETERS, BadRequest, InvalidInput, InvalidPhoneNumber),
)
async def list_messages(
    _key: Reader,
    service: ServiceDep,
    q: Annotated[
        str | None,
        Query(
            max_length=MAX_QUERY_CHARS,
            description=(
                f"Words that must all be in the body or subject (at most {MAX_TERMS}); case and "
                "accents do not matter, punctuation separates words, and nothing is read as an "
                "operator."
            ),
        ),
    ] = None,
    status: Annotated[
        list[Status] | None,
        Query(max_length=len(Status), description="Any of these statuses (repeat the parameter)."),
    ] = None,
    to: Annotated[str | None, Query(max_length=64)] = None,
    to_prefix: Annotated[
        str | None,
        Query(pattern=PREFIX_PATTERN, description="Numbers starting with this (E.164: `+2547`)."),
    ] = None,
    tag: Annotated[
        list[Tag] | None,
        Query(max_length=MAX_TAGS, description="Messages with every one of these tags (repeat it)."),
    ] = None,
    provider: Annotated[str | None, Query(max_length=64)] = None,
    channel: Channel | None = None,
    batch: Annotated[str | None, Query(max_length=64, description="A batch's id: its messages.")] = None,
    created_after: Annotated[Timestamp | None, Query(description=TIME_PARAMETER)] = None,
    created_before: Annotated[Timestamp | None, Query(description=TIME_PARAMETER)] = None,
    currency: Annotated[
        str | None,
        Query(pattern=CURRENCY_PATTERN, description="Messages priced in this ISO 4217 currency (`KES`)."),
    ] = None,
    cost_min: Annotated[
        str | None,
        Query(pattern=AMOUNT_PATTERN, description="At least this cost (`0.05`); needs `currency`."),
    ] = None,
    cost_max: Annotated[
        str | None,
        Query(pattern=AMOUNT_PATTERN, description="At most this cost (`0.5`); needs `currency`."),
    ] = None,
    cursor: Annotated[str | None, Query(max_length=64)] = None,
    limit: Annotated[int, Query(ge=1, le=PAGE_MAX)] = PAGE_DEFAULT,
) -> Response:
    """Messages, newest first, a page at a time: pass ``next_cursor`` back as ``cursor``. Every
    filter given must hold."""
    filters = message_filter(
        region=service.settings.default_region,
        q=q,
        statuses=status or (),
        to=to,
        to_prefix=to_prefix,
        tags=tag or (),
        provider=provider,
        channel=channel.value if channel is not None else None,
        batch=batch,
        created_after=created_after,
        created_before=created_before,
        currency=currency,
        cost_min=cost_min,
        cost_max=cost_max,
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
