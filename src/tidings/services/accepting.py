"""Accepting messages: the one path from a send request to a stored message, for every transport
(the REST API, the CLI, and next gRPC and batches).

A request is validated and normalised (address, text, tags, metadata), routed, and stored before
the caller hears back; with an idempotency key a repeated request gets the first answer.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping
from dataclasses import asdict, dataclass, field
from datetime import datetime
from typing import Any

import orjson

from tidings.clock import utc_field
from tidings.config import Settings
from tidings.domain.messages import NewMessage
from tidings.domain.phone import normalize_e164
from tidings.errors import BodyTooLong, InvalidInput, printable, printable_json
from tidings.providers.base import Provider
from tidings.services.callbacks import CallbackService
from tidings.services.routing import Router
from tidings.store import Store
from tidings.store.keys import ApiKey
from tidings.worker.wakeup import Waker

TEST_PROVIDER = "tidings-test"
"""The fake provider that answers every message of a test key (a name no configured provider may
take)."""

MAX_TAGS = 20
MAX_TAG_LENGTH = 128
MAX_METADATA_BYTES = 8192


@dataclass(frozen=True)
class SendRequest:
    """One message as a client asks for it, before validation."""

    to: str
    body: str
    sender: str | None = None
    send_at: datetime | None = None
    provider: str | None = None
    tags: list[str] = field(default_factory=list)
    metadata: dict[str, Any] = field(default_factory=dict)
    ordered: bool | None = None
    callback_url: str | None = None

    def fingerprint(self) -> str:
        """A hash of the request as given, the same whatever order its fields came in: what an
        idempotency key is checked against."""
        canonical = orjson.dumps(asdict(self), option=orjson.OPT_SORT_KEYS | orjson.OPT_NAIVE_UTC)
        return hashlib.sha256(canonical).hexdigest()


class Acceptor:
    def __init__(
        self,
        settings: Settings,
        providers: Mapping[str, Provider],
        router: Router,
        store: Store,
        waker: Waker,
        *,
        callbacks: CallbackService,
    ) -> None:
        self.settings = settings
        self.providers = providers
        self.router = router
        self.store = store
        self.waker = waker
        self.callbacks = callbacks

    def check_shared(
        self,
        *,
        sender: str | None,
        provider: str | None,
        tags: list[str],
        metadata: dict[str, Any],
        callback_url: str | None,
    ) -> list[str]:
        """Check what a message shares with others of its request (all of a batch's): raises
        :class:`InvalidInput` naming the field; returns the tags without repeats."""
        printable(sender, "sender")
        printable(callback_url, "callback_url")
        self.callbacks.check_url(callback_url, "callback_url")
        if provider is not None and provider not in self.providers:
            raise InvalidInput(
                f"unknown provider {provider!r}; configured: {', '.join(sorted(self.providers))}",
                field="provider",
            )
        _check_metadata(metadata)
        return check_tags(tags)

    def compose(
        self,
        number: str,
        body: str,
        *,
        provider: str | None,
        test: bool,
        ordered: bool | None,
        **rest: Any,
    ) -> NewMessage:
        """One SMS to the E.164 ``number`` whose shared parts are checked (:meth:`check_shared`):
        checks the body, routes it (a test key's message goes to the test provider whatever it
        asked for) and counts its segments. ``rest``: the :class:`NewMessage` fields as they are."""
        if not body or not body.strip():
            raise InvalidInput("body must not be empty", field="body")
        limit = self.settings.max_body_chars
        if len(body) > limit:
            raise BodyTooLong(f"body has {len(body)} characters; the limit is {limit}", field="body")
        printable(body, "body")
        route = [TEST_PROVIDER] if test else self.router.route(number, provider)
        chosen = route[0]
        return NewMessage.sms(
            to=number,
            text=body,
            provider=chosen,
            max_attempts=self.settings.max_attempts,
            route=route,
            ordered=self.providers[chosen].settings.ordered if ordered is None else ordered,
            **rest,
        )

    def build(
        self, request: SendRequest, *, default_callback_url: str | None = None, test: bool = False
    ) -> NewMessage:
        """Validate and normalise one SMS; raises :class:`InvalidInput` naming the field. A test
        key's message goes to the test provider whatever it asked for."""
        number = normalize_e164(request.to, self.settings.default_region)
        tags = self.check_shared(
            sender=request.sender,
            provider=request.provider,
            tags=request.tags,
            metadata=request.metadata,
            callback_url=request.callback_url,
        )
        return self.compose(
            number,
            request.body,
            provider=request.provider,
            test=test,
            ordered=request.ordered,
            sender=request.sender,
            send_at=utc_field(request.send_at, "send_at"),
            tags=tags,
            metadata=request.metadata,
            callback_url=request.callback_url or default_callback_url,
        )

    async def accept(
        self, request: SendRequest, *, key: ApiKey | None = None, idempotency_key: str | None = None
    ) -> tuple[dict[str, Any], bool]:
        """Validate, store and queue one message sent with ``key`` (its default callback URL, its
        idempotency keys; a test key's message only reaches the fake provider); returns the stored
        row and whether it is new (``False``: the earlier message of the same idempotency key)."""
        new = self.build(
            request,
            default_callback_url=key.callback_url if key else None,
            test=key.test if key else False,
        )
        row, created = await self.store.messages.insert(
            new,
            api_key_id=key.id if key else None,
            idempotency_key=idempotency_key,
            request_hash=request.fingerprint() if idempotency_key is not None else None,
        )
        if created:
            self.waker.notify()
        return row, created


def check_tags(tags: list[str], field: str = "tags") -> list[str]:
    """``tags`` without repeats; :class:`InvalidInput` when there are too many or one is empty,
    too long or unstorable."""
    unique = list(dict.fromkeys(tags))
    if len(unique) > MAX_TAGS:
        raise InvalidInput(f"at most {MAX_TAGS} tags", field=field)
    for tag in unique:
        if not tag or len(tag) > MAX_TAG_LENGTH:
            raise InvalidInput(f"each tag must have 1 to {MAX_TAG_LENGTH} characters", field=field)
        printable(tag, field)
    return unique


def check_metadata(meta: dict[str, Any], field: str = "metadata") -> None:
    """Metadata must survive a round trip through any JSON store unchanged."""
    try:
        _check_metadata(meta)
    except InvalidInput as exc:
        exc.field = field
        raise


def _check_metadata(meta: dict[str, Any]) -> None:
    """Metadata must survive a round trip through any JSON store unchanged."""
    printable_json(meta, "metadata")
    try:
        # allow_nan=False: NaN and Infinity are not JSON (PostgreSQL refuses them, SQLite
        # would give them back as null).
        text = json.dumps(meta, allow_nan=False, ensure_ascii=False)
    except (ValueError, TypeError) as exc:
        raise InvalidInput("metadata must be plain JSON (no NaN or Infinity)", field="metadata") from exc
    if len(text.encode("utf-8")) > MAX_METADATA_BYTES:
        raise InvalidInput(f"metadata must be at most {MAX_METADATA_BYTES} bytes as JSON", field="metadata")
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
