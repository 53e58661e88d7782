"""The installation's own secrets (``server_secrets``), made once and shared by every process."""

from __future__ import annotations

import secrets

from sqlalchemy import insert, select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncEngine

from tidings.store.tables import server_secrets


class SecretStore:
    def __init__(self, engine: AsyncEngine) -> None:
        self.engine = engine

    async def get(self, name: str) -> str:
        """The secret called ``name``, made now if there is none (the migration makes the known
        ones; an emptied table gets them back)."""
        query = select(server_secrets.c.value).where(server_secrets.c.name == name)
        async with self.engine.connect() as conn:
            found = (await conn.execute(query)).scalar_one_or_none()
        if found is not None:
            return str(found)
        try:
            async with self.engine.begin() as conn:
                await conn.execute(insert(server_secrets), {"name": name, "value": secrets.token_urlsafe(48)})
        except IntegrityError:
            pass  # another process made it first: read theirs
        async with self.engine.connect() as conn:
            return str((await conn.execute(query)).scalar_one())
