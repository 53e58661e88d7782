"""The fake provider HTTP server, exercised over real sockets."""

from __future__ import annotations

import asyncio
import hmac
import signal
import sys
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from typing import Any

import aiohttp
import pytest
from aiohttp import web

from tidings.providers.fake_rules import (
    NO_RECEIPT,
    PERMANENT_FAILURE,
    RECEIPT_FAILED,
    TEMPORARY_FAILURE,
    TEMPORARY_THEN_OK,
)
from tidings.testing.fake_server import FakeProviderServer, FakeServerConfig, sign

TOKEN = "test-token"
SECRET = "webhook-secret"
RECEIPT_DELAY_MS = 20.0
ORDINARY = "+14155550123"


@dataclass
class Receipt:
    body: bytes
    headers: dict[str, str]
    payload: dict[str, Any]


@dataclass
class Receiver:
    """A small web app that collects receipts; it can answer 500 to the first few."""

    fail_first: int = 0
    receipts: list[Receipt] = field(default_factory=list)
    hits: int = 0
    arrived: asyncio.Queue[Receipt] = field(default_factory=asyncio.Queue)
    url: str = ""
    _runner: web.AppRunner | None = None

    async def _handle(self, request: web.Request) -> web.Response:
        self.hits += 1
        body = await request.read()
        if self.hits <= self.fail_first:
            return web.Response(status=500)
        receipt = Receipt(body=body, headers=dict(request.headers), payload=await request.json())
        self.receipts.append(receipt)
        self.arrived.put_nowait(receipt)
        return web.Response(status=204)

    async def start(self) -> None:
        app = web.Application()
        app.router.add_post("/receipts", self._handle)
        self._runner = web.AppRunner(app, access_log=None)
        await self._runner.setup()
        site = web.TCPSite(self._runner, "127.0.0.1", 0)
        await site.start()
        self.url = f"http://127.0.0.1:{self._runner.addresses[0][1]}/receipts"

    async def stop(self) -> None:
        if self._runner is not None:
            await self._runner.cleanup()

    async def next_receipt(self, timeout: float = 5.0) -> Receipt:
        return await asyncio.wait_for(self.arrived.get(), timeout)


@pytest.fixture
async def receiver() -> AsyncIterator[Receiver]:
    r = Receiver()
    await r.start()
    yield r
    await r.stop()


@pytest.fixture
async def fake() -> AsyncIterator[FakeProviderServer]:
    server = FakeProviderServer(
        FakeServerConfig(token=TOKEN, webhook_secret=SECRET, receipt_delay_ms=RECEIPT_DELAY_MS, seed=7)
    )
    await server.start()
    yield server
    await server.stop()


@pytest.fixture
async def client() -> AsyncIterator[aiohttp.ClientSession]:
    async with aiohttp.ClientSession(headers={"Authorization": f"Bearer {TOKEN}"}) as session:
        yield session


async def send(
    client: aiohttp.ClientSession,
    fake: FakeProviderServer,
    to: str,
    receiver: Receiver | None = None,
    reference: str | None = None,
) -> tuple[int, dict[str, str], dict[str, Any]]:
    message = {
        "to": to,
        "from": "Tidings",
        "body": "hello",
        "reference": reference or uuid.uuid4().hex,
        "receipt_url": receiver.url if receiver is not None else None,
    }
    async with client.post(f"{fake.url}/v1/messages", json=message) as response:
        return response.status, dict(response.headers), await response.json()


async def test_ordinary_number_is_accepted_and_a_signed_delivered_receipt_follows(
    fake: FakeProviderServer, receiver: Receiver, client: aiohttp.ClientSession
) -> None:
    status, _, answer = await send(client, fake, ORDINARY, receiver, reference="ref-1")
    assert status == 201
    assert answer["status"] == "accepted"
    assert answer["reference"] == "ref-1"
    assert answer["to"] == ORDINARY
    assert answer["id"].startswith("FK") and len(answer["id"]) == 34
    int(answer["id"][2:], 16)

    receipt = await receiver.next_receipt()
    assert receipt.payload["id"] == answer["id"]
    assert receipt.payload["reference"] == "ref-1"
    assert receipt.payload["status"] == "delivered"
    assert receipt.payload["error_code"] is None
    assert receipt.payload["error_message"] is None
    assert receipt.payload["timestamp"].endswith("Z")
    assert receipt.headers["Content-Type"] == "application/json"
    assert hmac.compare_digest(receipt.headers["X-Fake-Signature"], sign(SECRET, receipt.body))
    assert receipt.headers["X-Fake-Signature"] != sign("wrong secret", receipt.body)

    await fake.wait_for_receipts(5)
    assert fake.stats["receipts_sent"] == 1
    assert fake.stats["receipts_failed"] == 0


async def test_receipt_failed_number_gets_a_failed_receipt(
    fake: FakeProviderServer, receiver: Receiver, client: aiohttp.ClientSession
) -> None:
    status, _, answer = await send(client, fake, RECEIPT_FAILED, receiver)
    assert status == 201
    receipt = await receiver.next_receipt()
    assert receipt.payload["id"] == answer["id"]
    assert receipt.payload["status"] == "failed"
    assert receipt.payload["error_code"] == "undeliverable"
    assert receipt.payload["error_message"]


async def test_no_receipt_number_gets_no_receipt(
    fake: FakeProviderServer, receiver: Receiver, client: aiohttp.ClientSession
) -> None:
    status, _, _ = await send(client, fake, NO_RECEIPT, receiver)
    assert status == 201
    await asyncio.sleep(RECEIPT_DELAY_MS * 3 / 1000)
    await fake.wait_for_receipts(5)
    assert receiver.hits == 0
    assert fake.stats["accepted"] == 1


async def test_permanent_failure_is_400_invalid_number(
    fake: FakeProviderServer, receiver: Receiver, client: aiohttp.ClientSession
) -> None:
    status, _, answer = await send(client, fake, PERMANENT_FAILURE, receiver)
    assert status == 400
    assert answer["error"]["code"] == "invalid_number"
    assert answer["error"]["message"]
    assert fake.stats["rejected"] == 1


async def test_temporary_failure_is_429_with_retry_after(
    fake: FakeProviderServer, client: aiohttp.ClientSession
) -> None:
    for _ in range(2):
        status, headers, answer = await send(client, fake, TEMPORARY_FAILURE, reference="always-busy")
        assert status == 429
        assert headers["Retry-After"] == "1"
        assert answer["error"]["code"] == "throttled"


async def test_temporary_then_ok_is_429_then_201_for_the_same_reference(
    fake: FakeProviderServer, client: aiohttp.ClientSession
) -> None:
    first, headers, _ = await send(client, fake, TEMPORARY_THEN_OK, reference="busy-once")
    assert first == 429
    assert headers["Retry-After"] == "1"
    second, _, answer = await send(client, fake, TEMPORARY_THEN_OK, reference="busy-once")
    assert second == 201
    assert answer["reference"] == "busy-once"
    assert fake.stats["duplicates"] == []


async def test_wrong_token_is_401(fake: FakeProviderServer) -> None:
    message = {"to": ORDINARY, "body": "hi", "reference": "r"}
    async with aiohttp.ClientSession() as session:
        for headers in ({"Authorization": "Bearer nope"}, {}):
            async with session.post(f"{fake.url}/v1/messages", json=message, headers=headers) as response:
                assert response.status == 401
                assert (await response.json())["error"]["code"] == "unauthorized"
    assert fake.stats["accepted"] == 0


async def test_bad_json_and_bad_fields_are_400(
    fake: FakeProviderServer, client: aiohttp.ClientSession
) -> None:
    bodies = [
        b"{not json",
        b"[1, 2]",
        b'{"body": "hi", "reference": "r"}',
        b'{"to": "+14155550123", "body": 5, "reference": "r"}',
        b'{"to": "+14155550123", "body": "hi"}',
    ]
    for raw in bodies:
        async with client.post(
            f"{fake.url}/v1/messages", data=raw, headers={"Content-Type": "application/json"}
        ) as response:
            assert response.status == 400, raw
            assert (await response.json())["error"]["code"] == "bad_request"
    assert fake.stats["rejected"] == len(bodies)
    assert fake.stats["requests"] == len(bodies)


async def test_stats_report_duplicates_and_reset_clears_them(
    fake: FakeProviderServer, client: aiohttp.ClientSession
) -> None:
    for reference in ("dup", "dup", "single"):
        status, _, _ = await send(client, fake, ORDINARY, reference=reference)
        assert status == 201
    async with client.get(f"{fake.url}/_stats") as response:
        stats = await response.json()
    assert stats == {
        "requests": 3,
        "accepted": 3,
        "rejected": 0,
        "references": 2,
        "duplicates": ["dup"],
        "receipts_sent": 0,
        "receipts_failed": 0,
    }
    assert fake.stats == stats

    async with client.post(f"{fake.url}/_reset") as response:
        assert response.status == 204
    assert fake.stats["requests"] == 0
    assert fake.stats["duplicates"] == []


async def test_receipt_is_retried_after_server_errors(
    fake: FakeProviderServer, receiver: Receiver, client: aiohttp.ClientSession
) -> None:
    receiver.fail_first = 2
    status, _, answer = await send(client, fake, ORDINARY, receiver)
    assert status == 201
    receipt = await receiver.next_receipt(timeout=10)
    assert receipt.payload["id"] == answer["id"]
    assert receiver.hits == 3
    await fake.wait_for_receipts(5)
    assert fake.stats["receipts_sent"] == 1
    assert fake.stats["receipts_failed"] == 0


async def test_health_answers(fake: FakeProviderServer, client: aiohttp.ClientSession) -> None:
    async with client.get(f"{fake.url}/") as response:
        assert response.status == 200
    async with client.head(f"{fake.url}/") as response:
        assert response.status == 200


async def test_command_line_prints_listening_line_serves_and_stops_on_sigterm() -> None:
    process = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "tidings.testing.fake_server",
        "--port",
        "0",
        "--token",
        TOKEN,
        "--seed",
        "3",
        stdout=asyncio.subprocess.PIPE,
    )
    try:
        assert process.stdout is not None
        line = (await asyncio.wait_for(process.stdout.readline(), 20)).decode()
        assert line.startswith("listening on http://127.0.0.1:")
        url = line.removeprefix("listening on ").strip()

        async with aiohttp.ClientSession(headers={"Authorization": f"Bearer {TOKEN}"}) as session:
            message = {"to": ORDINARY, "body": "hi", "reference": "cli", "receipt_url": None}
            async with session.post(f"{url}/v1/messages", json=message) as response:
                assert response.status == 201
                assert (await response.json())["reference"] == "cli"

        process.send_signal(signal.SIGTERM)
        assert await asyncio.wait_for(process.wait(), 20) == 0
        assert await process.stdout.read() == b""
    finally:
        if process.returncode is None:
            process.kill()
            await process.wait()
