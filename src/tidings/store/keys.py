"""API keys. Only a SHA-256 hash of each secret is stored; the secret is shown once."""

from __future__ import annotations

import hashlib
import secrets
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import func, insert, or_, select, update
from sqlalchemy.ext.asyncio import AsyncEngine

from tidings import ids
from tidings.clock import utcnow
from tidings.errors import InvalidInput
from tidings.store.tables import api_keys

SECRET_PREFIX = "tdg_"
TEST_SECRET_PREFIX = "tdg_test_"
ALL_SCOPES = frozenset({"send", "read", "admin"})
CALLBACK_SECRET_PREFIX = "whsec_"


def new_callback_secret() -> str:
    """A secret to sign a key's callbacks with."""
    return CALLBACK_SECRET_PREFIX + secrets.token_urlsafe(32)


def hash_secret(secret: str) -> str:
    # Secrets are 32 random bytes, so a plain SHA-256 cannot be brute-forced; a slow hash
    # would only slow down every request.
    return hashlib.sha256(secret.encode("utf-8")).hexdigest()


@dataclass(frozen=True)
class ApiKey:
    id: str
    name: str
    prefix: str
    created_at: datetime
    last_used_at: datetime | None
    revoked_at: datetime | None
    callback_url: str | None = None
    """Where this key's application takes callbacks (the default for its messages)."""
    scopes: frozenset[str] = ALL_SCOPES
    """What it may do: ``send`` messages, ``read`` them and the logs, ``admin`` (opt-outs,
    callback settings, retries)."""
    rate_limit: float | None = None
    """Requests a second it may make (``None``: the ``api_key_rate_limit`` setting)."""
    test: bool = False
    """A test key: its messages are answered by the fake provider, never a real one."""


def _key(row: Any) -> ApiKey:
    return ApiKey(
        id=row.id,
        name=row.name,
        prefix=row.prefix,
        created_at=row.created_at,
        last_used_at=row.last_used_at,
        revoked_at=row.revoked_at,
        callback_url=row.callback_url,
        scopes=frozenset(row.scopes.split()),
        rate_limit=row.rate_limit,
        test=bool(row.test),
    )


class KeyStore:
    def __init__(self, engine: AsyncEngine) -> None:
        self.engine = engine

    async def create(
        self,
        name: str,
        *,
        scopes: frozenset[str] = ALL_SCOPES,
        rate_limit: float | None = None,
        test: bool = False,
    ) -> tuple[ApiKey, str]:
        """A new key and its secret (the only time the secret exists outside the caller)."""
        unknown = scopes - ALL_SCOPES
        if unknown or not scopes:
            raise InvalidInput(f"scopes are some of {', '.join(sorted(ALL_SCOPES))}", field="scopes")
        secret = (TEST_SECRET_PREFIX if test else SECRET_PREFIX) + secrets.token_urlsafe(32)
        now = utcnow()
        key = ApiKey(
            id=ids.new_id(),
            name=name,
            prefix=secret[:10],
            created_at=now,
            last_used_at=None,
            revoked_at=None,
            scopes=scopes,
            rate_limit=rate_limit,
            test=test,
        )
        async with self.engine.begin() as conn:
            await conn.execute(
                insert(api_keys),
                {
                    "id": key.id,
                    "name": name,
                    "secret_hash": hash_secret(secret),
                    "prefix": key.prefix,
                    "created_at": now,
                    # Every callback is signed, so every key has its signing secret from the start.
                    "callback_secret": new_callback_secret(),
                    "scopes": " ".join(sorted(scopes)),
                    "rate_limit": rate_limit,
                    "test": test,
                },
            )
        return key, secret

    async def all(self) -> list[ApiKey]:
        async with self.engine.connect() as conn:
            rows = (await conn.execute(select(api_keys).order_by(api_keys.c.created_at))).all()
        return [_key(r) for r in rows]

    async def count(self) -> int:
        async with self.engine.connect() as conn:
            return int((await conn.execute(select(func.count()).select_from(api_keys))).scalar_one())

    async def named(self, key: str) -> ApiKey | None:
        """The active key with this id or this name (``None`` when there is no single one)."""
        query = (
            select(api_keys)
            .where(or_(api_keys.c.id == key, api_keys.c.name == key), api_keys.c.revoked_at.is_(None))
            .limit(2)
        )
        async with self.engine.connect() as conn:
            found = (await conn.execute(query)).all()
        return _key(found[0]) if len(found) == 1 else None

    async def revoke(self, key: str) -> ApiKey | None:
        """Revoke the key with this id or this name; ``None`` when there is none."""
        now = utcnow()
        async with self.engine.begin() as conn:
            row = (
                await conn.execute(
                    select(api_keys).where(or_(api_keys.c.id == key, api_keys.c.name == key)).limit(2)
                )
            ).all()
            if len(row) != 1:
                return None
            await conn.execute(
                update(api_keys)
                .where(api_keys.c.id == row[0].id, api_keys.c.revoked_at.is_(None))
                .values(revoked_at=now)
            )
            fresh = (await conn.execute(select(api_keys).where(api_keys.c.id == row[0].id))).one()
        return _key(fresh)

    async def verify(self, secret: str) -> ApiKey | None:
        """The active key whose secret this is, or ``None``."""
        query = select(api_keys).where(
            api_keys.c.secret_hash == hash_secret(secret), api_keys.c.revoked_at.is_(None)
        )
        async with self.engine.connect() as conn:
            row = (await conn.execute(query)).first()
        return _key(row) if row is not None else None

    async def signing(self, key_id: str, now: datetime) -> tuple[ApiKey, list[str]] | None:
        """The active key with this id and the secrets a request signed by it may use: its
        signing secret, and its previous one while a rotation's grace lasts."""
        query = select(api_keys).where(api_keys.c.id == key_id, api_keys.c.revoked_at.is_(None))
        async with self.engine.connect() as conn:
            row = (await conn.execute(query)).first()
        if row is None or not row.callback_secret:
            return None
        secrets_ = [str(row.callback_secret)]
        until = row.previous_secret_until
        if row.previous_callback_secret and until is not None and until > now:
            secrets_.append(str(row.previous_callback_secret))
        return _key(row), secrets_
