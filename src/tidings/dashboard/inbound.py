"""Inbound and opt-outs: the replies people sent to our numbers, and the list of addresses that
asked not to be sent to, with adding one (a patient who asked on paper) and removing one.

An opt-out is read by the same function as the API's (``services/inbound.opt_out_target``): one
field takes a number or an email address (it has an ``@``), and the errors are the API's.
"""

from __future__ import annotations

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
from tidings.errors import printable
from tidings.services import Service
from tidings.services.inbound import OptOutTarget, address_channel, opt_out_note, opt_out_target
from tidings.store.messages import ALL_SENDERS

router = APIRouter()

PAGE_SIZE = 50
INBOUND_FIELDS = ("from", "to", "since", "until")


@router.get("/inbound")
async def list_inbound(request: Request, _session: Operator, service: ServiceDep) -> Response:
    asked = {name: request.query_params.get(name, "").strip() for name in INBOUND_FIELDS}
    cursor = id_cursor(request.query_params.get("cursor") or None)
    rows, next_cursor = await service.inbound.search(
        sender=printable(asked["from"], "from") or None,
        to=printable(asked["to"], "to") or None,
        since=day(asked["since"], "since", end=False),
        until=day(asked["until"], "until", end=True),
        cursor=cursor,
        limit=PAGE_SIZE,
    )
    return render(
        request,
        "inbound.html",
        page="inbound",
        asked=asked,
        rows=rows,
        next_link=query_string(asked, cursor=next_cursor) if next_cursor else None,
        first_link=query_string(asked) if cursor else None,
    )


def _target(service: Service, address: str, sender: str | None) -> OptOutTarget:
    """A number or an email address from a form, as the opt-out list keeps it."""
    return opt_out_target(
        address_channel(address),
        address,
        sender or None,
        region=service.settings.default_region,
        field="address",
    )


@router.get("/opt-outs")
async def list_opt_outs(request: Request, _session: Operator, service: ServiceDep) -> Response:
    wanted = request.query_params.get("address", "").strip()
    cursor = id_cursor(request.query_params.get("cursor") or None)
    target = _target(service, wanted, None) if wanted else None
    rows, next_cursor = await service.inbound.opt_outs(target=target, cursor=cursor, limit=PAGE_SIZE)
    asked = {"address": wanted}
    return render(
        request,
        "opt_outs.html",
        page="opt_outs",
        asked=asked,
        rows=rows,
        all_senders=ALL_SENDERS,
        next_link=query_string(asked, cursor=next_cursor) if next_cursor else None,
        first_link=query_string(asked) if cursor else None,
    )


@router.post("/opt-outs")
async def add_opt_out(request: Request, session: Operator, form: Form, service: ServiceDep) -> Response:
    """Opt an address out (its waiting messages are cancelled), as ``POST /v1/opt-outs`` does."""
    target = _target(service, form.get("address", "").strip(), form.get("sender", "").strip())
    note = opt_out_note(form.get("note"))
    created, cancelled = await service.inbound.opt_out(
        target.channel, target.address, target.scope, note=note, source="dashboard"
    )
    await service.operators.record(
        session.operator.name,
        "opt_out",
        target.address,
        {
            "channel": target.channel.value,
            "scope": target.scope,
            "note": note,
            "created": created,
            "cancelled_messages": cancelled,
        },
        address=address_of(request),
    )
    return redirect("/opt-outs", notice="opted_out", address=target.address)


@router.post("/opt-outs/remove")
async def remove_opt_out(request: Request, session: Operator, form: Form, service: ServiceDep) -> Response:
    """Opt an address back in, for the one sender of its entry (or for all of them), as
    ``DELETE /v1/opt-outs/{number}`` does."""
    scope = form.get("scope", "").strip()
    target = _target(service, form.get("address", "").strip(), None if scope == ALL_SENDERS else scope)
    removed = await service.inbound.opt_in(target.channel, target.address, target.scope)
    await service.operators.record(
        session.operator.name,
        "opt_in",
        target.address,
        {"channel": target.channel.value, "scope": target.scope, "removed": removed},
        address=address_of(request),
    )
    return redirect("/opt-outs", notice="opted_in")
