"""Webhooks: what providers posted to tidings (the webhook log, each entry replayable) and what
tidings posted to client applications (callbacks, each failed one retryable). Two tabs of one
page, ``/webhooks`` and ``/webhooks/callbacks``.

A replay runs an entry through the same pipeline as ``tidings webhooks replay`` (``services/
webhooks.py``); a retry queues a callback again as ``POST /v1/callbacks/{id}/retry`` does.
"""

from __future__ import annotations

from typing import get_args

from fastapi import APIRouter, Request
from fastapi.responses import Response

from tidings.api.common import id_cursor
from tidings.api.schemas import CallbackStatus
from tidings.dashboard.web import (
    Form,
    Operator,
    ServiceDep,
    address_of,
    query_string,
    redirect,
    render,
)
from tidings.errors import BadRequest, InvalidInput, NotFound, printable
from tidings.store.webhooks import WebhookEntry

router = APIRouter()

PAGE_SIZE = 50
BODY_SHOWN = 8192
"""The most of a logged request's body the entry's page shows."""
CALLBACK_STATUSES: tuple[str, ...] = get_args(CallbackStatus)
_BIGGEST_ID = 2**63 - 1


def int_cursor(value: str | None) -> int | None:
    """A page cursor that is a row id (a positive whole number); 400 otherwise."""
    if not value:
        return None
    if not value.isascii() or not value.isdigit() or int(value) > _BIGGEST_ID:
        raise BadRequest("cursor is not one this page gave out", field="cursor")
    return int(value)


def entry_id_of(value: str) -> int:
    """A webhook log entry's id from a path; an id no entry can have is not found."""
    if not value.isascii() or not value.isdigit() or int(value) > _BIGGEST_ID:
        raise NotFound(f"no webhook log entry {value[:40]}")
    return int(value)


def replayable(entry: WebhookEntry) -> bool:
    """Whether to offer a replay: the request passed its checks when it arrived (secrets are not
    logged, so a refused one cannot be checked again), and processing it failed, was cut short, or
    found no message for a report (a receipt that came before its message was known)."""
    return entry.verified is True and (not entry.processed or entry.unmatched > 0)


@router.get("/webhooks")
async def list_webhooks(request: Request, _session: Operator, service: ServiceDep) -> Response:
    provider = printable(request.query_params.get("provider", "").strip(), "provider") or ""
    failed = request.query_params.get("failed") == "1"
    cursor = int_cursor(request.query_params.get("cursor"))
    rows = await service.store.webhooks.search(
        provider=provider or None, failed=failed, before_id=cursor, limit=PAGE_SIZE + 1
    )
    entries = rows[:PAGE_SIZE]
    asked = {"provider": provider, "failed": "1" if failed else ""}
    return render(
        request,
        "webhooks.html",
        page="webhooks",
        tab="log",
        asked=asked,
        entries=entries,
        replayable=replayable,
        providers=sorted(service.providers),
        next_link=query_string(asked, cursor=entries[-1].id) if len(rows) > PAGE_SIZE else None,
        first_link=query_string(asked) if cursor else None,
    )


@router.get("/webhooks/callbacks")
async def list_callbacks(request: Request, _session: Operator, service: ServiceDep) -> Response:
    status = request.query_params.get("status", "").strip()
    if status and status not in CALLBACK_STATUSES:
        raise InvalidInput(f"status must be one of {', '.join(CALLBACK_STATUSES)}", field="status")
    cursor = id_cursor(request.query_params.get("cursor") or None)
    rows, next_cursor = await service.callbacks.list(
        status=status or None, message_id=None, cursor=cursor, limit=PAGE_SIZE
    )
    asked = {"status": status}
    return render(
        request,
        "webhooks.html",
        page="webhooks",
        tab="callbacks",
        asked=asked,
        callbacks=rows,
        statuses=CALLBACK_STATUSES,
        next_link=query_string(asked, cursor=next_cursor) if next_cursor else None,
        first_link=query_string(asked) if cursor else None,
    )


@router.get("/webhooks/{entry_id}")
async def show_webhook(entry_id: str, request: Request, _session: Operator, service: ServiceDep) -> Response:
    entry = await service.store.webhooks.get(entry_id_of(entry_id))
    if entry is None:
        raise NotFound(f"no webhook log entry {entry_id}")
    body = entry.body[:BODY_SHOWN].decode("utf-8", errors="replace")
    return render(
        request,
        "webhook.html",
        page="webhooks",
        entry=entry,
        body=body,
        cut=len(entry.body) > BODY_SHOWN or entry.body_size > len(entry.body),
        replayable=replayable(entry),
    )


@router.post("/webhooks/{entry_id}/replay")
async def replay_webhook(
    entry_id: str, request: Request, session: Operator, _form: Form, service: ServiceDep
) -> Response:
    entry = await service.webhooks.replay(entry_id_of(entry_id))
    await service.operators.record(
        session.operator.name,
        "replay_webhook",
        str(entry.id),
        {"provider": entry.provider, "event": entry.event, "state": entry.state, "error": entry.error},
        address=address_of(request),
    )
    return redirect(f"/webhooks/{entry.id}", notice="replayed")


@router.post("/webhooks/callbacks/{callback_id}/retry")
async def retry_callback(
    callback_id: str, request: Request, session: Operator, _form: Form, service: ServiceDep
) -> Response:
    row = await service.callbacks.retry(callback_id)
    await service.operators.record(
        session.operator.name,
        "retry_callback",
        row["id"],
        {"type": row["type"], "url": row["url"], "message_id": row["message_id"], "status": row["status"]},
        address=address_of(request),
    )
    return redirect("/webhooks/callbacks", notice="retried")
