"""Callbacks go only where they may, say only what is safe, and are always signed.

Refused destinations are checked at acceptance, with no worker running: nothing here makes tidings
connect anywhere but loopback."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator
from typing import Any

import httpx
import orjson
import pytest
from aiohttp import web

from tests.live import Live, live_service
from tidings import verify_signature
from tidings.domain.destinations import networks
from tidings.worker.callbacks import CheckedResolver, DestinationRefused

PERSON = "+254712345678"

REFUSED = [
    "http://127.0.0.1:8000/hook",
    "http://localhost/hook",
    "http://app.localhost/hook",
    "http://[::1]/hook",
    "http://0.0.0.0/hook",
    "http://169.254.169.254/latest/meta-data/",
    "http://[fe80::1]/hook",
    "http://10.0.0.5/hook",
    "http://172.16.0.1/hook",
    "http://192.168.1.10/hook",
    "http://224.0.0.1/hook",
    "http://[::ffff:127.0.0.1]/hook",
]


@pytest.fixture
async def closed(database_url: str) -> AsyncIterator[Live]:
    """A service with the default settings for callbacks (no network opened) and no worker."""
    async with live_service(database_url, worker=False, callback_allow_networks=[]) as live:
        yield live


@pytest.mark.parametrize("url", REFUSED)
async def test_a_message_callback_url_inside_the_network_is_refused_at_acceptance(
    closed: Live, url: str
) -> None:
    response = await closed.client.post(
        "/v1/messages", json={"to": PERSON, "body": "hi", "callback_url": url}
    )
    assert response.status_code == 422, response.text
    assert response.json()["error"]["code"] == "callback_url_not_allowed"
    assert response.json()["error"]["field"] == "callback_url"
    assert (await closed.client.get("/v1/messages")).json()["data"] == []


@pytest.mark.parametrize("url", REFUSED)
async def test_a_default_callback_url_inside_the_network_is_refused(closed: Live, url: str) -> None:
    response = await closed.client.put("/v1/callback-settings", json={"url": url})
    assert response.status_code == 422
    assert response.json()["error"]["code"] == "callback_url_not_allowed"
    assert (await closed.client.get("/v1/callback-settings")).json()["url"] is None


async def test_an_operator_can_open_a_private_network(database_url: str) -> None:
    async with live_service(database_url, worker=False, callback_allow_networks=["10.0.0.0/8"]) as live:
        ok = await live.client.post(
            "/v1/messages", json={"to": PERSON, "body": "hi", "callback_url": "http://10.1.2.3/hook"}
        )
        assert ok.status_code == 202
        other = await live.client.post(
            "/v1/messages", json={"to": PERSON, "body": "hi", "callback_url": "http://192.168.1.1/hook"}
        )
        assert other.status_code == 422


async def test_a_name_that_resolves_inside_is_refused_when_connecting() -> None:
    # DNS rebinding: the name passed at acceptance, then points inside. The resolver refuses it,
    # so no connection is attempted at all.
    resolver = CheckedResolver(networks([]))
    with pytest.raises(DestinationRefused, match="loopback"):
        await resolver.resolve("localhost", 80)
    opened = CheckedResolver(networks(["127.0.0.0/8"]))
    assert {r["host"] for r in await opened.resolve("localhost", 80)} == {"127.0.0.1"}


@pytest.fixture
async def receiver() -> AsyncIterator[dict[str, Any]]:
    """A receiver that refuses with a body holding something it would not want shown."""
    got: list[tuple[dict[str, str], bytes]] = []

    async def handle(request: web.Request) -> web.Response:
        got.append((dict(request.headers), await request.read()))
        return web.Response(status=410, text="internal: db password is hunter2")

    app = web.Application()
    app.router.add_post("/hook", handle)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    await web.TCPSite(runner, "127.0.0.1", 0).start()
    try:
        yield {"url": f"http://127.0.0.1:{runner.addresses[0][1]}/hook", "got": got}
    finally:
        await runner.cleanup()


async def test_a_refused_callback_keeps_only_the_status_and_a_short_reason(
    database_url: str, receiver: dict[str, Any]
) -> None:
    async with live_service(database_url) as live:
        sent = await live.send(to=PERSON, body="hi", callback_url=receiver["url"])
        await live.wait_for(sent["id"], "delivered")
        # One callback per change (sending, sent, delivered), each refused with 410.
        async with asyncio.timeout(10):
            while True:
                rows = (await live.client.get("/v1/callbacks", params={"message_id": sent["id"]})).json()[
                    "data"
                ]
                if len(rows) == 3 and all(r["status"] == "failed" for r in rows):
                    break
                await asyncio.sleep(0.02)
        for row in rows:
            assert row["last_status_code"] == 410
            assert row["last_error"] == "HTTP 410 Gone"
        assert len(receiver["got"]) == 3
        assert "hunter2" not in orjson.dumps(rows).decode()


async def test_a_rotated_secret_signs_beside_the_new_one_during_its_grace(
    database_url: str, receiver: dict[str, Any]
) -> None:
    async with live_service(database_url, worker=False) as live:
        old = (await live.client.get("/v1/callback-settings")).json()["secret"]
        rotated = (await live.client.post("/v1/callback-settings/rotate-secret")).json()
        new = rotated["secret"]
        assert new and new != old and rotated["previous_secret_until"] is not None
        sent = await live.send(to=PERSON, body="hi", callback_url=receiver["url"])
        await live.service.store.messages.cancel(sent["id"], reason="to have a callback to send")
        [due] = await live.service.store.callbacks.take_due(limit=10, lease_seconds=60)
        assert due.secrets == (new, old)
    # What a receiver gets verifies with either secret.
    from tidings.signatures import sign

    body = orjson.dumps(due.payload)
    header = sign(body, due.secrets)
    assert verify_signature(body, header, new) and verify_signature(body, header, old)
    assert not verify_signature(body, header, "whsec_other")
    assert int(header.split(",")[0][2:]) <= time.time() + 1


async def test_every_key_has_a_signing_secret_from_its_creation(closed: Live) -> None:
    settings = (await closed.client.get("/v1/callback-settings")).json()
    assert settings["url"] is None and settings["secret"].startswith("whsec_")
    async with httpx.AsyncClient() as raw:
        # And the callback-settings of no key are shown without one.
        assert (await raw.get(closed.url + "/v1/callback-settings")).status_code == 401
