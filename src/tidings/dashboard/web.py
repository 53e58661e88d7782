"""What every dashboard page shares: templates, the signed-in operator, CSRF-checked forms, and
the answers (pages, fragments, redirects, errors).

A page is a GET that answers HTML; without a session it redirects to the sign-in page. A
fragment is the same GET asked for by the dashboard's script (header ``X-Tidings-Fragment``) to
refresh part of a page; without a session it is a 401, since a redirect would put the sign-in
form inside the page. Every POST is a form carrying the session's CSRF token, checked before
anything else is read from it.
"""

from __future__ import annotations

import hmac
import math
from collections.abc import Mapping
from datetime import datetime
from functools import cache
from typing import Annotated, Any
from urllib.parse import parse_qsl, urlencode

from fastapi import Depends, Request
from fastapi.responses import HTMLResponse, RedirectResponse, Response
from jinja2 import Environment, PackageLoader, StrictUndefined, select_autoescape

from tidings.clock import utcnow
from tidings.domain.costs import format_micros
from tidings.domain.destinations import Network
from tidings.errors import InvalidInput, TidingsError
from tidings.services import Service
from tidings.services.webhooks import client_address
from tidings.store.operators import Session

BASE = "/dashboard"
SESSION_COOKIE = "tidings_session"
LOGIN_COOKIE = "tidings_login"
"""The sign-in form's own CSRF token (double-submit: cookie and field must match)."""
FRAGMENT_HEADER = "x-tidings-fragment"
CSRF_FIELD = "csrf_token"
MAX_FORM_BYTES = 16_384

NAV = (
    ("overview", "Overview", ""),
    ("messages", "Messages", "/messages"),
    ("batches", "Batches", "/batches"),
    ("providers", "Gateways & providers", "/providers"),
    ("inbound", "Inbound", "/inbound"),
    ("opt_outs", "Opt-outs", "/opt-outs"),
    ("webhooks", "Webhooks", "/webhooks"),
    ("audit", "Audit log", "/audit"),
)

SECURITY_HEADERS = {
    # Nothing but this service's own files, no inline script, no framing.
    "content-security-policy": (
        "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data:; "
        "connect-src 'self'; form-action 'self'; frame-ancestors 'none'; base-uri 'none'"
    ),
    "x-frame-options": "DENY",
    "x-content-type-options": "nosniff",
    "referrer-policy": "same-origin",
    "cache-control": "no-store",
}


class SignInRequired(Exception):
    """No live session: a page redirects to the sign-in form, anything else is a 401."""


class CsrfFailed(TidingsError):
    """A form was posted without this session's token (or from another site)."""

    code = "csrf_failed"
    http_status = 403


def when(value: datetime | str | None) -> str:
    """A stored time as the dashboard shows it (UTC, to the second)."""
    if value is None:
        return "—"
    if isinstance(value, str):
        return value
    return value.strftime("%Y-%m-%d %H:%M:%S")


def ago(value: datetime | None, now: datetime | None = None) -> str:
    """How long before now ``value`` was, roughly (``3 min ago``)."""
    if value is None:
        return "never"
    seconds = ((now or utcnow()) - value).total_seconds()
    if seconds < 0:
        return "in the future"
    for size, unit in ((86_400, "d"), (3_600, "h"), (60, "min")):
        if seconds >= size:
            return f"{int(seconds // size)} {unit} ago"
    return f"{int(seconds)} s ago"


def percent(rate: float | None) -> str:
    return "—" if rate is None or math.isnan(rate) else f"{rate * 100:.1f} %"


def money(micros: int | None, currency: str | None) -> str:
    return "—" if micros is None else f"{format_micros(micros)} {currency or ''}".strip()


@cache
def environment() -> Environment:
    env = Environment(
        loader=PackageLoader("tidings.dashboard", "templates"),
        autoescape=select_autoescape(default=True, default_for_string=True),
        undefined=StrictUndefined,
        trim_blocks=True,
        lstrip_blocks=True,
    )
    env.filters.update(when=when, ago=ago, percent=percent, money=money)
    env.globals.update(base=BASE, nav=NAV, csrf_field=CSRF_FIELD)
    return env


def day(value: str, field: str, *, end: bool) -> datetime | None:
    """A date (``2026-11-30``) or date and time from the filter form, as naive UTC; ``end``
    makes a bare date cover its whole day."""
    if not value:
        return None
    try:
        moment = datetime.fromisoformat(value)
    except ValueError as exc:
        raise InvalidInput(f"{field} must be a date such as 2026-11-30", field=field) from exc
    if moment.tzinfo is not None:
        raise InvalidInput(f"{field} is read as UTC; give it without an offset", field=field)
    if end and len(value) <= 10:
        moment = moment.replace(hour=23, minute=59, second=59, microsecond=999_999)
    return moment


def service_of(request: Request) -> Service:
    service: Service = request.app.state.service
    return service


ServiceDep = Annotated[Service, Depends(service_of)]


def address_of(request: Request) -> str | None:
    """The operator's address (``X-Forwarded-For`` believed only from ``trusted_proxies``)."""
    peer = request.client.host if request.client else None
    trusted: list[Network] = request.app.state.trusted_proxies
    return client_address(peer, request.headers.get("x-forwarded-for"), trusted)


def is_fragment(request: Request) -> bool:
    return request.headers.get(FRAGMENT_HEADER) == "1"


async def signed_in(request: Request) -> Session:
    """The session of the request's cookie; :class:`SignInRequired` without a live one."""
    token = request.cookies.get(SESSION_COOKIE)
    if not token or len(token) > 128:
        raise SignInRequired()
    session = await service_of(request).operators.session(token)
    if session is None:
        raise SignInRequired()
    request.state.session = session
    return session


Operator = Annotated[Session, Depends(signed_in)]
"""A route only a signed-in operator reaches."""


def same_origin(request: Request) -> bool:
    """Whether a browser says the request comes from this site (``Origin``, when it sends one)."""
    origin = request.headers.get("origin")
    if origin is None or origin == "null":
        return origin is None
    host = request.headers.get("host", "")
    return origin.split("://", 1)[-1] == host


async def read_form(request: Request) -> dict[str, str]:
    """A posted ``application/x-www-form-urlencoded`` form (the last value of a repeated field)."""
    body = await request.body()
    if len(body) > MAX_FORM_BYTES:
        raise CsrfFailed("the form is larger than a dashboard form can be")
    try:
        return dict(parse_qsl(body.decode("utf-8"), keep_blank_values=True, max_num_fields=100))
    except (UnicodeDecodeError, ValueError) as exc:
        raise CsrfFailed("the form could not be read") from exc


async def checked_form(request: Request, session: Operator) -> dict[str, str]:
    """The posted form, once its CSRF token is this session's and it comes from this site."""
    form = await read_form(request)
    token = form.pop(CSRF_FIELD, "")
    if not same_origin(request) or not hmac.compare_digest(token.encode(), session.csrf_token.encode()):
        raise CsrfFailed("the form's CSRF token is missing or wrong; reload the page and try again")
    return form


Form = Annotated[dict[str, str], Depends(checked_form)]
"""A CSRF-checked form (declare it beside :data:`Operator`)."""


def render(request: Request, template: str, status_code: int = 200, **context: Any) -> HTMLResponse:
    """A page, or its fragment when the script asked for one (the template's ``fragment``
    block)."""
    session: Session | None = getattr(request.state, "session", None)
    env = environment()
    page = env.get_template(template)
    values = {
        "request": request,
        "session": session,
        "operator": session.operator.name if session else None,
        "csrf_token": session.csrf_token if session else "",
        "now": utcnow(),
        "notice": request.query_params.get("notice"),
        **context,
    }
    if is_fragment(request) and "fragment" in page.blocks:
        body = "".join(page.blocks["fragment"](page.new_context(values)))
    else:
        body = page.render(values)
    return HTMLResponse(body, status_code=status_code)


def redirect(path: str, **query: str | None) -> RedirectResponse:
    """303 to a dashboard path (after a form), with ``query`` (``notice=...``)."""
    given = {k: v for k, v in query.items() if v is not None}
    url = BASE + path + ("?" + urlencode(given) if given else "")
    return RedirectResponse(url, status_code=303)


def query_string(params: Mapping[str, Any], **changes: Any) -> str:
    """``params`` with ``changes`` (``None`` removes one), as a query string for a link."""
    merged = {**params, **changes}
    pairs: list[tuple[str, str]] = []
    for key, value in merged.items():
        if value is None or value == "":
            continue
        if isinstance(value, list | tuple):
            pairs.extend((key, str(v)) for v in value)
        else:
            pairs.append((key, str(value)))
    return urlencode(pairs)


def with_headers(response: Response) -> Response:
    for name, value in SECURITY_HEADERS.items():
        response.headers.setdefault(name, value)
    return response
