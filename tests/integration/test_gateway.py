"""The Android gateway protocol, with the test playing the medic-gateway app over real HTTP."""

from __future__ import annotations

import asyncio
import gzip
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx
import orjson
import pytest

from tests.live import Live, live_service

PHONES = {
    "phone": {"kind": "gateway", "username": "phone-one", "password": "pw-one"},
    "phone2": {"kind": "gateway", "username": "phone-two", "password": "pw-two", "batch_size": 3},
    "fake": {"kind": "fake", "latency_ms": 0, "receipt_delay_ms": 10},
}
TO = "+254712345678"


class App:
    """The gateway app's side of the protocol."""

    def __init__(self, live: Live, username: str = "phone-one", password: str = "pw-one") -> None:
        self.url = f"{live.url}/api/sms"
        self.auth = (username, password)

    async def poll(
        self,
        messages: list[dict[str, Any]] | None = None,
        updates: list[dict[str, Any]] | None = None,
        *,
        expect: int = 200,
        **extra: Any,
    ) -> dict[str, Any]:
        body: dict[str, Any] = {**extra}
        if messages is not None:
            body["messages"] = messages
        if updates is not None:
            body["updates"] = updates
        async with httpx.AsyncClient(auth=self.auth) as client:
            response = await client.post(self.url, json=body)
        assert response.status_code == expect, response.text
        answer: dict[str, Any] = response.json()
        return answer


@pytest.fixture
async def live(database_url: str) -> AsyncIterator[Live]:
    async with live_service(database_url, providers=PHONES, default_provider="phone") as live:
        yield live


def history(message: dict[str, Any]) -> list[tuple[str, str | None, str]]:
    return [(e["type"], e["provider_status"], e["status"]) for e in message["events"]]


async def test_the_url_check_answers_like_a_medic_gateway_server(live: Live) -> None:
    async with httpx.AsyncClient() as client:
        for path in ("/api/sms", "/api/sms/"):
            response = await client.get(live.url + path)
            assert response.status_code == 200
            assert response.json() == {"medic-gateway": True}


async def test_the_seed_timeline_from_scheduled_to_delivered(live: Live) -> None:
    app = App(live)
    send_at = (datetime.now(UTC) + timedelta(seconds=0.5)).isoformat()
    sent = await live.send(to=TO, body="Remember the clinic visit", send_at=send_at)
    assert sent["status"] == "scheduled"
    assert (await app.poll())["messages"] == []

    await live.wait_for(sent["id"], "pending", timeout=5)
    answer = await app.poll()
    assert answer == {"messages": [{"id": sent["id"], "to": TO, "content": "Remember the clinic visit"}]}
    assert (await live.message(sent["id"]))["status"] == "sending"

    expected = {"UNSENT": "sending", "PENDING": "sending", "SENT": "sent", "DELIVERED": "delivered"}
    for word, status in expected.items():
        answer = await app.poll(updates=[{"id": sent["id"], "status": word}])
        assert answer["messages"] == []
        message = await live.message(sent["id"])
        assert (message["status"], message["provider_status"]) == (status, word)

    assert history(message) == [
        ("accepted", None, "scheduled"),
        ("promoted", None, "pending"),
        ("handed_to_gateway", None, "sending"),
        ("gateway_update", "UNSENT", "sending"),
        ("gateway_update", "PENDING", "sending"),
        ("gateway_update", "SENT", "sent"),
        ("gateway_update", "DELIVERED", "delivered"),
    ]
    labels = [e["detail"].get("gateway_status") for e in message["events"][2:]]
    assert labels == [
        "forwarded-to-gateway",
        "received-by-gateway",
        "forwarded-by-gateway",
        "sent",
        "delivered",
    ]
    assert message["sent_at"] and message["delivered_at"]


async def test_a_failure_keeps_the_apps_reason_and_a_later_retry_is_recorded(live: Live) -> None:
    app = App(live)
    sent = await live.send(to=TO, body="hello")
    await live.wait_for(sent["id"], "pending")
    await app.poll()
    await app.poll(updates=[{"id": sent["id"], "status": "FAILED", "reason": "generic-failure"}])
    message = await live.message(sent["id"])
    assert (message["status"], message["error_code"], message["error_message"]) == (
        "failed",
        "FAILED",
        "generic-failure",
    )
    # Someone retries by hand on the phone: recorded, the status stays as the design says.
    await app.poll(updates=[{"id": sent["id"], "status": "UNSENT"}])
    message = await live.message(sent["id"])
    assert message["status"] == "failed"
    assert history(message)[-1] == ("gateway_update", "UNSENT", "sending")
    # Proof of delivery still wins.
    await app.poll(updates=[{"id": sent["id"], "status": "DELIVERED"}])
    assert (await live.message(sent["id"]))["status"] == "delivered"


async def test_a_lost_response_hands_the_message_over_again_until_acknowledged(live: Live) -> None:
    app = App(live)
    sent = await live.send(to=TO, body="hello")
    await live.wait_for(sent["id"], "pending")
    first = await app.poll()  # this answer never reaches the phone
    again = await app.poll()
    assert first["messages"] == again["messages"] == [{"id": sent["id"], "to": TO, "content": "hello"}]
    await app.poll(updates=[{"id": sent["id"], "status": "UNSENT"}])
    assert (await app.poll())["messages"] == []
    message = await live.message(sent["id"])
    assert [t for t, _, _ in history(message)].count("handed_to_gateway") == 1
    assert message["attempts"] == 1


async def test_resending_a_request_whose_answer_was_lost_changes_nothing(live: Live) -> None:
    app = App(live)
    sent = await live.send(to=TO, body="hello")
    await live.wait_for(sent["id"], "pending")
    await app.poll()
    inbound = [{"id": "in-1", "from": "+254700000001", "content": "hi", "sms_sent": 1_700_000_000_000}]
    updates = [{"id": sent["id"], "status": "UNSENT"}, {"id": sent["id"], "status": "PENDING"}]
    for _ in range(2):
        await app.poll(inbound, updates)
    message = await live.message(sent["id"])
    assert [p for t, p, _ in history(message) if t == "gateway_update"] == ["UNSENT", "PENDING"]
    assert len(await live.service.store.inbound.search()) == 1
    # The app resends the old update with a new one: only the new one is recorded.
    await app.poll(updates=[{"id": sent["id"], "status": "PENDING"}, {"id": sent["id"], "status": "SENT"}])
    # And a real retry on the phone (UNSENT after PENDING) is a new update.
    await app.poll(updates=[{"id": sent["id"], "status": "UNSENT"}])
    message = await live.message(sent["id"])
    assert [p for t, p, _ in history(message) if t == "gateway_update"] == [
        "UNSENT",
        "PENDING",
        "SENT",
        "UNSENT",
    ]
    assert message["status"] == "sent"


async def test_duplicate_and_malformed_items_are_skipped_and_the_rest_processed(live: Live) -> None:
    app = App(live)
    sent = await live.send(to=TO, body="hello")
    await live.wait_for(sent["id"], "pending")
    await app.poll()
    answer = await app.poll(
        [
            {
                "id": "a",
                "from": "+254700000001",
                "content": "one",
                "sms_received": 1_700_000_000_000,
                "extra": 1,
            },
            {"id": "a", "from": "+254700000001", "content": "one"},
            {"from": "+254700000002", "content": "no id"},
            {"id": "b", "content": "no sender"},
            {"id": "c", "from": "+254700000003"},
            "not an object",
            {"id": "d", "from": "+254700000004", "content": ""},
        ],
        [
            {"id": "01NOSUCHMESSAGE00000000000", "status": "SENT"},
            {"status": "SENT"},
            {"id": sent["id"], "status": "WEIRD"},
            {"id": sent["id"]},
            {"id": sent["id"], "status": "SENT", "someNewField": True},
        ],
        somethingElse={"the app": "added a field"},
    )
    assert answer == {"messages": []}
    stored = await live.service.store.inbound.search()
    assert sorted((m["provider_message_id"], m["from"], m["body"]) for m in stored) == [
        ("a", "+254700000001", "one"),
        ("d", "+254700000004", ""),
    ]
    message = await live.message(sent["id"])
    assert message["status"] == "sent"
    updates = [(p, s) for t, p, s in history(message) if t == "gateway_update"]
    # The unrecognised ones are recorded with their raw word and change nothing.
    assert updates == [("WEIRD", "sending"), (None, "sending"), ("SENT", "sent")]
    unrecognised = [e for e in message["events"] if e["type"] == "gateway_update" and not e["changed"]]
    assert all(e["detail"]["gateway_status"] == "unrecognised" for e in unrecognised)


async def test_empty_null_and_missing_lists_are_fine(live: Live) -> None:
    app = App(live)
    assert await app.poll() == {"messages": []}
    assert await app.poll([], []) == {"messages": []}
    async with httpx.AsyncClient(auth=app.auth) as client:
        response = await client.post(
            app.url,
            content=b'{"messages": null, "updates": null}',
            headers={"Content-Type": "application/json; charset=utf-8"},
        )
        assert response.json() == {"messages": []}
        empty = await client.post(app.url, content=b"", headers={"Content-Type": "application/json"})
        assert empty.json() == {"messages": []}


async def test_bad_requests_get_the_apps_error_shape(live: Live) -> None:
    app = App(live)
    async with httpx.AsyncClient(auth=app.auth) as client:
        not_json = await client.post(
            app.url, content=b"{not json", headers={"Content-Type": "application/json"}
        )
        assert not_json.status_code == 400
        assert not_json.json()["error"] is True and "JSON" in not_json.json()["message"]
        a_list = await client.post(app.url, json=[1, 2])
        assert a_list.status_code == 400
        plain = await client.post(app.url, content=b"{}", headers={"Content-Type": "text/plain"})
        assert plain.status_code == 415 and plain.json()["error"] is True


async def test_wrong_or_missing_credentials_are_refused(live: Live) -> None:
    for auth in (("phone-one", "wrong"), ("nobody", "pw-one"), ("phone-one", "pw-two")):
        async with httpx.AsyncClient(auth=auth) as client:
            response = await client.post(f"{live.url}/api/sms", json={})
        assert response.status_code == 401
        assert response.headers["www-authenticate"].startswith("Basic")
        assert response.json()["error"] is True
    async with httpx.AsyncClient() as client:
        assert (await client.post(f"{live.url}/api/sms", json={})).status_code == 401


async def test_gzip_bodies_are_accepted(live: Live) -> None:
    app = App(live)
    body = gzip.compress(
        orjson.dumps({"messages": [{"id": "z", "from": "+254700000009", "content": "zipped"}]})
    )
    async with httpx.AsyncClient(auth=app.auth) as client:
        response = await client.post(
            app.url, content=body, headers={"Content-Type": "application/json", "Content-Encoding": "gzip"}
        )
    assert response.status_code == 200, response.text
    [stored] = await live.service.store.inbound.search()
    assert stored["body"] == "zipped" and stored["provider"] == "phone"


async def test_each_phone_gets_only_its_own_messages_oldest_first_in_batches(live: Live) -> None:
    one, two = App(live), App(live, "phone-two", "pw-two")
    mine = [(await live.send(to=TO, body=f"for two {n}", provider="phone2"))["id"] for n in range(5)]
    other = await live.send(to=TO, body="for one")
    for message_id in [*mine, other["id"]]:
        await live.wait_for(message_id, "pending")
    first = await two.poll()
    assert [m["id"] for m in first["messages"]] == mine[:3]
    # Phone one cannot touch phone two's messages.
    await one.poll(updates=[{"id": mine[0], "status": "DELIVERED"}])
    assert (await live.message(mine[0]))["status"] == "sending"
    assert [m["id"] for m in (await one.poll())["messages"]] == [other["id"]]
    acks = [{"id": m, "status": "UNSENT"} for m in mine[:3]]
    assert [m["id"] for m in (await two.poll(updates=acks))["messages"]] == mine[3:]

    response = await live.client.get("/v1/gateways")
    assert response.status_code == 200
    states = {g["name"]: g for g in response.json()["data"]}
    assert set(states) == {"phone", "phone2"}
    assert states["phone2"]["polls"] == 2 and states["phone2"]["messages_handed_over"] == 5
    assert states["phone2"]["updates_received"] == 3 and states["phone2"]["unacknowledged"] == 2
    assert states["phone2"]["silent"] is False and states["phone2"]["last_poll_at"].endswith("Z")


async def test_messages_leave_a_silent_phone_for_the_next_provider_in_their_route(database_url: str) -> None:
    phones = {
        **PHONES,
        "phone": {**PHONES["phone"], "silent_after_seconds": 0.2, "failover_after_seconds": 0.3},
    }
    async with live_service(
        database_url, providers=phones, default_provider="phone", routes={"+254": ["phone", "fake"]}
    ) as live:
        sent = await live.send(to=TO, body="the phone is off")
        unrouted = await live.send(to=TO, body="only the phone", provider="phone")
        message = await live.wait_for(sent["id"], "delivered", timeout=10)
        assert message["provider"] == "fake"
        assert "failed_over" in [e["type"] for e in message["events"]]
        assert (await live.message(unrouted["id"]))["status"] == "pending"
        [state] = [g for g in (await live.client.get("/v1/gateways")).json()["data"] if g["name"] == "phone"]
        assert state["silent"] is True and state["last_poll_at"] is None and state["waiting"] == 1


async def test_a_request_that_fails_can_be_resent_safely(live: Live, monkeypatch: pytest.MonkeyPatch) -> None:
    app = App(live)
    sent = await live.send(to=TO, body="hello")
    await live.wait_for(sent["id"], "pending")
    store = live.service.gateway
    real = store.exchange

    async def broken(*args: Any, **kwargs: Any) -> Any:
        raise ConnectionError("database went away")

    monkeypatch.setattr(store, "exchange", broken)
    failed = await app.poll([{"id": "x", "from": "+254700000001", "content": "hi"}], expect=500)
    assert failed["error"] is True
    monkeypatch.setattr(store, "exchange", real)
    answer = await app.poll([{"id": "x", "from": "+254700000001", "content": "hi"}])
    assert [m["id"] for m in answer["messages"]] == [sent["id"]]
    assert len(await live.service.store.inbound.search()) == 1


async def test_concurrent_polls_of_one_phone_hand_each_message_over_once(live: Live) -> None:
    app = App(live)
    ids = [(await live.send(to=TO, body=f"m{n}"))["id"] for n in range(20)]
    for message_id in ids:
        await live.wait_for(message_id, "pending")
    answers = await asyncio.gather(*(app.poll() for _ in range(4)))
    handed = [m["id"] for a in answers for m in a["messages"]]
    # Unacknowledged messages may be handed over again, but each is handed over (counted) once.
    assert set(handed) == set(ids)
    for message_id in ids:
        message = await live.message(message_id)
        assert message["attempts"] == 1


async def test_odd_inbound_values_are_stored_not_refused_for_ever(live: Live) -> None:
    # A failing request would be resent by the app for ever: values that do not fit are made to.
    app = App(live)
    long_id = "x" * 300
    odd = [{"id": long_id, "from": "+2547" + "0" * 100, "content": "nul\x00inside"}]
    for _ in range(2):
        await app.poll(odd)
    [stored] = await live.service.store.inbound.search()
    assert len(stored["from"]) == 64
    assert stored["body"] == "nul\ufffdinside"
    assert stored["provider_message_id"].startswith("sha256:")
