"""Alerts: each rule driven across its threshold and back, on SQLite and PostgreSQL. An alert is
raised once, stays open (and is not raised again) while its condition holds, is resolved when it
clears, and each raise and resolve queues one callback to every admin key with a callback URL."""

from __future__ import annotations

import asyncio
import base64
import contextlib
import logging
from collections.abc import AsyncIterator
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

import httpx
import pytest

from tests.conftest import make_settings
from tests.integration.test_inbound_callbacks import Receiver
from tests.live import live_service
from tidings import ids, verify_signature
from tidings.api.app import create_app
from tidings.clock import utcnow
from tidings.config import AlertRules
from tidings.domain.messages import NewMessage
from tidings.domain.reports import Report
from tidings.domain.status import Status
from tidings.services import Service
from tidings.services.alerts import Evaluation
from tidings.store import Store
from tidings.store.reports import ReportItem

TO = "+254712345678"
OPS_URL = "https://ops.example.org/alerts"


def only(rule: str, **settings: Any) -> dict[str, dict[str, Any]]:
    """The ``alerts`` setting with every rule switched off but ``rule`` (with ``settings``)."""
    return {name: ({**settings} if name == rule else {"enabled": False}) for name in AlertRules.model_fields}


@contextlib.asynccontextmanager
async def started(database_url: str, **overrides: Any) -> AsyncIterator[Service]:
    service = Service(make_settings(database_url, **overrides), store=Store.connect(database_url))
    await service.start()
    try:
        yield service
    finally:
        await service.close()


@dataclass(frozen=True)
class Keys:
    admin: str
    """An admin key with a callback URL: told of every alert."""
    others: frozenset[str]
    """A send-and-read key with a URL, a revoked admin key with one, an admin key without one."""


@pytest.fixture
async def keys(store: Store) -> Keys:
    admin, _ = await store.keys.create("ops")
    await store.callbacks.set_key_url(admin.id, OPS_URL)
    reader, _ = await store.keys.create("app", scopes=frozenset({"send", "read"}))
    await store.callbacks.set_key_url(reader.id, "https://app.example.org/events")
    revoked, _ = await store.keys.create("old-ops")
    await store.callbacks.set_key_url(revoked.id, "https://old.example.org/alerts")
    await store.keys.revoke(revoked.id)
    silent, _ = await store.keys.create("admin-without-url")
    return Keys(admin=admin.id, others=frozenset({reader.id, revoked.id, silent.id}))


async def alert_callbacks(store: Store) -> list[tuple[str, str | None, str, str]]:
    """The alert callbacks queued, oldest first: (type, key, url, alert id)."""
    rows = await store.callbacks.search(limit=1000)
    return [
        (r["type"], r["api_key_id"], r["url"], r["payload"]["id"])
        for r in reversed(rows)
        if r["type"].startswith("alert.")
    ]


async def accept(store: Store, count: int, **fields: Any) -> list[str]:
    """``count`` new messages (of the ``fake`` provider unless ``fields`` say otherwise)."""
    fields.setdefault("provider", "fake")
    made = await asyncio.gather(
        *(
            store.messages.insert(NewMessage.sms(to=TO, text="hi", max_attempts=3, **fields))
            for _ in range(count)
        )
    )
    return [str(row["id"]) for row, _ in made]


async def report(store: Store, message_ids: list[str], status: Status) -> None:
    await asyncio.gather(
        *(
            store.reports.apply(ReportItem(m, Report(status=status, source="test", occurred_at=utcnow())))
            for m in message_ids
        )
    )


def later(seconds: float = 1.0) -> datetime:
    return utcnow() + timedelta(seconds=seconds)


class Check:
    """Evaluates the rules and keeps what each evaluation did, for the assertions."""

    def __init__(self, service: Service, keys: Keys) -> None:
        self.service = service
        self.keys = keys

    async def __call__(self, now: datetime | None = None) -> Evaluation:
        done = await self.service.alerts.evaluate(now or later())
        assert done.failed == []
        return done

    async def raised(self, now: datetime | None = None) -> dict[str, Any]:
        """Evaluate: exactly one alert must be raised, announced to the admin key only."""
        before = await alert_callbacks(self.service.store)
        done = await self(now)
        assert len(done.raised) == 1 and done.resolved == [], done
        [alert] = done.raised
        assert alert["status"] == "open" and alert["resolved_at"] is None
        assert await alert_callbacks(self.service.store) == [
            *before,
            ("alert.raised", self.keys.admin, OPS_URL, alert["id"]),
        ]
        return alert

    async def holds(self, alert: dict[str, Any], now: datetime | None = None) -> dict[str, Any]:
        """Evaluate: nothing raised or resolved, no callback; the alert is still open."""
        before = await alert_callbacks(self.service.store)
        done = await self(now)
        assert done.raised == [] and done.resolved == [], done
        assert await alert_callbacks(self.service.store) == before
        [still] = await self.service.store.alerts.open_alerts()
        assert still["id"] == alert["id"]
        return still

    async def resolved(self, alert: dict[str, Any], now: datetime | None = None) -> dict[str, Any]:
        """Evaluate: exactly ``alert`` is resolved, announced to the admin key only."""
        before = await alert_callbacks(self.service.store)
        done = await self(now)
        assert done.raised == [] and [a["id"] for a in done.resolved] == [alert["id"]], done
        [resolved] = done.resolved
        assert resolved["status"] == "resolved" and resolved["resolved_at"] is not None
        assert await alert_callbacks(self.service.store) == [
            *before,
            ("alert.resolved", self.keys.admin, OPS_URL, alert["id"]),
        ]
        assert await self.service.store.alerts.open_alerts() == []
        return resolved

    async def quiet(self, now: datetime | None = None) -> None:
        """Evaluate: nothing raised or resolved."""
        done = await self(now)
        assert done.raised == [] and done.resolved == [], done


@contextlib.asynccontextmanager
async def checking(database_url: str, keys: Keys, **overrides: Any) -> AsyncIterator[Check]:
    async with started(database_url, **overrides) as service:
        yield Check(service, keys)


async def test_delivery_rate_below_90_percent_of_more_than_10_messages(database_url: str, keys: Keys) -> None:
    async with checking(database_url, keys, alerts=only("delivery_rate")) as check:
        store = check.service.store
        sent = await accept(store, 10)
        await report(store, sent[:8], Status.DELIVERED)
        await report(store, sent[8:], Status.FAILED)
        await check.quiet()  # 80 %, but of 10 messages: the seed wants more than 10

        await report(store, await accept(store, 1), Status.FAILED)
        alert = await check.raised()
        assert (alert["rule"], alert["subject"], alert["threshold"]) == ("delivery_rate", "", 0.9)
        assert alert["value"] == pytest.approx(8 / 11)
        assert alert["detail"]["attempted"] == 11 and alert["detail"]["delivered"] == 8
        assert "72.7%" in alert["message"]

        await report(store, await accept(store, 1), Status.DELIVERED)
        still = await check.holds(alert)
        assert still["value"] == pytest.approx(9 / 12)
        assert still["last_checked_at"] > alert["last_checked_at"]

        await report(store, await accept(store, 16), Status.DELIVERED)
        await check.holds(alert)  # 25 of 28: 89.3 %
        await report(store, await accept(store, 2), Status.DELIVERED)
        resolved = await check.resolved(alert)  # 27 of 30: 90 %, which is not below 90 %
        assert resolved["value"] == pytest.approx(0.9)
        await check.quiet()


async def test_delivery_rate_is_over_its_window(database_url: str, keys: Keys) -> None:
    async with checking(database_url, keys, alerts=only("delivery_rate", window_seconds=3600)) as check:
        store = check.service.store
        await report(store, await accept(store, 11), Status.FAILED)
        alert = await check.raised()
        await check.holds(alert, later(3500))
        await check.resolved(alert, later(3700))  # nothing accepted in the last hour then


async def test_failure_rate_above_10_percent(database_url: str, keys: Keys) -> None:
    async with checking(database_url, keys, alerts=only("failure_rate")) as check:
        store = check.service.store
        sent = await accept(store, 11)
        await report(store, sent[:10], Status.DELIVERED)
        await report(store, sent[10:], Status.FAILED)
        await check.quiet()  # 1 of 11: 9.1 %

        await report(store, await accept(store, 1), Status.FAILED)
        alert = await check.raised()  # 2 of 12: 16.7 %
        assert (alert["rule"], alert["threshold"]) == ("failure_rate", 0.1)
        assert alert["value"] == pytest.approx(2 / 12)
        await check.holds(alert)

        # Cancelled messages are not attempted: they change no rate.
        for message_id in await accept(store, 30):
            assert await store.messages.cancel(message_id)
        await check.holds(alert)

        await report(store, await accept(store, 9), Status.DELIVERED)
        resolved = await check.resolved(alert)  # 2 of 21
        assert resolved["value"] == pytest.approx(2 / 21)


async def test_more_than_100_messages_without_a_final_status(database_url: str, keys: Keys) -> None:
    async with checking(database_url, keys, alerts=only("pending")) as check:
        store = check.service.store
        waiting = await accept(store, 100)
        await check.quiet()

        later_ones = await accept(store, 1, send_at=later(3600))  # scheduled counts: not final
        alert = await check.raised()
        assert (alert["rule"], alert["value"], alert["threshold"]) == ("pending", 101, 100)
        await report(store, waiting[:1], Status.SENT)  # sent is not final either
        await check.holds(alert)

        await report(store, waiting[:1], Status.DELIVERED)
        resolved = await check.resolved(alert)
        assert resolved["value"] == 100
        assert await store.messages.cancel(later_ones[0])
        await check.quiet()


async def test_a_message_waiting_longer_than_the_limit_for_a_worker(database_url: str, keys: Keys) -> None:
    async with checking(database_url, keys, alerts=only("oldest_waiting", seconds=900)) as check:
        store = check.service.store
        start = utcnow()
        [waiting] = await accept(store, 1)
        await accept(store, 1, send_at=start + timedelta(hours=2))  # scheduled: not waiting
        await check.quiet(start + timedelta(seconds=890))

        alert = await check.raised(start + timedelta(seconds=910))
        assert (alert["rule"], alert["subject"], alert["threshold"]) == ("oldest_waiting", "fake", 900)
        assert alert["value"] == pytest.approx(910, abs=1)
        await check.holds(alert, start + timedelta(seconds=1000))

        [claimed] = await store.queue.claim("fake", worker="w", limit=1, lease_seconds=60)
        assert claimed.id == waiting
        await check.resolved(alert, start + timedelta(seconds=1010))


async def test_a_provider_failing_over_more_than_n_times(database_url: str, keys: Keys) -> None:
    providers = {"first": {"kind": "fake"}, "second": {"kind": "fake"}}
    async with checking(
        database_url, keys, providers=providers, default_provider="first", alerts=only("failover", above=2)
    ) as check:
        store = check.service.store

        async def fail_over(count: int) -> None:
            await accept(store, count, provider="first", route=["first", "second"])
            moved = await store.queue.fail_over_waiting("first", waiting_since=later(5))
            assert moved == count

        await fail_over(2)
        await check.quiet()

        await fail_over(1)
        alert = await check.raised()
        assert (alert["rule"], alert["subject"], alert["value"], alert["threshold"]) == (
            "failover",
            "first",
            3,
            2,
        )
        await check.holds(alert, later(3000))
        await check.resolved(alert, later(3700))  # the window is an hour


async def test_failovers_by_the_worker_are_counted_for_the_provider_they_leave(database_url: str) -> None:
    # +12025550102 is refused for now at every attempt: after one failure the worker moves it on.
    providers = {
        "flaky": {"kind": "fake", "latency_ms": 0},
        "backup": {"kind": "fake", "latency_ms": 0},
    }
    async with live_service(
        database_url,
        providers=providers,
        default_provider="flaky",
        routes={"+1202": ["flaky", "backup"]},
        failover_after=1,
        max_attempts=2,
        alerts=only("failover", above=0),
        alert_interval=3600,
    ) as live:
        sent = await live.send(to="+12025550102", body="hi")
        await live.wait_for(sent["id"], "failed")
        done = await live.service.alerts.evaluate(later())
        assert [(a["rule"], a["subject"], a["value"]) for a in done.raised] == [("failover", "flaky", 1)]


async def test_an_android_gateway_that_stops_polling(database_url: str, keys: Keys) -> None:
    phone = {"kind": "gateway", "username": "phone", "password": "pw", "silent_after_seconds": 300}
    async with checking(
        database_url,
        keys,
        providers={"fake": {"kind": "fake"}, "phone": phone},
        alerts=only("gateway_silent"),
    ) as check:
        auth = "Basic " + base64.b64encode(b"phone:pw").decode()
        transport = httpx.ASGITransport(app=create_app(check.service))
        async with httpx.AsyncClient(transport=transport, base_url="http://tidings.test") as app:

            async def poll() -> datetime:
                answer = await app.post("/api/sms", json={}, headers={"Authorization": auth})
                assert answer.status_code == 200, answer.text
                polled = await check.service.store.gateways.last_poll("phone")
                assert polled is not None
                return polled

            await check.quiet(later(10_000))  # never polled: not set up yet, not silent
            first = await poll()
            await check.quiet(first + timedelta(seconds=290))
            alert = await check.raised(first + timedelta(seconds=310))
            assert (alert["subject"], alert["threshold"]) == ("phone", 300)
            assert alert["value"] == pytest.approx(310)
            await check.holds(alert, first + timedelta(seconds=400))

            second = await poll()
            await check.resolved(alert, second + timedelta(seconds=10))


async def test_the_gateway_rule_can_set_its_own_limit(database_url: str, keys: Keys) -> None:
    phone = {"kind": "gateway", "username": "phone", "password": "pw", "silent_after_seconds": 300}
    async with checking(
        database_url,
        keys,
        providers={"fake": {"kind": "fake"}, "phone": phone},
        alerts=only("gateway_silent", seconds=60),
    ) as check:
        polled = utcnow()
        async with check.service.store.transaction() as conn:
            from tidings.store.gateways import count_poll

            await count_poll(conn, "phone", address=None, now=polled, inbound=0, updates=0, handed_over=0)
        await check.quiet(polled + timedelta(seconds=50))
        alert = await check.raised(polled + timedelta(seconds=70))
        assert alert["threshold"] == 60


async def test_a_providers_webhooks_failing(database_url: str, keys: Keys) -> None:
    async with checking(database_url, keys, alerts=only("webhooks_failing")) as check:
        webhooks = check.service.store.webhooks

        async def arrive(count: int, *, answer: int | None = 200) -> None:
            """``count`` webhooks: processed (200), refused at their checks (403), failed in
            processing (500), or still being processed (``None``)."""
            for _ in range(count):
                entry = await webhooks.record(
                    provider="fake",
                    kind="fake",
                    event="status",
                    url="/webhooks/fake/fake/status",
                    headers={},
                    body=b"{}",
                    remote_ip="127.0.0.1",
                    refused=(403, "invalid signature") if answer == 403 else None,
                )
                if answer in (200, 500):
                    await webhooks.finish(
                        entry, verified=True, processed=answer == 200, response_status=answer
                    )

        await arrive(8)
        await arrive(2, answer=403)
        await check.quiet()  # 20 %, of 10: the rule wants more than 10
        await arrive(1, answer=None)
        await check.quiet()  # one still being processed is neither a failure nor finished

        await arrive(1, answer=403)
        alert = await check.raised()
        assert (alert["rule"], alert["subject"], alert["threshold"]) == ("webhooks_failing", "fake", 0.1)
        assert alert["value"] == pytest.approx(3 / 11)
        assert (alert["detail"]["finished"], alert["detail"]["failed"]) == (11, 3)

        await arrive(1, answer=500)
        still = await check.holds(alert)
        assert still["value"] == pytest.approx(4 / 12)

        await arrive(30)
        resolved = await check.resolved(alert)
        assert resolved["value"] == pytest.approx(4 / 42)


async def test_callbacks_failing_or_retrying(database_url: str, keys: Keys) -> None:
    async with checking(database_url, keys, alerts=only("callbacks_failing", above=4)) as check:
        store = check.service.store
        # Messages with a callback URL: each status change queues a callback.
        sent = await accept(store, 5, callback_url="https://app.example.org/events")
        await report(store, sent, Status.DELIVERED)
        due = await store.callbacks.take_due(limit=10, lease_seconds=60)
        assert len(due) == 5
        for callback in due[:3]:
            await store.callbacks.not_delivered(callback.id, error="HTTP 500", status_code=500, retry_at=None)
        await store.callbacks.not_delivered(
            due[3].id, error="timed out", status_code=None, retry_at=later(60)
        )
        await store.callbacks.delivered(due[4].id, 200)
        await check.quiet()  # 3 failed + 1 retrying: not more than 4

        await report(
            store, await accept(store, 1, callback_url="https://app.example.org/events"), Status.FAILED
        )
        [another] = await store.callbacks.take_due(limit=10, lease_seconds=60)
        await store.callbacks.not_delivered(another.id, error="HTTP 503", status_code=503, retry_at=later(60))
        alert = await check.raised()
        assert (alert["rule"], alert["value"], alert["threshold"]) == ("callbacks_failing", 5, 4)
        assert (alert["detail"]["failed"], alert["detail"]["retrying"]) == (3, 2)

        # The alert's own callback failing does not feed the alert.
        # (queued at the check's time, a second from now)
        [own] = await store.callbacks.take_due(limit=10, lease_seconds=60, now=later(2))
        assert own.payload["type"] == "alert.raised"
        await store.callbacks.not_delivered(own.id, error="HTTP 500", status_code=500, retry_at=None)
        still = await check.holds(alert)
        assert still["value"] == 5

        assert await store.callbacks.retry(due[0].id) is not None  # queued again, fresh attempts
        await check.resolved(alert)
        # Only callbacks queued in the window count.
        await check.quiet(later(3700))


async def test_a_batch_with_waiting_messages_and_no_progress(database_url: str, keys: Keys) -> None:
    async with checking(database_url, keys, alerts=only("batch_stalled", seconds=900)) as check:
        store = check.service.store
        start = utcnow()
        stalled, moving = ids.new_id(), ids.new_id()
        await accept(store, 3, batch_id=stalled)
        await accept(store, 3, batch_id=moving, provider="slow")
        await accept(store, 2)  # not in a batch
        # One of the moving batch's messages is sent every few minutes.
        await store.queue.claim(
            "slow", worker="w", limit=1, lease_seconds=60, now=start + timedelta(seconds=800)
        )
        await check.quiet(start + timedelta(seconds=890))

        alert = await check.raised(start + timedelta(seconds=1000))
        assert (alert["rule"], alert["subject"], alert["value"]) == (
            "batch_stalled",
            stalled,
            pytest.approx(1000, abs=1),
        )
        assert alert["detail"]["waiting"] == 3
        await check.holds(alert, start + timedelta(seconds=1200))

        await store.queue.claim(
            "fake", worker="w", limit=1, lease_seconds=60, now=start + timedelta(seconds=1300)
        )
        await check.resolved(alert, start + timedelta(seconds=1310))


async def test_switching_a_rule_off_resolves_its_open_alerts(database_url: str, keys: Keys) -> None:
    async with checking(database_url, keys, alerts=only("pending", above=1)) as check:
        await accept(check.service.store, 2)
        alert = await check.raised()
    async with checking(database_url, keys, alerts=only("failure_rate")) as check:
        await check.resolved(alert)


async def test_raises_are_warnings_and_resolves_information_in_the_log(
    database_url: str, keys: Keys, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="tidings.services.alerts")
    async with checking(database_url, keys, alerts=only("pending", above=1)) as check:
        [first, _] = await accept(check.service.store, 2)
        alert = await check.raised()
        assert await check.service.store.messages.cancel(first)
        await check.resolved(alert)
    records = [r for r in caplog.records if getattr(r, "action", None) == "alert"]
    assert [r.levelno for r in records] == [logging.WARNING, logging.INFO]
    for record, status in zip(records, ["open", "resolved"], strict=True):
        assert vars(record)["alert_id"] == alert["id"]
        assert (vars(record)["rule"], vars(record)["alert_status"]) == ("pending", status)
        assert (vars(record)["value"], vars(record)["threshold"]) == (2 if status == "open" else 1, 1)
    assert "2 of the messages accepted" in records[0].getMessage()


async def test_workers_checking_at_once_raise_and_resolve_an_alert_once(
    database_url: str, keys: Keys
) -> None:
    workers = [
        Service(
            make_settings(database_url, alerts=only("pending", above=1)), store=Store.connect(database_url)
        )
        for _ in range(6)
    ]
    try:
        store = workers[0].store
        now = later()
        [first, _] = await accept(store, 2)
        done = await asyncio.gather(*(w.alerts.evaluate(now) for w in workers))
        raised = [a for d in done for a in d.raised]
        assert len(raised) == 1
        assert [a["rule"] for a in await store.alerts.open_alerts()] == ["pending"]
        assert [c[0] for c in await alert_callbacks(store)] == ["alert.raised"]

        assert await store.messages.cancel(first)
        done = await asyncio.gather(*(w.alerts.evaluate(later()) for w in workers))
        assert [a["id"] for d in done for a in d.resolved] == [raised[0]["id"]]
        assert [c[0] for c in await alert_callbacks(store)] == ["alert.raised", "alert.resolved"]
    finally:
        for worker in workers:
            await worker.store.close()


async def test_a_running_worker_posts_signed_alert_callbacks(database_url: str) -> None:
    receiver = Receiver()
    await receiver.start()
    try:
        async with live_service(database_url, alerts=only("pending", above=0), alert_interval=0.05) as live:
            store = live.service.store
            ops, _ = await store.keys.create("ops", scopes=frozenset({"admin"}))
            await store.callbacks.set_key_url(ops.id, receiver.url)
            secret = (await store.callbacks.key_settings(ops.id))["callback_secret"]

            tomorrow = await live.send(to=TO, body="tomorrow", send_at=later(86_400).isoformat() + "Z")
            [raised] = await receiver.wait(1)
            [(headers, body)] = receiver.got
            assert verify_signature(body, headers["Tidings-Signature"], secret)
            assert (raised["type"], raised["rule"], raised["status"], raised["value"]) == (
                "alert.raised",
                "pending",
                "open",
                1,
            )

            assert (await live.client.post(f"/v1/messages/{tomorrow['id']}/cancel")).status_code == 200
            resolved = (await receiver.wait(2))[1]
            assert (resolved["type"], resolved["id"], resolved["status"]) == (
                "alert.resolved",
                raised["id"],
                "resolved",
            )
            assert verify_signature(receiver.got[1][1], receiver.got[1][0]["Tidings-Signature"], secret)
            listed = (await live.client.get("/v1/alerts")).json()["data"]
            assert [(a["id"], a["status"]) for a in listed] == [(raised["id"], "resolved")]
    finally:
        await receiver.stop()
