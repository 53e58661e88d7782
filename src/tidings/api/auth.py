"""Bearer-key authentication for the REST API: FastAPI dependencies over the service's one
:class:`~tidings.services.keys.KeyChecker` (the key cache, rates and scopes, shared with gRPC)."""

from __future__ import annotations

from collections.abc import Callable
from typing import Annotated

from fastapi import Depends, Request
from fastapi.security import APIKeyHeader, HTTPAuthorizationCredentials, HTTPBearer

from tidings.services.keys import KeyChecker as KeyChecker
from tidings.services.keys import in_scope
from tidings.signatures import HEADER, KEY_HEADER
from tidings.store.keys import ApiKey

bearer = HTTPBearer(
    scheme_name="bearerAuth",
    bearerFormat="tdg_…",
    description="An API key made with `tidings keys create NAME`, sent as `Authorization: Bearer <key>`.",
    # It only declares the scheme (Swagger UI's "Authorize" sends the header): KeyChecker reads
    # the header itself and answers with the API's own 401.
    auto_error=False,
)


async def authenticate(
    request: Request, _declared: Annotated[HTTPAuthorizationCredentials | None, Depends(bearer)]
) -> ApiKey:
    """The API key of the request; a dependency, so a request without one gets 401 before its
    body is validated."""
    checker: KeyChecker = request.app.state.keys
    return await checker.check(request.headers.get("authorization"))


Authenticated = Annotated[ApiKey, Depends(authenticate)]
"""Any valid key."""

signed = APIKeyHeader(
    name=HEADER,
    scheme_name="signedRequest",
    description=(
        f"Instead of a bearer key: `{KEY_HEADER}: <key id>` and `{HEADER}: t=<unix seconds>,v1=<hex>`, "
        "the HMAC-SHA256 of `<t>.<body>` with the key's signing secret (README: Signed batches)."
    ),
    auto_error=False,
)


async def authenticate_signed(
    request: Request,
    _bearer: Annotated[HTTPAuthorizationCredentials | None, Depends(bearer)],
    _signed: Annotated[str | None, Depends(signed)],
) -> ApiKey:
    """The API key of a request that may be signed instead of carrying a bearer key."""
    checker: KeyChecker = request.app.state.keys
    if request.headers.get("authorization") is None and request.headers.get(HEADER) is not None:
        service = request.app.state.service
        return await checker.check_signed(
            request.headers.get(KEY_HEADER),
            request.headers.get(HEADER),
            await request.body(),
            used=service.store.signatures,
            tolerance=service.settings.signature_tolerance_seconds,
        )
    return await checker.check(request.headers.get("authorization"))


def _scope(name: str) -> Callable[[ApiKey], ApiKey]:
    def check(key: Authenticated) -> ApiKey:
        return in_scope(key, name)

    return check


def _signed_sender(key: Annotated[ApiKey, Depends(authenticate_signed)]) -> ApiKey:
    return in_scope(key, "send")


Sender = Annotated[ApiKey, Depends(_scope("send"))]
"""A key that may send messages."""
Reader = Annotated[ApiKey, Depends(_scope("read"))]
"""A key that may read messages, the log, inbound messages and callbacks."""
Admin = Annotated[ApiKey, Depends(_scope("admin"))]
"""A key that may manage opt-outs, callback settings and retries."""
SignedSender = Annotated[ApiKey, Depends(_signed_sender)]
"""A key that may send, given as a bearer key or by signing the request with its signing secret."""
