"""``/docs`` (Swagger UI) and ``/redoc`` (ReDoc), served with no request leaving the machine.

FastAPI's own pages load their scripts, styles and favicon from a CDN (and ReDoc its fonts from
Google), so they are blank on a network without internet access. The same pages are built here
with FastAPI's HTML helpers, pointing at the built Swagger UI and ReDoc files that the
``fastapi-offline`` package ships, mounted under ``/docs/assets``. Only its files are used, not its
app class.
"""

from __future__ import annotations

from fastapi import FastAPI, Request
from fastapi.openapi.docs import get_redoc_html, get_swagger_ui_html
from fastapi.responses import HTMLResponse
from fastapi.staticfiles import StaticFiles

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
