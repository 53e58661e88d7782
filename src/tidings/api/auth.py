"""Bearer-key authentication, with a short cache so a request costs no key lookup; each key's
scopes (what it may do) and its requests a second."""

from __future__ import annotations

import collections
import time
from collections.abc import Callable
from typing import Annotated

from fastapi import Depends, Request
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer

from tidings.errors import Forbidden, RateLimited, Unauthorized
from tidings.store.keys import ApiKey, KeyStore, hash_secret

MAX_CACHED_KEYS = 10_000
"""The most keys the cache holds: it is emptied when full, so ever new keys cannot make it grow."""


class KeyChecker:
    """Verifies ``Authorization: Bearer <key>``. A revoked key stops working within ``ttl`` seconds.
    A key that makes more than its rate of requests in a second gets :class:`RateLimited`.

    ``clock`` gives the time in seconds, monotonic (tests pass one they can move).
    """

    def __init__(
        self,
        keys: KeyStore,
        ttl: float,
        clock: Callable[[], float] = time.monotonic,
        *,
        default_rate: float | None = None,
    ) -> None:
        self.keys = keys
        self.ttl = ttl
        self.clock = clock
        self.default_rate = default_rate
        self._cache: dict[str, tuple[float, ApiKey]] = {}
        self._recent: dict[str, collections.deque[float]] = {}

    def _count(self, key: ApiKey) -> None:
        """Count one request of ``key`` against its rate (per process: a sliding second)."""
        rate = key.rate_limit if key.rate_limit is not None else self.default_rate
        if rate is None:
            return
        now = self.clock()
        recent = self._recent.setdefault(key.id, collections.deque())
        while recent and now - recent[0] >= 1.0:
            recent.popleft()
        if len(recent) >= max(1, int(rate)):
            raise RateLimited(
                f"this API key may make {rate:g} requests a second", retry_after=recent[0] + 1.0 - now
            )
        recent.append(now)

    async def check(self, authorization: str | None) -> ApiKey:
        if not authorization:
            raise Unauthorized()
        scheme, _, secret = authorization.partition(" ")
        secret = secret.strip()
        if scheme.lower() != "bearer" or not secret:
            raise Unauthorized("use `Authorization: Bearer <key>`")
        digest = hash_secret(secret)
        now = self.clock()
        cached = self._cache.get(digest)
        if cached is not None and cached[0] > now:
            self._count(cached[1])
            return cached[1]
        key = await self.keys.verify(secret)
        if key is None:
            self._cache.pop(digest, None)
            raise Unauthorized("unknown or revoked API key")
        if self.ttl > 0:
            if len(self._cache) >= MAX_CACHED_KEYS:
                self._cache.clear()
            self._cache[digest] = (now + self.ttl, key)
        self._count(key)
        return key


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


def _scope(name: str) -> Callable[[ApiKey], ApiKey]:
    def check(key: Authenticated) -> ApiKey:
        if name not in key.scopes:
            raise Forbidden(f"this API key may not {name} (its scopes: {', '.join(sorted(key.scopes))})")
        return key

    return check


Sender = Annotated[ApiKey, Depends(_scope("send"))]
"""A key that may send messages."""
Reader = Annotated[ApiKey, Depends(_scope("read"))]
"""A key that may read messages, the log, inbound messages and callbacks."""
Admin = Annotated[ApiKey, Depends(_scope("admin"))]
"""A key that may manage opt-outs, callback settings and retries."""
