"""The ``fake`` adapter in its HTTP mode against the fake provider server, over real HTTP both
ways: what each magic number becomes once it went through ``HttpProvider``'s pipeline."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from typing import Any

import pytest

from tests.scripted_api import ScriptedApi, answer, running, scripted_api
from tidings.domain.content import SmsContent
from tidings.domain.status import Status
from tidings.errors import PermanentProviderError, TemporaryProviderError
from tidings.providers.base import OutboundMessage, ProviderContext, WebhookRequest
from tidings.providers.fake import FakeProvider
from tidings.providers.fake_rules import PERMANENT_FAILURE, TEMPORARY_FAILURE
from tidings.providers.http import HttpRequest
from tidings.testing.fake_server import FakeProviderServer, FakeServerConfig

TOKEN = "fake-token"
SECRET = "receipt-secret"
ORDINARY = "+14155550123"
RECEIPTS = "/webhooks/fake/fk/status"


def message(to: str, message_id: str = "msg-1") -> OutboundMessage:
    return OutboundMessage(
        id=message_id,
        to=to,
        sender="Tidings",
        attempt=1,
        content=SmsContent("hello", segments=1, encoding="GSM-7"),
    )


@pytest.fixture
async def server() -> AsyncIterator[FakeProviderServer]:
    server = FakeProviderServer(
        FakeServerConfig(token=TOKEN, webhook_secret=SECRET, receipt_delay_ms=10, seed=1)
    )
    await server.start()
    try:
        yield server
    finally:
        await server.stop()


@pytest.fixture
async def receiver() -> AsyncIterator[ScriptedApi]:
    async with scripted_api() as api:
        api.route("POST", RECEIPTS, answer(200, {}))
        yield api


def build(base_url: str, **settings: Any) -> FakeProvider:
    values = {"kind": "fake", **settings}
    context = ProviderContext(base_url=base_url)
    return FakeProvider("fk", FakeProvider.settings_model.model_validate(values), context)


def over_http(server: FakeProviderServer, receiver: ScriptedApi, token: str = TOKEN) -> FakeProvider:
    return build(receiver.url, url=server.url, token=token, webhook_secret=SECRET)


@pytest.fixture
async def fake(server: FakeProviderServer, receiver: ScriptedApi) -> AsyncIterator[FakeProvider]:
    async with running(over_http(server, receiver)) as provider:
        yield provider


async def test_an_accepted_message_has_the_servers_id_and_its_signed_receipt_reads_delivered(
    fake: FakeProvider, server: FakeProviderServer, receiver: ScriptedApi
) -> None:
    result = await fake.send(message(ORDINARY))
    [provider_id] = result.provider_message_ids
    assert provider_id.startswith("FK") and result.provider_status == "accepted"

    async with asyncio.timeout(5):
        while not receiver.hits(RECEIPTS):
            await asyncio.sleep(0.01)
    [seen] = receiver.seen
    request = WebhookRequest(url=receiver.url + RECEIPTS, headers=seen.headers, body=seen.body)
    fake.verify_webhook("status", request)
    [report] = (await fake.parse_webhook("status", request)).reports
    assert (report.message_id, report.provider_message_id) == ("msg-1", provider_id)
    assert report.report.status is Status.DELIVERED


async def test_a_permanent_refusal_keeps_the_servers_code(fake: FakeProvider) -> None:
    with pytest.raises(PermanentProviderError) as caught:
        await fake.send(message(PERMANENT_FAILURE))
    assert caught.value.code == "invalid_number"
    assert caught.value.raw["error"]["code"] == "invalid_number"


async def test_a_throttled_send_is_temporary_with_the_servers_retry_after(fake: FakeProvider) -> None:
    with pytest.raises(TemporaryProviderError) as caught:
        await fake.send(message(TEMPORARY_FAILURE))
    assert (caught.value.code, caught.value.retry_after) == ("throttled", 1.0)


async def test_a_wrong_token_is_a_permanent_refusal(
    server: FakeProviderServer, receiver: ScriptedApi
) -> None:
    async with running(over_http(server, receiver, token="not-the-token")) as provider:
        with pytest.raises(PermanentProviderError) as caught:
            await provider.send(message(ORDINARY))
    assert caught.value.code == "unauthorized"
    assert server.stats["accepted"] == 0


async def test_in_process_the_fake_sends_without_an_http_session() -> None:
    async with running(build("http://127.0.0.1:9", latency_ms=0, receipt_delay_ms=0)) as provider:
        result = await provider.send(message(ORDINARY))
        assert result.provider_status == "accepted"
        with pytest.raises(RuntimeError, match="not started"):
            await provider.call(HttpRequest("GET", "http://127.0.0.1:9/"))
