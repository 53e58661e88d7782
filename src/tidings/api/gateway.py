"""The Android gateway's endpoint, ``/api/sms``, as the unmodified medic-gateway app speaks it,
and ``GET /v1/gateways`` for operators.

Errors on ``/api/sms`` are the app's shape, ``{"error": true, "message": "…"}``, not the API's:
the app shows the message to the person holding the phone.
"""

from __future__ import annotations

import base64
import hmac
import logging
import zlib
from collections.abc import Callable, Coroutine
from datetime import timedelta
from typing import Any

import orjson
from fastapi import FastAPI, Request
from fastapi.responses import Response

from tidings.clock import to_api, utcnow
from tidings.errors import GatewayProtocolError, TidingsError
from tidings.providers.gateway import GatewayProvider, parse_poll
from tidings.service import Service

log = logging.getLogger(__name__)


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
        raise TidingsError("gzip body is too large once decompressed")
    return data


def add_gateway_routes(app: FastAPI, service: Service) -> None:
    phones = {name: p for name, p in service.providers.items() if isinstance(p, GatewayProvider)}

    def who(request: Request) -> GatewayProvider | None:
        given = _credentials(request.headers.get("authorization"))
        if given is None:
            return None
        found = None
        for provider in phones.values():
            # Compare with every gateway's credentials, matched or not, in constant time.
            same_user = hmac.compare_digest(given[0].encode(), provider.settings.username.encode())
            same_password = hmac.compare_digest(given[1].encode(), provider.settings.password.encode())
            if same_user and same_password:
                found = provider
        return found

    async def check(_request: Request) -> Response:
        """The app checks the URL it was given with a GET."""
        return _answer({"medic-gateway": True})

    async def poll(request: Request) -> Response:
        """Take the phone's received SMS and status updates; answer the messages due for it."""
        provider = who(request)
        if provider is None:
            log.warning(
                "gateway poll with wrong or missing credentials",
                extra={"action": "gateway", "address": request.client.host if request.client else None},
            )
            return _refuse(401, "wrong username or password", {"WWW-Authenticate": 'Basic realm="tidings"'})
        media_type = (request.headers.get("content-type") or "").split(";", 1)[0].strip().lower()
        if media_type != "application/json":
            return _refuse(415, f"send application/json, not {media_type or 'no content type'}")
        body = await request.body()
        limit = service.settings.max_request_bytes * 10
        try:
            if (request.headers.get("content-encoding") or "").lower() == "gzip":
                body = _decompress(body, limit)
            parsed = parse_poll(body)
        except GatewayProtocolError as exc:
            return _refuse(400, exc.message)
        except TidingsError as exc:
            return _refuse(413, exc.message)
        for reason in parsed.skipped:
            log.warning(
                "gateway %s sent a malformed item, skipped: %s",
                provider.name,
                reason,
                extra={"action": "gateway", "provider": provider.name},
            )
        try:
            done = await service.store.gateways.exchange(
                provider.name,
                inbound=parsed.inbound,
                updates=parsed.updates,
                limit=provider.settings.batch_size,
                address=request.client.host if request.client else None,
                policy=service.inbound_policy,
            )
        except Exception:
            log.exception(
                "gateway poll could not be processed; the phone will send it again",
                extra={"action": "gateway", "provider": provider.name},
            )
            return _refuse(500, "the server could not process this request; it will be retried")
        for unknown in done.updates_unknown:
            log.warning(
                "gateway %s sent an update for unknown message %s; skipped",
                provider.name,
                unknown,
                extra={"action": "gateway", "provider": provider.name, "message_id": unknown},
            )
        if parsed.inbound or parsed.updates or done.outgoing:
            log.info(
                "gateway %s: %d SMS received (%d new), %d updates (%d applied), %d messages handed over",
                provider.name,
                len(parsed.inbound),
                done.inbound_stored,
                len(parsed.updates),
                done.updates_applied,
                len(done.outgoing),
                extra={"action": "gateway", "provider": provider.name},
            )
        if done.outgoing:
            service.waker.notify()
        return _answer({"messages": [{"id": m.id, "to": m.to, "content": m.body} for m in done.outgoing]})

    handlers: list[tuple[str, str, Callable[[Request], Coroutine[Any, Any, Response]]]] = [
        ("/api/sms", "GET", check),
        ("/api/sms/", "GET", check),
        ("/api/sms", "POST", poll),
        ("/api/sms/", "POST", poll),
    ]
    for path, method, handler in handlers:
        app.add_api_route(
            path, handler, methods=[method], tags=["gateway"], include_in_schema=path.endswith("sms")
        )


async def gateway_states(service: Service) -> list[dict[str, Any]]:
    """Each configured gateway with its last poll, counts and whether it went silent."""
    phones = {name: p for name, p in service.providers.items() if isinstance(p, GatewayProvider)}
    states = await service.store.gateways.states(sorted(phones))
    now = utcnow()
    out = []
    for name, state in states.items():
        last = state.get("last_poll_at")
        silent_after = timedelta(seconds=phones[name].settings.silent_after_seconds)
        out.append(
            {
                "name": name,
                "last_poll_at": to_api(last),
                "first_poll_at": to_api(state.get("first_poll_at")),
                "last_address": state.get("last_address"),
                "silent": last is None or now - last > silent_after,
                "polls": int(state.get("polls") or 0),
                "inbound_received": int(state.get("inbound_received") or 0),
                "updates_received": int(state.get("updates_received") or 0),
                "messages_handed_over": int(state.get("messages_handed_over") or 0),
                "waiting": state["waiting"],
                "unacknowledged": state["unacknowledged"],
            }
        )
    return out
