"""The OpenAPI document tells the truth: what each operation needs."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.conftest import make_settings
from tidings.api.app import create_app
from tidings.services import Service


@pytest.fixture(scope="module")
def document(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    """The document of an app with every kind of route: Orange's legacy paths and a gateway."""
    folder: Path = tmp_path_factory.mktemp("openapi")
    settings = make_settings(
        f"sqlite:///{folder / 'tidings.db'}",
        providers={
            "fake": {"kind": "fake"},
            "orange": {
                "kind": "orange",
                "client_id": "id",
                "client_secret": "secret",
                "sender": "tel:+2250000000000",
                "webhook_allow_ips": ["127.0.0.0/8"],
            },
            "phone": {"kind": "gateway", "username": "phone", "password": "pw"},
        },
    )
    # The document is built without the database or the providers being started.
    document: dict[str, Any] = create_app(Service(settings)).openapi()
    return document


def operations(document: dict[str, Any]) -> Iterator[tuple[str, str, dict[str, Any]]]:
    for path, methods in document["paths"].items():
        for method, operation in methods.items():
            yield method, path, operation


def test_authenticated_operations_declare_the_bearer_scheme(document: dict[str, Any]) -> None:
    scheme = document["components"]["securitySchemes"]["bearerAuth"]
    assert (scheme["type"], scheme["scheme"]) == ("http", "bearer")
    authenticated = 0
    for method, path, op in operations(document):
        if path.startswith("/v1/"):
            authenticated += 1
            assert op.get("security") == [{"bearerAuth": []}], (method, path)
        else:
            assert {"bearerAuth": []} not in op.get("security", []), (method, path)
    assert authenticated == 15


def test_no_operation_takes_the_authorization_header_as_a_parameter(document: dict[str, Any]) -> None:
    # Swagger UI ignores a header parameter named Authorization: the scheme carries it instead.
    for method, path, op in operations(document):
        names = [p["name"].lower() for p in op.get("parameters", [])]
        assert "authorization" not in names, (method, path)
