"""Stored templates. Every change is a new version; every version is kept (messages name the
version they were rendered from), also after the template itself is deleted."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import delete, insert, select, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncEngine

from tidings import ids
from tidings.clock import utcnow
from tidings.errors import Conflict
from tidings.store.db import plain
from tidings.store.tables import template_versions, templates

PARTS = ("body", "subject", "outer", "inner")
"""A version's texts: an SMS's body; an email's subject, outer layout and inner body."""


def _joined(head: Any, version: Any) -> dict[str, Any]:
    row = plain(version)
    row.update(id=head["id"], created_at=head["created_at"], updated_at=head["updated_at"])
    row["latest_version"] = head["version"]
    del row["template_id"]
    return row


class TemplateStore:
    def __init__(self, engine: AsyncEngine) -> None:
        self.engine = engine

    async def create(self, name: str, channel: str, parts: dict[str, str | None]) -> dict[str, Any]:
        """A new template at version 1; :class:`Conflict` when the name is taken."""
        now = utcnow()
        template_id = ids.new_id()
        try:
            async with self.engine.begin() as conn:
                await conn.execute(
                    insert(templates),
                    {
                        "id": template_id,
                        "name": name,
                        "channel": channel,
                        "version": 1,
                        "created_at": now,
                        "updated_at": now,
                    },
                )
                await conn.execute(
                    insert(template_versions), self._version(template_id, 1, name, channel, parts, now)
                )
        except IntegrityError as exc:
            raise Conflict(f"a template named {name!r} exists", field="name") from exc
        found = await self.get(template_id)
        assert found is not None
        return found

    @staticmethod
    def _version(
        template_id: str, version: int, name: str, channel: str, parts: dict[str, str | None], now: datetime
    ) -> dict[str, Any]:
        return {
            "template_id": template_id,
            "version": version,
            "name": name,
            "channel": channel,
            "created_at": now,
            **{p: parts.get(p) for p in PARTS},
        }

    async def update(
        self, template_id: str, name: str, parts: dict[str, str | None]
    ) -> dict[str, Any] | None:
        """The template's next version (``None``: no such template); :class:`Conflict` when the
        new name is taken. Two updates at once make two versions, one after the other."""
        now = utcnow()
        try:
            async with self.engine.begin() as conn:
                head = (
                    (await conn.execute(select(templates).where(templates.c.id == template_id)))
                    .mappings()
                    .first()
                )
                if head is None:
                    return None
                version = int(head["version"]) + 1
                moved = await conn.execute(
                    update(templates)
                    .where(templates.c.id == template_id, templates.c.version == head["version"])
                    .values(version=version, name=name, updated_at=now)
                )
                if moved.rowcount != 1:
                    raise Conflict("the template changed meanwhile; try again", field="id")
                await conn.execute(
                    insert(template_versions),
                    self._version(template_id, version, name, str(head["channel"]), parts, now),
                )
        except IntegrityError as exc:
            raise Conflict(f"a template named {name!r} exists", field="name") from exc
        return await self.get(template_id)

    async def get(self, template_id: str, version: int | None = None) -> dict[str, Any] | None:
        """The template at ``version`` (default: its latest); ``None`` when either is unknown.
        A deleted template is unknown."""
        async with self.engine.connect() as conn:
            head = (
                (await conn.execute(select(templates).where(templates.c.id == template_id)))
                .mappings()
                .first()
            )
            if head is None:
                return None
            wanted = head["version"] if version is None else version
            found = (
                (
                    await conn.execute(
                        select(template_versions).where(
                            template_versions.c.template_id == template_id,
                            template_versions.c.version == wanted,
                        )
                    )
                )
                .mappings()
                .first()
            )
        return _joined(head, found) if found is not None else None

    async def list(self, *, after_id: str | None = None, limit: int = 50) -> list[dict[str, Any]]:
        """Templates at their latest version, newest first."""
        joined = templates.join(
            template_versions,
            (template_versions.c.template_id == templates.c.id)
            & (template_versions.c.version == templates.c.version),
        )
        query = select(templates, *[template_versions.c[p] for p in PARTS]).select_from(joined)
        if after_id is not None:
            query = query.where(templates.c.id < after_id)
        query = query.order_by(templates.c.id.desc()).limit(limit)
        async with self.engine.connect() as conn:
            rows = [plain(r) for r in (await conn.execute(query)).mappings()]
        for row in rows:
            row["latest_version"] = row["version"]
        return rows

    async def delete(self, template_id: str) -> bool:
        """Delete the template (its versions stay, for the messages that name them)."""
        async with self.engine.begin() as conn:
            gone = await conn.execute(delete(templates).where(templates.c.id == template_id))
        return gone.rowcount == 1
