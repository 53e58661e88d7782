"""Why a message failed, in the same words whichever provider said it: on the message, its
history and its callbacks."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import httpx
import pytest

from tests.integration.conftest import every_provider
from tests.integration.test_inbound_callbacks import Receiver
from tests.live import Live, live_service
from tidings.providers.fake_rules import PERMANENT_FAILURE, RECEIPT_FAILED, TEMPORARY_FAILURE
from tidings.testing.fake_orange import POLICY_ERROR, FakeOrangeServer
from tidings.testing.fake_twilio import FakeTwilioServer

PERSON = "+254712345678"


@pytest.fixture
async def live(database_url: str, twilio: FakeTwilioServer, orange: FakeOrangeServer) -> AsyncIterator[Live]:
    async with live_service(database_url, providers=every_provider(twilio, orange), max_attempts=2) as live:
        yield live


@pytest.mark.parametrize(
    ("provider", "to", "code", "reason"),
    [
        ("fake", PERMANENT_FAILURE, "invalid_number", "invalid_number"),
        ("fake", RECEIPT_FAILED, "undeliverable", "unreachable"),
        ("fake", TEMPORARY_FAILURE, "throttled", "rate_limited"),  # attempts used up
        ("tw", PERMANENT_FAILURE, "21211", "invalid_number"),
        ("tw", RECEIPT_FAILED, "30003", "unreachable"),
        ("orange", PERMANENT_FAILURE, "SVC0004", "invalid_number"),
        ("orange", POLICY_ERROR, "POL0001", "blocked"),
    ],
)
async def test_each_providers_code_has_a_shared_reason(
    live: Live, provider: str, to: str, code: str, reason: str
) -> None:
    sent = await live.send(to=to, body="hello", provider=provider)
    failed = await live.wait_for(sent["id"], "failed", timeout=15)
    assert (failed["error_code"], failed["failure_reason"]) == (code, reason)
    [event] = [e for e in failed["events"] if e["status"] == "failed" and e["changed"]]
    assert event["failure_reason"] == reason


async def test_a_phones_failure_reason_is_read_from_its_words(live: Live) -> None:
    sent = await live.send(to=PERSON, body="hello", provider="phone")
    await live.wait_for(sent["id"], "pending")
    auth = ("phone", "pw")

    async with httpx.AsyncClient(auth=auth) as client:
        await client.post(f"{live.url}/api/sms", json={})
        await client.post(
            f"{live.url}/api/sms",
            json={"updates": [{"id": sent["id"], "status": "FAILED", "reason": "radio-off"}]},
        )
    failed = await live.message(sent["id"])
    assert (failed["status"], failed["error_message"], failed["failure_reason"]) == (
        "failed",
        "radio-off",
        "unreachable",
    )


async def test_an_opted_out_recipients_cancelled_messages_say_so_and_callbacks_carry_the_reason(
    live: Live,
) -> None:
    receiver = Receiver()
    await receiver.start()
    try:
        await live.client.put("/v1/callback-settings", json={"url": receiver.url})
        later = await live.send(to=PERSON, body="later", send_at="2100-01-01T00:00:00Z")
        assert (await live.client.post("/v1/opt-outs", json={"number": PERSON})).status_code == 201
        cancelled = await live.message(later["id"])
        assert (cancelled["status"], cancelled["failure_reason"]) == ("cancelled", "opted_out")
        failed = await live.send(to=PERMANENT_FAILURE, body="x", provider="fake")
        await live.wait_for(failed["id"], "failed")
        async with asyncio.timeout(10):
            while not any(p.get("status") == "failed" for p in receiver.payloads()):
                await asyncio.sleep(0.02)
        got = receiver.payloads()
        by_status = {(p["id"], p["status"]): p for p in got}
        assert by_status[(later["id"], "cancelled")]["failure_reason"] == "opted_out"
        assert by_status[(failed["id"], "failed")]["failure_reason"] == "invalid_number"
    finally:
        await receiver.stop()
