"""Accepting messages: the one path from a send request to a stored message, for every transport
(the REST API, the CLI, and next gRPC and batches).

A request is validated and normalised (address, text, tags, metadata), routed, and stored before
the caller hears back; with an idempotency key a repeated request gets the first answer.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import json
import re
from collections.abc import Mapping
from dataclasses import asdict, dataclass, field
from datetime import datetime
from typing import Any

import orjson

from tidings import metrics
from tidings.clock import utc_field
from tidings.config import Settings
from tidings.domain.addresses import normalize_email, normalize_sender
from tidings.domain.batches import FileIn
from tidings.domain.content import RESERVED_HEADERS, Attachment, Channel, EmailContent
from tidings.domain.email_text import html_to_text
from tidings.domain.messages import NewMessage
from tidings.domain.phone import normalize_e164
from tidings.errors import BodyTooLong, InvalidAttachment, InvalidInput, printable, printable_json
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


def canonical_hash(value: Any) -> str:
    """A hash of ``value`` (JSON-like) that does not depend on the order of its keys: what an
    idempotency key (or a batch's group id) is checked against. ``TypeError`` for what JSON
    cannot hold."""
    canonical = orjson.dumps(value, option=orjson.OPT_SORT_KEYS | orjson.OPT_NAIVE_UTC)
    return hashlib.sha256(canonical).hexdigest()


MAX_IDEMPOTENCY_KEY = 255
"""The longest idempotency key a client may give (REST header and gRPC metadata alike)."""


@dataclass(frozen=True)
class SendRequest:
    """One message as a client asks for it, before validation."""

    to: str
    body: str = ""
    sender: str | None = None
    send_at: datetime | None = None
    provider: str | None = None
    tags: list[str] = field(default_factory=list)
    metadata: dict[str, Any] = field(default_factory=dict)
    ordered: bool | None = None
    callback_url: str | None = None
    channel: Channel = Channel.SMS
    subject: str | None = None
    html: str | None = None
    text: str | None = None
    reply_to: str | None = None
    headers: dict[str, str] = field(default_factory=dict)
    attachments: list[FileIn] = field(default_factory=list)

    def fingerprint(self) -> str:
        """A hash of the request as given, the same whatever order its fields came in: what an
        idempotency key is checked against. (The email fields count only when given, so an SMS
        hashes as it did before email existed.)"""
        fields = asdict(self)
        fields["attachments"] = [a.model_dump() for a in self.attachments]
        for name in _EMAIL_FIELDS:
            if not fields[name]:
                del fields[name]
        return canonical_hash(fields)


_EMAIL_FIELDS = ("channel", "subject", "html", "text", "reply_to", "headers", "attachments")
_HEADER_NAME = re.compile(r"[!-9;-~]{1,76}")
MAX_HEADERS = 20


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
        channel: Channel = Channel.SMS,
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
        if provider is not None and channel not in self.providers[provider].channels:
            raise InvalidInput(f"provider {provider!r} does not send {channel.value}", field="provider")
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
        """Validate and normalise one message; raises :class:`InvalidInput` naming the field. A
        test key's message goes to the test provider whatever it asked for."""
        if request.channel is Channel.EMAIL:
            return self.build_email(request, default_callback_url=default_callback_url, test=test)
        stray = next((name for name in _EMAIL_FIELDS[1:] if getattr(request, name)), None)
        if stray is not None:
            raise InvalidInput(f"{stray} is for email (channel `email`); an SMS has a body", field=stray)
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

    def build_email(
        self, request: SendRequest, *, default_callback_url: str | None = None, test: bool = False
    ) -> NewMessage:
        """Validate and normalise one email: address, From and Reply-To, subject, bodies (the text
        part made from the HTML when not given), headers and attachments."""
        if request.body:
            raise InvalidInput("an email has `text` and `html`, not `body`", field="body")
        address = normalize_email(request.to)
        sender = normalize_sender(request.sender, "sender") if request.sender else None
        tags = self.check_shared(
            sender=None,
            provider=request.provider,
            tags=request.tags,
            metadata=request.metadata,
            callback_url=request.callback_url,
            channel=Channel.EMAIL,
        )
        content = self.email_content(
            subject=request.subject,
            html=request.html,
            text=request.text,
            reply_to=request.reply_to,
            headers=request.headers,
            attachments=[decode_attachment(a, i) for i, a in enumerate(request.attachments)],
        )
        return self.compose_email(
            address,
            content,
            provider=request.provider,
            test=test,
            ordered=request.ordered,
            sender=sender,
            send_at=utc_field(request.send_at, "send_at"),
            tags=tags,
            metadata=request.metadata,
            callback_url=request.callback_url or default_callback_url,
        )

    def email_content(
        self,
        *,
        subject: str | None,
        html: str | None,
        text: str | None,
        reply_to: str | None,
        headers: Mapping[str, str],
        attachments: list[Attachment],
    ) -> EmailContent:
        """An email's content, checked; the text part is made from the HTML when not given."""
        if not subject or not subject.strip():
            raise InvalidInput("an email needs a subject", field="subject")
        if len(subject) > MAX_SUBJECT_CHARS or "\r" in subject or "\n" in subject:
            raise InvalidInput(
                f"the subject is one line of at most {MAX_SUBJECT_CHARS} characters", field="subject"
            )
        if not (html and html.strip()) and not (text and text.strip()):
            raise InvalidInput("an email needs `html`, `text` or both", field="html")
        for name, value in (("subject", subject), ("html", html), ("text", text)):
            printable(value, name)
        check_headers(headers)
        if len(attachments) > self.settings.max_attachments:
            raise InvalidAttachment(
                f"at most {self.settings.max_attachments} attachments", field="attachments"
            )
        weight = sum(len(a.data) for a in attachments)
        if weight > self.settings.max_attachment_bytes:
            raise InvalidAttachment(
                f"the attachments weigh {weight} bytes; the limit is {self.settings.max_attachment_bytes}",
                field="attachments",
            )
        return EmailContent(
            subject=subject,
            html=html or None,
            text=text if text else html_to_text(html or ""),
            reply_to=normalize_sender(reply_to, "reply_to") if reply_to else None,
            headers=dict(headers),
            attachments=tuple(attachments),
        )

    def compose_email(
        self,
        address: str,
        content: EmailContent,
        *,
        provider: str | None,
        test: bool,
        ordered: bool | None,
        **rest: Any,
    ) -> NewMessage:
        """One email to the normalised ``address`` whose parts are checked: routes it."""
        route = [TEST_PROVIDER] if test else self.router.route(address, provider, Channel.EMAIL)
        chosen = route[0]
        return NewMessage.email(
            to=address,
            content=content,
            provider=chosen,
            max_attempts=self.settings.max_attempts,
            route=route,
            ordered=self.providers[chosen].settings.ordered if ordered is None else ordered,
            **rest,
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
            metrics.accepted(new.provider, new.channel.value)
            self.waker.notify()
        return row, created


MAX_SUBJECT_CHARS = 998
"""The longest subject: one header line (RFC 5322)."""


def check_headers(headers: Mapping[str, str], field: str = "headers") -> None:
    """An email's extra headers: valid names, one-line values, none of the headers its own fields
    set (no header injection through a value)."""
    if len(headers) > MAX_HEADERS:
        raise InvalidInput(f"at most {MAX_HEADERS} headers", field=field)
    for name, value in headers.items():
        if not _HEADER_NAME.fullmatch(name):
            raise InvalidInput(f"{name[:80]!r} is not a header name", field=field)
        if name.lower() in RESERVED_HEADERS:
            raise InvalidInput(f"{name} is set from the message's own fields", field=field)
        if "\r" in value or "\n" in value or len(value) > MAX_SUBJECT_CHARS:
            raise InvalidInput(
                f"header {name}: one line of at most {MAX_SUBJECT_CHARS} characters", field=field
            )
        printable(value, field)


def decode_attachment(given: FileIn, index: int) -> Attachment:
    """An attachment's bytes from its base64; :class:`InvalidAttachment` naming it."""
    field = f"attachments.{index}"
    name = given.filename.strip()
    if not name or len(name) > 255 or any(c in name for c in "/\\\r\n\x00"):
        raise InvalidAttachment(
            "a file name of 1 to 255 characters, without slashes", field=f"{field}.filename"
        )
    if not _MEDIA_TYPE.fullmatch(given.content_type):
        raise InvalidAttachment(
            f"{given.content_type[:80]!r} is not a media type", field=f"{field}.content_type"
        )
    try:
        data = base64.b64decode(given.content, validate=True)
    except (binascii.Error, ValueError) as exc:
        raise InvalidAttachment("content is not base64", field=f"{field}.content") from exc
    return Attachment(filename=name, content_type=given.content_type.lower(), data=data)


_MEDIA_TYPE = re.compile(r"[A-Za-z0-9][A-Za-z0-9!#$&^_.+-]{0,63}/[A-Za-z0-9][A-Za-z0-9!#$&^_.+-]{0,63}")


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
