"""The HTTP API: one module per resource (``messages``, ``batches``, ``templates``, ``webhooks``,
``gateway``, ``inbound``, ``opt_outs``, ``log``, ``callbacks``, ``stats``, ``alerts``, ``metrics``),
each a thin layer over the services. OpenAPI at ``/openapi.json``, docs at ``/docs`` and
``/redoc`` (``docs``, served without internet access).

Every error is JSON ``{"error": {"code", "message", "field"?}}`` with a stable code; a message is
committed to the database before the API answers 2xx.
"""

from __future__ import annotations

import logging
import re
import time
from collections.abc import AsyncIterator, Sequence
from contextlib import asynccontextmanager
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import Response
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from tidings import ids, logs
from tidings.api import (
    alerts,
    batches,
    callbacks,
    gateway,
    inbound,
    messages,
    opt_outs,
    stats,
    templates,
    unsubscribe,
    webhooks,
)
from tidings.api import log as message_log
from tidings.api.common import error_response, json_response
from tidings.api.docs import add_docs
from tidings.api.fast import BODY, FastLane
from tidings.api.metrics import add_metrics
from tidings.api.schemas import HealthOut
from tidings.errors import BadRequest, DatabaseUnavailable, PayloadTooLarge, TidingsError, ValidationFailed
from tidings.services import Service
from tidings.store.db import unreachable

log = logging.getLogger(__name__)


class BodyLimit:
    """Answers 413 to a request body larger than ``max_bytes`` (or, for the paths in ``larger``
    and below them, their own limit), before anything reads it."""

    def __init__(self, app: ASGIApp, max_bytes: int, larger: dict[str, int] | None = None) -> None:
        self.app = app
        self.max_bytes = max_bytes
        self.larger = larger or {}

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or scope["method"] in ("GET", "HEAD", "OPTIONS", "DELETE"):
            await self.app(scope, receive, send)
            return
        path: str = scope["path"]
        limit = next(
            (size for prefix, size in self.larger.items() if path == prefix or path.startswith(prefix + "/")),
            self.max_bytes,
        )
        too_large = PayloadTooLarge(f"request body is larger than {limit} bytes")
        for name, value in scope["headers"]:
            if name == b"content-length" and value.isdigit() and int(value) > limit:
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
            if size > limit:
                await error_response(too_large)(scope, receive, send)
                return
            chunks.append(chunk)
            if not message.get("more_body", False):
                break
        body = b"".join(chunks)
        scope[BODY] = body  # for the fast lane, which need not receive it again
        sent = False

        async def replay() -> Message:
            nonlocal sent
            if not sent:
                sent = True
                return {"type": "http.request", "body": body, "more_body": False}
            return await receive()

        await self.app(scope, replay, send)


REQUEST_ID_HEADER = "X-Request-Id"
_REQUEST_ID = re.compile(r"^[A-Za-z0-9._:-]{1,128}$")
access = logging.getLogger("tidings.access")


class RequestLog:
    """Gives every request an id (the client's ``X-Request-Id`` when it sends a sensible one, else a
    new one), puts it on every log line the request causes and on the answer, and writes one
    access-log line per request."""

    def __init__(self, app: ASGIApp, *, enabled: bool) -> None:
        self.app = app
        self.enabled = enabled

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        given = next((v for k, v in scope["headers"] if k == b"x-request-id"), b"").decode("latin-1")
        request = given if _REQUEST_ID.match(given) else ids.new_id()
        token = logs.request_id.set(request)
        started = time.perf_counter()
        status = 0

        async def stamped(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
                message.setdefault("headers", [])
                message["headers"] = [*message["headers"], (b"x-request-id", request.encode())]
            await send(message)

        try:
            await self.app(scope, receive, stamped)
        finally:
            if self.enabled:
                client = scope.get("client")
                access.info(
                    "%s %s %d",
                    scope["method"],
                    scope["path"],
                    status,
                    extra={
                        "action": "request",
                        "method": scope["method"],
                        "path": scope["path"],
                        "status": status,
                        "duration_ms": round((time.perf_counter() - started) * 1000, 2),
                        "client": client[0] if client else None,
                    },
                )
            logs.request_id.reset(token)


class Guard:
    """The last word on a request: any exception a route lets through becomes the error contract,
    sent here rather than left to the server (which would close the connection, a reset for a
    client that reuses it). A database that cannot be reached is ``503`` with ``Retry-After``."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started = False

        async def watched(message: Message) -> None:
            nonlocal started
            if message["type"] == "http.response.start":
                started = True
            await send(message)

        try:
            await self.app(scope, receive, watched)
        except Exception as exc:
            if started:
                raise
            await failure_response(exc)(scope, receive, send)


def failure_response(exc: Exception) -> Response:
    """The answer to an exception no route handled."""
    if unreachable(exc):
        log.warning("database unreachable: %s", exc, extra={"action": "api"})
        return error_response(exc if isinstance(exc, DatabaseUnavailable) else DatabaseUnavailable())
    log.error("unexpected error answering a request", exc_info=exc, extra={"action": "api"})
    return error_response(TidingsError("internal error; the request may be retried"))


def validation_failure(errors: Sequence[Any]) -> TidingsError:
    """The error contract's answer to a request model's validation errors (pydantic's list): a
    body that is not JSON or not an object is ``bad_request``; otherwise the first error, as
    ``validation_failed`` naming its field. The gRPC API answers the same."""
    first = errors[0] if errors else {"loc": (), "msg": "invalid request", "type": ""}
    if first.get("type") == "json_invalid":
        return BadRequest("request body is not valid JSON")
    if first.get("type") == "model_attributes_type" or (
        first.get("loc") == ("body",) and first.get("type") in ("dict_type", "missing")
    ):
        return BadRequest("request body must be a JSON object")
    field = _field(tuple(first.get("loc", ())))
    message = str(first.get("msg", "invalid value"))
    return ValidationFailed(f"{field}: {message}" if field else message, field=field)


def _field(loc: tuple[int | str, ...]) -> str | None:
    if len(loc) > 1 and loc[0] == "query":
        # A parameter given more than once (status=a&status=b) is named, not its position.
        return str(loc[1])
    parts = [str(p) for p in (loc[1:] if loc and loc[0] in ("body", "query", "path", "header") else loc)]
    return ".".join(parts) or None


def create_app(service: Service, *, fast_lane: bool = True) -> FastAPI:
    """The ASGI app over a :class:`Service` (started by the app's lifespan when it is not yet).

    ``fast_lane`` answers the hot routes' ordinary requests below the framework (``fast``); without
    it every request goes through FastAPI (the tests compare the two)."""

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
        description=(
            "Self-hosted SMS and email delivery that tracks every message to a final, truthful status."
        ),
        lifespan=lifespan,
        # Served by add_docs from the installed assets instead of a CDN.
        docs_url=None,
        redoc_url=None,
    )
    app.state.service = service
    app.state.keys = service.key_checker

    @app.exception_handler(TidingsError)
    async def _tidings_error(_request: Request, exc: TidingsError) -> Response:
        return error_response(exc)

    @app.exception_handler(RequestValidationError)
    async def _validation_error(_request: Request, exc: RequestValidationError) -> Response:
        return error_response(validation_failure(exc.errors()))

    @app.exception_handler(StarletteHTTPException)
    async def _http_error(_request: Request, exc: StarletteHTTPException) -> Response:
        # 400: a body FastAPI could not read (not UTF-8, say), which is our bad_request.
        codes = {400: BadRequest.code, 404: "not_found", 405: "method_not_allowed"}
        error = TidingsError(str(exc.detail))
        error.code = codes.get(exc.status_code, "http_error")
        error.http_status = exc.status_code
        return error_response(error)

    @app.exception_handler(DatabaseUnavailable)
    async def _unavailable(_request: Request, exc: DatabaseUnavailable) -> Response:
        return failure_response(exc)

    @app.get(
        "/healthz",
        tags=["health"],
        operation_id="getHealth",
        summary="Health",
        response_model=HealthOut,
        responses={503: {"model": HealthOut, "description": "The database does not answer."}},
    )
    async def healthz() -> Response:
        """Whether tidings and its database answer (503 when the database does not)."""
        if not await service.healthy():
            return json_response({"status": "unavailable", "database": "unreachable"}, 503)
        return json_response({"status": "ok", "database": "ok"})

    for module in (
        messages,
        batches,
        templates,
        webhooks,
        gateway,
        inbound,
        opt_outs,
        message_log,
        callbacks,
        stats,
        alerts,
        unsubscribe,
    ):
        app.include_router(module.router)
    webhooks.add_legacy_routes(app, service)
    add_metrics(app, service)
    add_docs(app)
    if service.settings.dashboard:
        from tidings.dashboard import create_dashboard
        from tidings.dashboard.web import BASE

        app.mount(BASE, create_dashboard(service))
    if fast_lane:
        app.add_middleware(FastLane, service=service)
    app.add_middleware(
        BodyLimit,
        max_bytes=service.settings.max_request_bytes,
        larger={
            batches.PATH: service.settings.max_batch_bytes,
            # A provider may post more at once than a client (Mandrill: up to 1,000 events); the
            # webhook pipeline holds each provider to its own webhook_max_bytes.
            "/webhooks": max(
                [
                    service.settings.max_request_bytes,
                    *(p.settings.webhook_max_bytes for p in service.providers.values()),
                ]
            ),
        },
    )
    app.add_middleware(Guard)
    app.add_middleware(RequestLog, enabled=service.settings.access_log)
    return app
