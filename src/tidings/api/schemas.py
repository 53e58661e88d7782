"""Request models and the JSON shapes the API answers with."""

from __future__ import annotations

from datetime import datetime
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

from tidings.clock import to_api
from tidings.config import RuleName
from tidings.domain.batches import FileIn, progress
from tidings.domain.content import Channel
from tidings.domain.costs import format_micros
from tidings.domain.failures import FailureReason
from tidings.domain.requests import RequestModel, Timestamp
from tidings.domain.segments import Encoding
from tidings.domain.status import Status
from tidings.services.accepting import SendRequest
from tidings.store.log import Kind

CallbackStatus = Literal["pending", "delivering", "delivered", "failed"]
AlertStatus = Literal["open", "resolved"]


MESSAGE_ID = "01J9ZK3V8Q4W6M2N5P7R9T1X3Y"
WHEN = "2025-03-14T09:26:53.589Z"
LATER = "2025-03-14T09:26:57.932Z"


def _examples(*examples: dict[str, Any]) -> ConfigDict:
    """A model's examples, shown in /docs and /redoc (a test checks each one is valid)."""
    return ConfigDict(json_schema_extra={"examples": list(examples)})


class AttachmentIn(FileIn):
    """A file attached to an email: its name, media type and base64 content."""


class UnsubscribedOut(BaseModel):
    """The address a one-click unsubscribe link suppressed."""

    model_config = _examples({"unsubscribed": "amina@example.org"})

    unsubscribed: str


class MessageIn(RequestModel):
    """A message to send."""

    model_config = _examples(
        {"to": "+254712345678", "body": "Your appointment is tomorrow at 9:00."},
        {
            "channel": "email",
            "to": "amina@example.org",
            "sender": "Kibera Clinic <noreply@clinic.example>",
            "subject": "Your appointment",
            "html": "<p>Your appointment is <b>tomorrow at 9:00</b>.</p>",
        },
        {
            "to": "+254712345678",
            "body": "Reminder: clinic visit on Friday.",
            "sender": "CLINIC",
            "send_at": "2025-03-20T07:00:00Z",
            "tags": ["reminders"],
            "metadata": {"patient": "P-1042"},
            "callback_url": "https://app.example.org/sms-events",
        },
    )

    to: str = Field(min_length=1, max_length=64, description="Recipient, E.164 (+254712345678) or national.")
    body: str | None = Field(default=None, min_length=1, description="SMS: the text to send.")
    sender: str | None = Field(default=None, max_length=64, description="Sender id or number.")
    send_at: Timestamp | None = Field(default=None, description="Send later (ISO 8601; no offset means UTC).")
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
    channel: Channel = Field(default=Channel.SMS, description="`sms` (the default) or `email`.")
    subject: str | None = Field(default=None, max_length=998, description="Email: the subject.")
    html: str | None = Field(default=None, max_length=2_000_000, description="Email: the HTML part.")
    text: str | None = Field(
        default=None, max_length=2_000_000, description="Email: the text part (default: made from `html`)."
    )
    reply_to: str | None = Field(default=None, max_length=320, description="Email: where replies go.")
    headers: dict[str, str] = Field(default_factory=dict, description="Email: extra headers.")
    attachments: list[AttachmentIn] = Field(default_factory=list, description="Email: files.")

    def request(self) -> SendRequest:
        """What the acceptor takes: the same for every transport that accepts this model."""
        fields = self.model_dump(exclude={"attachments", "body"})
        return SendRequest(**fields, body=self.body or "", attachments=list(self.attachments))


class EventOut(BaseModel):
    """One step of a message's history: what happened, who said so, and the status after it."""

    model_config = _examples(
        {
            "id": 2,
            "type": "report",
            "source": "provider:twilio",
            "status": "delivered",
            "changed": True,
            "provider_status": "delivered",
            "error_code": None,
            "error_message": None,
            "failure_reason": None,
            "detail": {"MessageStatus": "delivered"},
            "occurred_at": LATER,
            "recorded_at": LATER,
        }
    )

    id: int
    type: str = Field(description="What happened: `accepted`, `send_accepted`, `report`, `cancelled`…")
    source: str = Field(description="Who said so: `api`, `worker`, `provider:NAME`…")
    status: Status = Field(description="The message's status after this event.")
    changed: bool = Field(description="Whether this event changed the status.")
    provider_status: str | None = Field(description="The provider's own word for the status.")
    error_code: str | None
    error_message: str | None
    failure_reason: FailureReason | None = Field(
        description="Why it failed, in words every provider shares (see Failure reasons)."
    )
    detail: dict[str, Any] = Field(description="What the provider sent, as it sent it.")
    occurred_at: datetime
    recorded_at: datetime


_MESSAGE: dict[str, Any] = {
    "id": MESSAGE_ID,
    "channel": "sms",
    "to": "+254712345678",
    "sender": None,
    "body": "Your appointment is tomorrow at 9:00.",
    "segments": 1,
    "encoding": "GSM-7",
    "status": "pending",
    "provider": "twilio",
    "provider_message_id": None,
    "provider_status": None,
    "error_code": None,
    "error_message": None,
    "failure_reason": None,
    "attempts": 0,
    "max_attempts": 11,
    "next_attempt_at": WHEN,
    "send_at": None,
    "created_at": WHEN,
    "updated_at": WHEN,
    "sent_at": None,
    "delivered_at": None,
    "failed_at": None,
    "cancelled_at": None,
    "tags": [],
    "metadata": {},
    "route": ["twilio"],
    "provider_failures": 0,
    "ordered": False,
    "polled_at": None,
    "polls": 0,
    "callback_url": None,
    "redacted_at": None,
    "subject": None,
    "html": None,
    "reply_to": None,
    "headers": None,
    "opened_at": None,
    "clicked_at": None,
    "batch_id": None,
    "template_id": None,
    "template_version": None,
    "cost": None,
    "currency": None,
}


class MessageOut(BaseModel):
    """A message as tidings holds it; ``events`` (its history) only when it is read by id."""

    model_config = _examples(_MESSAGE)

    id: str
    channel: Channel
    to: str
    sender: str | None
    body: str = Field(description="Empty once retention redacted it (see `redacted_at`).")
    segments: int | None = Field(description="How many SMS parts the body takes (SMS only).")
    encoding: Encoding | None = Field(description="How the body is encoded (SMS only).")
    status: Status
    provider: str = Field(description="The provider it goes (or went) through.")
    provider_message_id: str | None
    provider_status: str | None = Field(description="The provider's own word for the status.")
    error_code: str | None = Field(description="The provider's error code, when it failed.")
    error_message: str | None
    failure_reason: FailureReason | None = Field(
        description="Why it failed (or, for an opt-out, was cancelled), in words every provider shares."
    )
    attempts: int
    max_attempts: int
    next_attempt_at: datetime | None = Field(description="When it is next tried; null once final.")
    send_at: datetime | None
    created_at: datetime
    updated_at: datetime
    sent_at: datetime | None
    delivered_at: datetime | None
    failed_at: datetime | None
    cancelled_at: datetime | None
    tags: list[str]
    metadata: dict[str, Any]
    route: list[str] = Field(description="The providers it may go through, in order.")
    provider_failures: int
    ordered: bool
    polled_at: datetime | None = Field(description="When its provider was last asked for its status.")
    polls: int
    callback_url: str | None
    redacted_at: datetime | None
    subject: str | None = Field(description="Email: the subject.")
    html: str | None = Field(description="Email: the HTML part (`body` is the text part).")
    reply_to: str | None
    headers: dict[str, str] | None = Field(description="Email: its extra headers.")
    opened_at: datetime | None = Field(
        description="Email: when the recipient first opened it (as the provider says)."
    )
    clicked_at: datetime | None = Field(description="Email: when the recipient first followed a link in it.")
    batch_id: str | None = Field(description="The batch it came in (`GET /v1/batches/{id}`).")
    template_id: str | None = Field(description="The stored template its body was rendered from.")
    template_version: int | None = Field(description="That template's version.")
    cost: str | None = Field(
        description="What it cost once known (exact): the provider's figure, else its price table's."
    )
    currency: str | None = Field(description="The ISO 4217 currency of `cost`.")
    events: list[EventOut] | None = Field(default=None, description="Its history, oldest first.")


class MessagePage(BaseModel):
    """A page of messages, newest first; pass ``next_cursor`` back as ``cursor`` for the next."""

    model_config = _examples({"data": [_MESSAGE], "next_cursor": None})

    data: list[MessageOut]
    next_cursor: str | None


_INBOUND: dict[str, Any] = {
    "id": "01J9ZK7D2C5E8G1J4L6N8Q0S2U",
    "provider": "twilio",
    "provider_message_id": "SM0123456789abcdef0123456789abcdef",
    "from": "+254712345678",
    "to": "+15005550006",
    "body": "STOP",
    "sent_at": None,
    "received_at": WHEN,
    "raw": {"Body": "STOP", "From": "+254712345678"},
    "webhook_log_id": 17,
    "redacted_at": None,
}


BATCH_ID = "01J9ZM0A1B2C3D4E5F6G7H8J9K"
TEMPLATE_ID = "01J9ZKX4N6P8R0T2V4X6Z8B0D2"


class Refusal(BaseModel):
    """A recipient of a batch that was not accepted, with the error a single send would get."""

    model_config = _examples(
        {
            "index": 3,
            "code": "invalid_phone_number",
            "message": "'+1 555' is not a valid number.",
            "field": "to",
        }
    )

    index: int = Field(description="Its position in `recipients`, from 0.")
    code: str = Field(
        description="`invalid_phone_number`, `recipient_opted_out`, `render_failed`, `body_too_long`…"
    )
    message: str
    field: str | None


class BatchAccepted(BaseModel):
    """What became of a batch: how many recipients were accepted, and which were not."""

    model_config = _examples(
        {
            "id": BATCH_ID,
            "group_id": "clinic-42-reminders-2025-03-20",
            "channel": "sms",
            "total": 3,
            "accepted": 2,
            "refused": [
                {
                    "index": 1,
                    "code": "recipient_opted_out",
                    "message": "+254712345679 opted out of messages",
                    "field": "to",
                }
            ],
            "created_at": WHEN,
        }
    )

    id: str
    group_id: str
    channel: Channel
    total: int = Field(description="Recipients in the request.")
    accepted: int = Field(description="Messages stored and queued.")
    refused: list[Refusal]
    created_at: datetime


class BatchCounts(BaseModel):
    """How far a batch's messages are: final / total, and the rates among those sent to an end."""

    model_config = _examples(
        {"final": 1, "total": 2, "ratio": 0.5, "delivery_rate": 1.0, "failure_rate": 0.0}
    )

    final: int = Field(description="Messages delivered, failed or cancelled.")
    total: int = Field(description="Messages accepted.")
    ratio: float = Field(description="final / total.")
    delivery_rate: float | None = Field(description="delivered / (delivered + failed); null before any.")
    failure_rate: float | None = Field(description="failed / (delivered + failed); null before any.")


class BatchOut(BatchAccepted):
    """A batch: its shared part, and how it is getting on."""

    model_config = _examples(
        {
            "id": BATCH_ID,
            "group_id": "clinic-42-reminders-2025-03-20",
            "channel": "sms",
            "total": 2,
            "accepted": 2,
            "refused": [],
            "created_at": WHEN,
            "template_id": None,
            "template_version": None,
            "shared": {"template": "Hello {{ first_name }}", "sender": "CLINIC", "tags": ["reminders"]},
            "tags": ["reminders"],
            "counts": {"delivered": 1, "sent": 1},
            "progress": {"final": 1, "total": 2, "ratio": 0.5, "delivery_rate": 1.0, "failure_rate": 0.0},
            "segments": 2,
            "cost": "0.0158",
            "currency": "USD",
            "costs": {"USD": "0.0158"},
            "first_activity": WHEN,
            "last_activity": LATER,
            "cancelled_at": None,
        }
    )

    template_id: str | None
    template_version: int | None
    shared: dict[str, Any] = Field(description="The shared part as accepted (templates, context, sender…).")
    tags: list[str]
    counts: dict[str, int] = Field(description="Messages by status.")
    progress: BatchCounts
    segments: int = Field(description="SMS parts of its messages.")
    cost: str | None = Field(
        description="What its messages cost so far, once known (a decimal; null in several currencies)."
    )
    currency: str | None
    costs: dict[str, str] = Field(description="What its messages cost so far, by currency.")
    first_activity: datetime | None = Field(description="When its first message was accepted.")
    last_activity: datetime | None = Field(description="When one of its messages last changed.")
    cancelled_at: datetime | None
    cancelled: int | None = Field(default=None, description="Messages this cancellation cancelled.")


_BATCH_SUMMARY: dict[str, Any] = {
    "id": BATCH_ID,
    "group_id": "clinic-42-reminders-2025-03-20",
    "channel": "sms",
    "total": 3,
    "accepted": 2,
    "refused_count": 1,
    "created_at": WHEN,
    "tags": ["reminders"],
    "template_id": None,
    "template_version": None,
    "cancelled_at": None,
}


class BatchSummary(BaseModel):
    """A batch in a list (`GET /v1/batches/{id}` tells how it is getting on)."""

    model_config = _examples(_BATCH_SUMMARY)

    id: str
    group_id: str
    channel: Channel
    total: int
    accepted: int
    refused_count: int = Field(description="Recipients refused at acceptance.")
    created_at: datetime
    tags: list[str]
    template_id: str | None
    template_version: int | None
    cancelled_at: datetime | None


class BatchPage(BaseModel):
    """A page of batches, newest first; pass ``next_cursor`` back as ``cursor`` for the next."""

    model_config = _examples({"data": [_BATCH_SUMMARY], "next_cursor": None})

    data: list[BatchSummary]
    next_cursor: str | None


class TemplateIn(RequestModel):
    """A template to store: an SMS's body, or an email's subject, outer layout and inner body."""

    model_config = _examples(
        {"name": "visit-reminder", "channel": "sms", "body": "Hello {{ first_name }}, see you on {{ day }}."}
    )

    name: str = Field(min_length=1, max_length=200)
    channel: Channel = Channel.SMS
    body: str | None = Field(default=None, max_length=100_000, description="SMS: the body template.")
    subject: str | None = Field(default=None, max_length=100_000, description="Email: the subject template.")
    outer: str | None = Field(default=None, max_length=100_000, description="Email: the HTML layout.")
    inner: str | None = Field(default=None, max_length=100_000, description="Email: the body.")


class TemplateUpdate(RequestModel):
    """A template's next version (its channel stays)."""

    model_config = _examples({"name": "visit-reminder", "body": "Hi {{ first_name }}, see you on {{ day }}."})

    name: str = Field(min_length=1, max_length=200)
    body: str | None = Field(default=None, max_length=100_000)
    subject: str | None = Field(default=None, max_length=100_000)
    outer: str | None = Field(default=None, max_length=100_000)
    inner: str | None = Field(default=None, max_length=100_000)


_TEMPLATE: dict[str, Any] = {
    "id": TEMPLATE_ID,
    "name": "visit-reminder",
    "channel": "sms",
    "version": 2,
    "latest_version": 2,
    "body": "Hi {{ first_name }}, see you on {{ day }}.",
    "subject": None,
    "outer": None,
    "inner": None,
    "created_at": WHEN,
    "updated_at": LATER,
}


class TemplateOut(BaseModel):
    """A stored template at one version."""

    model_config = _examples(_TEMPLATE)

    id: str
    name: str
    channel: Channel
    version: int = Field(description="The version shown.")
    latest_version: int
    body: str | None
    subject: str | None
    outer: str | None
    inner: str | None
    created_at: datetime
    updated_at: datetime


class TemplatePage(BaseModel):
    """A page of templates at their latest version, newest first."""

    model_config = _examples({"data": [_TEMPLATE], "next_cursor": None})

    data: list[TemplateOut]
    next_cursor: str | None


class InboundOut(BaseModel):
    """An SMS a person sent to one of our numbers."""

    model_config = _examples(_INBOUND)

    id: str
    provider: str
    provider_message_id: str | None
    sender: str = Field(alias="from", description="Who sent it.")
    to: str | None = Field(description="Our number it was sent to, when the provider says.")
    body: str
    sent_at: datetime | None
    received_at: datetime
    raw: dict[str, Any] = Field(description="What the provider sent, as it sent it.")
    webhook_log_id: int | None = Field(
        description="The webhook request it came in (`tidings webhooks list`)."
    )
    redacted_at: datetime | None


class InboundPage(BaseModel):
    """A page of inbound SMS, newest first; pass ``next_cursor`` back as ``cursor`` for the next."""

    model_config = _examples({"data": [_INBOUND], "next_cursor": None})

    data: list[InboundOut]
    next_cursor: str | None


_OPT_OUT: dict[str, Any] = {
    "id": "01J9ZK9F4E7G0J3L5N7Q9S1U3W",
    "channel": "sms",
    "address": "+254712345678",
    "number": "+254712345678",
    "scope": "*",
    "source": "api",
    "keyword": None,
    "inbound_id": None,
    "note": "asked on paper",
    "created_at": WHEN,
}


class OptOutOut(BaseModel):
    """An address that asked not to be sent to."""

    model_config = _examples(_OPT_OUT)

    id: str
    channel: Channel
    address: str
    number: str | None = Field(default=None, description="The address, for an SMS opt-out.")
    scope: str = Field(description="`*`: from every sender; otherwise the one sender.")
    source: str = Field(
        description=(
            "`api`, `dashboard` (an operator added it), `keyword` for a STOP sent by SMS, or "
            "`provider:NAME` for a complaint or an unsubscribe the provider reported."
        )
    )
    keyword: str | None = Field(description="The keyword the person sent, if it came by SMS.")
    inbound_id: str | None = Field(description="The inbound SMS that carried the keyword.")
    note: str | None
    created_at: datetime


class OptOutPage(BaseModel):
    """A page of opt-outs, newest first; pass ``next_cursor`` back as ``cursor`` for the next."""

    model_config = _examples({"data": [_OPT_OUT], "next_cursor": None})

    data: list[OptOutOut]
    next_cursor: str | None


class OptOutAdded(BaseModel):
    """The opt-out as it now stands."""

    model_config = _examples(
        {
            "channel": "sms",
            "address": "+254712345678",
            "number": "+254712345678",
            "scope": "*",
            "created": True,
            "cancelled_messages": 2,
        }
    )

    channel: Channel
    address: str = Field(description="The number in E.164, or the email address.")
    number: str | None = Field(description="The number, for an SMS opt-out.")
    scope: str = Field(description="`*`: from every sender; otherwise the one sender.")
    created: bool = Field(description="False when it had already opted out.")
    cancelled_messages: int = Field(description="Its waiting messages that were cancelled.")


_LOG: dict[str, Any] = {
    "kind": "STATUS_UPDATE",
    "id": "e42",
    "at": LATER,
    "number": "+254712345678",
    "message_id": MESSAGE_ID,
    "provider": "twilio",
    "event": "report",
    "status": "delivered",
    "provider_status": "delivered",
    "error_code": None,
    "error_message": None,
    "body": "Your appointment is tomorrow at 9:00.",
    "detail": {"MessageStatus": "delivered"},
}


class LogEntry(BaseModel):
    """One thing that crossed the wire."""

    model_config = _examples(_LOG)

    kind: Kind
    id: str
    at: datetime
    number: str = Field(description="The other end: the recipient, or the sender of an inbound SMS.")
    message_id: str | None
    provider: str
    event: str = Field(description="The event's type (`send_accepted`, `report`…), or `inbound`.")
    status: Status | None = Field(description="The message's status after it (none for inbound).")
    provider_status: str | None
    error_code: str | None
    error_message: str | None
    body: str
    detail: dict[str, Any] = Field(description="What the provider sent, as it sent it.")


class LogPage(BaseModel):
    """A page of the log, newest first; pass ``next_cursor`` back as ``cursor`` for the next."""

    model_config = _examples({"data": [_LOG], "next_cursor": None})

    data: list[LogEntry]
    next_cursor: str | None


_CALLBACK: dict[str, Any] = {
    "id": "01J9ZKB2G5H8K1M4P6R8T0V2X4",
    "api_key_id": "01J9ZJ0A1B2C3D4E5F6G7H8J9K",
    "message_id": MESSAGE_ID,
    "inbound_id": None,
    "type": "message.status",
    "url": "https://app.example.org/sms-events",
    "payload": {
        "type": "message.status",
        "id": MESSAGE_ID,
        "status": "delivered",
        "event": "report",
        "provider_status": "delivered",
        "error_code": None,
        "error_message": None,
        "failure_reason": None,
        "to": "+254712345678",
        "occurred_at": LATER,
    },
    "status": "delivered",
    "attempts": 1,
    "max_attempts": 10,
    "next_attempt_at": LATER,
    "lease_expires_at": None,
    "last_status_code": 200,
    "last_error": None,
    "created_at": LATER,
    "updated_at": LATER,
    "delivered_at": LATER,
}


class CallbackOut(BaseModel):
    """A callback: what was (or is to be) posted where, and whether it arrived."""

    model_config = _examples(_CALLBACK)

    id: str
    api_key_id: str | None
    message_id: str | None
    inbound_id: str | None
    type: Literal["message.status", "inbound", "alert.raised", "alert.resolved"]
    url: str
    payload: dict[str, Any] = Field(description="The JSON body that is posted.")
    status: CallbackStatus
    attempts: int
    max_attempts: int
    next_attempt_at: datetime
    lease_expires_at: datetime | None
    last_status_code: int | None = Field(description="The receiver's last answer.")
    last_error: str | None
    created_at: datetime
    updated_at: datetime
    delivered_at: datetime | None


class CallbackPage(BaseModel):
    """A page of callbacks, newest first; pass ``next_cursor`` back as ``cursor`` for the next."""

    model_config = _examples({"data": [_CALLBACK], "next_cursor": None})

    data: list[CallbackOut]
    next_cursor: str | None


class CallbackSettingsOut(BaseModel):
    """Where this API key's callbacks go by default, and the secret they are signed with."""

    model_config = _examples(
        {
            "url": "https://app.example.org/sms-events",
            "secret": "whsec_KBrMfLz_hniAgTHp8pRCb7AOIWlhcL_-R6RQH8TkbeY",
            "previous_secret_until": None,
        }
    )

    url: str | None
    secret: str | None = Field(description="Signs every callback (`X-Tidings-Signature`).")
    previous_secret_until: datetime | None = Field(
        description="After a rotation, the old secret signs too until then."
    )


_ALERT: dict[str, Any] = {
    "id": "01J9ZKD7M2P5R8T1W4Y7A0C3E6",
    "rule": "delivery_rate",
    "subject": "",
    "status": "open",
    "value": 0.82,
    "threshold": 0.9,
    "message": (
        "delivery rate 82.0% is below 90.0%: 123 of the 150 messages accepted in the last 24 h were delivered"
    ),
    "detail": {
        "window_seconds": 86400.0,
        "total": 152,
        "attempted": 150,
        "delivered": 123,
        "failed": 9,
        "pending": 18,
    },
    "raised_at": WHEN,
    "resolved_at": None,
    "last_checked_at": LATER,
}


class AlertOut(BaseModel):
    """A condition an alert rule found: raised once, open while it holds, resolved when it clears."""

    model_config = _examples(_ALERT)

    id: str
    rule: RuleName
    subject: str = Field(
        description="What it is about: a provider, a gateway or a batch id; empty for the whole installation."
    )
    status: AlertStatus
    value: float = Field(
        description="The figure last measured: a share from 0 to 1, a number of messages or seconds, by rule."
    )
    threshold: float = Field(description="The rule's threshold the value went past.")
    message: str = Field(description="What was found when it was raised, in words.")
    detail: dict[str, Any] = Field(description="The figures behind the value, by rule.")
    raised_at: datetime
    resolved_at: datetime | None
    last_checked_at: datetime = Field(description="The last check that measured it.")


class AlertPage(BaseModel):
    """A page of alerts, newest first; pass ``next_cursor`` back as ``cursor`` for the next."""

    model_config = _examples({"data": [_ALERT], "next_cursor": None})

    data: list[AlertOut]
    next_cursor: str | None


_GATEWAY: dict[str, Any] = {
    "name": "phone",
    "last_poll_at": WHEN,
    "first_poll_at": "2025-03-01T06:00:00.000Z",
    "last_address": "192.0.2.10",
    "silent": False,
    "polls": 38211,
    "inbound_received": 120,
    "updates_received": 2410,
    "messages_handed_over": 1203,
    "waiting": 0,
    "unacknowledged": 1,
}


class GatewayOut(BaseModel):
    """An Android gateway (a phone running medic-gateway) and how its polls are going."""

    model_config = _examples(_GATEWAY)

    name: str
    last_poll_at: datetime | None = Field(description="Null if it never polled.")
    first_poll_at: datetime | None
    last_address: str | None
    silent: bool = Field(description="True when it has not polled for `silent_after_seconds`.")
    polls: int
    inbound_received: int
    updates_received: int
    messages_handed_over: int
    waiting: int = Field(description="Messages waiting for its next poll.")
    unacknowledged: int = Field(description="Messages handed over that it has not reported on.")


class GatewayList(BaseModel):
    """Every configured Android gateway."""

    model_config = _examples({"data": [_GATEWAY]})

    data: list[GatewayOut]


class HealthOut(BaseModel):
    """Whether tidings and its database answer."""

    model_config = _examples(
        {"status": "ok", "database": "ok"}, {"status": "unavailable", "database": "unreachable"}
    )

    status: Literal["ok", "unavailable"]
    database: Literal["ok", "unreachable"]


class GatewayCheckOut(BaseModel):
    """What the medic-gateway app expects when it checks the URL it was given."""

    model_config = ConfigDict(json_schema_extra={"examples": [{"medic-gateway": True}]})

    medic_gateway: Literal[True] = Field(alias="medic-gateway")


class GatewaySmsIn(BaseModel):
    """An SMS the phone received."""

    model_config = _examples(
        {"id": "a1b2", "from": "+254712345678", "content": "STOP", "sms_sent": 1741944413589}
    )

    id: str = Field(description="The app's id for it; the same SMS sent twice is stored once.")
    sender: str = Field(alias="from")
    content: str
    sms_sent: int | None = Field(default=None, description="Milliseconds since 1970.")
    sms_received: int | None = Field(default=None, description="Milliseconds since 1970.")


class GatewayUpdateIn(BaseModel):
    """What became of a message the phone was given."""

    model_config = _examples({"id": MESSAGE_ID, "status": "FAILED", "reason": "no credit"})

    id: str = Field(description="The message's id, as handed over.")
    status: str = Field(
        description="`UNSENT`, `PENDING`, `SENT`, `DELIVERED` or `FAILED`; another word is kept."
    )
    reason: str | None = Field(default=None, description="Why it failed.")


class GatewayPollIn(BaseModel):
    """The medic-gateway app's poll. Missing or null lists are fine and unknown fields are ignored;
    a malformed item is skipped (and logged), the rest are kept."""

    model_config = _examples(
        {
            "messages": [
                {"id": "a1b2", "from": "+254712345678", "content": "STOP", "sms_sent": 1741944413589}
            ],
            "updates": [{"id": MESSAGE_ID, "status": "DELIVERED"}],
        }
    )

    messages: list[GatewaySmsIn] | None = Field(default=None, description="SMS the phone received.")
    updates: list[GatewayUpdateIn] | None = Field(default=None, description="What became of its messages.")


class GatewayMessageOut(BaseModel):
    """A message for the phone to send."""

    model_config = _examples(
        {"id": MESSAGE_ID, "to": "+254712345678", "content": "Your appointment is tomorrow."}
    )

    id: str
    to: str
    content: str


class GatewayPollOut(BaseModel):
    """The messages due for the phone, at most its ``batch_size``."""

    model_config = _examples(
        {"messages": [{"id": MESSAGE_ID, "to": "+254712345678", "content": "Your appointment is tomorrow."}]}
    )

    messages: list[GatewayMessageOut]


class GatewayErrorOut(BaseModel):
    """An error on the gateway's endpoint, in the app's shape: it shows ``message`` on the phone."""

    model_config = _examples({"error": True, "message": "wrong username or password"})

    error: Literal[True]
    message: str


class ErrorDetail(BaseModel):
    """What went wrong."""

    model_config = _examples(
        {"code": "invalid_phone_number", "message": "The phone number is not a valid number.", "field": "to"}
    )

    code: str = Field(description="Stable: what a program tests.")
    message: str = Field(description="For people; its wording may change.")
    field: str | None = Field(default=None, description="The request field at fault, when there is one.")


class ErrorOut(BaseModel):
    """Every error the API answers (but the Android gateway's endpoint)."""

    model_config = _examples(
        {
            "error": {
                "code": "invalid_phone_number",
                "message": "The phone number is not a valid number.",
                "field": "to",
            }
        }
    )

    error: ErrorDetail


def inline_schema(model: type[BaseModel]) -> dict[str, Any]:
    """``model``'s JSON schema with the models inside it written out in place, for a place in the
    OpenAPI document that FastAPI does not make a component of."""
    schema = model.model_json_schema()
    defs = schema.pop("$defs", {})

    def resolve(node: Any) -> Any:
        if isinstance(node, dict):
            ref = node.get("$ref")
            if isinstance(ref, str) and ref.startswith("#/$defs/"):
                return resolve(defs[ref.removeprefix("#/$defs/")])
            return {key: resolve(value) for key, value in node.items()}
        if isinstance(node, list):
            return [resolve(item) for item in node]
        return node

    resolved: dict[str, Any] = resolve(schema)
    return resolved


def error_schema(codes: list[str]) -> dict[str, Any]:
    """The JSON schema of :class:`ErrorOut` whose ``code`` is one of ``codes``."""
    schema = inline_schema(ErrorOut)
    detail = schema["properties"]["error"]
    detail["properties"]["code"]["enum"] = codes
    # The operation gives one example per code instead.
    schema.pop("examples", None)
    detail.pop("examples", None)
    schema["title"] = "Error"
    return schema


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
    "opened_at",
    "clicked_at",
)
_HIDDEN = (
    "api_key_id",
    "idempotency_key",
    "request_hash",
    "lease_owner",
    "lease_expires_at",
    "exempt_from_opt_out",
)


def message_json(row: dict[str, Any], events: list[dict[str, Any]] | None = None) -> dict[str, Any]:
    out = {k: v for k, v in row.items() if k not in _HIDDEN}
    for key in _TIMES:
        out[key] = to_api(row[key])
    micros = out.pop("cost_micros", None)
    out["cost"] = format_micros(micros) if micros is not None else None
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


def batch_json(row: dict[str, Any]) -> dict[str, Any]:
    """A batch's answer (``POST``), or with its progress (``GET``) when ``row`` has ``counts``."""
    out: dict[str, Any] = {
        "id": row["id"],
        "group_id": row["group_id"],
        "channel": row["channel"],
        "total": row["total"],
        "accepted": row["accepted"],
        "refused": row["refused"],
        "created_at": to_api(row["created_at"]),
    }
    if "counts" in row:
        out.update(
            template_id=row["template_id"],
            template_version=row["template_version"],
            shared=row["shared"],
            tags=row["tags"],
            counts=row["counts"],
            progress=progress(row),
            segments=row["segments"],
            cost=format_micros(row["cost_micros"]) if row.get("cost_micros") is not None else None,
            currency=row.get("currency"),
            costs={currency: format_micros(micros) for currency, micros in row.get("costs", {}).items()},
            first_activity=to_api(row["first_activity"]),
            last_activity=to_api(row["last_activity"]),
            cancelled_at=to_api(row["cancelled_at"]),
        )
        if "cancelled" in row:
            out["cancelled"] = row["cancelled"]
    return out


def batch_summary_json(row: dict[str, Any]) -> dict[str, Any]:
    out = batch_json(row)
    out["refused_count"] = len(out.pop("refused"))
    out.update(
        tags=row["tags"],
        template_id=row["template_id"],
        template_version=row["template_version"],
        cancelled_at=to_api(row["cancelled_at"]),
    )
    return out


def gateway_json(state: dict[str, Any]) -> dict[str, Any]:
    """An Android gateway's state (``GatewayService.states``) as ``GET /v1/gateways`` gives it."""
    fields = GatewayOut.model_fields
    out = {k: v for k, v in state.items() if k in fields}
    out.update(last_poll_at=to_api(state["last_poll_at"]), first_poll_at=to_api(state["first_poll_at"]))
    return out


def template_json(row: dict[str, Any]) -> dict[str, Any]:
    return {
        **{k: row[k] for k in ("id", "name", "channel", "version", "latest_version")},
        **{k: row[k] for k in ("body", "subject", "outer", "inner")},
        "created_at": to_api(row["created_at"]),
        "updated_at": to_api(row["updated_at"]),
    }


_PERCENTILES = {"p50": 2.41, "p95": 9.8}
_STATS_FIGURES: dict[str, Any] = {
    "total": 1200,
    "counts": {"delivered": 1100, "failed": 60, "sent": 30, "pending": 10},
    "delivered": 1100,
    "failed": 60,
    "cancelled": 0,
    "pending": 40,
    "delivery_rate": 0.916667,
    "failure_rate": 0.05,
    "segments": 1350,
    "cost": {"USD": "10.665"},
    "seconds_to_sent": _PERCENTILES,
    "seconds_to_delivered": {"p50": 6.2, "p95": 31.0},
}


class Percentiles(BaseModel):
    """Seconds from acceptance, at the 50th and 95th percentile (nearest rank; null: none yet)."""

    model_config = _examples(_PERCENTILES)

    p50: float | None
    p95: float | None


class StatsFigures(BaseModel):
    """What became of the messages accepted in the range (definitions: README, Statistics)."""

    model_config = _examples(_STATS_FIGURES)

    total: int
    counts: dict[str, int] = Field(description="Messages by status.")
    delivered: int
    failed: int
    cancelled: int
    pending: int = Field(description="Not cancelled and not yet delivered or failed.")
    delivery_rate: float | None = Field(description="delivered / (total - cancelled); null when that is 0.")
    failure_rate: float | None = Field(description="failed / (total - cancelled); null when that is 0.")
    segments: int
    cost: dict[str, str] = Field(description="What they cost, by currency (exact decimals).")
    seconds_to_sent: Percentiles
    seconds_to_delivered: Percentiles


class StatsGroup(StatsFigures):
    """One group's figures; ``key`` holds its value of each ``by`` key (``country`` comes with
    ``calling_code``)."""

    model_config = _examples({"key": {"day": "2025-03-14", "provider": "twilio"}, **_STATS_FIGURES})

    key: dict[str, str | None]


class StatsOut(BaseModel):
    """Statistics of the messages accepted in ``[since, until)``: in total, and per group."""

    model_config = _examples(
        {
            "since": WHEN,
            "until": LATER,
            "by": ["provider"],
            "totals": _STATS_FIGURES,
            "groups": [{"key": {"provider": "twilio"}, **_STATS_FIGURES}],
        }
    )

    since: datetime
    until: datetime
    by: list[str]
    totals: StatsFigures
    groups: list[StatsGroup]


_WEBHOOK_STATS: dict[str, Any] = {
    "provider": "orange",
    "event": "delivery",
    "received": 5000,
    "processed": 4990,
    "rejected": 8,
    "failed": 2,
    "unfinished": 0,
    "mean_ms": 3.2,
    "p95_ms": 7.9,
}


class WebhookStats(BaseModel):
    """One provider's webhooks of one event: what came of them and how long processing took."""

    model_config = _examples(_WEBHOOK_STATS)

    provider: str
    event: str
    received: int
    processed: int
    rejected: int = Field(description="Refused by its checks (signature, address, content).")
    failed: int = Field(description="Processing failed (kept in the log, to replay).")
    unfinished: int = Field(description="Cut off before it finished (to replay).")
    mean_ms: float | None
    p95_ms: float | None


class WebhookStatsOut(BaseModel):
    """Webhook processing per provider and event in ``[since, until)``."""

    model_config = _examples({"since": WHEN, "until": LATER, "data": [_WEBHOOK_STATS]})

    since: datetime
    until: datetime
    data: list[WebhookStats]
