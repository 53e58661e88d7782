"""OAuth2 client credentials (RFC 6749 §4.4): one access token, cached and shared by every send.

:class:`ClientCredentials` asks the token endpoint with HTTP Basic ``client_id:client_secret`` and
``grant_type=client_credentials``, and keeps the token until ``margin`` seconds before it expires
(at most half its lifetime). Concurrent callers wait on one lock, so they share one request. It is
the :class:`~tidings.providers.http.Auth` of an :class:`~tidings.providers.http.HttpProvider`: a
401 from the API makes the provider :meth:`~ClientCredentials.invalidate` that token (only that one:
another caller may already hold a newer) and try once more with a new one.

Refused credentials are a ``TemporaryProviderError``: the operator has to fix the configuration,
and the messages must wait, not fail. For :data:`REFUSED_PAUSE` seconds after a refusal, callers get
the same error at once instead of asking the token endpoint again for every message.
"""

from __future__ import annotations

import asyncio
import base64
import logging
import time
from collections.abc import Awaitable, Callable

from tidings.errors import TemporaryProviderError
from tidings.providers.http import Answer, HttpRequest

__all__ = ["DEFAULT_TOKEN_LIFETIME", "REFUSED_PAUSE", "ClientCredentials"]

log = logging.getLogger(__name__)

DEFAULT_TOKEN_LIFETIME = 3600.0
"""Seconds a token is assumed to work when the token endpoint does not say (no ``expires_in``)."""
REFUSED_PAUSE = 10.0
"""After the token endpoint refused the credentials, callers fail at once (temporarily) for this
long instead of asking it again."""

BEARER = "Bearer "


class ClientCredentials:
    """The access token of one client at one token endpoint.

    ``call`` makes a request (an :class:`~tidings.providers.http.HttpProvider`'s ``call``, so the
    token request shares its session, timeout and error translation). ``issuer`` names the token's
    owner in messages (``"Orange"``), ``provider`` the configured provider in logs. ``clock`` is
    monotonic seconds.
    """

    def __init__(
        self,
        call: Callable[[HttpRequest], Awaitable[Answer]],
        *,
        token_url: str,
        client_id: str,
        client_secret: str,
        issuer: str,
        provider: str,
        margin: float = 60.0,
        refused_pause: float = REFUSED_PAUSE,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._call = call
        self._token_url = token_url
        credentials = f"{client_id}:{client_secret}".encode()
        self._basic = "Basic " + base64.b64encode(credentials).decode("ascii")
        self._issuer = issuer
        self._provider = provider
        self._margin = margin
        self._refused_pause = refused_pause
        self._clock = clock
        self._lock = asyncio.Lock()
        self._token: str | None = None
        self._valid_until = 0.0
        self._refused: TemporaryProviderError | None = None
        self._refused_until = 0.0

    async def token(self) -> str:
        """A working access token: the cached one, or a new one (one request for all callers)."""
        async with self._lock:
            now = self._clock()
            if self._token is not None and now < self._valid_until:
                return self._token
            refused = self._refused
            if refused is not None and now < self._refused_until:
                # A new exception for each caller: one raised many times would pile up tracebacks.
                raise TemporaryProviderError(refused.message, code=refused.code, raw=refused.raw)
            token, lifetime = await self._fetch()
            self._token = token
            self._valid_until = self._clock() + lifetime - min(self._margin, lifetime / 2)
            self._refused = None
            return token

    def invalidate(self, token: str) -> None:
        """Forget ``token`` (the API refused it) unless another caller already replaced it."""
        if self._token == token:
            self._token = None

    async def authorization(self) -> str:
        """``Bearer <token>`` (:class:`~tidings.providers.http.Auth`)."""
        return BEARER + await self.token()

    def refused(self, authorization: str) -> None:
        """The API answered 401 to ``authorization`` (:class:`~tidings.providers.http.Auth`)."""
        self.invalidate(authorization.removeprefix(BEARER))

    async def _fetch(self) -> tuple[str, float]:
        what = f"the {self._issuer} token endpoint"
        answer = await self._call(
            HttpRequest(
                "POST",
                self._token_url,
                headers={"Authorization": self._basic, "Accept": "application/json"},
                form={"grant_type": "client_credentials"},
                what=what,
                auth=False,
            )
        )
        data = answer.data
        token = data.get("access_token")
        if answer.status == 200 and isinstance(token, str) and token:
            try:
                lifetime = float(data.get("expires_in", DEFAULT_TOKEN_LIFETIME))
            except (TypeError, ValueError):
                lifetime = DEFAULT_TOKEN_LIFETIME
            log.debug(
                "new %s access token", self._issuer, extra={"action": "token", "provider": self._provider}
            )
            return token, max(lifetime, 0.0)
        error = str(data.get("error") or f"http_{answer.status}")
        description = str(data.get("error_description") or data.get("message") or f"HTTP {answer.status}")
        if answer.status == 429 or answer.status >= 500:
            raise TemporaryProviderError(
                f"{what} is unavailable: {description}",
                code="token_unavailable",
                raw=data,
                retry_after=answer.retry_after,
            )
        name = self._provider
        if answer.status == 401 or error == "invalid_client":
            error = "invalid_client"
            log.error(
                "%s refused the credentials of provider %s (%s): check providers.%s.client_id and "
                "providers.%s.client_secret",
                self._issuer,
                name,
                description,
                name,
                name,
                extra={"action": "token", "provider": name, "error_code": error},
            )
        else:
            log.error(
                "%s refused provider %s's request (%s: %s)",
                what,
                name,
                error,
                description,
                extra={"action": "token", "provider": name, "error_code": error},
            )
        refused = TemporaryProviderError(
            f"{self._issuer} refused the credentials: {description}", code=error, raw=data
        )
        self._refused, self._refused_until = refused, self._clock() + self._refused_pause
        raise refused
