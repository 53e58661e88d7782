"""The Orange adapter against the fake Orange server, over real HTTP both ways.

Messages go out through the worker to the fake; the fake posts its (unsigned) delivery
notifications and inbound SMS back to the service's webhooks, exactly as Orange would.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import pytest

from tests.live import Live, live_service
from tidings.config import Settings
from tidings.errors import ConfigError
from tidings.providers import ProviderContext, build_providers
from tidings.providers.fake_rules import NO_RECEIPT, PERMANENT_FAILURE, RECEIPT_FAILED, TEMPORARY_THEN_OK
from tidings.providers.orange import OrangeProvider, _retry_after, _substitute
from tidings.testing.fake_orange import DELIVERY_UNCERTAIN, POLICY_ERROR, FakeOrangeConfig, FakeOrangeServer

SENDER = "+2250700000000"
ORDINARY = "+14155550123"
PHONE = "+2250708000000"
NAME = "or"


def orange(url: str, **extra: Any) -> dict[str, Any]:
    defaults = FakeOrangeConfig()
    table: dict[str, Any] = {
        "kind": "orange",
        "client_id": defaults.client_id,
        "client_secret": defaults.client_secret,
        "sender": SENDER,
        "sender_name": "Tidings",
        "base_url": url,
        "timeout_seconds": 3,
        "webhook_allow_ips": ["127.0.0.0/8"],
    }
    table.update(extra)
    return table


@pytest.fixture
async def fake(request: pytest.FixtureRequest) -> AsyncIterator[FakeOrangeServer]:
    config = getattr(request, "param", None) or FakeOrangeConfig(notify_delay_ms=10)
    server = FakeOrangeServer(config)
    await server.start()
    try:
        yield server
    finally:
        await server.stop()


def running(
    database_url: str, fake: FakeOrangeServer, provider: dict[str, Any] | None = None, **settings: Any
) -> contextlib.AbstractAsyncContextManager[Live]:
    providers = {NAME: orange(fake.url, **(provider or {}))}
    return live_service(database_url, providers=providers, default_provider=NAME, **settings)


@pytest.fixture
async def live(database_url: str, fake: FakeOrangeServer) -> AsyncIterator[Live]:
    async with running(database_url, fake) as live:
        yield live


def reports(message: dict[str, Any]) -> list[str]:
    """Orange's words in the reports recorded for a message, in arrival order."""
    return [e["provider_status"] for e in message["events"] if e["type"] == "report"]


async def until(check: Callable[[], Awaitable[bool]], timeout: float = 5.0) -> None:
    """Wait until ``check()`` is true; fail after ``timeout`` seconds."""
    async with asyncio.timeout(timeout):
        while not await check():
            await asyncio.sleep(0.02)


def delivery(status: str, address: str, callback: str | None = None) -> dict[str, Any]:
    notification: dict[str, Any] = {"deliveryInfo": {"address": f"tel:{address}", "deliveryStatus": status}}
    if callback is not None:
        notification["callbackData"] = callback
    return {"deliveryInfoNotification": notification}


# -- settings --------------------------------------------------------------------------------------


def test_settings_normalise_the_sender_and_default_to_five_a_second() -> None:
    def build(**extra: Any) -> OrangeProvider:
        settings = Settings(providers={NAME: orange("http://orange.test", **extra)}, default_provider=NAME)
        context = ProviderContext(base_url="http://tidings.test")
        provider = build_providers(settings, context)[NAME]
        assert isinstance(provider, OrangeProvider)
        return provider

    provider = build()
    assert provider.settings.sender == "tel:" + SENDER
    assert build(sender="tel:" + SENDER).settings.sender == "tel:" + SENDER
    assert provider.settings.rate_limit == 5.0
    assert provider.settings.token_margin_seconds == 60
    assert provider.notify_url() == f"http://tidings.test/webhooks/orange/{NAME}/delivery"
    assert build(webhook_token="a b&c").notify_url().endswith("/delivery?token=a%20b%26c")
    with pytest.raises(ConfigError, match=f"providers.{NAME}.sender"):
        build(sender="Tidings")
    with pytest.raises(ConfigError, match=f"providers.{NAME}.client_secret"):
        build(client_secret=None)


def test_unprotected_webhooks_stop_start_up_unless_the_operator_says_so() -> None:
    # Orange does not sign its notifications: a warning in a log nobody reads is not enough.
    settings = Settings(
        providers={NAME: orange("http://orange.test", webhook_allow_ips=[])}, default_provider=NAME
    )
    context = ProviderContext(base_url="http://tidings.test")
    with pytest.raises(ConfigError, match=rf"providers\.{NAME}\b.*webhook_unauthenticated = true") as refused:
        build_providers(settings, context)
    assert "webhook_token" in refused.value.message and "webhook_allow_ips" in refused.value.message


async def test_unprotected_webhooks_the_operator_allowed_are_warned_about_at_start(
    caplog: pytest.LogCaptureFixture,
) -> None:
    context = ProviderContext(base_url="http://tidings.test")
    for extra, warned in (
        ({"webhook_allow_ips": [], "webhook_unauthenticated": True}, True),
        ({"webhook_allow_ips": [], "webhook_token": "t"}, False),
    ):
        caplog.clear()
        settings = OrangeProvider.settings_model.model_validate(orange("http://orange.test", **extra))
        provider = OrangeProvider(NAME, settings, context)
        await provider.start()
        await provider.close()
        warnings = [r for r in caplog.records if r.levelname == "WARNING" and "from anyone" in r.getMessage()]
        assert bool(warnings) is warned


def test_error_texts_and_retry_after_are_read_as_orange_writes_them() -> None:
    assert _substitute("Invalid input value for message part %1", ["address"]) == (
        "Invalid input value for message part address"
    )
    assert _substitute("%1 and %10", [str(n) for n in range(1, 11)]) == "1 and 10"
    assert _retry_after("3") == 3.0
    assert _retry_after("Thu, 01 Jan 1970 00:00:00 GMT") == 0.0
    assert _retry_after("soon") is None and _retry_after(None) is None


# -- sending and receipts --------------------------------------------------------------------------


async def test_a_message_is_sent_and_tracked_to_delivered(live: Live, fake: FakeOrangeServer) -> None:
    sent = await live.send(to=ORDINARY, body="Votre rendez-vous est demain à 9 h")
    message = await live.wait_for(sent["id"], "delivered")

    [request] = fake.sends
    assert (request.sender, request.address, request.sender_name) == (
        "tel:" + SENDER,
        "tel:" + ORDINARY,
        "Tidings",
    )
    assert request.message == "Votre rendez-vous est demain à 9 h"
    assert request.client_correlator == request.callback_data == sent["id"]
    assert request.notify_url == f"{live.url}/webhooks/orange/{NAME}/delivery"
    assert message["provider_message_id"] == request.id
    assert message["provider_status"] == "DeliveredToTerminal"
    assert message["delivered_at"] is not None and message["error_code"] is None
    assert [e["type"] for e in message["events"]] == ["accepted", "claimed", "send_accepted", "report"]
    assert reports(message) == ["DeliveredToTerminal"]
    assert fake.tokens_issued == 1

    async def finished() -> bool:
        # The entry is completed just after the report is applied: wait for it.
        entries = await live.service.store.webhooks.search(provider=NAME)
        return len(entries) == 1 and entries[0].response_status is not None

    await until(finished)
    [entry] = await live.service.store.webhooks.search(provider=NAME)
    assert entry.verified is True and entry.processed is True and entry.message_id == sent["id"]


@pytest.mark.parametrize(
    "fake",
    [
        FakeOrangeConfig(
            notify_delay_ms=10,
            intermediate_notifications=True,
            reverse_notifications=True,
            duplicate_notifications=True,
        )
    ],
    indirect=True,
)
async def test_notifications_out_of_order_and_duplicated_end_delivered_and_are_all_recorded(
    live: Live, fake: FakeOrangeServer
) -> None:
    sent = await live.send(to=ORDINARY, body="hello")
    await live.wait_for(sent["id"], "delivered")
    await fake.wait_for_notifications(5)
    message = await live.message(sent["id"])
    assert message["status"] == "delivered"
    assert message["provider_status"] == "DeliveredToTerminal"
    assert sorted(reports(message)) == [
        "DeliveredToNetwork",
        "DeliveredToNetwork",
        "DeliveredToTerminal",
        "DeliveredToTerminal",
    ]
    entries = await live.service.store.webhooks.search(provider=NAME)
    assert len(entries) == 4
    assert all(e.processed and e.verified and e.message_id == sent["id"] for e in entries)


async def test_delivery_impossible_fails_the_message(live: Live) -> None:
    sent = await live.send(to=RECEIPT_FAILED, body="hello")
    message = await live.wait_for(sent["id"], "failed")
    assert message["error_code"] == "DeliveryImpossible"
    assert message["provider_status"] == "DeliveryImpossible"
    assert message["attempts"] == 1


async def test_delivery_uncertain_is_recorded_and_changes_nothing(live: Live, fake: FakeOrangeServer) -> None:
    sent = await live.send(to=DELIVERY_UNCERTAIN, body="hello")
    await live.wait_for(sent["id"], "sent")
    await until(lambda: _has_report(live, sent["id"], "DeliveryUncertain"))
    await fake.wait_for_notifications(5)
    message = await live.message(sent["id"])
    assert message["status"] == "sent"
    [event] = [e for e in message["events"] if e["type"] == "report"]
    assert event["status"] == "sent" and event["changed"] is False
    assert event["detail"]["deliveryStatus"] == "DeliveryUncertain"


async def _has_report(live: Live, message_id: str, word: str) -> bool:
    return word in reports(await live.message(message_id))


# -- access tokens ---------------------------------------------------------------------------------


async def test_an_expired_token_is_refreshed_once_and_the_send_goes_through(
    live: Live, fake: FakeOrangeServer
) -> None:
    first = await live.send(to=ORDINARY, body="one")
    await live.wait_for(first["id"], "delivered")
    fake.expire_tokens()
    second = await live.send(to=ORDINARY, body="two")
    message = await live.wait_for(second["id"], "delivered")
    assert message["attempts"] == 1
    assert fake.tokens_issued == 2
    assert fake.stats["rejected"] == 1  # the send with the expired token, answered 401


async def test_wrong_credentials_keep_the_message_waiting_not_failed(
    database_url: str, fake: FakeOrangeServer
) -> None:
    provider = {"client_secret": "not-the-secret"}
    async with running(database_url, fake, provider, retry_base_seconds=0.05, retry_cap_seconds=0.1) as live:
        sent = await live.send(to=ORDINARY, body="hello")

        async def retried() -> bool:
            return (await live.message(sent["id"]))["attempts"] >= 2

        await until(retried)
        message = await live.message(sent["id"])
        assert message["status"] in ("pending", "sending")
        assert message["error_code"] == "invalid_client"
    assert fake.tokens_issued == 0 and fake.stats["requests"] == 0


# -- refusals --------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("to", "code", "text"),
    [
        (PERMANENT_FAILURE, "SVC0004", "No valid addresses provided in message part address"),
        (POLICY_ERROR, "POL0001", "A policy error occurred"),
    ],
)
async def test_a_request_error_fails_the_message_at_once_with_its_code(
    live: Live, fake: FakeOrangeServer, to: str, code: str, text: str
) -> None:
    sent = await live.send(to=to, body="hello")
    message = await live.wait_for(sent["id"], "failed")
    assert message["error_code"] == code
    assert message["error_message"].startswith(text)
    assert message["attempts"] == 1
    assert fake.stats["rejected"] == 1


async def test_a_server_error_is_retried_and_then_delivered(live: Live) -> None:
    sent = await live.send(to=TEMPORARY_THEN_OK, body="retry me")
    message = await live.wait_for(sent["id"], "delivered")
    assert message["attempts"] == 2
    retry = next(e for e in message["events"] if e["type"] == "retry_scheduled")
    assert retry["error_code"] == "http_503"


@pytest.mark.parametrize("fake", [FakeOrangeConfig(notify_delay_ms=10, max_per_second=5)], indirect=True)
async def test_the_rate_limit_keeps_sends_within_orange_s(database_url: str, fake: FakeOrangeServer) -> None:
    async with running(database_url, fake) as live:
        sent = [await live.send(to=f"+1415555{n:04d}", body=f"message {n}") for n in range(15)]
        for message in sent:
            await live.wait_for(message["id"], "delivered", timeout=15)
    assert fake.stats["accepted"] == 15
    assert fake.stats["rejected"] == 0
    assert fake.tokens_issued == 1  # concurrent sends shared one token


# -- webhooks --------------------------------------------------------------------------------------


async def test_a_receipt_without_callback_data_at_the_old_address_finds_the_latest_sent_message(
    live: Live, fake: FakeOrangeServer
) -> None:
    # NO_RECEIPT: Orange accepts these and never notifies, so both stay sent.
    older = await live.send(to=NO_RECEIPT, body="first")
    await live.wait_for(older["id"], "sent")
    newer = await live.send(to=NO_RECEIPT, body="second")
    await live.wait_for(newer["id"], "sent")

    status, _ = await fake.post_delivery(
        f"{live.url}/api/sms/webhook/delivery-status", delivery("DeliveredToTerminal", NO_RECEIPT)
    )
    assert status == 200
    assert (await live.message(newer["id"]))["status"] == "delivered"
    assert (await live.message(older["id"]))["status"] == "sent"
    [entry] = await live.service.store.webhooks.search(provider=NAME)
    assert entry.event == "delivery" and entry.message_id == newer["id"] and entry.unmatched == 0


async def test_inbound_sms_is_stored_once_whichever_address_it_comes_to(
    live: Live, fake: FakeOrangeServer
) -> None:
    for url in (f"{live.url}/webhooks/orange/{NAME}/inbound", f"{live.url}/api/sms/webhook/inbound-message"):
        status, _ = await fake.post_inbound(url, PHONE, SENDER, "STOP", message_id="mo-1")
        assert status == 200
    # Without a messageId, the same message posted twice is still stored once.
    without_id = {
        "inboundSMSMessageNotification": {
            "inboundSMSMessage": {
                "senderAddress": "tel:+2250708000001",
                "destinationAddress": "tel:" + SENDER,
                "message": "Bonjour",
                "dateTime": "2024-05-01T10:20:30Z",
            }
        }
    }
    for _ in range(2):
        status, _ = await fake.post_delivery(f"{live.url}/webhooks/orange/{NAME}/inbound", without_id)
        assert status == 200

    stored = await live.service.store.inbound.search()
    assert sorted((m["from"], m["to"], m["body"]) for m in stored) == [
        (PHONE, SENDER, "STOP"),
        ("+2250708000001", SENDER, "Bonjour"),
    ]
    assert all(m["provider"] == NAME for m in stored)
    by_body = {m["body"]: m for m in stored}
    assert by_body["STOP"]["provider_message_id"] == "mo-1"
    assert by_body["Bonjour"]["sent_at"].isoformat() == "2024-05-01T10:20:30"
    entries = await live.service.store.webhooks.search(provider=NAME)
    assert sorted(e.inbound for e in entries) == [1, 1, 1, 1]


async def test_with_a_webhook_token_only_notifications_that_carry_it_are_taken(
    database_url: str, fake: FakeOrangeServer
) -> None:
    async with running(database_url, fake, {"webhook_token": "s3cret-token"}) as live:
        sent = await live.send(to=ORDINARY, body="hello")
        await live.wait_for(sent["id"], "delivered")  # the fake posts to our notifyURL, token and all
        assert fake.sends[0].notify_url == f"{live.url}/webhooks/orange/{NAME}/delivery?token=s3cret-token"

        forged = delivery("DeliveryImpossible", ORDINARY, sent["id"])
        url = f"{live.url}/webhooks/orange/{NAME}/delivery"
        for attempt in (url, url + "?token=wrong", "/api/sms/webhook/delivery-status?token="):
            response = await live.client.post(attempt, json=forged)
            assert response.status_code == 403, attempt
            assert response.json()["error"]["code"] == "invalid_signature"
        status, _ = await fake.post_inbound(f"{live.url}/webhooks/orange/{NAME}/inbound", PHONE, SENDER, "x")
        assert status == 403

        assert (await live.message(sent["id"]))["status"] == "delivered"
        entries = await live.service.store.webhooks.search(provider=NAME)
        refused = [e for e in entries if e.verified is False]
        assert len(refused) == 4
        assert all(e.response_status == 403 and not e.processed for e in refused)
        assert all(e.error and e.error.startswith("invalid_signature:") for e in refused)
        assert all("s3cret-token" not in e.url for e in entries)
        assert await live.service.store.inbound.search() == []


async def test_malformed_and_mistyped_webhooks_get_clear_4xx_and_are_logged(live: Live) -> None:
    url = f"{live.url}/webhooks/orange/{NAME}/delivery"
    not_json = await live.client.post(url, content=b"{not json", headers={"Content-Type": "application/json"})
    assert not_json.status_code == 400
    assert "not valid JSON" in not_json.json()["error"]["message"]
    wrong_shape = await live.client.post(url, json={"deliveryInfoNotification": {"deliveryInfo": {}}})
    assert wrong_shape.status_code == 400
    assert "deliveryStatus" in wrong_shape.json()["error"]["message"]
    as_text = await live.client.post(url, content=b"{}", headers={"Content-Type": "text/plain"})
    assert as_text.status_code == 415
    assert as_text.json()["error"]["code"] == "unsupported_media_type"
    unknown = await live.client.post(f"{live.url}/webhooks/orange/{NAME}/nonsense", json={})
    assert unknown.status_code == 404

    entries = await live.service.store.webhooks.search(provider=NAME)
    assert sorted(e.response_status or 0 for e in entries) == [400, 400, 404, 415]
    assert all(not e.processed and e.error for e in entries)
    malformed = [e for e in entries if e.body == b"{not json"]
    assert len(malformed) == 1 and malformed[0].error is not None
    assert malformed[0].error.startswith("webhook_rejected: body is not valid JSON")


async def test_webhooks_from_a_disallowed_address_are_refused(
    database_url: str, fake: FakeOrangeServer
) -> None:
    async with running(database_url, fake, {"webhook_allow_ips": ["10.0.0.0/8"]}) as live:
        for url in (
            f"{live.url}/webhooks/orange/{NAME}/delivery",
            f"{live.url}/api/sms/webhook/delivery-status",
        ):
            status, body = await fake.post_delivery(url, delivery("DeliveredToTerminal", ORDINARY))
            assert status == 403
            assert b"address_not_allowed" in body
        entries = await live.service.store.webhooks.search(provider=NAME)
        assert len(entries) == 2
        assert all(
            e.verified is False and e.error and e.error.startswith("address_not_allowed") for e in entries
        )


# -- polling ---------------------------------------------------------------------------------------


async def test_a_late_receipt_is_fetched_by_polling(database_url: str, fake: FakeOrangeServer) -> None:
    async with running(database_url, fake, poll_after_seconds=0.2, poll_check_seconds=0.1) as live:
        sent = await live.send(to=NO_RECEIPT, body="no receipt for this one")
        message = await live.wait_for(sent["id"], "delivered")
        assert message["provider_status"] == "DeliveredToTerminal"
        [event] = [e for e in message["events"] if e["type"] == "report"]
        assert event["source"] == f"provider:{NAME}"
        assert "polled" in event["detail"]
        assert message["polls"] >= 1
    assert fake.stats["notifications_sent"] == 0
