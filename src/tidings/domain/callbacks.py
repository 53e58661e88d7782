"""What tidings tells a client application: the JSON of each callback. Pure: no I/O."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from tidings.clock import to_api


def status_payload(event: Mapping[str, Any], to: str) -> dict[str, Any]:
    """The ``message.status`` callback for one event of a message to ``to``."""
    return {
        "type": "message.status",
        "id": event["message_id"],
        "status": event["status"],
        "event": event["type"],
        "provider_status": event.get("provider_status"),
        "error_code": event.get("error_code"),
        "error_message": event.get("error_message"),
        "failure_reason": event.get("failure_reason"),
        "to": to,
        "occurred_at": to_api(event["occurred_at"]),
    }


def inbound_payload(inbound: Mapping[str, Any]) -> dict[str, Any]:
    """The ``inbound`` callback for one stored inbound message."""
    return {
        "type": "inbound",
        "id": inbound["id"],
        "from": inbound["from"],
        "to": inbound.get("to"),
        "body": inbound["body"],
        "provider": inbound["provider"],
        "provider_message_id": inbound.get("provider_message_id"),
        "received_at": to_api(inbound["received_at"]),
    }
