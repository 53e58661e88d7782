"""Batches: the list, newest first, each with its progress; a batch's page with its shared part,
progress, rates, cost and failures by error; cancelling what of a batch still waits.

A batch's progress is read from its messages (``ix_messages_batch``), so a page of the list reads
the messages of its batches only while they add up to :data:`LIST_PROGRESS_MESSAGES`; a bigger
batch shows its progress on its own page."""

from __future__ import annotations

import json
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
)
from tidings.domain.batches import progress
from tidings.domain.status import CANCELLABLE, Status
from tidings.services.batches import batch_filter

router = APIRouter()

PAGE_SIZE = 25
FIELDS = ("tag", "since", "until")
LIST_PROGRESS_MESSAGES = 20_000
"""The most messages a page of the list reads for its batches' progress."""
FAILURE_GROUPS = 20
"""Error codes shown on a batch's page (the commonest)."""
REFRESH_SECONDS = 5
"""How often an unfinished batch's progress refreshes itself."""

STATUS_ORDER = [
    s.value
    for s in (
        Status.SCHEDULED,
        Status.PENDING,
        Status.SENDING,
        Status.SENT,
        Status.DELIVERED,
        Status.FAILED,
        Status.CANCELLED,
    )
]
"""Statuses in the order a batch's counts are shown: still waiting, on the way, final."""


TEMPLATE_FIELDS = ("template", "subject_template", "inner_template", "outer_template", "pdf_template")
"""The fields of a batch's shared part that hold a template's text (shown as text)."""


def _shared(shared: dict[str, Any]) -> tuple[list[tuple[str, str]], list[tuple[str, str]]]:
    """A batch's shared part for its page: its templates' texts, and its other fields that hold
    something, each a text (JSON for a list or a map), in the order they were stored."""
    templates = [(k, str(shared[k])) for k in TEMPLATE_FIELDS if shared.get(k)]
    others = [
        (k, v if isinstance(v, str) else json.dumps(v, ensure_ascii=False, sort_keys=True))
        for k, v in shared.items()
        if k not in TEMPLATE_FIELDS and v not in ({}, [], "", None)
    ]
    return templates, others


def _view(row: dict[str, Any]) -> dict[str, Any]:
    """A batch as the templates show it: its row, with ``progress`` (final / total and the rates)
    and ``statuses`` (its counts in :data:`STATUS_ORDER`) when its counts were read, and
    ``waiting`` (messages a cancel would still stop)."""
    if "counts" not in row:
        return {**row, "progress": None, "statuses": [], "waiting": None}
    counts: dict[str, int] = row["counts"]
    return {
        **row,
        "progress": progress(row),
        "statuses": [(s, counts[s]) for s in STATUS_ORDER if counts.get(s)],
        "waiting": sum(counts.get(s.value, 0) for s in CANCELLABLE),
    }


@router.get("/batches")
async def list_batches(request: Request, _session: Operator, service: ServiceDep) -> Response:
    asked = {name: request.query_params.get(name, "").strip() for name in FIELDS}
    filters = batch_filter(
        tag=asked["tag"] or None,
        created_after=day(asked["since"], "since", end=False),
        created_before=day(asked["until"], "until", end=True),
    )
    cursor = id_cursor(request.query_params.get("cursor") or None)
    rows, next_cursor = await service.batches.list(filters, cursor=cursor, limit=PAGE_SIZE)
    rows = await service.batches.with_progress(rows, most_messages=LIST_PROGRESS_MESSAGES)
    return render(
        request,
        "batches.html",
        page="batches",
        asked=asked,
        rows=[_view(r) for r in rows],
        next_link=query_string(asked, cursor=next_cursor) if next_cursor else None,
        first_link=query_string(asked) if cursor else None,
    )


@router.get("/batches/{batch_id}")
async def show_batch(batch_id: str, request: Request, _session: Operator, service: ServiceDep) -> Response:
    batch = _view(await service.batches.get(batch_id))
    failed = batch["counts"].get(Status.FAILED.value, 0)
    failures = await service.batches.failures(batch["id"], limit=FAILURE_GROUPS) if failed else []
    done = batch["progress"]["final"] >= batch["progress"]["total"]
    templates, shared = _shared(batch["shared"])
    return render(
        request,
        "batch.html",
        page="batches",
        batch=batch,
        failures=failures,
        templates=templates,
        shared=shared,
        refresh=None if done else REFRESH_SECONDS,
    )


@router.post("/batches/{batch_id}/cancel")
async def cancel_batch(
    batch_id: str, request: Request, session: Operator, _form: Form, service: ServiceDep
) -> Response:
    row = await service.batches.cancel(
        batch_id, reason=f"batch cancelled from the dashboard by {session.operator.name}"
    )
    await service.operators.record(
        session.operator.name,
        "cancel_batch",
        row["id"],
        {"group_id": row["group_id"], "cancelled": row["cancelled"]},
        address=address_of(request),
    )
    return redirect(f"/batches/{row['id']}", notice="batch_cancelled")
