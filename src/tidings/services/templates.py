"""Stored templates (``/v1/templates``): checked by compiling them before they are kept, and
found by batches that name them."""

from __future__ import annotations

import asyncio
from dataclasses import dataclass
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

    async def for_batch(self, spec: BatchIn) -> BatchTemplates:
        """The compiled templates of a batch (an SMS body; an email's subject, inner body, outer
        layout and PDF), with the stored template's id and version when it names one. Compiled in
        a thread: a long template takes a while, and the loop serves others meanwhile."""
        if spec.template_id is not None and (spec.template or spec.inner_template or spec.subject_template):
            raise InvalidInput("give either template or template_id", field="template")
        return await asyncio.to_thread(self._compile_batch, spec, await self._stored(spec))

    async def _stored(self, spec: BatchIn) -> dict[str, Any] | None:
        if spec.template_id is None:
            return None
        stored = await self.store.templates.get(spec.template_id) if ids.is_id(spec.template_id) else None
        if stored is None:
            raise InvalidInput(f"no template {spec.template_id}", field="template_id")
        if stored["channel"] != spec.channel.value:
            raise InvalidInput(
                f"template {spec.template_id} is for {stored['channel']}, the batch for {spec.channel.value}",
                field="template_id",
            )
        return stored

    @staticmethod
    def _compile_batch(spec: BatchIn, stored: dict[str, Any] | None) -> BatchTemplates:
        named = {"template_id": stored["id"], "template_version": int(stored["version"])} if stored else {}
        pdf = (
            compile_template(spec.pdf_template, field="pdf_template", autoescape=True)
            if spec.pdf_template
            else None
        )
        if spec.channel is Channel.SMS:
            if (spec.template is None) == (stored is None):
                raise InvalidInput("give either template or template_id", field="template")
            extra = next((n for n in _EMAIL_TEMPLATES if getattr(spec, n)), None)
            if extra is not None:
                raise InvalidInput(f"{extra} is for email batches", field=extra)
            source = stored["body"] if stored else spec.template
            assert source is not None
            return BatchTemplates(body=compile_template(source, field="template"), **named)
        given = spec.template or spec.inner_template
        if stored is not None and spec.outer_template:
            raise InvalidInput("give either template_id or the templates themselves", field="outer_template")
        subject = stored["subject"] if stored else spec.subject_template
        inner = stored["inner"] if stored else given
        outer = stored["outer"] if stored else spec.outer_template
        if not subject:
            raise InvalidInput("an email batch needs a subject_template", field="subject_template")
        if not inner:
            raise InvalidInput("an email batch needs an inner_template (its body)", field="inner_template")
        return BatchTemplates(
            subject=compile_template(subject, field="subject_template"),
            inner=compile_template(inner, field="inner_template", autoescape=True),
            outer=compile_template(outer, field="outer_template", autoescape=True) if outer else None,
            pdf=pdf,
            **named,
        )


_EMAIL_TEMPLATES = ("subject_template", "inner_template", "outer_template", "pdf_template")


@dataclass(frozen=True)
class BatchTemplates:
    """A batch's compiled templates: ``body`` for SMS; ``subject``, ``inner`` (Markdown or HTML),
    ``outer`` (the HTML layout, optional) and ``pdf`` (optional) for email."""

    body: Template | None = None
    subject: Template | None = None
    inner: Template | None = None
    outer: Template | None = None
    pdf: Template | None = None
    template_id: str | None = None
    template_version: int | None = None

    @property
    def sources(self) -> dict[str, str]:
        """The templates' texts, by the batch field that gives them."""
        named = {
            "template": self.body,
            "subject_template": self.subject,
            "inner_template": self.inner,
            "outer_template": self.outer,
            "pdf_template": self.pdf,
        }
        return {name: t.source for name, t in named.items() if t is not None}
