"""``GET /metrics``: every metric of ``tidings/metrics.py`` in the Prometheus text format.

It needs an API key with the ``read`` scope as a bearer token (Prometheus sends one with
``authorization`` in its scrape config), unless ``metrics_public`` is set. It is not in the OpenAPI
document: it is for Prometheus, not for applications, and its answer is not JSON.
"""

from __future__ import annotations

from fastapi import FastAPI
from fastapi.responses import Response
from prometheus_client import CONTENT_TYPE_LATEST

from tidings.api.auth import Reader
from tidings.clock import utcnow
from tidings.metrics import Exposition, Figures
from tidings.services import Service

PATH = "/metrics"


def add_metrics(app: FastAPI, service: Service) -> None:
    """Serve ``GET /metrics`` for ``service``: its database's figures are read at most once a
    second, however many scrapes come."""
    providers = sorted(service.providers)
    phones = sorted(service.gateway.phones)

    async def read() -> Figures:
        return await service.store.figures.read(providers=providers, gateways=phones, now=utcnow())

    exposition = Exposition(read)

    async def answer() -> Response:
        return Response(content=await exposition.render(), media_type=CONTENT_TYPE_LATEST)

    if service.settings.metrics_public:

        @app.get(PATH, include_in_schema=False)
        async def public_metrics() -> Response:
            return await answer()

    else:

        @app.get(PATH, include_in_schema=False)
        async def metrics(_key: Reader) -> Response:
            return await answer()
