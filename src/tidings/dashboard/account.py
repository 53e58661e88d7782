"""Signing in and out of the dashboard."""

from __future__ import annotations

import hmac
import secrets
from urllib.parse import urlencode

from fastapi import APIRouter, Request
from fastapi.responses import Response

from tidings.dashboard.web import (
    BASE,
    CSRF_FIELD,
    LOGIN_COOKIE,
    SESSION_COOKIE,
    CsrfFailed,
    Form,
    Operator,
    ServiceDep,
    SignInRequired,
    address_of,
    read_form,
    redirect,
    render,
    same_origin,
    signed_in,
)
from tidings.services.operators import SignInFailed

router = APIRouter()


def next_query(path: str) -> str:
    return urlencode({"next": path})


def safe_next(wanted: str | None) -> str:
    """Where to go after signing in: a dashboard path only (never another site)."""
    if wanted and wanted.startswith(BASE) and not wanted.startswith("//") and "\\" not in wanted:
        return wanted
    return BASE


def _secure(request: Request) -> bool:
    """Whether cookies get ``Secure``: the request came over https, or tidings is served behind
    https (``public_url``)."""
    service = request.app.state.service
    return request.url.scheme == "https" or service.settings.base_url.startswith("https://")


def _login_page(request: Request, status_code: int = 200, error: str | None = None) -> Response:
    token = request.cookies.get(LOGIN_COOKIE)
    if not token or len(token) > 64:
        token = secrets.token_urlsafe(24)
    response = render(
        request,
        "login.html",
        status_code,
        login_token=token,
        next=safe_next(request.query_params.get("next")),
        error=error,
    )
    response.set_cookie(
        LOGIN_COOKIE, token, path=BASE, httponly=True, samesite="strict", secure=_secure(request)
    )
    return response


@router.get("/login")
async def login_form(request: Request) -> Response:
    try:
        await signed_in(request)
    except SignInRequired:
        return _login_page(request)
    return redirect("")


@router.post("/login")
async def login(request: Request, service: ServiceDep) -> Response:
    form = await read_form(request)
    cookie = request.cookies.get(LOGIN_COOKIE, "")
    given = form.get(CSRF_FIELD, "")
    if not cookie or not same_origin(request) or not hmac.compare_digest(cookie.encode(), given.encode()):
        raise CsrfFailed("the sign-in form's token is missing or wrong; reload the page and try again")
    try:
        signed = await service.operators.sign_in(
            form.get("name", ""), form.get("password", ""), address=address_of(request)
        )
    except SignInFailed as exc:
        return _login_page(request, exc.http_status, error=str(exc))
    response = Response(status_code=303, headers={"location": safe_next(form.get("next"))})
    response.set_cookie(
        SESSION_COOKIE,
        signed.token,
        path=BASE,
        httponly=True,
        samesite="lax",
        secure=_secure(request),
        max_age=int(service.operators.lifetime.total_seconds()),
    )
    response.delete_cookie(LOGIN_COOKIE, path=BASE)
    return response


@router.post("/logout")
async def logout(request: Request, session: Operator, _form: Form, service: ServiceDep) -> Response:
    await service.operators.sign_out(
        request.cookies.get(SESSION_COOKIE, ""), session.operator.name, address=address_of(request)
    )
    response = redirect("/login", notice="signed_out")
    response.delete_cookie(SESSION_COOKIE, path=BASE, httponly=True, samesite="lax", secure=_secure(request))
    return response
