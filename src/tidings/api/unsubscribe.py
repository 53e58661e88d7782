"""``/unsubscribe/{message_id}/{signature}``: the one-click unsubscribe links of bulk email
(RFC 8058). A mailbox provider's button POSTs ``List-Unsubscribe=One-Click``; a person who opens
the link in a browser gets a page with one button that does the same POST. No API key: the signed
link is the authority, and it names one message."""

from __future__ import annotations

import html
from typing import Annotated

from fastapi import APIRouter, Path, Request
from fastapi.responses import HTMLResponse, Response

from tidings.api.common import PARAMETERS, POSTED, ServiceDep, errors, json_response
from tidings.api.schemas import UnsubscribedOut
from tidings.errors import NotFound, WebhookUnauthorized

router = APIRouter(tags=["unsubscribe"])

PATH = "/unsubscribe/{message_id}/{signature}"
MessageId = Annotated[str, Path(max_length=64)]
Signature = Annotated[str, Path(max_length=64)]


@router.post(
    PATH,
    operation_id="unsubscribe",
    summary="Unsubscribe (one click)",
    response_model=UnsubscribedOut,
    responses=errors(*POSTED, *PARAMETERS, WebhookUnauthorized, NotFound),
)
async def unsubscribe(
    message_id: MessageId, signature: Signature, request: Request, service: ServiceDep
) -> Response:
    """Suppress the address this email went to, for its sender (RFC 8058 one-click); what still
    waits for it is cancelled. Answers 200 also when it already was."""
    peer = request.client.host if request.client else None
    address = await service.unsubscribe.unsubscribe(message_id, signature, peer=peer)
    return json_response({"unsubscribed": address})


@router.get(
    PATH,
    operation_id="unsubscribePage",
    summary="Unsubscribe page",
    response_class=HTMLResponse,
    responses={
        200: {
            "content": {"text/html": {"schema": {"type": "string"}}},
            "description": "A page with one button.",
        },
        **errors(*PARAMETERS, WebhookUnauthorized),
    },
)
async def unsubscribe_page(message_id: MessageId, signature: Signature, service: ServiceDep) -> Response:
    """A page with one button, for a person who opened the link: nothing is changed by a GET
    (mail scanners follow links)."""
    links = await service.unsubscribe.links()
    if not links.valid(message_id, signature):
        raise WebhookUnauthorized("this unsubscribe link is not valid")
    action = html.escape(f"/unsubscribe/{message_id}/{signature}")
    page = (
        "<!doctype html><meta charset=utf-8><title>Unsubscribe</title>"
        "<p>Stop receiving these emails?</p>"
        f'<form method=post action="{action}"><input type=hidden name=List-Unsubscribe value=One-Click>'
        "<button type=submit>Unsubscribe</button></form>"
    )
    return HTMLResponse(page)
