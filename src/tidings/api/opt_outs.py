"""``/v1/opt-outs``: the suppression list, as applications see and manage it."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Path, Query
from fastapi.responses import Response
from pydantic import ConfigDict, Field

from tidings.api.auth import Admin, Reader
from tidings.api.common import (
    AUTHENTICATED,
    JSON_BODY,
    PARAMETERS,
    ServiceDep,
    errors,
    id_cursor,
    json_response,
    times,
)
from tidings.api.schemas import OptOutAdded, OptOutPage
from tidings.domain.content import Channel
from tidings.domain.requests import RequestModel
from tidings.errors import (
    BadRequest,
    InvalidEmailAddress,
    InvalidInput,
    InvalidPhoneNumber,
    NotFound,
)
from tidings.services.inbound import NOTE_CHARS, SENDER_CHARS, address_channel, opt_out_target

router = APIRouter(tags=["opt-outs"])


class OptOutIn(RequestModel):
    """A number, or an email address, to opt out."""

    model_config = ConfigDict(
        json_schema_extra={
            "examples": [
                {"number": "+254712345678", "note": "asked on paper at the clinic"},
                {"number": "+254712345678", "sender": "CLINIC"},
                {"email": "amina@example.org", "note": "asked by phone"},
            ]
        }
    )

    number: str | None = Field(
        default=None, min_length=1, max_length=64, description="E.164, or national with `default_region`."
    )
    email: str | None = Field(
        default=None, min_length=1, max_length=320, description="An email address (instead of `number`)."
    )
    sender: str | None = Field(
        default=None, max_length=SENDER_CHARS, description="Only from this sender (default: all)."
    )
    note: str | None = Field(
        default=None, max_length=NOTE_CHARS, description="Why, for the people who read the list."
    )


def _entry(row: dict[str, Any]) -> dict[str, Any]:
    out = times(row, "created_at")
    if row["channel"] == Channel.SMS.value:
        out["number"] = row["address"]
    return out


@router.get(
    "/v1/opt-outs",
    operation_id="listOptOuts",
    response_model=OptOutPage,
    responses=errors(*AUTHENTICATED, *PARAMETERS, BadRequest, InvalidPhoneNumber),
)
async def list_opt_outs(
    _key: Reader,
    service: ServiceDep,
    number: Annotated[str | None, Query(max_length=64)] = None,
    cursor: Annotated[str | None, Query(max_length=64)] = None,
    limit: Annotated[int, Query(ge=1, le=500)] = 50,
) -> Response:
    """Addresses that opted out, newest first."""
    target = (
        opt_out_target(Channel.SMS, number, None, region=service.settings.default_region, field="number")
        if number
        else None
    )
    page, next_cursor = await service.inbound.opt_outs(target=target, cursor=id_cursor(cursor), limit=limit)
    return json_response({"data": [_entry(r) for r in page], "next_cursor": next_cursor})


@router.post(
    "/v1/opt-outs",
    operation_id="addOptOut",
    status_code=201,
    response_model=OptOutAdded,
    response_description="Opted out.",
    responses={
        200: {"model": OptOutAdded, "description": "It had already opted out."},
        **errors(*AUTHENTICATED, *JSON_BODY, InvalidPhoneNumber, InvalidEmailAddress, InvalidInput),
    },
)
async def add_opt_out(payload: OptOutIn, _key: Admin, service: ServiceDep) -> Response:
    """Opt a number (or an email address) out, e.g. a patient who asked on paper: its waiting
    messages are cancelled and new ones refused. 201 when added, 200 when it was already there."""
    if (payload.number is None) == (payload.email is None):
        raise InvalidInput("give either number or email", field="number")
    if payload.email is not None:
        channel, address, field = Channel.EMAIL, payload.email, "email"
    else:
        assert payload.number is not None
        channel, address, field = Channel.SMS, payload.number, "number"
    target = opt_out_target(
        channel, address, payload.sender, region=service.settings.default_region, field=field
    )
    created, cancelled = await service.inbound.opt_out(
        target.channel, target.address, target.scope, note=payload.note
    )
    answer = {
        "channel": target.channel.value,
        "address": target.address,
        "number": target.address if target.channel is Channel.SMS else None,
        "scope": target.scope,
        "created": created,
        "cancelled_messages": cancelled,
    }
    return json_response(answer, 201 if created else 200)


@router.delete(
    "/v1/opt-outs/{number}",
    operation_id="removeOptOut",
    status_code=204,
    response_class=Response,
    response_description="Opted back in.",
    responses=errors(
        *AUTHENTICATED, *PARAMETERS, InvalidPhoneNumber, InvalidEmailAddress, InvalidInput, NotFound
    ),
)
async def remove_opt_out(
    number: Annotated[str, Path(max_length=64)],
    _key: Admin,
    service: ServiceDep,
    sender: Annotated[str | None, Query(max_length=SENDER_CHARS)] = None,
) -> Response:
    """Opt a number, or an email address, back in (for one sender, or for all)."""
    target = opt_out_target(
        address_channel(number), number, sender, region=service.settings.default_region, field="number"
    )
    await service.inbound.opt_in(target.channel, target.address, target.scope)
    return Response(status_code=204)
