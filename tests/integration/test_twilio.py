"""The Twilio adapter against the fake Twilio server, over real HTTP both ways.

Messages go out through the worker to the fake; the fake posts signed status callbacks and inbound
SMS back to the service's webhooks, exactly as Twilio would.
"""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from twilio.request_validator import RequestValidator

from tests.live import Live, eventually, free_port, live_service
from tidings.providers.fake_rules import NO_RECEIPT, RECEIPT_FAILED, TEMPORARY_THEN_OK
from tidings.providers.twilio import signature
from tidings.testing.fake_twilio import (
    DEFAULT_ACCOUNT_SID,
    DEFAULT_AUTH_TOKEN,
    FAILED_AFTER_SENT,
    FakeTwilioConfig,
    FakeTwilioServer,
)

FROM = "+15005550006"
ORDINARY = "+14155550123"


def twilio(url: str, **extra: Any) -> dict[str, Any]:
    table: dict[str, Any] = {
        "kind": "twilio",
        "account_sid": DEFAULT_ACCOUNT_SID,
        "auth_token": DEFAULT_AUTH_TOKEN,
        "from": FROM,
        "base_url": url,
        "timeout_seconds": 3,
    }
    table.update(extra)
    return table


@pytest.fixture
async def fake(request: pytest.FixtureRequest) -> AsyncIterator[FakeTwilioServer]:
    config = getattr(request, "param", None) or FakeTwilioConfig(callback_delay_ms=10)
    server = FakeTwilioServer(config)
    await server.start()
    try:
        yield server
    finally:
        await server.stop()


@pytest.fixture
async def live(database_url: str, fake: FakeTwilioServer) -> AsyncIterator[Live]:
    async with live_service(database_url, providers={"tw": twilio(fake.url)}, default_provider="tw") as live:
        yield live


def reports(message: dict[str, Any]) -> list[str]:
    """The provider words of the status callbacks recorded for a message, in arrival order."""
    return [e["provider_status"] for e in message["events"] if e["type"] == "report"]


async def test_a_message_is_sent_and_tracked_to_delivered(live: Live, fake: FakeTwilioServer) -> None:
    sent = await live.send(to=ORDINARY, body="Your appointment is tomorrow at 9")
    message = await live.wait_for(sent["id"], "delivered")

    assert len(fake.sends) == 1
    request = fake.sends[0]
    assert (request.to, request.from_, request.body) == (ORDINARY, FROM, "Your appointment is tomorrow at 9")
    assert request.status_callback == f"{live.url}/webhooks/twilio/tw/status?message_id={sent['id']}"
    assert message["provider_message_id"] == request.sid
    assert message["provider_status"] == "delivered"
    await fake.wait_for_callbacks(5)
    message = await live.message(sent["id"])
    assert reports(message) == ["sent", "delivered"]
    assert message["delivered_at"] is not None and message["error_code"] is None


@pytest.mark.parametrize(
    ("to", "provider_status", "code"),
    [(RECEIPT_FAILED, "undelivered", "30003"), (FAILED_AFTER_SENT, "failed", "30008")],
)
async def test_an_undelivered_callback_fails_the_message_with_twilios_code(
    live: Live, to: str, provider_status: str, code: str
) -> None:
    sent = await live.send(to=to, body="hello")
    message = await live.wait_for(sent["id"], "failed")
    assert message["provider_status"] == provider_status
    assert message["error_code"] == code
    assert message["error_message"]


@pytest.mark.parametrize(
    ("to", "code"),
    [("+15005550001", "21211"), ("+15005550004", "21610"), ("+15005550009", "21614")],
)
async def test_a_refusal_with_a_twilio_error_code_fails_at_once(
    live: Live, fake: FakeTwilioServer, to: str, code: str
) -> None:
    sent = await live.send(to=to, body="hello")
    message = await live.wait_for(sent["id"], "failed")
    assert message["error_code"] == code
    assert message["attempts"] == 1
    assert fake.stats["rejected"] == 1


async def test_a_server_error_is_retried_and_then_delivered(live: Live) -> None:
    sent = await live.send(to=TEMPORARY_THEN_OK, body="retry me")
    message = await live.wait_for(sent["id"], "delivered")
    assert message["attempts"] == 2
    assert [e["type"] for e in message["events"]][:4] == [
        "accepted",
        "claimed",
        "retry_scheduled",
        "claimed",
    ]


@pytest.mark.parametrize(
    "fake",
    [FakeTwilioConfig(callback_delay_ms=10, reverse_callbacks=True, duplicate_callbacks=True)],
    indirect=True,
)
async def test_callbacks_out_of_order_and_duplicated_end_delivered_and_are_all_recorded(
    live: Live, fake: FakeTwilioServer
) -> None:
    sent = await live.send(to=ORDINARY, body="hello")
    await live.wait_for(sent["id"], "delivered")
    await fake.wait_for_callbacks(5)
    message = await live.message(sent["id"])
    assert message["status"] == "delivered"
    assert sorted(reports(message)) == ["delivered", "delivered", "sent", "sent"]
    entries = await live.service.store.webhooks.search(provider="tw")
    assert len(entries) == 4
    assert all(e.processed and e.verified and e.message_id == sent["id"] for e in entries)


async def test_wrong_credentials_keep_the_message_waiting_not_failed(
    database_url: str, fake: FakeTwilioServer
) -> None:
    providers = {"tw": twilio(fake.url, auth_token="not-the-token")}
    async with live_service(database_url, providers=providers, default_provider="tw") as live:
        sent = await live.send(to=ORDINARY, body="hello")
        message = await eventually(
            lambda: live.message(sent["id"]), lambda m: m["attempts"] >= 2, what="a second attempt"
        )
        assert message["status"] in ("pending", "sending")
        assert message["error_code"] == "20003"


async def test_a_forged_or_missing_signature_is_refused_and_logged(
    live: Live, fake: FakeTwilioServer
) -> None:
    sent = await live.send(to=ORDINARY, body="hello")
    message = await live.wait_for(sent["id"], "delivered")
    url = f"{live.url}/webhooks/twilio/tw/status"
    forged = {
        "MessageSid": message["provider_message_id"],
        "MessageStatus": "undelivered",
        "ErrorCode": "30003",
        "AccountSid": DEFAULT_ACCOUNT_SID,
    }
    status, _ = await fake.post_status(url, forged, auth_token="someone-elses-token")
    assert status == 403
    unsigned = await live.client.post(url, data=forged)
    assert unsigned.status_code == 403
    assert unsigned.json()["error"]["code"] == "invalid_signature"

    assert (await live.message(sent["id"]))["status"] == "delivered"
    refused = [e for e in await live.service.store.webhooks.search(provider="tw") if e.verified is False]
    assert len(refused) == 2
    assert all(e.response_status == 403 and e.error and not e.processed for e in refused)
    assert all("authorization" not in e.headers for e in refused)


async def test_signatures_agree_with_twilios_own_validator(live: Live) -> None:
    params = {
        "MessageSid": "SM" + "a" * 32,
        "MessageStatus": "sent",
        "AccountSid": DEFAULT_ACCOUNT_SID,
        "To": "+1",
    }
    url = f"{live.url}/webhooks/twilio/tw/status?message_id=x"
    validator = RequestValidator(DEFAULT_AUTH_TOKEN)
    expected = validator.compute_signature(url, params)
    assert signature(DEFAULT_AUTH_TOKEN, url, list(params.items())) == expected

    response = await live.client.post(url, data=params, headers={"X-Twilio-Signature": expected})
    assert response.status_code == 200
    [entry] = await live.service.store.webhooks.search(provider="tw")
    assert entry.verified is True and entry.processed is True
    assert entry.unmatched == 1  # no such message: recorded, answered 200 so Twilio stops resending


async def test_inbound_sms_is_answered_with_empty_twiml_and_stored_once(
    live: Live, fake: FakeTwilioServer
) -> None:
    url = f"{live.url}/webhooks/twilio/tw/inbound"
    params = {
        "MessageSid": "SM" + "b" * 32,
        "AccountSid": DEFAULT_ACCOUNT_SID,
        "From": "+254712345678",
        "To": FROM,
        "Body": "STOP",
        "NumMedia": "0",
    }
    for _ in range(2):
        status, body = await fake.post_status(url, params)
        assert status == 200
        assert body.endswith(b"<Response/>")
    status, _ = await fake.post_inbound(url, "+254712345679", FROM, "Hello back")
    assert status == 200

    stored = await live.service.store.inbound.search()
    assert sorted((m["from"], m["body"]) for m in stored) == [
        ("+254712345678", "STOP"),
        ("+254712345679", "Hello back"),
    ]
    assert all(m["provider"] == "tw" and m["to"] == FROM for m in stored)


async def test_malformed_and_mistyped_webhooks_get_clear_4xx_and_are_logged(
    live: Live, fake: FakeTwilioServer
) -> None:
    url = f"{live.url}/webhooks/twilio/tw/status"
    status, _ = await fake.post_status(url, {"AccountSid": DEFAULT_ACCOUNT_SID, "MessageStatus": "sent"})
    assert status == 400
    as_json = await live.client.post(url, json={"MessageSid": "SM1"})
    assert as_json.status_code == 415
    assert as_json.json()["error"]["code"] == "unsupported_media_type"
    unknown = await live.client.post(f"{live.url}/webhooks/twilio/tw/nonsense", data={"a": "b"})
    assert unknown.status_code == 404

    entries = await live.service.store.webhooks.search(provider="tw")
    assert sorted(e.response_status or 0 for e in entries) == [400, 404, 415]
    assert all(not e.processed and e.error for e in entries)


async def test_webhooks_from_a_disallowed_address_are_refused(
    database_url: str, fake: FakeTwilioServer
) -> None:
    providers = {"tw": twilio(fake.url, webhook_allow_ips=["10.0.0.0/8"])}
    async with live_service(database_url, providers=providers, default_provider="tw") as live:
        url = f"{live.url}/webhooks/twilio/tw/inbound"
        status, body = await fake.post_inbound(url, "+254712345678", FROM, "hi")
        assert status == 403
        assert b"address_not_allowed" in body
        # A spoofed X-Forwarded-For from an untrusted peer changes nothing.
        params = {"MessageSid": "SM" + "c" * 32, "From": "+254700000000", "Body": "x"}
        spoofed = await live.client.post(
            url,
            data=params,
            headers={
                "X-Forwarded-For": "10.1.2.3",
                "X-Twilio-Signature": signature(DEFAULT_AUTH_TOKEN, url, list(params.items())),
            },
        )
        assert spoofed.status_code == 403
        assert await live.service.store.inbound.search() == []


async def test_forwarded_for_is_believed_from_a_trusted_proxy(
    database_url: str, fake: FakeTwilioServer
) -> None:
    providers = {"tw": twilio(fake.url, webhook_allow_ips=["10.0.0.0/8"])}
    async with live_service(
        database_url, providers=providers, default_provider="tw", trusted_proxies=["127.0.0.1/32"]
    ) as live:
        url = f"{live.url}/webhooks/twilio/tw/inbound"
        params = {"MessageSid": "SM" + "d" * 32, "From": "+254700000000", "Body": "x"}
        response = await live.client.post(
            url,
            data=params,
            headers={
                "X-Forwarded-For": "203.0.113.9, 10.1.2.3",
                "X-Twilio-Signature": signature(DEFAULT_AUTH_TOKEN, url, list(params.items())),
            },
        )
        assert response.status_code == 200, response.text
        [entry] = await live.service.store.webhooks.search(provider="tw")
        assert entry.remote_ip == "10.1.2.3"


async def test_a_message_without_a_final_callback_is_resolved_by_polling(
    database_url: str, fake: FakeTwilioServer
) -> None:
    async with live_service(
        database_url,
        providers={"tw": twilio(fake.url)},
        default_provider="tw",
        poll_after_seconds=0.3,
        poll_repeat_seconds=0.3,
        poll_check_seconds=0.1,
    ) as live:
        sent = await live.send(to=NO_RECEIPT, body="are you there")
        message = await live.wait_for(sent["id"], "delivered", timeout=15)
        polled = [e for e in message["events"] if e["type"] == "report" and "polled" in e["detail"]]
        assert polled and polled[-1]["provider_status"] == "delivered"
        assert message["polls"] >= 1


async def test_failover_moves_a_message_to_the_next_provider_in_its_route(database_url: str) -> None:
    unreachable = f"http://127.0.0.1:{free_port()}"
    providers = {
        "tw": twilio(unreachable, timeout_seconds=1),
        "backup": {"kind": "fake", "latency_ms": 0, "receipt_delay_ms": 10},
    }
    async with live_service(
        database_url,
        providers=providers,
        default_provider="tw",
        routes={"+1415": ["tw", "backup"]},
        failover_after=2,
    ) as live:
        routed = await live.send(to=ORDINARY, body="over the backup")
        assert routed["route"] == ["tw", "backup"]
        message = await live.wait_for(routed["id"], "delivered", timeout=15)
        assert message["provider"] == "backup"
        types = [e["type"] for e in message["events"]]
        assert types.count("retry_scheduled") == 1 and types.count("failed_over") == 1
        [moved] = [e for e in message["events"] if e["type"] == "failed_over"]
        assert (moved["detail"]["from"], moved["detail"]["provider"]) == ("tw", "backup")
        # A message that asks for its provider is not routed.
        pinned = await live.send(to=ORDINARY, body="only twilio", provider="tw")
        assert pinned["route"] == ["tw"]


async def test_ordered_messages_to_one_number_are_handed_over_in_order(
    database_url: str, fake: FakeTwilioServer
) -> None:
    # Every first attempt to this number fails (500): without ordering, later messages would
    # overtake the earlier ones waiting out their retry.
    providers = {"tw": twilio(fake.url, ordered=True, concurrency=10)}
    async with live_service(database_url, providers=providers, default_provider="tw") as live:
        ids = [(await live.send(to=TEMPORARY_THEN_OK, body=f"part {n}"))["id"] for n in range(5)]
        other = await live.send(to=ORDINARY, body="not ordered with the others", ordered=False)
        for message_id in [*ids, other["id"]]:
            await live.wait_for(message_id, "delivered", timeout=20)
        accepted = [s.body for s in fake.sends if s.to == TEMPORARY_THEN_OK and s.attempt > 1]
        assert accepted == [f"part {n}" for n in range(5)]


async def test_a_failed_webhook_is_kept_and_can_be_replayed_from_the_cli(
    database_url: str, fake: FakeTwilioServer, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    async with live_service(
        database_url, providers={"tw": twilio(fake.url)}, default_provider="tw", worker=False
    ) as live:
        sent = await live.send(to=ORDINARY, body="hello")
        await live.service.store.queue.claim("tw", worker="w", limit=1, lease_seconds=60)
        await live.service.store.reports.record_accepted(
            sent["id"], provider_message_ids=["SM" + "e" * 32], provider_status="queued"
        )
        tracker = live.service.tracker
        real_apply = tracker.apply

        async def database_gone(*args: Any, **kwargs: Any) -> Any:
            raise ConnectionError("database went away")

        monkeypatch.setattr(tracker, "apply", database_gone)
        url = f"{live.url}/webhooks/twilio/tw/status"
        params = {
            "MessageSid": "SM" + "e" * 32,
            "MessageStatus": "delivered",
            "AccountSid": DEFAULT_ACCOUNT_SID,
        }
        status, _ = await fake.post_status(url, params)
        assert status == 503  # the database is out of reach: Twilio sends it again later
        monkeypatch.setattr(tracker, "apply", real_apply)
        [entry] = await live.service.store.webhooks.search(provider="tw", failed=True)
        assert entry.verified is True and "database went away" in (entry.error or "")
        assert (await live.message(sent["id"]))["status"] == "sent"

        config = tmp_path / "tidings.toml"
        config.write_text(
            f'database_url = "{database_url}"\n'
            f'default_provider = "tw"\n'
            f'[providers.tw]\nkind = "twilio"\naccount_sid = "{DEFAULT_ACCOUNT_SID}"\n'
            f'auth_token = "{DEFAULT_AUTH_TOKEN}"\nfrom = "{FROM}"\nbase_url = "{fake.url}"\n'
        )
        env = {k: v for k, v in os.environ.items() if not k.startswith("TIDINGS_")}
        env["TIDINGS_CONFIG"] = str(config)
        replay = await asyncio.to_thread(
            subprocess.run,
            [sys.executable, "-m", "tidings", "webhooks", "replay", str(entry.id)],
            env=env,
            capture_output=True,
            text=True,
            timeout=60,
        )
        assert replay.returncode == 0, replay.stderr
        assert "1 reports" in replay.stdout
        assert (await live.message(sent["id"]))["status"] == "delivered"
        replayed = await live.service.store.webhooks.get(entry.id)
        assert replayed is not None and replayed.processed and replayed.error is None


async def test_health_of_the_webhook_route_probe(live: Live) -> None:
    async with httpx.AsyncClient() as client:
        assert (await client.head(f"{live.url}/webhooks/twilio/tw/status")).status_code == 200
        assert (await client.head(f"{live.url}/webhooks/twilio/nobody/status")).status_code == 404


@pytest.mark.parametrize("fake", [FakeTwilioConfig(callback_delay_ms=10, max_per_second=5)], indirect=True)
async def test_the_rate_limit_keeps_sends_under_the_providers_limit(
    database_url: str, fake: FakeTwilioServer
) -> None:
    providers = {"tw": twilio(fake.url, rate_limit=4, concurrency=10)}
    async with live_service(database_url, providers=providers, default_provider="tw") as live:
        ids = [(await live.send(to=f"+1415555{n:04d}", body="hi"))["id"] for n in range(10)]
        for message_id in ids:
            await live.wait_for(message_id, "delivered", timeout=20)
        assert fake.stats["rejected"] == 0
        assert fake.stats["accepted"] == 10


@pytest.mark.parametrize(
    ("word", "status", "error_code"),
    [
        ("queued", "sent", None),
        ("accepted", "sent", None),
        ("scheduled", "sent", None),
        ("sending", "sent", None),
        ("sent", "sent", None),
        ("delivered", "delivered", None),
        ("read", "delivered", None),
        ("undelivered", "failed", "30005"),
        ("failed", "failed", "30008"),
        ("canceled", "failed", "canceled"),
        ("something_new", "sent", None),
    ],
)
async def test_every_twilio_status_maps_to_ours(
    database_url: str, fake: FakeTwilioServer, word: str, status: str, error_code: str | None
) -> None:
    providers = {"tw": twilio(fake.url, status_callback=False)}
    async with live_service(database_url, providers=providers, default_provider="tw") as live:
        sent = await live.send(to=ORDINARY, body="hello")
        message = await live.wait_for(sent["id"], "sent")
        params = {
            "MessageSid": message["provider_message_id"],
            "MessageStatus": word,
            "AccountSid": DEFAULT_ACCOUNT_SID,
        }
        if error_code and error_code != "canceled":
            params["ErrorCode"] = error_code
        answer, _ = await fake.post_status(f"{live.url}/webhooks/twilio/tw/status", params)
        assert answer == 200
        message = await live.message(sent["id"])
        assert message["status"] == status
        assert message["error_code"] == error_code
        assert message["events"][-1]["provider_status"] == word
