"""``/v1/callbacks`` and ``/v1/callback-settings``: what an application is told, and where."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Path, Query
from fastapi.responses import Response
from pydantic import ConfigDict, Field

from tidings.api.auth import Admin, Reader
from tidings.api.common import (
    AUTHENTICATED,
    JSON_BODY,
    PARAMETERS,
    POSTED,
    URL_PATTERN,
    ServiceDep,
    errors,
    id_cursor,
    json_response,
    times,
)
from tidings.api.schemas import CallbackOut, CallbackPage, CallbackSettingsOut, CallbackStatus
from tidings.domain.requests import RequestModel
from tidings.errors import BadRequest, CallbackUrlNotAllowed, InvalidInput, NotFound, printable

router = APIRouter(tags=["callbacks"])

_TIMES = ("next_attempt_at", "lease_expires_at", "created_at", "updated_at", "delivered_at")


class CallbackSettingsIn(RequestModel):
    """This API key's default callback URL."""

    model_config = ConfigDict(
        json_schema_extra={"examples": [{"url": "https://app.example.org/sms-events"}, {"url": None}]}
    )

    url: str | None = Field(
        max_length=2048, pattern=URL_PATTERN, description="Where callbacks go; null: none."
    )


@router.get(
    "/v1/callbacks",
    operation_id="listCallbacks",
    response_model=CallbackPage,
    responses=errors(*AUTHENTICATED, *PARAMETERS, BadRequest, InvalidInput),
)
async def list_callbacks(
    _key: Reader,
    service: ServiceDep,
    status: CallbackStatus | None = None,
    message_id: Annotated[str | None, Query(max_length=64)] = None,
    cursor: Annotated[str | None, Query(max_length=64)] = None,
    limit: Annotated[int, Query(ge=1, le=500)] = 50,
) -> Response:
    """Callbacks, newest first: what was sent where, and whether it arrived."""
    page, next_cursor = await service.callbacks.list(
        status=status, message_id=printable(message_id, "message_id"), cursor=id_cursor(cursor), limit=limit
    )
    return json_response({"data": [times(r, *_TIMES) for r in page], "next_cursor": next_cursor})


@router.post(
    "/v1/callbacks/{callback_id}/retry",
    operation_id="retryCallback",
    response_model=CallbackOut,
    responses=errors(*AUTHENTICATED, *POSTED, *PARAMETERS, NotFound),
)
async def retry_callback(
    callback_id: Annotated[str, Path(max_length=64)], _key: Admin, service: ServiceDep
) -> Response:
    """Queue a failed callback again, with a fresh set of attempts."""
    return json_response(times(await service.callbacks.retry(callback_id), *_TIMES))


@router.get(
    "/v1/callback-settings",
    operation_id="getCallbackSettings",
    response_model=CallbackSettingsOut,
    responses=errors(*AUTHENTICATED),
)
async def get_callback_settings(key: Reader, service: ServiceDep) -> Response:
    """This API key's default callback URL and the secret its callbacks are signed with."""
    return json_response(await service.callbacks.settings(key.id))


@router.post(
    "/v1/callback-settings/rotate-secret",
    operation_id="rotateCallbackSecret",
    response_model=CallbackSettingsOut,
    responses=errors(*AUTHENTICATED, *POSTED),
)
async def rotate_callback_secret(key: Admin, service: ServiceDep) -> Response:
    """A new signing secret for this key's callbacks; the old one keeps signing beside it until
    ``previous_secret_until`` (``callback_secret_grace_seconds``), so receivers can switch."""
    return json_response(await service.callbacks.rotate_secret(key.id))


@router.put(
    "/v1/callback-settings",
    operation_id="setCallbackSettings",
    response_model=CallbackSettingsOut,
    responses=errors(*AUTHENTICATED, *JSON_BODY, CallbackUrlNotAllowed),
)
async def set_callback_settings(payload: CallbackSettingsIn, key: Admin, service: ServiceDep) -> Response:
    """Set (or with ``null`` clear) this key's default callback URL; a signing secret is made the
    first time and kept."""
    return json_response(await service.callbacks.set_url(key.id, payload.url))
