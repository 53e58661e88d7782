"""The fast lane (``api/fast.py``) answers ``POST /v1/messages`` below FastAPI. It must answer
exactly as the FastAPI route does: the same status, error code and field for every request, and
the same message for a good one. Each test sends the same request to an app with the lane and to
one without it, over one service and database."""

from __future__ import annotations

import base64
import contextlib
import gzip
import json
from collections.abc import AsyncIterator
from typing import Any

import httpx
import pytest
from hypothesis import HealthCheck, given, settings

from tests.conftest import make_settings
from tests.integration.test_api_errors import KENYA
from tests.integration.test_hostile_input import encoded, payloads
from tidings.api.app import create_app
from tidings.api.common import get_service
from tidings.providers.fake import sign
from tidings.services import Service
from tidings.store import Store

Pair = tuple[httpx.AsyncClient, httpx.AsyncClient]


@contextlib.asynccontextmanager
async def both_apps(service: Service, headers: dict[str, str] | None = None) -> AsyncIterator[Pair]:
    """A client of the app with the lane and a client of the app without it, over ``service``."""
    clients = [
        httpx.AsyncClient(
            transport=httpx.ASGITransport(
                app=create_app(service, fast_lane=lane),
                raise_app_exceptions=False,
                client=("127.0.0.1", 5000),
            ),
            base_url="http://tidings.test",
            headers=headers,
        )
        for lane in (True, False)
    ]
    try:
        yield clients[0], clients[1]
    finally:
        for client in clients:
            await client.aclose()


@contextlib.asynccontextmanager
async def service_with(database_url: str, providers: dict[str, Any]) -> AsyncIterator[Pair]:
    """Both apps over a service of its own with ``providers``."""
    service = Service(make_settings(database_url, providers=providers), store=Store.connect(database_url))
    await service.start()
    try:
        async with both_apps(service) as apps:
            yield apps
    finally:
        await service.close()


@pytest.fixture
async def pair(service: Service, api_key: str) -> AsyncIterator[Pair]:
    async with both_apps(service, {"Authorization": f"Bearer {api_key}"}) as apps:
        yield apps


def essence(response: httpx.Response) -> tuple[int, Any, str | None]:
    """What a client reads from an answer: the status, the body (without what differs between two
    messages) and a Retry-After."""
    body = response.json()
    if isinstance(body, dict) and "error" not in body:
        # The id and the times are each message's own.
        body = {k: v for k, v in body.items() if k != "id" and not k.endswith("_at")}
    assert response.headers["content-type"] == "application/json"
    return response.status_code, body, response.headers.get("retry-after")


async def both(pair: Pair, content: bytes, headers: dict[str, str] | None = None) -> tuple[Any, Any]:
    fast, framework = pair
    headers = {"Content-Type": "application/json", **(headers or {})}
    a = await fast.post("/v1/messages", content=content, headers=headers)
    b = await framework.post("/v1/messages", content=content, headers=headers)
    return essence(a), essence(b)


GOOD = {"to": KENYA, "body": "Your appointment is tomorrow at 9:00."}

CASES: dict[str, tuple[bytes, dict[str, str]]] = {
    "good": (json.dumps(GOOD).encode(), {}),
    "everything": (
        json.dumps(
            {
                **GOOD,
                "sender": "CLINIC",
                "send_at": "2031-03-20T07:00:00+03:00",
                "tags": ["reminders", "kibera"],
                "metadata": {"patient": "P-1042", "big": 10**30, "nested": {"a": [1, 2.5, None]}},
                "callback_url": "https://app.example.org/sms-events",
                "ordered": True,
                "provider": "fake",
            }
        ).encode(),
        {},
    ),
    "national number": (json.dumps({**GOOD, "to": "0712345678"}).encode(), {}),
    "not json": (b"{to: +254", {}),
    "not an object": (b"[1, 2]", {}),
    "empty": (b"", {}),
    "unknown field": (json.dumps({**GOOD, "colour": "red"}).encode(), {}),
    "no recipient": (json.dumps({"body": "hi"}).encode(), {}),
    "bad number": (json.dumps({**GOOD, "to": "+999"}).encode(), {}),
    "no body": (json.dumps({"to": KENYA}).encode(), {}),
    "unknown provider": (json.dumps({**GOOD, "provider": "nope"}).encode(), {}),
    "lone surrogate": (b'{"to": "+254712345678", "body": "\\ud800"}', {}),
    "NUL": (b'{"to": "+254712345678", "body": "a\\u0000b"}', {}),
    "metadata callback": (json.dumps({**GOOD, "callback_url": "http://169.254.169.254/x"}).encode(), {}),
    "text/plain": (json.dumps(GOOD).encode(), {"Content-Type": "text/plain"}),
    "charset": (json.dumps(GOOD).encode(), {"Content-Type": "application/json; charset=UTF-8"}),
    "no key": (json.dumps(GOOD).encode(), {"Authorization": ""}),
    "wrong key": (json.dumps(GOOD).encode(), {"Authorization": "Bearer tdg_nope"}),
    "basic auth": (json.dumps(GOOD).encode(), {"Authorization": "Basic dXNlcjpwdw=="}),
    "bad json and no key": (b"{", {"Authorization": ""}),
    "bad field and no key": (json.dumps({"to": 5}).encode(), {"Authorization": ""}),
    "idempotency key too long": (json.dumps(GOOD).encode(), {"Idempotency-Key": "k" * 300}),
}


@pytest.mark.parametrize("case", CASES)
async def test_the_lane_answers_as_the_route_does(pair: Pair, case: str) -> None:
    content, headers = CASES[case]
    fast, framework = await both(pair, content, headers)
    assert fast == framework


async def test_an_idempotent_retry_and_a_conflict_answer_alike(pair: Pair, store: Store) -> None:
    fast, framework = pair
    for client, key in ((fast, "lane-1"), (framework, "route-1")):
        first = await client.post("/v1/messages", json=GOOD, headers={"Idempotency-Key": key})
        again = await client.post("/v1/messages", json=GOOD, headers={"Idempotency-Key": key})
        other = await client.post(
            "/v1/messages", json={**GOOD, "body": "else"}, headers={"Idempotency-Key": key}
        )
        assert (first.status_code, again.status_code, other.status_code) == (202, 200, 409)
        assert again.json()["id"] == first.json()["id"]
        assert other.json()["error"]["code"] == "idempotency_conflict"


async def test_a_narrow_key_is_refused_alike(pair: Pair, store: Store) -> None:
    _key, secret = await store.keys.create("reader", scopes=frozenset({"read"}))
    fast, framework = await both(pair, json.dumps(GOOD).encode(), {"Authorization": f"Bearer {secret}"})
    assert fast == framework
    assert fast[0] == 403


async def test_the_lane_answers_an_ordinary_send_without_the_route(service: Service, api_key: str) -> None:
    """The lane really is taken: with the route's service dependency broken, an ordinary send
    still succeeds, and a request the lane hands over reaches the (broken) route."""
    app = create_app(service)

    def broken() -> Service:
        raise RuntimeError("the route was called")

    app.dependency_overrides[get_service] = broken
    transport = httpx.ASGITransport(app=app, raise_app_exceptions=False)
    headers = {"Authorization": f"Bearer {api_key}"}
    async with httpx.AsyncClient(transport=transport, base_url="http://t", headers=headers) as client:
        assert (await client.post("/v1/messages", json=GOOD)).status_code == 202
        handed_over = await client.post("/v1/messages", content=b"x", headers={"Content-Type": "text/plain"})
        assert handed_over.status_code == 500


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(payload=payloads)
async def test_any_json_is_answered_alike(pair: Pair, payload: dict[str, Any]) -> None:
    fast, framework = await both(pair, encoded(payload))
    assert fast == framework


# -- webhooks -------------------------------------------------------------------------------------

SECRET = "lane-secret"


@pytest.fixture
async def hooks(database_url: str, store: Store) -> AsyncIterator[Pair]:
    """Both apps over a service whose fake provider signs its receipts."""
    fake = {"kind": "fake", "url": "http://127.0.0.1:9", "webhook_secret": SECRET}
    async with service_with(database_url, {"fake": fake}) as apps:
        yield apps


def receipt(status: str = "delivered") -> bytes:
    return json.dumps({"id": "fake-1", "status": status}).encode()


WEBHOOKS: dict[str, tuple[str, bytes, dict[str, str]]] = {
    "signed receipt": (
        "/webhooks/fake/fake/status",
        receipt(),
        {"X-Fake-Signature": sign(SECRET, receipt())},
    ),
    "with a query": (
        "/webhooks/fake/fake/status?a=1&b=%20",
        receipt(),
        {"X-Fake-Signature": sign(SECRET, receipt())},
    ),
    "forged": ("/webhooks/fake/fake/status", receipt(), {"X-Fake-Signature": sign("guess", receipt())}),
    "unsigned": ("/webhooks/fake/fake/status", receipt(), {}),
    "not a receipt": ("/webhooks/fake/fake/status", b"[", {"X-Fake-Signature": sign(SECRET, b"[")}),
    "unknown event": ("/webhooks/fake/fake/nope", receipt(), {"X-Fake-Signature": sign(SECRET, receipt())}),
    "unknown provider": ("/webhooks/fake/other/status", receipt(), {}),
    "wrong kind": ("/webhooks/twilio/fake/status", receipt(), {}),
    "too deep": ("/webhooks/fake/fake/status/more", receipt(), {}),
    "too short": ("/webhooks/fake/fake", receipt(), {}),
    "empty part": ("/webhooks/fake//status", receipt(), {}),
}


@pytest.mark.parametrize("case", WEBHOOKS)
async def test_a_webhook_is_answered_alike(hooks: Pair, store: Store, case: str) -> None:
    path, content, headers = WEBHOOKS[case]
    answers = []
    for client in hooks:
        before = await store.webhooks.search(limit=1000)
        answer = await client.post(
            path, content=content, headers={"Content-Type": "application/json", **headers}
        )
        after = await store.webhooks.search(limit=1000)
        # What the webhook log kept of it: the URL, headers, peer and outcome, the same either way.
        logged = [
            {k: v for k, v in vars(entry).items() if k not in ("id", "received_at")}
            for entry in after[: len(after) - len(before)]
        ]
        answers.append((answer.status_code, answer.headers.get("content-type"), answer.text, logged))
    assert answers[0] == answers[1]


# -- the Android gateway's poll --------------------------------------------------------------------


@pytest.fixture
async def phones(database_url: str, store: Store) -> AsyncIterator[Pair]:
    """Both apps over a service with an Android gateway, ``phone`` / ``pw``."""
    providers = {
        "fake": {"kind": "fake", "latency_ms": 0, "receipt_delay_ms": 10},
        "phone": {"kind": "gateway", "username": "phone", "password": "pw"},
    }
    async with service_with(database_url, providers) as apps:
        yield apps


PHONE = "Basic " + base64.b64encode(b"phone:pw").decode()
JSON_TYPE = {"Content-Type": "application/json"}
UPDATE = json.dumps({"updates": [{"id": "no-such-message", "status": "SENT"}], "messages": []}).encode()
INBOUND = json.dumps(
    {
        "messages": [
            {"id": "in-1", "from": "+254712345678", "content": "STOP", "sms_sent": 1, "sms_received": 2}
        ]
    }
).encode()

POLLS: dict[str, tuple[str, bytes, dict[str, str]]] = {
    "empty": ("/api/sms", b"{}", {"Authorization": PHONE, **JSON_TYPE}),
    "trailing slash": ("/api/sms/", b"{}", {"Authorization": PHONE, **JSON_TYPE}),
    "unknown update": ("/api/sms", UPDATE, {"Authorization": PHONE, **JSON_TYPE}),
    "inbound": ("/api/sms", INBOUND, {"Authorization": PHONE, **JSON_TYPE}),
    "gzip": (
        "/api/sms",
        gzip.compress(b"{}"),
        {"Authorization": PHONE, "Content-Encoding": "gzip", **JSON_TYPE},
    ),
    "not gzip": ("/api/sms", b"{}", {"Authorization": PHONE, "Content-Encoding": "gzip", **JSON_TYPE}),
    "no credentials": ("/api/sms", b"{}", JSON_TYPE),
    "wrong password": ("/api/sms", b"{}", {"Authorization": "Basic cGhvbmU6bm8=", **JSON_TYPE}),
    "bearer": ("/api/sms", b"{}", {"Authorization": "Bearer x", **JSON_TYPE}),
    "text": ("/api/sms", b"{}", {"Authorization": PHONE, "Content-Type": "text/plain"}),
    "not json": ("/api/sms", b"{", {"Authorization": PHONE, **JSON_TYPE}),
    "not an object": ("/api/sms", b"[]", {"Authorization": PHONE, **JSON_TYPE}),
}


@pytest.mark.parametrize("case", POLLS)
async def test_a_gateway_poll_is_answered_alike(phones: Pair, case: str) -> None:
    path, content, headers = POLLS[case]
    answers = []
    for client in phones:
        answer = await client.post(path, content=content, headers=headers)
        answers.append(
            (
                answer.status_code,
                answer.headers.get("content-type"),
                answer.headers.get("www-authenticate"),
                answer.text,
            )
        )
    assert answers[0] == answers[1]
