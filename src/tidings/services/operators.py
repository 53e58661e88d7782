"""The dashboard's operators: who they are, how they sign in, and what they did.

Passwords are hashed with Argon2id (``argon2-cffi``'s defaults, in a thread so that a sign-in
does not stall the event loop). A session is a random token in an ``HttpOnly`` cookie; only its
SHA-256 is stored, beside the CSRF token every form of the session carries. Repeated wrong
passwords for one name, or from one address, are refused for a while before they are checked.
"""

from __future__ import annotations

import asyncio
import collections
import functools
import hashlib
import logging
import re
import secrets
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import timedelta
from typing import Any

from argon2 import PasswordHasher
from argon2.exceptions import InvalidHashError, VerificationError, VerifyMismatchError

from tidings.clock import utcnow
from tidings.errors import Conflict, InvalidInput, NotFound, RateLimited, TidingsError
from tidings.store.operators import Operator, OperatorStore, Session

log = logging.getLogger(__name__)

NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._@-]{0,63}$")
MIN_PASSWORD_CHARS = 10
MAX_PASSWORD_CHARS = 1024
FAILURES_ALLOWED = 5
"""Wrong passwords for one name (or from one address) within ``FAILURE_WINDOW`` seconds before
further attempts are refused unchecked."""
FAILURE_WINDOW = 900.0
EXTEND_AFTER = timedelta(minutes=5)
"""A session's expiry moves forward at most this often (not one write per page)."""


class SignInFailed(TidingsError):
    """The name or the password is wrong (which one is not said)."""

    code = "sign_in_failed"
    http_status = 401


def digest(token: str) -> str:
    return hashlib.sha256(token.encode("utf-8")).hexdigest()


def check_name(name: str) -> str:
    if not NAME.match(name):
        raise InvalidInput(
            "a user name is 1 to 64 letters, digits, '.', '_', '@' or '-', starting with a letter or digit",
            field="name",
        )
    return name


def check_password(password: str) -> str:
    if len(password) < MIN_PASSWORD_CHARS:
        raise InvalidInput(f"a password has at least {MIN_PASSWORD_CHARS} characters", field="password")
    if len(password) > MAX_PASSWORD_CHARS:
        raise InvalidInput(f"a password has at most {MAX_PASSWORD_CHARS} characters", field="password")
    return password


class Throttle:
    """Failures per key over a sliding window (per process)."""

    def __init__(self, allowed: int, window: float, clock: Callable[[], float] = time.monotonic) -> None:
        self.allowed = allowed
        self.window = window
        self.clock = clock
        self._failures: dict[str, collections.deque[float]] = {}

    def _recent(self, key: str) -> collections.deque[float]:
        now = self.clock()
        failures = self._failures.get(key)
        if failures is None:
            return collections.deque()
        while failures and now - failures[0] >= self.window:
            failures.popleft()
        if not failures:
            del self._failures[key]
        return failures

    def blocked_for(self, key: str) -> float | None:
        """Seconds until ``key`` may try again, or ``None`` when it may now."""
        failures = self._recent(key)
        if len(failures) < self.allowed:
            return None
        return failures[0] + self.window - self.clock()

    def fail(self, key: str) -> None:
        if len(self._failures) >= 100_000:
            self._failures.clear()
        self._failures.setdefault(key, collections.deque()).append(self.clock())

    def forget(self, key: str) -> None:
        self._failures.pop(key, None)


@dataclass(frozen=True)
class SignedIn:
    token: str
    """For the cookie; never stored."""
    session: Session


class OperatorService:
    def __init__(self, store: OperatorStore, session_hours: float) -> None:
        self.store = store
        self.lifetime = timedelta(hours=session_hours)
        self.hasher = PasswordHasher()
        self.throttle = Throttle(FAILURES_ALLOWED, FAILURE_WINDOW)

    @functools.cached_property
    def _decoy(self) -> str:
        """Checked when the name is unknown, so that a wrong name takes as long as a wrong
        password. Made at the first such sign-in, not at start: an Argon2 hash takes 64 MiB for
        a moment, which every process (API, worker, CLI) would otherwise hold at its peak."""
        return self.hasher.hash(secrets.token_urlsafe(16))

    async def create(self, name: str, password: str) -> Operator:
        name, password = check_name(name), check_password(password)
        hashed = await asyncio.to_thread(self.hasher.hash, password)
        created = await self.store.create(name, hashed, utcnow())
        if created is None:
            raise Conflict(f"a user named {name!r} exists")
        return created

    async def set_password(self, name: str, password: str) -> None:
        hashed = await asyncio.to_thread(self.hasher.hash, check_password(password))
        if not await self.store.set_password(name, hashed):
            raise NotFound(f"no user named {name!r}")

    async def set_disabled(self, name: str, disabled: bool) -> None:
        if not await self.store.set_disabled(name, utcnow() if disabled else None):
            raise NotFound(f"no user named {name!r}")

    def _verify(self, hashed: str, password: str) -> bool:
        try:
            return self.hasher.verify(hashed, password)
        except (VerifyMismatchError, VerificationError, InvalidHashError):
            return False

    async def sign_in(self, name: str, password: str, *, address: str | None) -> SignedIn:
        keys = [f"name:{name.lower()}"] + ([f"address:{address}"] if address else [])
        waits = [w for w in (self.throttle.blocked_for(k) for k in keys) if w is not None]
        if waits:
            log.warning(
                "dashboard sign-in refused: too many wrong passwords",
                extra={"action": "sign_in", "operator": name, "client": address},
            )
            raise RateLimited("too many failed sign-ins; try again later", retry_after=max(waits))
        operator = await self.store.named(name) if len(password) <= MAX_PASSWORD_CHARS else None
        hashed = (
            operator.password_hash if operator is not None else await asyncio.to_thread(lambda: self._decoy)
        )
        matched = await asyncio.to_thread(self._verify, hashed, password[:MAX_PASSWORD_CHARS])
        if operator is None or not matched or operator.disabled_at is not None:
            for key in keys:
                self.throttle.fail(key)
            log.warning(
                "dashboard sign-in failed for %r",
                name,
                extra={"action": "sign_in", "operator": name, "client": address},
            )
            raise SignInFailed("wrong user name or password")
        self.throttle.forget(keys[0])
        if self.hasher.check_needs_rehash(hashed):
            await self.store.rehash(operator.id, hashed, await asyncio.to_thread(self.hasher.hash, password))
        token = secrets.token_urlsafe(32)
        csrf_token = secrets.token_urlsafe(32)
        now = utcnow()
        await self.store.open_session(
            operator.id, digest(token), csrf_token, now=now, expires_at=now + self.lifetime
        )
        await self.record(operator.name, "sign_in", operator.name, {}, address=address)
        return SignedIn(token, Session(operator, csrf_token, now + self.lifetime))

    async def session(self, token: str) -> Session | None:
        """The session of a cookie, its expiry moved forward while it is used."""
        now = utcnow()
        found = await self.store.session(digest(token), now)
        if found is not None and found.expires_at - now < self.lifetime - EXTEND_AFTER:
            await self.store.extend(digest(token), now=now, expires_at=now + self.lifetime)
        return found

    async def sign_out(self, token: str, operator: str, *, address: str | None) -> None:
        await self.store.close_session(digest(token))
        await self.record(operator, "sign_out", operator, {}, address=address)

    async def record(
        self, operator: str, action: str, target: str, detail: dict[str, Any], *, address: str | None
    ) -> None:
        """One line of the audit log, and the same in the service's log."""
        await self.store.record(
            operator=operator, action=action, target=target, detail=detail, address=address, now=utcnow()
        )
        log.info(
            "dashboard: %s %s %s",
            operator,
            action,
            target,
            extra={
                "action": f"dashboard.{action}",
                "operator": operator,
                "target": target,
                "client": address,
            },
        )
