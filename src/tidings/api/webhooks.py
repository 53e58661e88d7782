"""``/webhooks/{kind}/{name}/{event}``: receipts, reports and inbound messages posted by providers,
through the one webhook pipeline (``services/webhooks.py``)."""

from __future__ import annotations

import re
from collections.abc import Callable, Coroutine
from typing import Any

from fastapi import APIRouter, FastAPI, Request
from fastapi.responses import PlainTextResponse, Response

from tidings.api.common import POSTED, ServiceDep, errors
from tidings.errors import (
    AddressNotAllowed,
    DatabaseUnavailable,
    NotFound,
    WebhookMediaType,
    WebhookRejected,
    WebhookTooLarge,
    WebhookUnauthorized,
)
from tidings.providers.base import Provider, WebhookRequest
from tidings.services import Service

router = APIRouter(tags=["webhooks"])

RESPONSES: dict[int | str, dict[str, Any]] = {
    200: {
        "description": "Taken: what the provider expects (`OK`, or empty TwiML for Twilio's inbound SMS).",
        "content": {
            "text/plain": {"schema": {"type": "string"}, "example": "OK"},
            "text/xml": {"schema": {"type": "string"}, "example": "<Response/>"},
        },
    },
    **errors(
        *POSTED,
        NotFound,
        WebhookRejected,
        WebhookUnauthorized,
        AddressNotAllowed,
        WebhookTooLarge,
        WebhookMediaType,
        DatabaseUnavailable,
    ),
}
"""A webhook's answers: the provider's own on success, the API's error contract otherwise."""


def webhook_request(
    service: Service, path: str, query: str, headers: dict[str, str], body: bytes
) -> WebhookRequest:
    """What the pipeline checks: the request with the URL the provider was given."""
    # Providers sign the URL they were given, which is the public one (behind a proxy the
    # request's own URL differs): rebuild it from public_url.
    url = service.settings.base_url + path
    if query:
        url += "?" + query
    return WebhookRequest(url=url, headers=headers, body=body)


async def receive(service: Service, provider: Provider, event: str, request: Request) -> Response:
    incoming = webhook_request(
        service, request.url.path, request.url.query, dict(request.headers), await request.body()
    )
    peer = request.client.host if request.client is not None else None
    answer = await service.webhooks.receive(provider, event, incoming, peer)
    return Response(content=answer.body, status_code=answer.status, media_type=answer.content_type)


@router.head("/webhooks/{kind}/{name}/{event}", include_in_schema=False)
async def webhook_probe(kind: str, name: str, event: str, service: ServiceDep) -> Response:
    """Providers probe their webhook URL with HEAD before they use it."""
    service.webhooks.provider(kind, name)
    return Response(status_code=200)


@router.post(
    "/webhooks/{kind}/{name}/{event}",
    operation_id="receiveWebhook",
    summary="Receive a provider's webhook",
    response_class=PlainTextResponse,
    responses=RESPONSES,
)
async def webhook(kind: str, name: str, event: str, request: Request, service: ServiceDep) -> Response:
    """Receipts, reports and inbound messages posted by providers. Each request is logged first,
    then checked (address allowlist, size, content type, the provider's signature)."""
    return await receive(service, service.webhooks.provider(kind, name), event, request)


def add_legacy_routes(app: FastAPI, service: Service) -> None:
    """The paths another service used for a provider's webhooks (seed 002's Orange paths), for
    the first configured provider of a kind that declares them."""
    for path, (provider, event) in service.webhooks.legacy_paths.items():
        app.add_api_route(
            path,
            _legacy(service, provider, event),
            methods=["POST"],
            tags=["webhooks"],
            name=f"{provider.kind}_{event}_legacy",
            operation_id=_camel("receive", provider.kind, event, "webhook"),
            summary=f"{provider.kind.title()} {event} webhooks at the path seed 002's service used",
            response_class=PlainTextResponse,
            responses=RESPONSES,
        )


def _camel(*words: str) -> str:
    """``receive``, ``orange``, ``delivery-status`` → ``receiveOrangeDeliveryStatus``."""
    parts = [part for word in words for part in re.split(r"[^A-Za-z0-9]+", word) if part]
    return parts[0].lower() + "".join(part.title() for part in parts[1:])


def _legacy(
    service: Service, provider: Provider, event: str
) -> Callable[[Request], Coroutine[Any, Any, Response]]:
    async def legacy(request: Request) -> Response:
        return await receive(service, provider, event, request)

    return legacy
