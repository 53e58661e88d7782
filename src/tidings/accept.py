"""Turning a send request into a message ready to store: the rules shared by the API and the CLI."""

from __future__ import annotations

import json
from collections.abc import Mapping
from datetime import datetime
from typing import Any

from tidings.clock import utc_field
from tidings.config import Settings
from tidings.domain.phone import normalize_e164
from tidings.domain.segments import analyze
from tidings.errors import BodyTooLong, InvalidInput, printable
from tidings.providers.base import Provider
from tidings.routing import Router
from tidings.store.messages import NewMessage

MAX_TAGS = 20
MAX_TAG_LENGTH = 128
MAX_METADATA_BYTES = 8192


def build_message(
    settings: Settings,
    providers: Mapping[str, Provider],
    router: Router,
    *,
    to: str,
    body: str,
    sender: str | None = None,
    send_at: datetime | None = None,
    provider: str | None = None,
    tags: list[str] | None = None,
    metadata: dict[str, Any] | None = None,
    ordered: bool | None = None,
    callback_url: str | None = None,
) -> NewMessage:
    """Validate and normalise one message; raises :class:`InvalidInput` naming the field."""
    number = normalize_e164(to, settings.default_region)
    if not body or not body.strip():
        raise InvalidInput("body must not be empty", field="body")
    if len(body) > settings.max_body_chars:
        raise BodyTooLong(
            f"body has {len(body)} characters; the limit is {settings.max_body_chars}", field="body"
        )
    printable(body, "body")
    printable(sender, "sender")
    info = analyze(body)
    if provider is not None and provider not in providers:
        raise InvalidInput(
            f"unknown provider {provider!r}; configured: {', '.join(sorted(providers))}", field="provider"
        )
    route = router.route(number, provider)
    chosen = route[0]
    tag_list = list(dict.fromkeys(tags or []))
    if len(tag_list) > MAX_TAGS:
        raise InvalidInput(f"at most {MAX_TAGS} tags", field="tags")
    for tag in tag_list:
        if not tag or len(tag) > MAX_TAG_LENGTH:
            raise InvalidInput(f"each tag must have 1 to {MAX_TAG_LENGTH} characters", field="tags")
        printable(tag, "tags")
    meta = metadata or {}
    _check_metadata(meta)
    return NewMessage(
        to=number,
        body=body,
        segments=info.segments,
        encoding=info.encoding.value,
        provider=chosen,
        max_attempts=settings.max_attempts,
        sender=sender,
        send_at=utc_field(send_at, "send_at"),
        tags=tag_list,
        metadata=meta,
        route=route,
        ordered=providers[chosen].settings.ordered if ordered is None else ordered,
        callback_url=callback_url,
    )


def _check_metadata(meta: dict[str, Any]) -> None:
    """Metadata must survive a round trip through any JSON store unchanged."""
    try:
        # allow_nan=False: NaN and Infinity are not JSON (PostgreSQL refuses them, SQLite
        # would give them back as null).
        text = json.dumps(meta, allow_nan=False, ensure_ascii=False)
    except (ValueError, TypeError) as exc:
        raise InvalidInput("metadata must be plain JSON (no NaN or Infinity)", field="metadata") from exc
    if len(text.encode("utf-8")) > MAX_METADATA_BYTES:
        raise InvalidInput(f"metadata must be at most {MAX_METADATA_BYTES} bytes as JSON", field="metadata")
    if "\x00" in text or "\\u0000" in text:
        raise InvalidInput("metadata must not contain NUL characters", field="metadata")
    _check_numbers(meta)


def _check_numbers(value: Any) -> None:
    if isinstance(value, bool):
        return
    if isinstance(value, int) and not -(2**63) <= value < 2**64:
        raise InvalidInput("metadata integers must fit in 64 bits", field="metadata")
    if isinstance(value, dict):
        for item in value.values():
            _check_numbers(item)
    elif isinstance(value, list):
        for item in value:
            _check_numbers(item)
