"""The web dashboard at ``/dashboard``: server-rendered pages over the same services as the API.

One module per page (``overview``, ``messages``, ``batches``, ``providers``, ``inbound``,
``webhooks``, ``audit``), ``account`` for signing in and out, ``web`` for what they share,
``charts`` for the SVG charts drawn on the server. Templates and the small script and style sheet
are package data: nothing is fetched from elsewhere and nothing is built.

It is its own ASGI app mounted under the API's, so that its errors are pages rather than the
API's JSON, and its routes are not in the API's OpenAPI document.
"""

from __future__ import annotations

from importlib.resources import files

from fastapi import FastAPI, Request
from fastapi.responses import RedirectResponse, Response
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.staticfiles import StaticFiles
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from tidings.api.app import failure_response
from tidings.dashboard import account, audit, batches, inbound, messages, overview, providers, webhooks
from tidings.dashboard.web import BASE, SECURITY_HEADERS, SignInRequired, is_fragment, render
from tidings.domain.destinations import networks
from tidings.errors import DatabaseUnavailable, TidingsError
from tidings.services import Service

PAGES = (account, overview, messages, batches, providers, inbound, webhooks, audit)


def failure_page(request: Request, exc: Exception) -> Response:
    """The page for an exception no route handled: the API's answer to it (which logs it),
    shown as a page."""
    failed = failure_response(exc)
    unavailable = failed.status_code == DatabaseUnavailable.http_status
    response = render(
        request,
        "error.html",
        failed.status_code,
        code=DatabaseUnavailable.code if unavailable else "internal_error",
        message="The database does not answer; try again shortly."
        if unavailable
        else "Something went wrong on the server; the service's log says what.",
    )
    if "retry-after" in failed.headers:
        response.headers["Retry-After"] = failed.headers["retry-after"]
    return response


class Shell:
    """Around every dashboard answer: its security headers (``web.SECURITY_HEADERS``), and a
    page rather than a bare 500 for an exception no route handled."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        static = "/static/" in scope.get("path", "")

        async def stamped(message: Message) -> None:
            if message["type"] == "http.response.start":
                present = {k.lower() for k, _ in message.get("headers", [])}
                extra = [
                    (k.encode(), v.encode())
                    for k, v in SECURITY_HEADERS.items()
                    if k.encode() not in present and not (static and k == "cache-control")
                ]
                message["headers"] = [*message.get("headers", []), *extra]
            await send(message)

        started = False

        async def watched(message: Message) -> None:
            nonlocal started
            started = started or message["type"] == "http.response.start"
            await stamped(message)

        try:
            await self.app(scope, receive, watched)
        except Exception as exc:
            if started or scope["type"] != "http":
                raise
            await failure_page(Request(scope, receive), exc)(scope, receive, stamped)


def create_dashboard(service: Service) -> FastAPI:
    """The dashboard, to mount at :data:`~tidings.dashboard.web.BASE`."""
    app = FastAPI(openapi_url=None, docs_url=None, redoc_url=None)
    app.state.service = service
    # Read once: every audited action asks where it came from.
    app.state.trusted_proxies = networks(service.settings.trusted_proxies)

    @app.exception_handler(SignInRequired)
    async def _sign_in(request: Request, _exc: SignInRequired) -> Response:
        if request.method == "GET" and not is_fragment(request):
            wanted = request.url.path + (f"?{request.url.query}" if request.url.query else "")
            return RedirectResponse(f"{BASE}/login?{account.next_query(wanted)}", status_code=303)
        return render(request, "error.html", 401, code="unauthorized", message="Sign in first.")

    @app.exception_handler(TidingsError)
    async def _error(request: Request, exc: TidingsError) -> Response:
        response = render(request, "error.html", exc.http_status, code=exc.code, message=str(exc))
        if exc.retry_after is not None:
            response.headers["Retry-After"] = str(max(1, round(exc.retry_after)))
        return response

    @app.exception_handler(StarletteHTTPException)
    async def _http_error(request: Request, exc: StarletteHTTPException) -> Response:
        codes = {404: "not_found", 405: "method_not_allowed"}
        code = codes.get(exc.status_code, "http_error")
        return render(request, "error.html", exc.status_code, code=code, message=str(exc.detail))

    for page in PAGES:
        app.include_router(page.router)
    app.mount("/static", StaticFiles(directory=str(files("tidings.dashboard") / "static")), name="static")
    app.add_middleware(Shell)
    return app
