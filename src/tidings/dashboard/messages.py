"""Messages: the searchable list, each message's whole history as a timeline, and cancelling one
that is still waiting."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Any

from fastapi import APIRouter, Request
from fastapi.responses import Response

from tidings.api.common import id_cursor
from tidings.dashboard.web import (
    Form,
    Operator,
    ServiceDep,
    address_of,
    day,
    query_string,
    redirect,
    render,
    when,
)
from tidings.domain.status import CANCELLABLE, Status
from tidings.errors import InvalidInput
from tidings.services.messages import message_filter

router = APIRouter()

PAGE_SIZE = 50
FIELDS = ("q", "to", "status", "provider", "tag", "batch", "since", "until")


def _status(value: str) -> tuple[Status, ...]:
    if not value:
        return ()
    try:
        return (Status(value),)
    except ValueError as exc:
        raise InvalidInput(
            f"status must be one of {', '.join(s.value for s in Status)}", field="status"
        ) from exc


@router.get("/messages")
async def list_messages(request: Request, _session: Operator, service: ServiceDep) -> Response:
    asked = {name: request.query_params.get(name, "").strip() for name in FIELDS}
    filters = message_filter(
        region=service.settings.default_region,
        q=asked["q"] or None,
        statuses=_status(asked["status"]),
        to=asked["to"] or None,
        tags=[asked["tag"]] if asked["tag"] else [],
        provider=asked["provider"] or None,
        batch=asked["batch"] or None,
        created_after=day(asked["since"], "since", end=False),
        created_before=day(asked["until"], "until", end=True),
    )
    cursor = id_cursor(request.query_params.get("cursor") or None)
    rows, next_cursor = await service.messages.list(filters, cursor=cursor, limit=PAGE_SIZE)
    return render(
        request,
        "messages.html",
        page="messages",
        asked=asked,
        rows=rows,
        statuses=[s.value for s in Status],
        providers=sorted(service.providers),
        next_link=query_string(asked, cursor=next_cursor) if next_cursor else None,
        first_link=query_string(asked) if cursor else None,
    )


EVENT_TITLES = {
    "claimed": "taken by a worker",
    "send_accepted": "sent: the provider accepted it",
    "send_failed": "the provider refused it",
    "send_error": "sending failed",
    "retry_scheduled": "retry scheduled",
    "failed_over": "moved to the next provider",
    "handed_to_gateway": "handed to the phone",
    "report": "receipt",
    "gateway_update": "status from the phone",
}
"""What each kind of event is called on the timeline (others: their name, in words)."""


@dataclass(frozen=True)
class Moment:
    """One line of a message's timeline."""

    at: datetime
    kind: str
    """``event``, ``webhook`` or ``callback``: what kind of record it comes from."""
    title: str
    status: str | None
    detail: dict[str, Any]


def timeline(
    events: list[dict[str, Any]],
    webhooks: list[Any],
    callbacks: list[dict[str, Any]],
) -> list[Moment]:
    """Everything that happened to a message, oldest first: its events (accepted, each attempt
    with the provider's answer, each receipt with its raw status…), the provider webhooks that
    named it, and the callbacks that told its application."""
    moments = [
        Moment(
            at=e["occurred_at"],
            kind="event",
            title=EVENT_TITLES.get(e["type"], e["type"].replace("_", " ")),
            status=e["status"],
            detail={
                "source": e["source"],
                "provider status": e.get("provider_status"),
                "error": e.get("error_code"),
                "error message": e.get("error_message"),
                "reason": e.get("failure_reason"),
                **{k: v for k, v in (e.get("detail") or {}).items() if not isinstance(v, dict | list)},
            },
        )
        for e in events
    ]
    moments += [
        Moment(
            at=w.received_at,
            kind="webhook",
            title=f"webhook from {w.provider} ({w.event})",
            status=w.state,
            detail={"entry": w.id, "answered": w.response_status, "error": w.error, "reports": w.reports},
        )
        for w in webhooks
    ]
    moments += [
        Moment(
            at=c["created_at"],
            kind="callback",
            title=f"callback {c['type']}",
            status=c["status"],
            detail={
                "to": c["url"],
                "attempts": c["attempts"],
                "answered": c.get("last_status_code"),
                "error": c.get("last_error"),
                "delivered at": c.get("delivered_at"),
            },
        )
        for c in callbacks
    ]
    moments.sort(key=lambda m: m.at)
    return [
        Moment(
            m.at,
            m.kind,
            m.title,
            m.status,
            {
                k: when(v) if isinstance(v, datetime) else v
                for k, v in m.detail.items()
                if v not in (None, "")
            },
        )
        for m in moments
    ]


@router.get("/messages/{message_id}")
async def show_message(
    message_id: str, request: Request, _session: Operator, service: ServiceDep
) -> Response:
    message, events = await service.messages.get(message_id)
    webhooks = await service.store.webhooks.search(message_id=message["id"], limit=200)
    callbacks, _ = await service.callbacks.list(status=None, message_id=message["id"], cursor=None, limit=200)
    return render(
        request,
        "message.html",
        page="messages",
        message=message,
        moments=timeline(events, webhooks, callbacks),
        cancellable=Status(message["status"]) in CANCELLABLE,
    )


@router.post("/messages/{message_id}/cancel")
async def cancel_message(
    message_id: str, request: Request, session: Operator, _form: Form, service: ServiceDep
) -> Response:
    row = await service.messages.cancel(
        message_id, reason=f"cancelled from the dashboard by {session.operator.name}"
    )
    await service.operators.record(
        session.operator.name, "cancel_message", row["id"], {"to": row["to"]}, address=address_of(request)
    )
    return redirect(f"/messages/{row['id']}", notice="cancelled")
