"""The HTTP API: messages, webhooks, health. OpenAPI at ``/openapi.json``, docs at ``/docs``.

Every error is JSON ``{"error": {"code", "message", "field"?}}`` with a stable code; a message is
committed to the database before the API answers 2xx.
"""

from __future__ import annotations

import hashlib
import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from datetime import datetime
from typing import Annotated, Any

import orjson
from fastapi import FastAPI, Header, Path, Query, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import Response
from sqlalchemy import text
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from tidings import ids
from tidings.accept import build_message
from tidings.api.auth import Authenticated, KeyChecker
from tidings.api.gateway import add_gateway_routes, gateway_states
from tidings.api.records import add_record_routes
from tidings.api.schemas import ErrorOut, MessageIn, MessageOut, MessagePage, message_json
from tidings.clock import utc_field
from tidings.domain.phone import normalize_e164
from tidings.domain.status import Status
from tidings.errors import BadRequest, NotFound, PayloadTooLarge, TidingsError, printable
from tidings.providers.base import Provider, WebhookRequest
from tidings.service import Service
from tidings.store.messages import MessageFilter

log = logging.getLogger(__name__)

ERRORS: dict[int | str, dict[str, Any]] = {
    status: {"model": ErrorOut} for status in (400, 401, 404, 409, 413, 422)
}


def json_response(content: Any, status_code: int = 200) -> Response:
    return Response(content=orjson.dumps(content), status_code=status_code, media_type="application/json")


def error_response(exc: TidingsError) -> Response:
    return json_response(exc.to_dict(), exc.http_status)


class BodyLimit:
    """Answers 413 to a request body larger than ``max_bytes``, before anything reads it."""

    def __init__(self, app: ASGIApp, max_bytes: int) -> None:
        self.app = app
        self.max_bytes = max_bytes

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or scope["method"] in ("GET", "HEAD", "OPTIONS", "DELETE"):
            await self.app(scope, receive, send)
            return
        too_large = PayloadTooLarge(f"request body is larger than {self.max_bytes} bytes")
        for name, value in scope["headers"]:
            if name == b"content-length" and value.isdigit() and int(value) > self.max_bytes:
                await error_response(too_large)(scope, receive, send)
                return
        chunks: list[bytes] = []
        size = 0
        while True:
            message = await receive()
            if message["type"] == "http.disconnect":
                return
            chunk = message.get("body", b"")
            size += len(chunk)
            if size > self.max_bytes:
                await error_response(too_large)(scope, receive, send)
                return
            chunks.append(chunk)
            if not message.get("more_body", False):
                break
        body = b"".join(chunks)
        sent = False

        async def replay() -> Message:
            nonlocal sent
            if not sent:
                sent = True
                return {"type": "http.request", "body": body, "more_body": False}
            return await receive()

        await self.app(scope, replay, send)


def _field(loc: tuple[int | str, ...]) -> str | None:
    parts = [str(p) for p in (loc[1:] if loc and loc[0] in ("body", "query", "path", "header") else loc)]
    return ".".join(parts) or None


def create_app(service: Service) -> FastAPI:
    """The ASGI app over a :class:`Service` (started by the app's lifespan when it is not yet)."""

    @asynccontextmanager
    async def lifespan(_app: FastAPI) -> AsyncIterator[None]:
        owned = not service.started
        if owned:
            await service.start()
        try:
            yield
        finally:
            if owned:
                await service.close()

    app = FastAPI(
        title="tidings",
        version="0.1.0",
        description="Self-hosted SMS delivery that tracks every message to a final, truthful status.",
        lifespan=lifespan,
    )
    app.state.service = service
    app.state.keys = KeyChecker(service.store.keys, service.settings.api_key_cache_seconds)

    @app.exception_handler(TidingsError)
    async def _tidings_error(_request: Request, exc: TidingsError) -> Response:
        return error_response(exc)

    @app.exception_handler(RequestValidationError)
    async def _validation_error(_request: Request, exc: RequestValidationError) -> Response:
        first = exc.errors()[0] if exc.errors() else {"loc": (), "msg": "invalid request", "type": ""}
        if first.get("type") == "json_invalid":
            return error_response(BadRequest("request body is not valid JSON"))
        if first.get("type") == "model_attributes_type" or (
            first.get("loc") == ("body",) and first.get("type") in ("dict_type", "missing")
        ):
            return error_response(BadRequest("request body must be a JSON object"))
        field = _field(tuple(first.get("loc", ())))
        message = str(first.get("msg", "invalid value"))
        error = TidingsError(f"{field}: {message}" if field else message, field=field)
        error.code = "validation_error"
        error.http_status = 422
        return error_response(error)

    @app.exception_handler(StarletteHTTPException)
    async def _http_error(_request: Request, exc: StarletteHTTPException) -> Response:
        codes = {404: "not_found", 405: "method_not_allowed"}
        error = TidingsError(str(exc.detail))
        error.code = codes.get(exc.status_code, "http_error")
        error.http_status = exc.status_code
        return error_response(error)

    @app.exception_handler(Exception)
    async def _unexpected(_request: Request, exc: Exception) -> Response:
        log.error("unexpected error answering a request", exc_info=exc, extra={"action": "api"})
        return error_response(TidingsError("internal error; the request may be retried"))

    @app.get("/healthz", tags=["health"])
    async def healthz() -> Response:
        try:
            async with service.store.engine.connect() as conn:
                await conn.execute(text("SELECT 1"))
        except Exception as exc:
            log.warning("health check: database unreachable: %s", exc, extra={"action": "health"})
            return json_response({"status": "unavailable", "database": "unreachable"}, 503)
        return json_response({"status": "ok", "database": "ok"})

    @app.post(
        "/v1/messages",
        status_code=202,
        response_model=MessageOut,
        responses={200: {"model": MessageOut, "description": "Idempotent replay"}, **ERRORS},
        tags=["messages"],
    )
    async def send_message(
        payload: MessageIn,
        key: Authenticated,
        idempotency_key: Annotated[str | None, Header(max_length=255)] = None,
    ) -> Response:
        """Accept a message. It is stored before this answers; with an ``Idempotency-Key`` a retried
        request returns the same message (200), and a different body under the same key is a 409."""
        new = build_message(
            service.settings,
            service.providers,
            service.router,
            to=payload.to,
            body=payload.body,
            sender=payload.sender,
            send_at=payload.send_at,
            provider=payload.provider,
            tags=payload.tags,
            metadata=payload.metadata,
            ordered=payload.ordered,
            callback_url=payload.callback_url or key.callback_url,
        )
        request_hash = None
        if idempotency_key is not None:
            canonical = orjson.dumps(payload.model_dump(mode="json"), option=orjson.OPT_SORT_KEYS)
            request_hash = hashlib.sha256(canonical).hexdigest()
        row, created = await service.store.messages.insert(
            new, api_key_id=key.id, idempotency_key=idempotency_key, request_hash=request_hash
        )
        if created:
            service.waker.notify()
        return json_response(message_json(row), 202 if created else 200)

    @app.get("/v1/messages/{message_id}", response_model=MessageOut, responses=ERRORS, tags=["messages"])
    async def get_message(
        message_id: Annotated[str, Path(max_length=64)],
        _key: Authenticated,
    ) -> Response:
        """A message with its status, provider status, error, attempts, timestamps and history."""
        row = await service.store.messages.get(message_id) if ids.is_id(message_id) else None
        if row is None:
            raise NotFound(f"no message {message_id}")
        return json_response(message_json(row, await service.store.messages.events(message_id)))

    @app.get("/v1/messages", response_model=MessagePage, responses=ERRORS, tags=["messages"])
    async def list_messages(
        _key: Authenticated,
        status: Status | None = None,
        to: Annotated[str | None, Query(max_length=64)] = None,
        tag: Annotated[str | None, Query(max_length=128)] = None,
        provider: Annotated[str | None, Query(max_length=64)] = None,
        created_after: datetime | None = None,
        created_before: datetime | None = None,
        cursor: Annotated[str | None, Query(max_length=64)] = None,
        limit: Annotated[int, Query(ge=1, le=500)] = 50,
    ) -> Response:
        """Messages, newest first, a page at a time: pass ``next_cursor`` back as ``cursor``."""
        if cursor is not None and not ids.is_id(cursor):
            raise BadRequest("cursor is not one this API gave out", field="cursor")
        filters = MessageFilter(
            status=status,
            to=normalize_e164(to, service.settings.default_region) if to else None,
            tag=printable(tag, "tag"),
            provider=printable(provider, "provider"),
            created_after=utc_field(created_after, "created_after"),
            created_before=utc_field(created_before, "created_before"),
        )
        rows = await service.store.messages.search(filters, after_id=cursor, limit=limit + 1)
        page = rows[:limit]
        next_cursor = page[-1]["id"] if len(rows) > limit else None
        return json_response({"data": [message_json(r) for r in page], "next_cursor": next_cursor})

    @app.post(
        "/v1/messages/{message_id}/cancel", response_model=MessageOut, responses=ERRORS, tags=["messages"]
    )
    async def cancel_message(
        message_id: Annotated[str, Path(max_length=64)],
        _key: Authenticated,
    ) -> Response:
        """Cancel a message that is still ``scheduled`` or ``pending``; 409 once it is sending or beyond."""
        if not ids.is_id(message_id):
            raise NotFound(f"no message {message_id}")
        row = await service.store.messages.cancel(message_id, reason="cancelled by the client")
        return json_response(message_json(row))

    def webhook_provider(kind: str, name: str) -> Provider:
        provider = service.providers.get(name)
        if provider is None or provider.kind != kind:
            raise NotFound(f"no {kind} provider named {name}")
        return provider

    @app.head("/webhooks/{kind}/{name}/{event}", include_in_schema=False)
    async def webhook_probe(kind: str, name: str, event: str) -> Response:
        """Providers probe their webhook URL with HEAD before they use it."""
        webhook_provider(kind, name)
        return Response(status_code=200)

    async def receive_webhook(provider: Provider, event: str, request: Request) -> Response:
        # Providers sign the URL they were given, which is the public one (behind a proxy the
        # request's own URL differs): rebuild it from public_url.
        url = service.settings.base_url + request.url.path
        if request.url.query:
            url += "?" + request.url.query
        incoming = WebhookRequest(url=url, headers=dict(request.headers), body=await request.body())
        peer = request.client.host if request.client is not None else None
        answer = await service.webhooks.receive(provider, event, incoming, peer)
        return Response(content=answer.body, status_code=answer.status, media_type=answer.content_type)

    @app.post("/webhooks/{kind}/{name}/{event}", tags=["webhooks"])
    async def webhook(kind: str, name: str, event: str, request: Request) -> Response:
        """Receipts, reports and inbound SMS posted by providers. Each request is logged first,
        then checked (address allowlist, size, content type, the provider's signature)."""
        return await receive_webhook(webhook_provider(kind, name), event, request)

    def orange_provider() -> Provider:
        for provider in service.providers.values():
            if provider.kind == "orange":
                return provider
        raise NotFound("no orange provider is configured")

    @app.post("/api/sms/webhook/delivery-status", tags=["webhooks"])
    async def orange_delivery_compat(request: Request) -> Response:
        """Orange delivery receipts at the address seed 002's service used (first Orange provider)."""
        return await receive_webhook(orange_provider(), "delivery", request)

    @app.post("/api/sms/webhook/inbound-message", tags=["webhooks"])
    async def orange_inbound_compat(request: Request) -> Response:
        """Orange inbound SMS at the address seed 002's service used (first Orange provider)."""
        return await receive_webhook(orange_provider(), "inbound", request)

    @app.get("/v1/gateways", tags=["gateway"])
    async def list_gateways(_key: Authenticated) -> Response:
        """Each Android gateway: its last poll, counts, and whether it went silent."""
        return json_response({"data": await gateway_states(service)})

    add_gateway_routes(app, service)
    add_record_routes(app, service)
    app.add_middleware(BodyLimit, max_bytes=service.settings.max_request_bytes)
    return app
