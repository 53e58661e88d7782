"""Request models and the JSON shapes the API answers with."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, field_validator

from tidings.clock import to_api
from tidings.errors import unstorable


def _storable(value: Any) -> None:
    if isinstance(value, str):
        reason = unstorable(value)
        if reason is not None:
            raise ValueError(reason)
    elif isinstance(value, dict):
        for key, item in value.items():
            _storable(key)
            _storable(item)
    elif isinstance(value, list):
        for item in value:
            _storable(item)


class RequestModel(BaseModel):
    """A request body: unknown fields are refused, and so is text no database can store (NUL,
    unpaired surrogates) anywhere in it."""

    model_config = ConfigDict(extra="forbid")

    @field_validator("*")
    @classmethod
    def _text_is_storable(cls, value: Any) -> Any:
        _storable(value)
        return value


class MessageIn(RequestModel):
    """A message to send."""

    to: str = Field(min_length=1, max_length=64, description="Recipient, E.164 (+254712345678) or national.")
    body: str = Field(min_length=1, description="The text to send.")
    sender: str | None = Field(default=None, max_length=64, description="Sender id or number.")
    send_at: datetime | None = Field(default=None, description="Send later (ISO 8601; no offset means UTC).")
    provider: str | None = Field(default=None, max_length=64, description="A configured provider's name.")
    tags: list[str] = Field(default_factory=list, description="Labels to find the message by.")
    metadata: dict[str, Any] = Field(default_factory=dict, description="Anything the client wants kept.")
    callback_url: str | None = Field(
        default=None,
        max_length=2048,
        pattern=r"^https?://[^\s]+$",
        description="Where this message's status changes are posted (default: the API key's URL).",
    )
    ordered: bool | None = Field(
        default=None,
        description="Hand over after earlier messages to the same number (default: the provider's setting).",
    )


class EventOut(BaseModel):
    id: int
    type: str
    source: str
    status: str
    changed: bool
    provider_status: str | None
    error_code: str | None
    error_message: str | None
    failure_reason: str | None
    detail: dict[str, Any]
    occurred_at: str
    recorded_at: str


class MessageOut(BaseModel):
    id: str
    channel: str
    to: str
    sender: str | None
    body: str
    segments: int
    encoding: str
    status: str
    provider: str
    provider_message_id: str | None
    provider_status: str | None
    error_code: str | None
    error_message: str | None
    failure_reason: str | None
    attempts: int
    max_attempts: int
    next_attempt_at: str | None
    send_at: str | None
    created_at: str
    updated_at: str
    sent_at: str | None
    delivered_at: str | None
    failed_at: str | None
    cancelled_at: str | None
    tags: list[str]
    metadata: dict[str, Any]
    route: list[str]
    provider_failures: int
    ordered: bool
    polled_at: str | None
    polls: int
    callback_url: str | None
    redacted_at: str | None
    events: list[EventOut] | None = None


class MessagePage(BaseModel):
    data: list[MessageOut]
    next_cursor: str | None


class ErrorDetail(BaseModel):
    code: str
    message: str
    field: str | None = None


class ErrorOut(BaseModel):
    error: ErrorDetail


_TIMES = (
    "next_attempt_at",
    "send_at",
    "created_at",
    "updated_at",
    "sent_at",
    "delivered_at",
    "failed_at",
    "cancelled_at",
    "polled_at",
    "redacted_at",
)
_HIDDEN = ("api_key_id", "idempotency_key", "request_hash", "lease_owner", "lease_expires_at")


def message_json(row: dict[str, Any], events: list[dict[str, Any]] | None = None) -> dict[str, Any]:
    out = {k: v for k, v in row.items() if k not in _HIDDEN}
    for key in _TIMES:
        out[key] = to_api(row[key])
    out["route"] = list(row["route"] or [row["provider"]])
    out["ordered"] = bool(row["ordered"])
    if row["status"] in ("sent", "delivered", "failed", "cancelled"):
        out["next_attempt_at"] = None
    if events is not None:
        out["events"] = [event_json(e) for e in events]
    return out


def event_json(row: dict[str, Any]) -> dict[str, Any]:
    out = dict(row)
    out.pop("message_id", None)
    out["occurred_at"] = to_api(row["occurred_at"])
    out["recorded_at"] = to_api(row["recorded_at"])
    return out
