"""``/docs`` and ``/redoc`` work without internet access: the pages and everything they load come
from tidings itself, and no page names another host."""

from __future__ import annotations

import re
from collections.abc import AsyncIterator
from pathlib import Path
from urllib.parse import urljoin

import httpx
import pytest

from tests.conftest import make_settings
from tidings.api.app import create_app
from tidings.services import Service

BASE = "http://tidings.test"

# What an HTML page makes a browser fetch: src/href attributes, Swagger UI's `url:` and ReDoc's
# spec-url.
REFERENCES = re.compile(r"""(?:\bsrc|\bhref|spec-url)\s*=\s*["']([^"']+)["']|\burl:\s*["']([^"']+)["']""")


@pytest.fixture
async def docs(tmp_path: Path) -> AsyncIterator[httpx.AsyncClient]:
    """The app, with no API key: the documentation is public. Its database is never opened."""
    service = Service(make_settings(f"sqlite:///{tmp_path / 'tidings.db'}"))
    transport = httpx.ASGITransport(app=create_app(service))
    try:
        async with httpx.AsyncClient(transport=transport, base_url=BASE) as client:
            yield client
    finally:
        await service.close()


def references(html: str) -> list[str]:
    return [a or b for a, b in REFERENCES.findall(html)]


@pytest.mark.parametrize("page", ["/docs", "/redoc"])
async def test_docs_page_names_no_other_host(docs: httpx.AsyncClient, page: str) -> None:
    response = await docs.get(page)

    assert response.status_code == 200
    assert response.headers["content-type"].startswith("text/html")
    # No absolute URL at all: not a CDN's scripts, not Google's fonts, not a favicon elsewhere.
    assert re.findall(r"(?:https?:)?//[\w.-]+", response.text) == []
    assert "fonts.googleapis" not in response.text


@pytest.mark.parametrize(
    ("page", "expected"),
    [
        (
            "/docs",
            {
                "/docs/assets/swagger-ui.css": "text/css",
                "/docs/assets/swagger-ui-bundle.js": "javascript",
                "/docs/assets/favicon.png": "image/png",
                "/openapi.json": "application/json",
            },
        ),
        (
            "/redoc",
            {
                "/docs/assets/redoc.standalone.js": "javascript",
                "/docs/assets/favicon.png": "image/png",
                "/openapi.json": "application/json",
            },
        ),
    ],
)
async def test_everything_a_docs_page_loads_is_served_by_tidings(
    docs: httpx.AsyncClient, page: str, expected: dict[str, str]
) -> None:
    html = (await docs.get(page)).text
    urls = {urljoin(BASE + page, ref).removeprefix(BASE) for ref in references(html)}

    assert urls == set(expected)
    for url, content_type in expected.items():
        response = await docs.get(url)
        assert response.status_code == 200, url
        assert content_type in response.headers["content-type"], url
        assert len(response.content) > 1000, url


async def test_swagger_ui_styles_load_nothing_from_elsewhere(docs: httpx.AsyncClient) -> None:
    css = (await docs.get("/docs/assets/swagger-ui.css")).text

    loaded = re.findall(r"url\(\s*[\"']?([^\"')]+)", css)
    assert loaded, "the stylesheet is not the one expected"
    assert [url for url in loaded if not url.startswith("data:")] == []
    assert "@import" not in css


async def test_swagger_ui_has_no_online_validator(docs: httpx.AsyncClient) -> None:
    # Swagger UI posts the document to validator.swagger.io for a badge unless told not to.
    html = (await docs.get("/docs")).text

    assert '"validatorUrl": null' in html


async def test_an_asset_that_does_not_exist_is_404(docs: httpx.AsyncClient) -> None:
    response = await docs.get("/docs/assets/nothing.js")

    assert response.status_code == 404
