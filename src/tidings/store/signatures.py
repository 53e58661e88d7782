"""Signatures of signed requests already used: each may be used once while its timestamp is
within tolerance (after that the timestamp check refuses it anyway, and its row is removed)."""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import delete, insert
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncEngine

from tidings.errors import SignatureReused
from tidings.store.tables import used_signatures


class SignatureStore:
    def __init__(self, engine: AsyncEngine) -> None:
        self.engine = engine

    async def use(self, signature: str, api_key_id: str, *, expires_at: datetime, now: datetime) -> None:
        """Record ``signature`` as used until ``expires_at``; :class:`SignatureReused` when it was."""
        try:
            async with self.engine.begin() as conn:
                await conn.execute(delete(used_signatures).where(used_signatures.c.expires_at < now))
                await conn.execute(
                    insert(used_signatures),
                    {"signature": signature, "api_key_id": api_key_id, "expires_at": expires_at},
                )
        except IntegrityError as exc:
            raise SignatureReused() from exc
