"""Between the gRPC messages (``tidings.v1.messaging_pb2``) and what the services take and give.

Requests become the REST API's own input (a dict its pydantic model validates), and answers are
made from the REST API's JSON of the same row (``message_json``), so that both APIs say the same
thing in the same words; only the encoding differs.
"""

from __future__ import annotations

import base64
from datetime import UTC, datetime
from typing import Any

from google.protobuf import json_format
from google.protobuf.message import Message as ProtoMessage
from google.protobuf.struct_pb2 import Struct
from google.protobuf.timestamp_pb2 import Timestamp

from tidings.domain.batches import FINAL
from tidings.domain.status import Status
from tidings.errors import InvalidInput
from tidings.v1 import messaging_pb2 as pb

_STATUS = {s: pb.Status.Value(f"STATUS_{s.name}") for s in Status}
_STATUS_NAME = {number: s for s, number in _STATUS.items()}
FINAL_NAMES = frozenset(s.value for s in FINAL)


def status_number(name: str) -> pb.Status.ValueType:
    return _STATUS[Status(name)]


def status_of(number: pb.Status.ValueType, field: str) -> Status:
    found = _STATUS_NAME.get(number)
    if found is None:
        raise InvalidInput(f"{field}: not a status", field=field)
    return found


def timestamp(value: str | datetime | None) -> Timestamp | None:
    """An API time (``…Z`` text) or a stored naive-UTC datetime as a Timestamp.

    Read with ``datetime.fromisoformat`` (C), not protobuf's ``FromJsonString`` (``strptime``,
    which was 7 % of a ``SendMessage``); to the millisecond the API keeps, the same instant."""
    if value is None:
        return None
    if isinstance(value, str):
        moment = datetime.fromisoformat(value)
    else:  # as the API shows it: to the millisecond
        moment = value.replace(microsecond=value.microsecond // 1000 * 1000)
    if moment.tzinfo is not None:
        moment = moment.astimezone(UTC).replace(tzinfo=None)
    since = moment - _EPOCH
    return Timestamp(seconds=since.days * 86_400 + since.seconds, nanos=since.microseconds * 1000)


_EPOCH = datetime(1970, 1, 1)


def moment(value: Timestamp) -> str:
    """A Timestamp as the ISO 8601 text the REST models read."""
    return value.ToDatetime(tzinfo=UTC).isoformat()


def plain(value: Struct) -> dict[str, Any]:
    """A Struct as JSON-like values; whole numbers as ints (a Struct holds only doubles, and the
    REST API would have got ``1``, not ``1.0``)."""

    def whole(item: Any) -> Any:
        if isinstance(item, float) and item.is_integer() and abs(item) < 2**53:
            return int(item)
        if isinstance(item, dict):
            return {k: whole(v) for k, v in item.items()}
        if isinstance(item, list):
            return [whole(v) for v in item]
        return item

    result: dict[str, Any] = whole(json_format.MessageToDict(value))
    return result


def struct(value: dict[str, Any] | None) -> Struct:
    out = Struct()
    if value:
        out.update(value)
    return out


def given(message: ProtoMessage, *names: str) -> dict[str, Any]:
    """The fields of ``message`` among ``names`` that were set (optional ones) or are not empty."""
    out: dict[str, Any] = {}
    for name in names:
        field = message.DESCRIPTOR.fields_by_name[name]
        value = getattr(message, name)
        if isinstance(value, Struct):
            # A message field always has presence: an empty Struct counts as not given.
            if value.fields:
                out[name] = plain(value)
        elif field.has_presence:
            if not message.HasField(name):
                continue
            out[name] = moment(value) if isinstance(value, Timestamp) else value
        elif isinstance(value, str):
            if value:
                out[name] = value
        elif value:
            out[name] = list(value)
    return out


def attachments(items: Any) -> list[dict[str, str]]:
    """Attachments as the REST API takes them (content in base64)."""
    return [
        {
            "filename": a.filename,
            "content_type": a.content_type,
            "content": base64.b64encode(a.content).decode(),
        }
        for a in items
    ]


def send_request(request: pb.SendMessageRequest) -> dict[str, Any]:
    """``POST /v1/messages``'s body for a SendMessage request."""
    body = given(
        request,
        "to",
        "body",
        "sender",
        "send_at",
        "provider",
        "tags",
        "metadata",
        "callback_url",
        "ordered",
        "channel",
        "subject",
        "html",
        "text",
        "reply_to",
    )
    if request.headers:
        body["headers"] = dict(request.headers)
    if request.attachments:
        body["attachments"] = attachments(request.attachments)
    return body


def recipient(item: pb.Recipient) -> dict[str, Any]:
    out = given(item, "to", "first_name", "last_name", "tags", "context", "metadata", "send_at")
    if item.attachments:
        out["attachments"] = attachments(item.attachments)
    return out


def batch_shared(shared: pb.BatchShared) -> dict[str, Any]:
    """The shared part of ``POST /v1/batches``'s body (``from`` keeps its REST name)."""
    return given(
        shared,
        "group_id",
        "channel",
        "template",
        "template_id",
        "subject_template",
        "outer_template",
        "inner_template",
        "from",
        "reply_to",
        "pdf_template",
        "pdf_filename",
        "context",
        "sender",
        "provider",
        "send_at",
        "tags",
        "metadata",
        "callback_url",
        "ordered",
    )


def _optional(out: ProtoMessage, data: dict[str, Any], *names: str) -> None:
    for name in names:
        value = data.get(name)
        if value is not None:
            setattr(out, name, value)


def _times(out: ProtoMessage, data: dict[str, Any], *names: str) -> None:
    for name in names:
        found = timestamp(data.get(name))
        if found is not None:
            getattr(out, name).CopyFrom(found)


def event(data: dict[str, Any]) -> pb.Event:
    out = pb.Event(
        id=int(data["id"]),
        type=data["type"],
        source=data["source"],
        status=status_number(data["status"]),
        changed=bool(data["changed"]),
        detail=struct(data.get("detail")),
    )
    _optional(out, data, "provider_status", "error_code", "error_message", "failure_reason")
    _times(out, data, "occurred_at", "recorded_at")
    return out


def message(data: dict[str, Any]) -> pb.Message:
    """A message from its REST JSON (``message_json``)."""
    out = pb.Message(
        id=data["id"],
        channel=data["channel"],
        to=data["to"],
        body=data["body"] or "",
        status=status_number(data["status"]),
        final=data["status"] in FINAL_NAMES,
        provider=data["provider"] or "",
        attempts=int(data["attempts"]),
        max_attempts=int(data["max_attempts"]),
        tags=list(data.get("tags") or []),
        metadata=struct(data.get("metadata")),
    )
    _optional(
        out,
        data,
        "sender",
        "segments",
        "provider_message_id",
        "provider_status",
        "error_code",
        "error_message",
        "failure_reason",
        "subject",
        "batch_id",
        "cost",
        "currency",
    )
    _times(
        out,
        data,
        "next_attempt_at",
        "send_at",
        "created_at",
        "updated_at",
        "sent_at",
        "delivered_at",
        "failed_at",
        "cancelled_at",
    )
    out.events.extend(event(e) for e in data.get("events") or [])
    return out


def batch(data: dict[str, Any], *, existing: bool) -> pb.Batch:
    """A batch from its REST JSON (``batch_json``)."""
    out = pb.Batch(
        id=data["id"],
        group_id=data["group_id"],
        total=int(data["total"]),
        accepted=int(data["accepted"]),
        existing=existing,
        counts={k: int(v) for k, v in (data.get("counts") or {}).items()},
    )
    for refusal in data.get("refused") or []:
        item = pb.Refusal(index=int(refusal["index"]), code=refusal["code"], message=refusal["message"])
        if refusal.get("field") is not None:
            item.field = refusal["field"]
        out.refused.append(item)
    _times(out, data, "created_at")
    return out


def change(row: dict[str, Any]) -> pb.StatusChange:
    out = pb.StatusChange(
        cursor=str(row["id"]),
        message_id=row["message_id"],
        status=status_number(row["status"]),
        final=row["status"] in FINAL_NAMES,
        event=row["type"],
        to=row["to"],
    )
    _optional(out, row, "batch_id", "provider_status", "error_code", "error_message", "failure_reason")
    _times(out, row, "occurred_at")
    return out
