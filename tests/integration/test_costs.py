"""What messages cost: a provider's price table, a provider's own figure (Twilio's ``price``, read
when it is polled), summed per batch, and nothing for a message no provider accepted."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from typing import Any

import pytest

from tests.live import live_service
from tidings.providers.fake_rules import NO_RECEIPT, PERMANENT_FAILURE
from tidings.testing.fake_twilio import (
    DEFAULT_ACCOUNT_SID,
    DEFAULT_AUTH_TOKEN,
    FakeTwilioConfig,
    FakeTwilioServer,
)

PRICED_FAKE = {
    "kind": "fake",
    "latency_ms": 0,
    "receipt_delay_ms": 10,
    "currency": "KES",
    "prices": {"+254": "0.80", "+2547": "0.50", "*": "1.20"},
}
LONG = "x" * 200
"""Two GSM-7 segments."""


async def test_a_message_costs_its_segments_at_the_longest_matching_prefix(database_url: str) -> None:
    async with live_service(database_url, providers={"fake": PRICED_FAKE}) as live:
        kenya_mobile = await live.send(to="+254712345678", body=LONG)
        kenya_other = await live.send(to="+254202345678", body="one part")
        elsewhere = await live.send(to="+14155550123", body="one part")
        refused = await live.send(to=PERMANENT_FAILURE, body="never accepted")
        assert kenya_mobile["cost"] is None  # not known before the provider takes it
        delivered = [
            await live.wait_for(m["id"], "delivered") for m in (kenya_mobile, kenya_other, elsewhere)
        ]
        assert [(m["cost"], m["currency"]) for m in delivered] == [
            ("1.00", "KES"),
            ("0.80", "KES"),
            ("1.20", "KES"),
        ]
        failed = await live.wait_for(refused["id"], "failed")
        assert failed["cost"] is None and failed["currency"] is None


async def test_a_batch_adds_up_what_its_messages_cost(database_url: str) -> None:
    async with live_service(database_url, providers={"fake": PRICED_FAKE}) as live:
        response = await live.client.post(
            "/v1/batches",
            json={
                "group_id": "priced",
                "template": "Hello {{ first_name }}, " + "x" * 180,
                "recipients": [
                    {"to": "+254712345601", "first_name": "Amina"},
                    {"to": "+254202345602", "first_name": "Otieno"},
                    {"to": "+254712345603", "first_name": "Wanjiru"},
                ],
            },
        )
        assert response.status_code == 202, response.text
        batch_id = response.json()["id"]
        batch: dict[str, Any] = {}
        for _ in range(500):
            batch = (await live.client.get(f"/v1/batches/{batch_id}")).json()
            if batch["counts"].get("delivered") == 3:
                break
            await asyncio.sleep(0.02)
        # Two segments each: 2 * 0.50 + 2 * 0.80 + 2 * 0.50.
        assert (batch["cost"], batch["currency"], batch["costs"]) == ("3.60", "KES", {"KES": "3.60"})


@pytest.fixture
async def twilio() -> AsyncIterator[FakeTwilioServer]:
    server = FakeTwilioServer(FakeTwilioConfig(callback_delay_ms=10, price_per_segment="0.0079"))
    await server.start()
    try:
        yield server
    finally:
        await server.stop()


async def test_twilios_own_price_wins_over_the_table_once_it_is_polled(
    database_url: str, twilio: FakeTwilioServer
) -> None:
    provider = {
        "kind": "twilio",
        "account_sid": DEFAULT_ACCOUNT_SID,
        "auth_token": DEFAULT_AUTH_TOKEN,
        "from": "+15005550006",
        "base_url": twilio.url,
        "currency": "USD",
        "prices": {"*": "0.05"},
    }
    async with live_service(
        database_url,
        providers={"tw": provider},
        default_provider="tw",
        poll_after_seconds=0.3,
        poll_repeat_seconds=0.3,
        poll_check_seconds=0.1,
    ) as live:
        by_callback = await live.send(to="+14155550123", body=LONG)
        by_poll = await live.send(to=NO_RECEIPT, body=LONG)
        # Status callbacks carry no price: the table's, per segment.
        called_back = await live.wait_for(by_callback["id"], "delivered")
        assert (called_back["cost"], called_back["currency"]) == ("0.10", "USD")
        # The poll reads the resource, whose price (-0.01580 for two segments) is what it cost.
        polled = await live.wait_for(by_poll["id"], "delivered", timeout=15)
        assert (polled["cost"], polled["currency"]) == ("0.0158", "USD")
