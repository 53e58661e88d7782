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


ALERT_RAISED = "alert.raised"
ALERT_RESOLVED = "alert.resolved"


def alert_payload(alert: Mapping[str, Any]) -> dict[str, Any]:
    """The ``alert.raised`` or ``alert.resolved`` callback for an alert as it stands (resolved
    once it has a ``resolved_at``)."""
    return {
        "type": ALERT_RAISED if alert["resolved_at"] is None else ALERT_RESOLVED,
        "id": alert["id"],
        "rule": alert["rule"],
        "subject": alert["subject"],
        "status": alert["status"],
        "value": alert["value"],
        "threshold": alert["threshold"],
        "message": alert["message"],
        "detail": alert["detail"],
        "raised_at": to_api(alert["raised_at"]),
        "resolved_at": to_api(alert["resolved_at"]),
        "last_checked_at": to_api(alert["last_checked_at"]),
    }
