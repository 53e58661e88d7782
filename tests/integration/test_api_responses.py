"""Every answer has exactly the fields its documented model has: none undocumented, none missing,
each of the documented type. Checked on real data (a message with its history, a callback, an
inbound SMS, an opt-out, a gateway that polled) on SQLite and PostgreSQL."""

from __future__ import annotations

import base64
from collections.abc import AsyncIterator
from typing import Any

import httpx
import pytest
from pydantic import BaseModel

from tests.conftest import make_settings
from tidings.api import schemas
from tidings.api.app import create_app
from tidings.services import Service
from tidings.store import Store

GATEWAY = {"kind": "gateway", "username": "phone", "password": "pw"}
BASIC = "Basic " + base64.b64encode(b"phone:pw").decode()


@pytest.fixture
async def api(store: Store, database_url: str, api_key: str) -> AsyncIterator[httpx.AsyncClient]:
    """The API with the fake provider and an Android gateway, and data in every list."""
    providers = {"fake": {"kind": "fake", "latency_ms": 0, "receipt_delay_ms": 10}, "phone": GATEWAY}
    service = Service(make_settings(database_url, providers=providers), store=Store.connect(database_url))
    await service.start()
    transport = httpx.ASGITransport(app=create_app(service))
    try:
        async with httpx.AsyncClient(
            transport=transport,
            base_url="http://tidings.test",
            headers={"Authorization": f"Bearer {api_key}"},
        ) as client:
            await client.put("/v1/callback-settings", json={"url": "https://app.example.org/events"})
            sent = await client.post(
                "/v1/messages", json={"to": "+254712345678", "body": "hi", "tags": ["t"]}
            )
            assert (await client.post(f"/v1/messages/{sent.json()['id']}/cancel")).status_code == 200
            poll = {"messages": [{"id": "a1", "from": "+254712345670", "content": "hello", "sms_sent": 1}]}
            assert (
                await client.post("/api/sms", json=poll, headers={"Authorization": BASIC})
            ).status_code == 200
            assert (await client.post("/v1/opt-outs", json={"number": "+254712345679"})).status_code == 201
            yield client
    finally:
        await service.close()


def assert_exactly(model: type[BaseModel], value: Any) -> None:
    """``value`` is valid for ``model`` and has its fields, no more and no fewer."""
    model.model_validate(value)
    names = {field.alias or name for name, field in model.model_fields.items()}
    required = {field.alias or name for name, field in model.model_fields.items() if field.is_required()}
    assert isinstance(value, dict)
    assert set(value) - names == set(), f"{model.__name__}: undocumented fields"
    assert required - set(value) == set(), f"{model.__name__}: documented fields missing"


def assert_page(page: type[BaseModel], item: type[BaseModel], value: Any) -> None:
    assert_exactly(page, value)
    assert value["data"], f"{page.__name__}: nothing to check"
    for entry in value["data"]:
        assert_exactly(item, entry)


async def test_messages_answer_as_documented(api: httpx.AsyncClient) -> None:
    listed = (await api.get("/v1/messages")).json()
    assert_page(schemas.MessagePage, schemas.MessageOut, listed)
    message = (await api.get(f"/v1/messages/{listed['data'][0]['id']}")).json()
    assert_exactly(schemas.MessageOut, message)
    assert message["events"]
    for event in message["events"]:
        assert_exactly(schemas.EventOut, event)
    sent = await api.post("/v1/messages", json={"to": "+254712345678", "body": "again"})
    assert_exactly(schemas.MessageOut, sent.json())


async def test_inbound_log_and_gateways_answer_as_documented(api: httpx.AsyncClient) -> None:
    assert_page(schemas.InboundPage, schemas.InboundOut, (await api.get("/v1/inbound")).json())
    assert_page(schemas.LogPage, schemas.LogEntry, (await api.get("/v1/log")).json())
    assert_page(schemas.GatewayList, schemas.GatewayOut, (await api.get("/v1/gateways")).json())
    assert_exactly(schemas.GatewayCheckOut, (await api.get("/api/sms", headers={"Authorization": ""})).json())


async def test_opt_outs_answer_as_documented(api: httpx.AsyncClient) -> None:
    assert_page(schemas.OptOutPage, schemas.OptOutOut, (await api.get("/v1/opt-outs")).json())
    again = await api.post("/v1/opt-outs", json={"number": "+254712345679"})
    assert again.status_code == 200
    assert_exactly(schemas.OptOutAdded, again.json())


async def test_callbacks_answer_as_documented(api: httpx.AsyncClient) -> None:
    page = (await api.get("/v1/callbacks")).json()
    assert_page(schemas.CallbackPage, schemas.CallbackOut, page)
    assert {c["type"] for c in page["data"]} == {"message.status", "inbound"}
    assert_exactly(schemas.CallbackSettingsOut, (await api.get("/v1/callback-settings")).json())
    assert_exactly(
        schemas.CallbackSettingsOut, (await api.post("/v1/callback-settings/rotate-secret")).json()
    )


async def test_health_answers_as_documented(api: httpx.AsyncClient) -> None:
    assert_exactly(schemas.HealthOut, (await api.get("/healthz")).json())
