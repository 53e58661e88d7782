"""Who may move a message, and where to: a report never strands a message in ``sending``, and a
report applies only to a message that was handed to the provider reporting it."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from tests.live import Live, live_service
from tidings.domain.reports import ProviderReport, Report
from tidings.domain.status import Status
from tidings.providers.fake_rules import NO_RECEIPT, TEMPORARY_FAILURE
from tidings.testing.fake_orange import FakeOrangeConfig, FakeOrangeServer
from tidings.testing.fake_twilio import DEFAULT_ACCOUNT_SID, DEFAULT_AUTH_TOKEN, FakeTwilioServer

TO = "+14155550123"


def providers(twilio: FakeTwilioServer, orange: FakeOrangeServer) -> dict[str, Any]:
    defaults = FakeOrangeConfig()
    return {
        "fake": {"kind": "fake", "latency_ms": 0, "receipt_delay_ms": 10},
        "tw": {
            "kind": "twilio",
            "account_sid": DEFAULT_ACCOUNT_SID,
            "auth_token": DEFAULT_AUTH_TOKEN,
            "from": "+15005550006",
            "base_url": twilio.url,
        },
        "or": {
            "kind": "orange",
            "client_id": defaults.client_id,
            "client_secret": defaults.client_secret,
            "sender": "tel:+2250700000000",
            "base_url": orange.url,
            "webhook_allow_ips": ["127.0.0.0/8"],
        },
    }


@pytest.fixture
async def live(database_url: str, twilio: FakeTwilioServer, orange: FakeOrangeServer) -> AsyncIterator[Live]:
    # Retries wait long enough for a message to be seen waiting out its back-off.
    async with live_service(
        database_url,
        providers=providers(twilio, orange),
        retry_base_seconds=60,
        retry_cap_seconds=60,
    ) as live:
        yield live


def orange_receipt(word: str, address: str, callback: str) -> dict[str, Any]:
    return {
        "deliveryInfoNotification": {
            "callbackData": callback,
            "deliveryInfo": {"address": f"tel:{address}", "deliveryStatus": word},
        }
    }


async def test_a_queued_report_for_a_message_waiting_out_a_retry_does_not_strand_it(
    live: Live, twilio: FakeTwilioServer
) -> None:
    # Twilio answers 429 for this number: the message waits out its back-off, pending.
    sent = await live.send(to=TEMPORARY_FAILURE, body="hello", provider="tw")
    async with asyncio.timeout(10):
        while not any(e["type"] == "retry_scheduled" for e in (await live.message(sent["id"]))["events"]):
            await asyncio.sleep(0.02)
    message = await live.message(sent["id"])
    assert (message["status"], message["attempts"]) == ("pending", 1)
    url = f"{live.url}/webhooks/twilio/tw/status?message_id={sent['id']}"
    for word in ("queued", "sending", "accepted"):
        params = {"MessageSid": "SM" + "1" * 32, "MessageStatus": word, "AccountSid": DEFAULT_ACCOUNT_SID}
        status, _ = await twilio.post_status(url, params)
        assert status == 200
    message = await live.message(sent["id"])
    # Recorded, and it is still waiting for its retry: only a claim puts a message in sending.
    assert message["status"] == "pending"
    queued = [e for e in message["events"] if e["type"] == "report"]
    assert [(e["provider_status"], e["changed"]) for e in queued] == [
        ("queued", False),
        ("sending", False),
        ("accepted", False),
    ]
    assert message["next_attempt_at"] is not None


async def test_a_receipt_from_another_provider_changes_nothing(live: Live, orange: FakeOrangeServer) -> None:
    later = (datetime.now(UTC) + timedelta(hours=1)).isoformat()
    scheduled = await live.send(to=TO, body="later", provider="fake", send_at=later)
    status, _ = await orange.post_delivery(
        f"{live.url}/webhooks/orange/or/delivery", orange_receipt("DeliveredToTerminal", TO, scheduled["id"])
    )
    assert status == 200  # so that Orange stops resending it
    message = await live.message(scheduled["id"])
    assert message["status"] == "scheduled"
    assert [e["type"] for e in message["events"]] == ["accepted"]
    [entry] = await live.service.store.webhooks.search(provider="or")
    assert entry.processed and entry.unmatched == 1 and entry.message_id is None


async def test_a_receipt_for_a_message_its_provider_never_had_changes_nothing(
    live: Live, orange: FakeOrangeServer
) -> None:
    later = (datetime.now(UTC) + timedelta(hours=1)).isoformat()
    scheduled = await live.send(to=TO, body="later", provider="or", send_at=later)
    await orange.post_delivery(
        f"{live.url}/webhooks/orange/or/delivery", orange_receipt("DeliveredToTerminal", TO, scheduled["id"])
    )
    assert (await live.message(scheduled["id"]))["status"] == "scheduled"


async def test_a_receipt_from_the_provider_that_sent_it_applies(live: Live, orange: FakeOrangeServer) -> None:
    sent = await live.send(to=NO_RECEIPT, body="hi", provider="or")
    await live.wait_for(sent["id"], "sent")
    await orange.post_delivery(
        f"{live.url}/webhooks/orange/or/delivery",
        orange_receipt("DeliveredToTerminal", NO_RECEIPT, sent["id"]),
    )
    assert (await live.message(sent["id"]))["status"] == "delivered"


async def test_a_late_receipt_from_a_provider_the_route_already_tried_applies(database_url: str) -> None:
    # The first provider of the route took the message, but its answer was lost (a timeout, say);
    # the message moved on to the next provider. The first one's receipt is still the truth.
    settings: dict[str, Any] = {
        "providers": {
            "first": {"kind": "fake", "latency_ms": 0, "receipt_delay_ms": 10},
            "second": {"kind": "fake", "latency_ms": 0, "receipt_delay_ms": 10},
        },
        "routes": {"+1": ["first", "second"]},
        "default_provider": "first",
        "failover_after": 1,
    }
    async with live_service(database_url, worker=False, **settings) as live:
        sent = await live.send(to=TO, body="hi")
        store = live.service.store
        [claimed] = await store.queue.claim("first", worker="w", limit=1, lease_seconds=60)
        await store.queue.schedule_retry(
            claimed.id,
            worker="w",
            retry_at=datetime(2100, 1, 1),
            error_code="timeout",
            error_message="no answer",
            fail_over_to="second",
        )
        receipt = Report(status=Status.DELIVERED, source="provider:first", occurred_at=datetime(2026, 1, 1))
        result = await live.service.tracker.apply(
            "first", [ProviderReport(report=receipt, message_id=sent["id"])]
        )
        assert [o.changed for o in result.applied] == [True]
        assert (await live.message(sent["id"]))["status"] == "delivered"
        # A provider later in the route that never had it is not believed.
        other = await live.send(to=TO, body="again")
        result = await live.service.tracker.apply(
            "second", [ProviderReport(report=receipt, message_id=other["id"])]
        )
        assert result.applied == [] and result.unmatched == 1
