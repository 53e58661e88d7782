"""The Android gateway's endpoint, ``/api/sms``, as the unmodified medic-gateway app speaks it,
and ``GET /v1/gateways`` for operators.

Errors on ``/api/sms`` are the app's shape, ``{"error": true, "message": "…"}``, not the API's:
the app shows the message to the person holding the phone.
"""

from __future__ import annotations

import base64
import logging
import zlib
from collections.abc import Mapping
from typing import Any

import orjson
from fastapi import APIRouter, Depends, Request
from fastapi.responses import Response
from fastapi.security.http import HTTPBase

from tidings.api.auth import Reader
from tidings.api.common import AUTHENTICATED, ServiceDep, errors, json_response
from tidings.api.schemas import (
    GatewayCheckOut,
    GatewayErrorOut,
    GatewayList,
    GatewayPollIn,
    GatewayPollOut,
    error_schema,
    gateway_json,
    inline_schema,
)
from tidings.errors import GatewayProtocolError, PayloadTooLarge
from tidings.providers.gateway import parse_poll
from tidings.services import Service

log = logging.getLogger(__name__)

router = APIRouter(tags=["gateway"])

gateway_basic = HTTPBase(
    scheme="basic",
    scheme_name="gatewayBasic",
    description="The gateway's `username` and `password` from its provider settings.",
    # It only declares the scheme: the route reads the header itself and answers in the app's shape.
    auto_error=False,
)


def _gateway_error(description: str) -> dict[str, Any]:
    return {"model": GatewayErrorOut, "description": description}


POLL_RESPONSES: dict[int | str, dict[str, Any]] = {
    400: _gateway_error("The body is not JSON (or not gzip when it says it is), or not an object."),
    401: _gateway_error("Wrong or missing credentials."),
    413: {
        "description": "The body is larger than `max_request_bytes` (the API's error), or it is "
        "larger than ten times that once decompressed (the app's).",
        "content": {
            "application/json": {
                "schema": {"anyOf": [inline_schema(GatewayErrorOut), error_schema([PayloadTooLarge.code])]}
            }
        },
    },
    415: _gateway_error("The body is not `application/json`."),
    500: _gateway_error("The poll could not be processed; the phone sends it again."),
}
"""The answers of the app's poll besides 200: errors in the app's shape, which it shows on the phone."""


def _answer(content: Any, status: int = 200, headers: dict[str, str] | None = None) -> Response:
    return Response(orjson.dumps(content), status_code=status, media_type="application/json", headers=headers)


def _refuse(status: int, message: str, headers: dict[str, str] | None = None) -> Response:
    return _answer({"error": True, "message": message}, status, headers)


def _credentials(header: str | None) -> tuple[str, str] | None:
    scheme, _, encoded = (header or "").partition(" ")
    if scheme.lower() != "basic":
        return None
    try:
        decoded = base64.b64decode(encoded.strip(), validate=True).decode("utf-8")
    except (ValueError, UnicodeDecodeError):
        return None
    username, colon, password = decoded.partition(":")
    return (username, password) if colon else None


def _decompress(body: bytes, limit: int) -> bytes:
    inflater = zlib.decompressobj(16 + zlib.MAX_WBITS)
    try:
        data = inflater.decompress(body, limit + 1)
    except zlib.error as exc:
        raise GatewayProtocolError(f"body is not valid gzip: {exc}") from exc
    if len(data) > limit or inflater.unconsumed_tail:
        raise PayloadTooLarge("gzip body is too large once decompressed")
    return data


@router.get(
    "/api/sms", operation_id="checkGateway", summary="Gateway URL check", response_model=GatewayCheckOut
)
@router.get("/api/sms/", include_in_schema=False)
async def check() -> Response:
    """The app checks the URL it was given with a GET."""
    return _answer({"medic-gateway": True})


@router.post(
    "/api/sms",
    operation_id="pollGateway",
    summary="Gateway poll",
    response_model=GatewayPollOut,
    responses=POLL_RESPONSES,
    dependencies=[Depends(gateway_basic)],
    openapi_extra={
        "requestBody": {
            "required": False,
            "content": {"application/json": {"schema": inline_schema(GatewayPollIn)}},
            "description": "May be gzipped (`Content-Encoding: gzip`).",
        }
    },
)
@router.post("/api/sms/", include_in_schema=False)
async def poll(request: Request, service: ServiceDep) -> Response:
    """Take the phone's received SMS and status updates; answer the messages due for it."""
    return await answer_poll(
        service,
        request.headers,
        await request.body(),
        request.client.host if request.client else None,
    )


async def answer_poll(
    service: Service, headers: Mapping[str, str], body: bytes, address: str | None
) -> Response:
    """The answer to a poll with these headers (lower-case names, the first of each) and body
    from ``address``; the route's and the fast lane's (``api/fast.py``)."""
    given = _credentials(headers.get("authorization"))
    phone = service.gateway.authenticate(*given) if given is not None else None
    if phone is None:
        log.warning(
            "gateway poll with wrong or missing credentials", extra={"action": "gateway", "address": address}
        )
        return _refuse(401, "wrong username or password", {"WWW-Authenticate": 'Basic realm="tidings"'})
    media_type = (headers.get("content-type") or "").split(";", 1)[0].strip().lower()
    if media_type != "application/json":
        return _refuse(415, f"send application/json, not {media_type or 'no content type'}")
    try:
        if (headers.get("content-encoding") or "").lower() == "gzip":
            body = _decompress(body, service.settings.max_request_bytes * 10)
        parsed = parse_poll(body)
    except GatewayProtocolError as exc:
        return _refuse(400, exc.message)
    except PayloadTooLarge as exc:
        return _refuse(413, exc.message)
    for reason in parsed.skipped:
        log.warning(
            "gateway %s sent a malformed item, skipped: %s",
            phone.name,
            reason,
            extra={"action": "gateway", "provider": phone.name},
        )
    try:
        done = await service.gateway.exchange(phone, parsed, address=address)
    except Exception:
        log.exception(
            "gateway poll could not be processed; the phone will send it again",
            extra={"action": "gateway", "provider": phone.name},
        )
        return _refuse(500, "the server could not process this request; it will be retried")
    for unknown in done.updates_unknown:
        log.warning(
            "gateway %s sent an update for unknown message %s; skipped",
            phone.name,
            unknown,
            extra={"action": "gateway", "provider": phone.name, "message_id": unknown},
        )
    if parsed.inbound or parsed.updates or done.outgoing:
        log.info(
            "gateway %s: %d SMS received (%d new), %d updates (%d applied), %d messages handed over",
            phone.name,
            len(parsed.inbound),
            done.inbound_stored,
            len(parsed.updates),
            done.updates_applied,
            len(done.outgoing),
            extra={"action": "gateway", "provider": phone.name},
        )
    return _answer({"messages": [{"id": m.id, "to": m.to, "content": m.sms.text} for m in done.outgoing]})


@router.get(
    "/v1/gateways",
    operation_id="listGateways",
    response_model=GatewayList,
    responses=errors(*AUTHENTICATED),
)
async def list_gateways(_key: Reader, service: ServiceDep) -> Response:
    """Each Android gateway: its last poll, counts, and whether it went silent."""
    return json_response({"data": [gateway_json(s) for s in await service.gateway.states()]})
