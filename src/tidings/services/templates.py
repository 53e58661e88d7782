"""Stored templates (``/v1/templates``): checked by compiling them before they are kept, and
found by batches that name them."""

from __future__ import annotations

import asyncio
from typing import Any

from tidings import ids
from tidings.domain.batches import BatchIn
from tidings.domain.content import Channel
from tidings.domain.templates import Template, compile_template
from tidings.errors import InvalidInput, NotFound
from tidings.store import Store


def _check_parts(channel: Channel, parts: dict[str, str | None]) -> None:
    """The parts a template of ``channel`` needs, each compiling; :class:`InvalidTemplate` or
    :class:`InvalidInput` naming the part."""
    if channel is Channel.SMS:
        if not parts.get("body"):
            raise InvalidInput("an SMS template needs a body", field="body")
        extra = [p for p in ("subject", "outer", "inner") if parts.get(p)]
        if extra:
            raise InvalidInput(f"an SMS template has only a body, not {extra[0]}", field=extra[0])
    else:
        if not parts.get("subject") or not parts.get("inner"):
            raise InvalidInput("an email template needs a subject and an inner body", field="subject")
        if parts.get("body"):
            raise InvalidInput("an email template has a subject, outer and inner, not a body", field="body")
    for name, source in parts.items():
        if source:
            compile_template(source, field=name, autoescape=name == "outer")


class TemplateService:
    def __init__(self, store: Store) -> None:
        self.store = store

    async def create(self, name: str, channel: Channel, parts: dict[str, str | None]) -> dict[str, Any]:
        await asyncio.to_thread(_check_parts, channel, parts)
        return await self.store.templates.create(name, channel.value, parts)

    async def get(self, template_id: str, version: int | None = None) -> dict[str, Any]:
        found = await self.store.templates.get(template_id, version) if ids.is_id(template_id) else None
        if found is None:
            what = f"no template {template_id}" + (f" at version {version}" if version is not None else "")
            raise NotFound(what)
        return found

    async def list(
        self, *, cursor: str | None = None, limit: int = 50
    ) -> tuple[list[dict[str, Any]], str | None]:
        rows = await self.store.templates.list(after_id=cursor, limit=limit + 1)
        page = rows[:limit]
        return page, (page[-1]["id"] if len(rows) > limit else None)

    async def update(self, template_id: str, name: str, parts: dict[str, str | None]) -> dict[str, Any]:
        """The template's next version."""
        current = await self.get(template_id)
        await asyncio.to_thread(_check_parts, Channel(current["channel"]), parts)
        updated = await self.store.templates.update(template_id, name, parts)
        if updated is None:
            raise NotFound(f"no template {template_id}")
        return updated

    async def delete(self, template_id: str) -> None:
        if not ids.is_id(template_id) or not await self.store.templates.delete(template_id):
            raise NotFound(f"no template {template_id}")

    async def for_batch(self, spec: BatchIn) -> tuple[Template, str | None, int | None]:
        """The compiled body template of an SMS batch, and the stored template's id and version
        when it names one."""
        if (spec.template is None) == (spec.template_id is None):
            raise InvalidInput("give either template or template_id", field="template")
        if spec.template is not None:
            # In a thread: a long template takes a while to compile, and the loop serves others.
            return await asyncio.to_thread(compile_template, spec.template, field="template"), None, None
        assert spec.template_id is not None
        stored = await self.store.templates.get(spec.template_id) if ids.is_id(spec.template_id) else None
        if stored is None:
            raise InvalidInput(f"no template {spec.template_id}", field="template_id")
        if stored["channel"] != spec.channel.value:
            raise InvalidInput(
                f"template {spec.template_id} is for {stored['channel']}, the batch for {spec.channel.value}",
                field="template_id",
            )
        compiled = await asyncio.to_thread(compile_template, stored["body"], field="template")
        return compiled, stored["id"], int(stored["version"])
