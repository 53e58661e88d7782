"""Inbound SMS, opt-outs, the message log and signed callbacks, over real HTTP."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx
import orjson
import pytest
from aiohttp import web
from sqlalchemy import event
from sqlalchemy.util import await_only

from tests.integration.conftest import OUR_NUMBER, every_provider
from tests.live import Live, eventually, live_service
from tidings import verify_signature
from tidings.testing.fake_orange import FakeOrangeServer
from tidings.testing.fake_twilio import DEFAULT_ACCOUNT_SID, FakeTwilioServer

PERSON = "+254712345678"


@dataclass
class Receiver:
    """A client application's callback endpoint; ``answers`` are given before 200s."""

    answers: list[int] = field(default_factory=list)
    got: list[tuple[dict[str, str], bytes]] = field(default_factory=list)
    hits: int = 0
    url: str = ""
    _runner: web.AppRunner | None = None

    async def _handle(self, request: web.Request) -> web.Response:
        self.hits += 1
        body = await request.read()
        if self.answers:
            return web.Response(status=self.answers.pop(0))
        self.got.append((dict(request.headers), body))
        return web.Response(status=200)

    async def start(self) -> None:
        app = web.Application()
        app.router.add_post("/hook", self._handle)
        self._runner = web.AppRunner(app, access_log=None)
        await self._runner.setup()
        await web.TCPSite(self._runner, "127.0.0.1", 0).start()
        self.url = f"http://127.0.0.1:{self._runner.addresses[0][1]}/hook"

    async def stop(self) -> None:
        if self._runner is not None:
            await self._runner.cleanup()

    def payloads(self) -> list[dict[str, Any]]:
        return [orjson.loads(body) for _, body in self.got]

    async def wait(self, count: int, timeout: float = 20.0) -> list[dict[str, Any]]:
        async with asyncio.timeout(timeout):
            while len(self.got) < count:
                await asyncio.sleep(0.02)
        return self.payloads()


@pytest.fixture
async def receiver() -> AsyncIterator[Receiver]:
    r = Receiver()
    await r.start()
    try:
        yield r
    finally:
        await r.stop()


@pytest.fixture
async def live(database_url: str, twilio: FakeTwilioServer, orange: FakeOrangeServer) -> AsyncIterator[Live]:
    async with live_service(
        database_url,
        providers=every_provider(twilio, orange),
        opt_out_reply="You will get no more messages. Reply START to undo.",
        callback_retry_base_seconds=0.05,
        callback_retry_cap_seconds=0.2,
    ) as live:
        yield live


async def callbacks(live: Live, **params: str) -> list[dict[str, Any]]:
    """``GET /v1/callbacks`` with ``params``: the outbox rows, as a client application sees them."""
    response = await live.client.get("/v1/callbacks", params=params)
    assert response.status_code == 200, response.text
    rows: list[dict[str, Any]] = response.json()["data"]
    return rows


def all_delivered(rows: list[dict[str, Any]]) -> bool:
    return bool(rows) and all(c["status"] == "delivered" for c in rows)


async def twilio_inbound(
    live: Live, twilio: FakeTwilioServer, body: str, sid: str, sender: str = PERSON
) -> None:
    params = {
        "MessageSid": sid,
        "AccountSid": DEFAULT_ACCOUNT_SID,
        "From": sender,
        "To": OUR_NUMBER,
        "Body": body,
    }
    status, _ = await twilio.post_status(f"{live.url}/webhooks/twilio/tw/inbound", params)
    assert status == 200


async def test_inbound_from_every_provider_is_stored_once(
    live: Live, twilio: FakeTwilioServer, orange: FakeOrangeServer
) -> None:
    for _ in range(2):
        await twilio_inbound(live, twilio, "from twilio", "SM" + "1" * 32)
        status, _ = await orange.post_inbound(
            f"{live.url}/webhooks/orange/orange/inbound",
            PERSON,
            "+2250000000000",
            "from orange",
            message_id="or-1",
        )
        assert status == 200
        async with httpx.AsyncClient(auth=("phone", "pw")) as phone:
            answer = await phone.post(
                f"{live.url}/api/sms",
                json={"messages": [{"id": "gw-1", "from": PERSON, "content": "from the phone"}]},
            )
            assert answer.status_code == 200

    response = await live.client.get("/v1/inbound", params={"from": PERSON})
    assert response.status_code == 200
    stored = response.json()["data"]
    assert sorted((m["provider"], m["body"]) for m in stored) == [
        ("orange", "from orange"),
        ("phone", "from the phone"),
        ("tw", "from twilio"),
    ]
    assert all(m["received_at"].endswith("Z") for m in stored)
    page = await live.client.get("/v1/inbound", params={"limit": 2})
    assert len(page.json()["data"]) == 2 and page.json()["next_cursor"]
    rest = await live.client.get("/v1/inbound", params={"limit": 2, "cursor": page.json()["next_cursor"]})
    assert len(rest.json()["data"]) == 1


async def test_stop_cancels_waiting_messages_and_refuses_new_ones_until_start(
    live: Live, twilio: FakeTwilioServer
) -> None:
    later = (datetime.now(UTC) + timedelta(hours=1)).isoformat()
    scheduled = await live.send(to=PERSON, body="tomorrow's reminder", send_at=later)
    waiting = await live.send(to=PERSON, body="for the phone", provider="phone")  # no phone polls: pending
    other = await live.send(to="+254700000001", body="someone else", send_at=later)

    await twilio_inbound(live, twilio, " Stop. ", "SM" + "2" * 32)

    for message in (scheduled, waiting):
        cancelled = await live.message(message["id"])
        assert cancelled["status"] == "cancelled"
        assert cancelled["error_code"] == "recipient_opted_out"
    assert (await live.message(other["id"]))["status"] == "scheduled"
    refused = await live.client.post("/v1/messages", json={"to": PERSON, "body": "hello?"})
    assert refused.status_code == 422
    assert refused.json()["error"]["code"] == "recipient_opted_out"
    # The configured confirmation goes out, though the number is suppressed.
    replies = (await live.client.get("/v1/messages", params={"to": PERSON, "tag": "auto-reply"})).json()[
        "data"
    ]
    assert [r["body"] for r in replies] == ["You will get no more messages. Reply START to undo."]
    assert replies[0]["sender"] == OUR_NUMBER and replies[0]["provider"] == "tw"
    [entry] = (await live.client.get("/v1/opt-outs", params={"number": PERSON})).json()["data"]
    assert (entry["source"], entry["keyword"], entry["scope"]) == ("keyword", "STOP", "*")

    # "please stop" is a sentence, not a keyword.
    await twilio_inbound(live, twilio, "please stop calling me", "SM" + "3" * 32, sender="+254700000001")
    assert (await live.message(other["id"]))["status"] == "scheduled"

    await twilio_inbound(live, twilio, "START", "SM" + "4" * 32)
    assert (await live.client.get("/v1/opt-outs", params={"number": PERSON})).json()["data"] == []
    assert (
        await live.client.post("/v1/messages", json={"to": PERSON, "body": "welcome back"})
    ).status_code == 202


async def test_applications_manage_the_opt_out_list(live: Live) -> None:
    pending = await live.send(to=PERSON, body="x", provider="phone")
    added = await live.client.post("/v1/opt-outs", json={"number": PERSON, "note": "asked on paper"})
    assert added.status_code == 201
    assert added.json()["cancelled_messages"] == 1
    assert (await live.client.post("/v1/opt-outs", json={"number": PERSON})).status_code == 200
    assert (await live.message(pending["id"]))["status"] == "cancelled"
    listed = (await live.client.get("/v1/opt-outs")).json()["data"]
    assert [(o["number"], o["source"], o["note"]) for o in listed] == [(PERSON, "api", "asked on paper")]
    assert (await live.client.post("/v1/opt-outs", json={"number": "not a number"})).status_code == 422
    assert (await live.client.delete(f"/v1/opt-outs/{PERSON}")).status_code == 204
    assert (await live.client.delete(f"/v1/opt-outs/{PERSON}")).status_code == 404


async def test_the_log_shows_outbound_inbound_and_status_rows_for_a_number_in_time_order(
    live: Live, twilio: FakeTwilioServer
) -> None:
    sent = await live.send(to=PERSON, body="your results are ready", provider="tw")
    await live.wait_for(sent["id"], "delivered")
    await twilio.wait_for_callbacks(5)
    await twilio_inbound(live, twilio, "thanks", "SM" + "5" * 32)
    await live.send(to="+254700000001", body="not in this log", provider="fake")

    response = await live.client.get("/v1/log", params={"number": PERSON})
    assert response.status_code == 200
    rows = list(reversed(response.json()["data"]))
    assert [(r["kind"], r["provider_status"]) for r in rows] == [
        ("OUTBOUND", "queued"),
        ("STATUS_UPDATE", "sent"),
        ("STATUS_UPDATE", "delivered"),
        ("INBOUND", None),
    ]
    assert [r["at"] for r in rows] == sorted(r["at"] for r in rows)
    assert rows[-1]["body"] == "thanks" and rows[0]["message_id"] == sent["id"]
    only_status = await live.client.get("/v1/log", params={"kind": "STATUS_UPDATE", "message_id": sent["id"]})
    assert [r["provider_status"] for r in only_status.json()["data"]] == ["delivered", "sent"]
    first = await live.client.get("/v1/log", params={"number": PERSON, "limit": 3})
    second = await live.client.get(
        "/v1/log", params={"number": PERSON, "cursor": first.json()["next_cursor"]}
    )
    assert [r["id"] for r in first.json()["data"] + second.json()["data"]] == [
        r["id"] for r in reversed(rows)
    ]
    assert (await live.client.get("/v1/log", params={"cursor": "garbage"})).status_code == 400


async def test_callbacks_arrive_signed_and_in_order(
    live: Live, receiver: Receiver, twilio: FakeTwilioServer
) -> None:
    settings = await live.client.put("/v1/callback-settings", json={"url": receiver.url})
    assert settings.status_code == 200
    secret = settings.json()["secret"]
    assert secret and (await live.client.get("/v1/callback-settings")).json() == {
        "url": receiver.url,
        "secret": secret,
        "previous_secret_until": None,
    }

    sent = await live.send(to=PERSON, body="hello", provider="fake")
    await live.wait_for(sent["id"], "delivered")
    payloads = await receiver.wait(3)
    assert [(p["id"], p["status"]) for p in payloads] == [
        (sent["id"], "sending"),
        (sent["id"], "sent"),
        (sent["id"], "delivered"),
    ]
    assert payloads[-1]["type"] == "message.status" and payloads[-1]["to"] == PERSON
    for headers, body in receiver.got:
        assert verify_signature(body, headers["Tidings-Signature"], secret)
        assert not verify_signature(body + b" ", headers["Tidings-Signature"], secret)
        assert not verify_signature(body, headers["Tidings-Signature"], "another-secret")

    await twilio_inbound(live, twilio, "a reply", "SM" + "6" * 32)
    payloads = await receiver.wait(4)
    assert payloads[-1]["type"] == "inbound" and payloads[-1]["body"] == "a reply"
    assert payloads[-1]["from"] == PERSON


async def test_a_message_can_name_its_own_callback_url(live: Live, receiver: Receiver) -> None:
    sent = await live.send(to=PERSON, body="hello", provider="fake", callback_url=receiver.url)
    assert sent["callback_url"] == receiver.url
    await live.wait_for(sent["id"], "delivered")
    payloads = await receiver.wait(3)
    assert {p["id"] for p in payloads} == {sent["id"]}
    # The key never set callback settings, and its callbacks are signed all the same.
    secret = (await live.client.get("/v1/callback-settings")).json()["secret"]
    assert secret and all(verify_signature(body, h["Tidings-Signature"], secret) for h, body in receiver.got)
    bad = await live.client.post("/v1/messages", json={"to": PERSON, "body": "x", "callback_url": "ftp://x"})
    assert bad.status_code == 422


async def test_callbacks_are_retried_through_a_failing_receiver_and_kept_when_refused(
    live: Live, receiver: Receiver
) -> None:
    await live.client.put("/v1/callback-settings", json={"url": receiver.url})
    receiver.answers = [500, 503, 429]
    sent = await live.send(to=PERSON, body="hello", provider="fake")
    payloads = await receiver.wait(3)
    assert [p["status"] for p in payloads] == ["sending", "sent", "delivered"]
    # The receiver has the last payload before the sender has marked it delivered.
    delivered = await eventually(
        lambda: callbacks(live, message_id=sent["id"]), all_delivered, what="callbacks delivered"
    )
    assert sorted(c["attempts"] for c in delivered) == [1, 1, 4]
    assert all(c["status"] == "delivered" for c in delivered)

    receiver.answers = [410]
    second = await live.send(to="+254700000001", body="hello", provider="fake")
    await live.wait_for(second["id"], "delivered")
    [refused] = await eventually(lambda: callbacks(live, status="failed"), bool, what="a failed callback")
    assert refused["attempts"] == 1 and refused["last_status_code"] == 410
    # The refused one does not hold back the rest of that message's callbacks.
    await receiver.wait(5)
    retried = await live.client.post(f"/v1/callbacks/{refused['id']}/retry")
    assert retried.status_code == 200 and retried.json()["status"] == "pending"
    payloads = await receiver.wait(6)
    assert (payloads[-1]["id"], payloads[-1]["status"]) == (second["id"], "sending")
    assert (await live.client.post("/v1/callbacks/01NOSUCHCALLBACK0000000000/retry")).status_code == 404


async def test_a_callback_taken_by_a_worker_that_died_is_delivered_later(
    database_url: str, receiver: Receiver
) -> None:
    async with live_service(database_url, worker=False) as live:
        await live.client.put("/v1/callback-settings", json={"url": receiver.url})
        sent = await live.send(to=PERSON, body="hello", provider="fake")
        await live.service.store.messages.cancel(sent["id"], reason="changed my mind")
        [taken] = await live.service.store.callbacks.take_due(limit=10, lease_seconds=0.2)
        assert taken.payload["status"] == "cancelled"
        # The worker that took it dies here: nothing is delivered, the row stays "delivering".
        assert receiver.got == []
    async with live_service(database_url, empty=False) as live:
        payloads = await receiver.wait(1)
        assert payloads[0]["id"] == sent["id"] and payloads[0]["status"] == "cancelled"
        [row] = await eventually(lambda: callbacks(live), all_delivered, what="the callback delivered")
        assert row["status"] == "delivered" and row["attempts"] == 2


@pytest.mark.parametrize("provider", ["tw", "phone"])
async def test_a_message_accepted_while_its_recipient_opts_out_is_not_sent(
    live: Live, twilio: FakeTwilioServer, provider: str
) -> None:
    # The opt-out is stored between the accept's read of the list and its insert: it does not see
    # the message, and its cancelling does not find it. The claim must stop it.
    opted_out: list[int] = []

    def opt_out_meanwhile(_conn: Any, _cursor: Any, statement: str, parameters: Any, *_: Any) -> None:
        if opted_out or "INSERT INTO" not in statement or "messages" not in statement:
            return
        if "the race" not in repr(parameters):
            return
        answer = await_only(live.client.post("/v1/opt-outs", json={"number": PERSON}))
        opted_out.append(answer.status_code)
        assert answer.json()["cancelled_messages"] == 0

    engine = live.service.store.engine.sync_engine
    event.listen(engine, "before_cursor_execute", opt_out_meanwhile)
    try:
        message = await live.send(to=PERSON, body="the race", provider=provider)
    finally:
        event.remove(engine, "before_cursor_execute", opt_out_meanwhile)
    assert opted_out == [201]
    assert message["status"] == "pending"

    if provider == "phone":
        async with httpx.AsyncClient(auth=("phone", "pw")) as phone:
            polled = await phone.post(f"{live.url}/api/sms", json={"messages": []})
        assert polled.status_code == 200
        assert "the race" not in polled.text
    failed = await live.wait_for(message["id"], "failed", "sent", "delivered")
    assert (failed["status"], failed["failure_reason"], failed["error_code"]) == (
        "failed",
        "opted_out",
        "recipient_opted_out",
    )
    assert "opted out" in failed["error_message"]
    assert [s for s in twilio.sends if s.body == "the race"] == []
    assert [e["type"] for e in failed["events"]] == ["accepted", "send_failed"]


async def test_the_confirmation_of_a_stop_is_sent_though_the_number_opted_out(
    live: Live, twilio: FakeTwilioServer
) -> None:
    await twilio_inbound(live, twilio, "STOP", "SM" + "5" * 32)
    [reply] = (await live.client.get("/v1/messages", params={"to": PERSON, "tag": "auto-reply"})).json()[
        "data"
    ]
    sent = await live.wait_for(reply["id"], "sent", "delivered", "failed")
    assert sent["status"] in ("sent", "delivered"), sent
    assert [s.body for s in twilio.sends if s.to == PERSON] == [
        "You will get no more messages. Reply START to undo."
    ]
