"""schemathesis checks every operation of the API against its own OpenAPI document: requests made
from the document (valid ones, and invalid ones that must be refused) get only the documented
status codes, content types and bodies, and never a 500.

The app runs in process (ASGI) on a SQLite file, with a valid API key, an Android gateway and data
in every list, so that answers with rows are checked too. The number of examples is bounded so that
the run stays well under a minute.
"""

from __future__ import annotations

import asyncio
import base64
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
import schemathesis
from hypothesis import HealthCheck, given, settings
from schemathesis import BaseSchema, GenerationMode
from schemathesis.python import asgi

from tests.conftest import make_settings
from tidings.api.app import create_app
from tidings.config import Settings
from tidings.services import Service

PROVIDERS = {
    "fake": {"kind": "fake", "latency_ms": 0, "receipt_delay_ms": 10},
    "phone": {"kind": "gateway", "username": "phone", "password": "pw"},
}
EXAMPLES = 20
"""Examples per operation and mode: about 20 seconds for the whole document on two cores."""
GATEWAY_AUTH = "Basic " + base64.b64encode(b"phone:pw").decode()


async def seed(config: Settings) -> str:
    """An API key, and a row in every list the API shows (an alert too); returns the key."""
    service = Service(config)
    await service.start()
    try:
        key, secret = await service.store.keys.create("schemathesis")
        await service.callbacks.set_url(key.id, "https://app.example.org/events")
        app = create_app(service)
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(
            transport=transport, base_url="http://tidings.test", headers={"Authorization": f"Bearer {secret}"}
        ) as client:
            sent = await client.post("/v1/messages", json={"to": "+254712345678", "body": "hi"})
            cancelled = await client.post(f"/v1/messages/{sent.json()['id']}/cancel")
            tagged = await client.post(
                "/v1/messages", json={"to": "+254712345678", "body": "hi", "tags": ["t"]}
            )
            poll = {"messages": [{"id": "a1", "from": "+254712345670", "content": "hello", "sms_sent": 1}]}
            polled = await client.post("/api/sms", json=poll, headers={"Authorization": GATEWAY_AUTH})
            opted_out = await client.post("/v1/opt-outs", json={"number": "+254712345679"})
        answers = [sent, cancelled, tagged, polled, opted_out]
        assert [r.status_code for r in answers] == [202, 200, 202, 200, 201], [r.text for r in answers]
        # The pending rule (over nothing, in these settings) raises an alert about the message waiting.
        assert len((await service.alerts.evaluate()).raised) == 1
        return secret
    finally:
        await service.close()


def runs() -> list[tuple[str, str, GenerationMode]]:
    """Every operation of the document with valid requests, and with invalid ones where there is
    something to get wrong (a body, or a parameter that is more than any text). The document is
    read from an app that is not started (its database is never opened)."""
    with tempfile.TemporaryDirectory() as folder:
        unused = make_settings(f"sqlite:///{folder}/tidings.db", providers=PROVIDERS)
        document = create_app(Service(unused)).openapi()
    found = []
    for path, methods in document["paths"].items():
        for method, operation in methods.items():
            found.append((method.upper(), path, GenerationMode.POSITIVE))
            constrained = [p for p in operation.get("parameters", []) if set(p["schema"]) - {"type", "title"}]
            if constrained or "requestBody" in operation:
                found.append((method.upper(), path, GenerationMode.NEGATIVE))
    return found


@pytest.fixture(scope="module")
def api_schema(tmp_path_factory: pytest.TempPathFactory, sqlite_template: Path) -> Iterator[BaseSchema]:
    """The app's document, loaded by schemathesis from the running app, which answers its calls."""
    path = tmp_path_factory.mktemp("schemathesis") / "tidings.db"
    shutil.copyfile(sqlite_template, path)
    config = make_settings(f"sqlite:///{path}", providers=PROVIDERS, alerts={"pending": {"above": 0}})
    secret = asyncio.run(seed(config))
    # Started by its lifespan, in the event loop schemathesis runs the app in.
    app = create_app(Service(config))
    options = schemathesis.Config.from_dict(
        {
            # Per security scheme, so that schemathesis can also check what a wrong key gets.
            "auth": {
                "openapi": {
                    "bearerAuth": {"bearer": secret},
                    "gatewayBasic": {"username": "phone", "password": "pw"},
                }
            },
            "generation": {"database": "none"},
            # The document cannot say which text is a phone number or a cursor this API gave out,
            # so a request it allows may still be refused: with a 4xx it documents, which the
            # other checks hold it to.
            "checks": {
                "positive_data_acceptance": {"enabled": False},
                # A body made invalid by being too long may also be too large to read (413).
                "negative_data_rejection": {
                    "expected-statuses": [
                        *("400", "401", "403", "404", "405", "406", "409", "413", "415"),
                        *("422", "428", "429", "5xx"),
                    ]
                },
            },
            "operations": [
                {
                    # The gateway app's poll takes what it can by design (a malformed item is
                    # skipped, the rest kept), so an invalid body is not refused.
                    "include-operation-id": "pollGateway",
                    "checks": {"negative_data_rejection": {"enabled": False}},
                }
            ],
        }
    )
    try:
        yield schemathesis.openapi.from_asgi("/openapi.json", app, config=options)
    finally:
        # Ends the app's lifespan (closing its service) now rather than when Python exits.
        asgi.shutdown_lifespans()


@pytest.mark.parametrize(("method", "path", "mode"), runs(), ids=str)
def test_every_operation_answers_as_documented(
    api_schema: BaseSchema, method: str, path: str, mode: GenerationMode
) -> None:
    # A Hypothesis test per operation and mode from schemathesis' strategy (its own
    # `schemathesis.pytest.from_fixture` does not run under pytest 9), checked by
    # `call_and_validate` with its default checks: documented status code, content type, headers
    # and body schema, no 5xx, a wrong or missing key refused, invalid input refused.
    operation = api_schema[path][method]

    @given(case=operation.as_strategy(generation_mode=mode))
    # Derandomized: the same examples every run, so that `make test` passes or fails for a reason.
    @settings(
        max_examples=EXAMPLES,
        derandomize=True,
        deadline=None,
        database=None,
        suppress_health_check=list(HealthCheck),
    )
    def answers_as_documented(case: schemathesis.Case) -> None:
        case.call_and_validate()

    answers_as_documented()


# What schemathesis found, each fixed; these failed before the fix.


@pytest.mark.parametrize(
    ("method", "path"), [("POST", "/v1/messages"), ("POST", "/v1/opt-outs"), ("PUT", "/v1/callback-settings")]
)
async def test_a_body_that_is_not_utf8_is_400_bad_request(
    client: httpx.AsyncClient, method: str, path: str
) -> None:
    # It was 400 with the code `http_error`, which no operation documents.
    response = await client.request(
        method, path, content=b'{"to": "\xff\xfe"}', headers={"Content-Type": "application/json"}
    )

    assert response.status_code == 400
    assert response.json()["error"]["code"] == "bad_request"


@pytest.mark.parametrize(
    ("path", "param"),
    [("/v1/log", "until"), ("/v1/log", "since"), ("/v1/messages", "created_after"), ("/v1/inbound", "since")],
)
@pytest.mark.parametrize("number", ["0", "2025", "1741944413.5", "-5"])
async def test_a_number_is_not_a_time(client: httpx.AsyncClient, path: str, param: str, number: str) -> None:
    # It was read as seconds since 1970: `created_after=2025` meant 00:33:45 on 1 January 1970.
    response = await client.get(path, params={param: number})

    assert response.status_code == 422, response.text
    assert response.json()["error"]["code"] == "validation_error"
    assert response.json()["error"]["field"] == param


@pytest.mark.parametrize("send_at", [0, 1741944413, "1741944413"])
async def test_send_at_that_is_a_number_is_422(client: httpx.AsyncClient, send_at: object) -> None:
    response = await client.post(
        "/v1/messages", json={"to": "+254712345678", "body": "hi", "send_at": send_at}
    )

    assert response.status_code == 422, response.text
    assert response.json()["error"]["field"] == "send_at"


@pytest.mark.parametrize(
    "when", ["2025-03-14T09:26:53Z", "2025-03-14T09:26:53+03:00", "2025-03-14T09:26:53", "2025-03-14"]
)
async def test_times_in_iso_8601_are_still_taken(client: httpx.AsyncClient, when: str) -> None:
    response = await client.get("/v1/log", params={"since": when})

    assert response.status_code == 200, response.text


@pytest.mark.parametrize(
    ("method", "path", "params", "body"),
    [
        ("GET", "/v1/opt-outs", {"number": "nobody"}, None),
        ("POST", "/v1/opt-outs", None, {"number": "nobody"}),
        ("DELETE", "/v1/opt-outs/nobody", None, None),
        ("GET", "/v1/log", {"number": "nobody"}, None),
    ],
)
async def test_a_wrong_number_is_named_by_its_own_field(
    client: httpx.AsyncClient, method: str, path: str, params: dict[str, str] | None, body: object
) -> None:
    # The error named `to`, a field these requests do not have.
    response = await client.request(method, path, params=params, json=body)

    assert response.status_code == 422, response.text
    assert response.json()["error"]["code"] == "invalid_phone_number"
    assert response.json()["error"]["field"] == "number"
