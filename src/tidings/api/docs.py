"""``/docs`` (Swagger UI) and ``/redoc`` (ReDoc), served with no request leaving the machine, and
the last corrections to the OpenAPI document they show.

FastAPI's own pages load their scripts, styles and favicon from a CDN (and ReDoc its fonts from
Google), so they are blank on a network without internet access. The same pages are built here
with FastAPI's HTML helpers, pointing at the built Swagger UI and ReDoc files that the
``fastapi-offline`` package ships, mounted under ``/docs/assets``. Only its files are used, not its
app class.
"""

from __future__ import annotations

from typing import Any

from fastapi import FastAPI, Request
from fastapi.openapi.docs import get_redoc_html, get_swagger_ui_html
from fastapi.responses import HTMLResponse
from fastapi.staticfiles import StaticFiles
from pydantic import BaseModel

ASSETS_PATH = "/docs/assets"
ASSETS_PACKAGE = ("fastapi_offline", "static")
"""The package and folder holding ``swagger-ui-bundle.js``, ``swagger-ui.css``,
``redoc.standalone.js`` and ``favicon.png``."""

SWAGGER_UI_PARAMETERS = {
    # Swagger UI would otherwise send the document to an online validator for a badge.
    "validatorUrl": None,
    # A key entered with "Authorize" survives a reload of the page.
    "persistAuthorization": True,
}


def add_docs(app: FastAPI) -> None:
    """Serve ``/docs`` and ``/redoc`` from the installed assets; ``app`` must be made with
    ``docs_url=None, redoc_url=None`` so that FastAPI's CDN pages are not there too."""
    _finish_document(app)
    app.mount(ASSETS_PATH, StaticFiles(packages=[ASSETS_PACKAGE]), name="docs-assets")
    openapi_url = app.openapi_url or "/openapi.json"

    @app.get("/docs", include_in_schema=False)
    async def swagger_ui(request: Request) -> HTMLResponse:
        root = request.scope.get("root_path", "")
        return get_swagger_ui_html(
            openapi_url=root + openapi_url,
            title=f"{app.title} API",
            swagger_js_url=f"{root}{ASSETS_PATH}/swagger-ui-bundle.js",
            swagger_css_url=f"{root}{ASSETS_PATH}/swagger-ui.css",
            swagger_favicon_url=f"{root}{ASSETS_PATH}/favicon.png",
            oauth2_redirect_url=None,
            swagger_ui_parameters=SWAGGER_UI_PARAMETERS,
        )

    @app.get("/redoc", include_in_schema=False)
    async def redoc(request: Request) -> HTMLResponse:
        root = request.scope.get("root_path", "")
        return get_redoc_html(
            openapi_url=root + openapi_url,
            title=f"{app.title} API",
            redoc_js_url=f"{root}{ASSETS_PATH}/redoc.standalone.js",
            redoc_favicon_url=f"{root}{ASSETS_PATH}/favicon.png",
            with_google_fonts=False,
        )


def _finish_document(app: FastAPI) -> None:
    """Two corrections to the OpenAPI document FastAPI makes.

    FastAPI's ``HTTPValidationError`` is left out: the API never answers it. FastAPI adds it as
    the ``422`` of an operation with parameters that documents none; operations whose parameters
    can be refused document our own (``common.errors``), so what is left is an operation whose
    parameters cannot be (plain text in its path).

    The models' examples get their nulls back: FastAPI drops every ``null`` from the document,
    which leaves examples without the fields that are required (and null in them).
    """
    generate = app.openapi

    def openapi() -> dict[str, Any]:
        if app.openapi_schema is None:
            document = generate()
            fastapi_422 = {"$ref": "#/components/schemas/HTTPValidationError"}
            for operation in (op for path in document["paths"].values() for op in path.values()):
                answer = operation.get("responses", {}).get("422", {})
                if answer.get("content", {}).get("application/json", {}).get("schema") == fastapi_422:
                    del operation["responses"]["422"]
            components = document.get("components", {}).get("schemas", {})
            for name in ("HTTPValidationError", "ValidationError"):
                components.pop(name, None)
            models = _api_models()
            for name, schema in components.items():
                if "examples" in schema and name in models:
                    schema["examples"] = models[name].model_json_schema()["examples"]
        return app.openapi_schema or generate()

    app.openapi = openapi  # type: ignore[method-assign]


def _api_models() -> dict[str, type[BaseModel]]:
    """The API's models by name (which is their name in the document)."""
    found: dict[str, type[BaseModel]] = {}
    classes: list[type[BaseModel]] = [BaseModel]
    while classes:
        for model in classes.pop().__subclasses__():
            classes.append(model)
            if model.__module__.startswith("tidings.api."):
                found[model.__name__] = model
    return found
