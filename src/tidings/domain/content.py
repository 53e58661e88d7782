"""Channels and what a message carries on each: pure data, no I/O.

A message goes out on one channel. Its address and content are the channel's own: an SMS has an
E.164 number and a text cut into segments; an email has an address, a subject, HTML and text
bodies, headers and attachments. Nothing SMS-specific is assumed by the queue, the status machine
or the provider contract; each adapter declares the channels it sends.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from enum import StrEnum


class Channel(StrEnum):
    SMS = "sms"
    EMAIL = "email"


@dataclass(frozen=True)
class SmsContent:
    """The text of an SMS and how it is cut into parts (``domain.segments``)."""

    text: str
    segments: int
    encoding: str


@dataclass(frozen=True)
class Attachment:
    filename: str
    content_type: str
    data: bytes = field(repr=False)


@dataclass(frozen=True)
class EmailContent:
    """An email's subject, bodies (at least one of ``html`` and ``text``), extra headers,
    reply-to address and attachments."""

    subject: str
    html: str | None = None
    text: str | None = None
    reply_to: str | None = None
    headers: Mapping[str, str] = field(default_factory=dict)
    attachments: tuple[Attachment, ...] = ()


Content = SmsContent | EmailContent


RESERVED_HEADERS = frozenset(
    name.lower()
    for name in ("From", "To", "Cc", "Bcc", "Subject", "Reply-To", "Date", "Message-ID", "MIME-Version")
) | frozenset({"content-type", "content-transfer-encoding"})
"""Headers an email's own fields set; its extra ``headers`` may not set them."""
