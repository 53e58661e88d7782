"""Checking API keys, for every transport (REST, gRPC): the key of a secret, with a short cache so
that a request costs no key lookup; its rate of requests; a signed request's key; its scopes."""

from __future__ import annotations

import collections
import time
from collections.abc import Callable
from datetime import UTC, datetime

from tidings import ids
from tidings.clock import to_db, utcnow
from tidings.errors import Forbidden, RateLimited, Unauthorized
from tidings.signatures import HEADER, KEY_HEADER, signed_with
from tidings.store.keys import ApiKey, KeyStore, hash_secret
from tidings.store.signatures import SignatureStore

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

    async def check_signed(
        self,
        key_id: str | None,
        signature: str | None,
        body: bytes,
        *,
        used: SignatureStore,
        tolerance: float,
    ) -> ApiKey:
        """The key whose signing secret signs ``body`` (``Tidings-Key`` and ``Tidings-Signature``),
        within ``tolerance`` seconds of now; a signature is accepted once (:class:`SignatureReused`
        after that)."""
        if not key_id or not ids.is_id(key_id):
            raise Unauthorized(f"a signed request names its key's id in `{KEY_HEADER}`")
        found = await self.keys.signing(key_id, utcnow())
        if found is None:
            raise Unauthorized("unknown or revoked API key")
        key, secrets = found
        signed = signed_with(body, signature, secrets, tolerance=tolerance)
        if signed is None:
            raise Unauthorized(
                f"`{HEADER}` does not sign this body with the key's signing secret, "
                f"or its time is more than {tolerance:g} seconds from now"
            )
        moment, digest = signed
        expires = to_db(datetime.fromtimestamp(moment + tolerance, UTC))
        await used.use(digest, key.id, expires_at=expires, now=utcnow())
        self._count(key)
        return key


def in_scope(key: ApiKey, name: str) -> ApiKey:
    """``key`` when it has the scope ``name``; :class:`Forbidden` otherwise (REST and gRPC)."""
    if name not in key.scopes:
        raise Forbidden(f"this API key may not {name} (its scopes: {', '.join(sorted(key.scopes))})")
    return key
