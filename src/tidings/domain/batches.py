"""A batch as a client sends it: the shared part of a send and its recipients (seed 004).

The same schema reaches tidings as JSON or MessagePack over REST, from ``tidings send-batch``, and
later over gRPC; each recipient becomes an ordinary message, its body rendered from the batch's
template with the shared context merged with the recipient's own.
"""

from __future__ import annotations

from typing import Any

from pydantic import ConfigDict, Field

from tidings.domain.content import Channel
from tidings.domain.requests import RequestModel, Timestamp
from tidings.domain.status import Status

MAX_TEMPLATE_CHARS = 100_000
FINAL = (Status.DELIVERED, Status.FAILED, Status.CANCELLED)


class FileIn(RequestModel):
    """A file attached to an email: its name, media type and base64 content."""

    model_config = ConfigDict(
        extra="forbid",
        json_schema_extra={
            "examples": [
                {"filename": "invoice.pdf", "content_type": "application/pdf", "content": "JVBERi0x"}
            ]
        },
    )

    filename: str = Field(min_length=1, max_length=255)
    content_type: str = Field(min_length=3, max_length=127, description="Its media type (`application/pdf`).")
    content: str = Field(description="The file, base64.")


class RecipientIn(RequestModel):
    """One recipient of a batch."""

    to: str = Field(min_length=1, max_length=320, description="Phone number (SMS) or address (email).")
    first_name: str | None = Field(default=None, max_length=200)
    last_name: str | None = Field(default=None, max_length=200)
    tags: list[str] = Field(default_factory=list, description="Added to the batch's tags for this message.")
    context: dict[str, Any] = Field(
        default_factory=dict, description="Template values; each key overrides the batch's context."
    )
    metadata: dict[str, Any] = Field(
        default_factory=dict, description="Kept on the message; each key overrides the batch's metadata."
    )
    send_at: Timestamp | None = Field(default=None, description="Send later (default: the batch's send_at).")
    attachments: list[FileIn] = Field(default_factory=list, description="Email: this recipient's files.")


class BatchIn(RequestModel):
    """One send to many recipients: what they share, and each recipient's own part."""

    model_config = ConfigDict(
        extra="forbid",
        populate_by_name=True,
        json_schema_extra={
            "examples": [
                {
                    "group_id": "clinic-42-reminders-2025-03-20",
                    "template": "Hello {{ first_name }}, your visit at {{ clinic }} is on {{ day }}.",
                    "context": {"clinic": "Kibera Health Centre", "day": "Friday"},
                    "sender": "CLINIC",
                    "tags": ["reminders"],
                    "recipients": [
                        {"to": "+254712345678", "first_name": "Amina", "tags": ["patient-1042"]},
                        {"to": "+254712345679", "first_name": "Otieno", "context": {"day": "Saturday"}},
                    ],
                }
            ]
        },
    )

    group_id: str = Field(
        min_length=1,
        max_length=255,
        description="The client's id for this send: the batch's idempotency key.",
    )
    channel: Channel = Field(default=Channel.SMS, description="`sms` (email comes next).")
    template: str | None = Field(
        default=None, max_length=MAX_TEMPLATE_CHARS, description="The SMS body template (Jinja2, sandboxed)."
    )
    template_id: str | None = Field(
        default=None, max_length=64, description="A stored template's id (instead of `template`)."
    )
    subject_template: str | None = Field(default=None, max_length=MAX_TEMPLATE_CHARS, description="Email.")
    outer_template: str | None = Field(
        default=None, max_length=MAX_TEMPLATE_CHARS, description="Email: the HTML layout."
    )
    inner_template: str | None = Field(
        default=None, max_length=MAX_TEMPLATE_CHARS, description="Email: the body."
    )
    from_: str | None = Field(default=None, alias="from", max_length=320, description="Email: the sender.")
    reply_to: str | None = Field(default=None, max_length=320, description="Email: where replies go.")
    pdf_template: str | None = Field(
        default=None,
        max_length=MAX_TEMPLATE_CHARS,
        description="Email: HTML rendered for each recipient into a PDF attached to their email.",
    )
    pdf_filename: str = Field(
        default="document.pdf", min_length=1, max_length=255, description="Email: its name."
    )
    context: dict[str, Any] = Field(
        default_factory=dict, description="Template values every recipient shares."
    )
    sender: str | None = Field(default=None, max_length=64, description="SMS sender id or number.")
    provider: str | None = Field(
        default=None, max_length=64, description="A configured provider (default: routing)."
    )
    send_at: Timestamp | None = Field(default=None, description="Send later (ISO 8601; no offset means UTC).")
    tags: list[str] = Field(default_factory=list, description="Labels on the batch and every message of it.")
    metadata: dict[str, Any] = Field(default_factory=dict, description="Kept on every message.")
    callback_url: str | None = Field(
        default=None,
        max_length=2048,
        pattern=r"^https?://[^\s]+$",
        description="Where the messages' status changes are posted (default: the API key's URL).",
    )
    ordered: bool | None = Field(
        default=None,
        description="Hand over after earlier messages to the same number (default: the provider's).",
    )
    recipients: list[RecipientIn] = Field(min_length=1, description="Who gets a message, in order.")


def progress(row: dict[str, Any]) -> dict[str, Any]:
    """Final / total and the rates so far, from a batch's ``counts`` (messages by status) and
    ``accepted``. The rates are over the messages that reached delivered or failed."""
    counts: dict[str, int] = row["counts"]
    final = sum(counts.get(s.value, 0) for s in FINAL)
    delivered = counts.get(Status.DELIVERED.value, 0)
    failed = counts.get(Status.FAILED.value, 0)
    ended = delivered + failed
    return {
        "final": final,
        "total": row["accepted"],
        "ratio": round(final / row["accepted"], 4) if row["accepted"] else 0.0,
        "delivery_rate": round(delivered / ended, 4) if ended else None,
        "failure_rate": round(failed / ended, 4) if ended else None,
    }
