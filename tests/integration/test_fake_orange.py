"""The fake Orange SMS API, exercised over real sockets."""

from __future__ import annotations

import asyncio
import base64
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import quote

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
from tidings.testing.fake_orange import (
    DELIVERY_UNCERTAIN,
    POLICY_ERROR,
    FakeOrangeConfig,
    FakeOrangeServer,
)

SENDER = "tel:+2250700000000"
ORDINARY = "tel:+14155550123"
NOTIFY_DELAY_MS = 5.0


@dataclass
class Receiver:
    """A small web app that collects the JSON posted to it."""

    arrived: asyncio.Queue[dict[str, Any]] = field(default_factory=asyncio.Queue)
    url: str = ""
    _runner: web.AppRunner | None = None

    async def _handle(self, request: web.Request) -> web.Response:
        self.arrived.put_nowait(await request.json())
        return web.Response(status=204)

    async def start(self) -> None:
        app = web.Application()
        app.router.add_post("/orange", self._handle)
        self._runner = web.AppRunner(app, access_log=None)
        await self._runner.setup()
        site = web.TCPSite(self._runner, "127.0.0.1", 0)
        await site.start()
        self.url = f"http://127.0.0.1:{self._runner.addresses[0][1]}/orange"

    async def stop(self) -> None:
        if self._runner is not None:
            await self._runner.cleanup()

    async def next(self, timeout: float = 2.0) -> dict[str, Any]:
        return await asyncio.wait_for(self.arrived.get(), timeout)

    def drain(self) -> list[dict[str, Any]]:
        items = []
        while not self.arrived.empty():
            items.append(self.arrived.get_nowait())
        return items


@pytest.fixture
async def receiver() -> AsyncIterator[Receiver]:
    r = Receiver()
    await r.start()
    yield r
    await r.stop()


@pytest.fixture
def config() -> FakeOrangeConfig:
    return FakeOrangeConfig(notify_delay_ms=NOTIFY_DELAY_MS, seed=7)


@pytest.fixture
async def fake(config: FakeOrangeConfig) -> AsyncIterator[FakeOrangeServer]:
    server = FakeOrangeServer(config)
    await server.start()
    yield server
    await server.stop()


@pytest.fixture
async def client() -> AsyncIterator[aiohttp.ClientSession]:
    async with aiohttp.ClientSession() as session:
        yield session


def basic(client_id: str, secret: str) -> str:
    return "Basic " + base64.b64encode(f"{client_id}:{secret}".encode()).decode()


async def get_token(client: aiohttp.ClientSession, fake: FakeOrangeServer) -> str:
    config = fake.config
    async with client.post(
        f"{fake.url}/oauth/v3/token",
        data={"grant_type": "client_credentials"},
        headers={"Authorization": basic(config.client_id, config.client_secret)},
    ) as response:
        assert response.status == 200
        body = await response.json()
    assert body["token_type"] == "Bearer"
    assert body["expires_in"] == config.token_lifetime_s
    token = body["access_token"]
    assert isinstance(token, str) and token
    return token


def outbound_url(fake: FakeOrangeServer, sender: str = SENDER) -> str:
    return f"{fake.url}/smsmessaging/v1/outbound/{quote(sender, safe='')}/requests"


async def send(
    client: aiohttp.ClientSession,
    fake: FakeOrangeServer,
    token: str,
    address: str = ORDINARY,
    *,
    receiver: Receiver | None = None,
    correlator: str | None = None,
    message: str = "hello",
) -> tuple[int, dict[str, str], dict[str, Any]]:
    request: dict[str, Any] = {
        "address": address,
        "senderAddress": SENDER,
        "senderName": "Tidings",
        "outboundSMSTextMessage": {"message": message},
    }
    if correlator is not None:
        request["clientCorrelator"] = correlator
    if receiver is not None:
        request["receiptRequest"] = {"notifyURL": receiver.url, "callbackData": "cb-1"}
    async with client.post(
        outbound_url(fake),
        json={"outboundSMSMessageRequest": request},
        headers={"Authorization": f"Bearer {token}"},
    ) as response:
        return response.status, dict(response.headers), await response.json()


async def test_token_send_and_delivery_notification(
    fake: FakeOrangeServer, client: aiohttp.ClientSession, receiver: Receiver
) -> None:
    token = await get_token(client, fake)
    status, headers, body = await send(client, fake, token, receiver=receiver, correlator="c-1")

    assert status == 201
    echoed = body["outboundSMSMessageRequest"]
    assert echoed["address"] == ORDINARY
    assert echoed["senderAddress"] == SENDER
    assert echoed["outboundSMSTextMessage"] == {"message": "hello"}
    assert echoed["clientCorrelator"] == "c-1"
    [sent] = fake.sends
    assert echoed["resourceURL"] == (
        f"{fake.url}/smsmessaging/v1/outbound/tel%3A%2B2250700000000/requests/{sent.id}"
    )
    assert headers["Location"] == echoed["resourceURL"]
    assert fake.requests[sent.id] is sent
    assert (sent.address, sent.message, sent.callback_data, sent.attempt) == (ORDINARY, "hello", "cb-1", 1)

    notification = await receiver.next()
    assert notification == {
        "deliveryInfoNotification": {
            "callbackData": "cb-1",
            "deliveryInfo": {"address": ORDINARY, "deliveryStatus": "DeliveredToTerminal"},
        }
    }
    await fake.wait_for_notifications(2.0)
    assert sent.delivery_status == "DeliveredToTerminal"
    async with client.get(f"{fake.url}/_stats") as response:
        stats = await response.json()
    assert stats == fake.stats
    assert stats["tokens_issued"] == fake.tokens_issued == 1
    assert (stats["accepted"], stats["notifications_sent"], stats["duplicates"]) == (1, 1, [])


@pytest.mark.parametrize(
    "config",
    [
        FakeOrangeConfig(
            notify_delay_ms=NOTIFY_DELAY_MS,
            intermediate_notifications=True,
            reverse_notifications=True,
            duplicate_notifications=True,
        )
    ],
)
async def test_intermediate_reversed_duplicated_notifications(
    fake: FakeOrangeServer, client: aiohttp.ClientSession, receiver: Receiver
) -> None:
    token = await get_token(client, fake)
    status, _, _ = await send(client, fake, token, receiver=receiver)
    assert status == 201
    await fake.wait_for_notifications(2.0)

    statuses = [n["deliveryInfoNotification"]["deliveryInfo"]["deliveryStatus"] for n in receiver.drain()]
    assert statuses == [
        "DeliveredToTerminal",
        "DeliveredToTerminal",
        "DeliveredToNetwork",
        "DeliveredToNetwork",
    ]
    assert fake.sends[0].delivery_status == "DeliveredToTerminal"  # the furthest status, not the last one
    assert fake.stats["notifications_sent"] == 4


async def test_expired_tokens_get_401_code_42(fake: FakeOrangeServer, client: aiohttp.ClientSession) -> None:
    token = await get_token(client, fake)
    fake.expire_tokens()

    status, _, body = await send(client, fake, token)
    assert status == 401
    assert body["code"] == 42
    assert body["message"] == "Expired credentials"

    status, _, body = await send(client, fake, "never-issued")
    assert (status, body["code"], body["message"]) == (401, 41, "Invalid credentials")

    fresh = await get_token(client, fake)
    status, _, _ = await send(client, fake, fresh)
    assert status == 201
    assert fake.tokens_issued == 2


@pytest.mark.parametrize("config", [FakeOrangeConfig(token_lifetime_s=0)])
async def test_tokens_stop_working_after_their_lifetime(
    fake: FakeOrangeServer, client: aiohttp.ClientSession
) -> None:
    token = await get_token(client, fake)
    status, _, body = await send(client, fake, token)
    assert (status, body["code"]) == (401, 42)


async def test_token_endpoint_refuses_wrong_credentials_and_grant(
    fake: FakeOrangeServer, client: aiohttp.ClientSession
) -> None:
    url = f"{fake.url}/oauth/v3/token"
    wrong = basic(fake.config.client_id, "not-the-secret")
    async with client.post(
        url, data={"grant_type": "client_credentials"}, headers={"Authorization": wrong}
    ) as r:
        assert r.status == 401
        assert (await r.json())["error"] == "invalid_client"
    async with client.post(url, data={"grant_type": "client_credentials"}) as r:
        assert r.status == 401
        assert (await r.json())["error"] == "invalid_client"
    right = basic(fake.config.client_id, fake.config.client_secret)
    async with client.post(url, data={"grant_type": "password"}, headers={"Authorization": right}) as r:
        assert r.status == 400
        assert (await r.json())["error"] == "unsupported_grant_type"
    assert fake.tokens_issued == 0


@pytest.mark.parametrize(
    ("number", "status", "exception", "message_id"),
    [
        (PERMANENT_FAILURE, 400, "serviceException", "SVC0004"),
        (POLICY_ERROR, 403, "policyException", "POL0001"),
    ],
)
async def test_magic_numbers_refused_permanently(
    fake: FakeOrangeServer,
    client: aiohttp.ClientSession,
    number: str,
    status: int,
    exception: str,
    message_id: str,
) -> None:
    token = await get_token(client, fake)
    for _ in range(2):
        answer, _, body = await send(client, fake, token, f"tel:{number}")
        assert answer == status
        assert body["requestError"][exception]["messageId"] == message_id
    assert fake.sends == []
    assert fake.stats["rejected"] == 2


async def test_magic_numbers_unavailable(fake: FakeOrangeServer, client: aiohttp.ClientSession) -> None:
    token = await get_token(client, fake)
    for _ in range(2):
        status, _, body = await send(client, fake, token, f"tel:{TEMPORARY_FAILURE}")
        assert (status, body["code"]) == (503, 5)
    status, _, _ = await send(client, fake, token, f"tel:{TEMPORARY_THEN_OK}")
    assert status == 503
    status, _, _ = await send(client, fake, token, f"tel:{TEMPORARY_THEN_OK}")
    assert status == 201
    assert fake.sends[0].attempt == 2


@pytest.mark.parametrize(
    ("number", "final"), [(RECEIPT_FAILED, "DeliveryImpossible"), (DELIVERY_UNCERTAIN, "DeliveryUncertain")]
)
async def test_magic_numbers_notified_as_not_delivered(
    fake: FakeOrangeServer, client: aiohttp.ClientSession, receiver: Receiver, number: str, final: str
) -> None:
    token = await get_token(client, fake)
    status, _, _ = await send(client, fake, token, f"tel:{number}", receiver=receiver)
    assert status == 201
    notification = await receiver.next()
    assert notification["deliveryInfoNotification"]["deliveryInfo"]["deliveryStatus"] == final


async def test_malformed_requests_get_service_exceptions(
    fake: FakeOrangeServer, client: aiohttp.ClientSession
) -> None:
    token = await get_token(client, fake)
    auth = {"Authorization": f"Bearer {token}"}
    good = {
        "address": ORDINARY,
        "senderAddress": SENDER,
        "outboundSMSTextMessage": {"message": "hi"},
    }
    cases: list[tuple[dict[str, Any], str, str]] = [
        ({**good, "outboundSMSTextMessage": {}}, "SVC0002", "message"),
        ({**good, "senderAddress": "tel:+2250799999999"}, "SVC0002", "senderAddress"),
        ({**good, "address": "14155550123"}, "SVC0004", "address"),
        ({**good, "receiptRequest": {"callbackData": "x"}}, "SVC0002", "notifyURL"),
    ]
    for request, message_id, part in cases:
        async with client.post(
            outbound_url(fake), json={"outboundSMSMessageRequest": request}, headers=auth
        ) as r:
            assert r.status == 400
            exception = (await r.json())["requestError"]["serviceException"]
        assert (exception["messageId"], exception["variables"]) == (message_id, [part])
    async with client.post(
        outbound_url(fake), data=b"{not json", headers={**auth, "Content-Type": "application/json"}
    ) as r:
        assert r.status == 400
        assert (await r.json())["requestError"]["serviceException"]["messageId"] == "SVC0001"

    # The decoded form of the path sender works as well.
    decoded = f"{fake.url}/smsmessaging/v1/outbound/{SENDER}/requests"
    async with client.post(decoded, json={"outboundSMSMessageRequest": good}, headers=auth) as r:
        assert r.status == 201
    assert len(fake.sends) == 1


async def test_client_correlator_replay_returns_the_original(
    fake: FakeOrangeServer, client: aiohttp.ClientSession
) -> None:
    token = await get_token(client, fake)
    first_status, first_headers, first = await send(client, fake, token, correlator="same")
    again_status, again_headers, again = await send(client, fake, token, correlator="same")

    assert first_status == again_status == 201
    assert again == first
    assert again_headers["Location"] == first_headers["Location"]
    assert len(fake.sends) == 1
    stats = fake.stats
    assert (stats["requests"], stats["accepted"], stats["replayed"], stats["duplicates"]) == (2, 1, 1, [])


async def test_delivery_infos_for_the_number_without_notifications(
    fake: FakeOrangeServer, client: aiohttp.ClientSession, receiver: Receiver
) -> None:
    token = await get_token(client, fake)
    auth = {"Authorization": f"Bearer {token}"}
    status, _, body = await send(client, fake, token, f"tel:{NO_RECEIPT}", receiver=receiver)
    assert status == 201
    await fake.wait_for_notifications(2.0)
    assert receiver.drain() == []

    infos_url = body["outboundSMSMessageRequest"]["resourceURL"] + "/deliveryInfos"
    async with client.get(infos_url, headers=auth) as r:
        assert r.status == 200
        infos = await r.json()
    assert infos == {
        "deliveryInfoList": {
            "deliveryInfo": [{"address": f"tel:{NO_RECEIPT}", "deliveryStatus": "DeliveredToTerminal"}],
            "resourceURL": infos_url,
        }
    }

    fake.set_delivery_status(fake.sends[0].id, "DeliveryImpossible")
    async with client.get(infos_url, headers=auth) as r:
        assert (await r.json())["deliveryInfoList"]["deliveryInfo"][0][
            "deliveryStatus"
        ] == "DeliveryImpossible"
    async with client.get(outbound_url(fake) + "/no-such-id/deliveryInfos", headers=auth) as r:
        assert r.status == 404
        assert "serviceException" in (await r.json())["requestError"]
    assert fake.stats["notifications_sent"] == 0


@pytest.mark.parametrize("config", [FakeOrangeConfig(max_per_second=3, notify_delay_ms=0)])
async def test_rate_limit_gives_429(fake: FakeOrangeServer, client: aiohttp.ClientSession) -> None:
    token = await get_token(client, fake)
    answers = [await send(client, fake, token, message=f"m{i}") for i in range(5)]

    assert [status for status, _, _ in answers] == [201, 201, 201, 429, 429]
    assert answers[-1][2]["code"] == 53
    assert len(fake.sends) == 3
    assert fake.stats["rejected"] == 2


async def test_inbound_and_raw_delivery_posts(fake: FakeOrangeServer, receiver: Receiver) -> None:
    status, _ = await fake.post_inbound(
        receiver.url, "+14155550123", "tel:+2250700000000", "STOP", message_id="m-1"
    )
    assert status == 204
    inbound = (await receiver.next())["inboundSMSMessageNotification"]["inboundSMSMessage"]
    assert inbound["senderAddress"] == "tel:+14155550123"
    assert inbound["destinationAddress"] == "tel:+2250700000000"
    assert (inbound["message"], inbound["messageId"]) == ("STOP", "m-1")
    assert inbound["dateTime"].endswith("Z")

    payload = {"deliveryInfoNotification": {"deliveryInfo": {"address": ORDINARY, "deliveryStatus": "X"}}}
    status, _ = await fake.post_delivery(receiver.url, payload)
    assert status == 204
    assert await receiver.next() == payload
