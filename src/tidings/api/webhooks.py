"""``/webhooks/{kind}/{name}/{event}``: receipts, reports and inbound messages posted by providers,
through the one webhook pipeline (``services/webhooks.py``)."""

from __future__ import annotations

from collections.abc import Callable, Coroutine
from typing import Any

from fastapi import APIRouter, FastAPI, Request
from fastapi.responses import Response

from tidings.api.common import ServiceDep
from tidings.providers.base import Provider, WebhookRequest
from tidings.services import Service

router = APIRouter(tags=["webhooks"])


async def receive(service: Service, provider: Provider, event: str, request: Request) -> Response:
    # Providers sign the URL they were given, which is the public one (behind a proxy the
    # request's own URL differs): rebuild it from public_url.
    url = service.settings.base_url + request.url.path
    if request.url.query:
        url += "?" + request.url.query
    incoming = WebhookRequest(url=url, headers=dict(request.headers), body=await request.body())
    peer = request.client.host if request.client is not None else None
    answer = await service.webhooks.receive(provider, event, incoming, peer)
    return Response(content=answer.body, status_code=answer.status, media_type=answer.content_type)


@router.head("/webhooks/{kind}/{name}/{event}", include_in_schema=False)
async def webhook_probe(kind: str, name: str, event: str, service: ServiceDep) -> Response:
    """Providers probe their webhook URL with HEAD before they use it."""
    service.webhooks.provider(kind, name)
    return Response(status_code=200)


@router.post("/webhooks/{kind}/{name}/{event}")
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
            summary=f"{provider.kind.title()} {event} webhooks at the path seed 002's service used",
        )


def _legacy(
    service: Service, provider: Provider, event: str
) -> Callable[[Request], Coroutine[Any, Any, Response]]:
    async def legacy(request: Request) -> Response:
        return await receive(service, provider, event, request)

    return legacy
