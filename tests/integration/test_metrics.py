"""``GET /metrics`` over real HTTP, on both databases: what it counts as messages go through the
in-process fake provider, webhooks and callbacks, what it reads from the database, and who may
scrape it.

Counters belong to the process (the test process here, shared by every test), so each test reads
them before and after what it does and compares.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from datetime import timedelta
from typing import Any

import httpx
import orjson
import pytest
from aiohttp import web
from prometheus_client.parser import text_string_to_metric_families
from sqlalchemy import text

from tests.live import Live, eventually, live_service
from tidings.clock import utcnow
from tidings.domain.messages import NewMessage
from tidings.providers.fake_rules import PERMANENT_FAILURE, RECEIPT_FAILED
from tidings.store import queue
from tidings.store.queue import Consumer

ORDINARY = "+12025550123"
PHONE = {"kind": "gateway", "username": "phone", "password": "pw"}
PROVIDERS = {"fake": {"kind": "fake", "latency_ms": 0, "receipt_delay_ms": 10}, "phone": PHONE}

Samples = dict[tuple[str, tuple[tuple[str, str], ...]], float]


class Scraper:
    """Prometheus' side: scrapes ``/metrics`` and reads samples by name and labels."""

    def __init__(self, client: httpx.AsyncClient) -> None:
        self.client = client

    async def scrape(self) -> Samples:
        response = await self.client.get("/metrics")
        assert response.status_code == 200, response.text
        assert response.headers["content-type"].startswith("text/plain; version=")
        samples: Samples = {}
        for family in text_string_to_metric_families(response.text):
            for sample in family.samples:
                samples[sample.name, tuple(sorted(sample.labels.items()))] = sample.value
        return samples

    async def until(self, done: Callable[[Samples], bool], *, what: str, timeout: float = 10.0) -> Samples:
        """The first scrape ``done`` accepts (the database's figures are up to a second old)."""
        return await eventually(self.scrape, done, timeout=timeout, what=what)


def value(samples: Samples, name: str, **labels: str) -> float:
    """A sample's value; 0 for one not (yet) exposed, as Prometheus reads a missing counter."""
    return samples.get((name, tuple(sorted(labels.items()))), 0.0)


def delta(before: Samples, after: Samples, name: str, **labels: str) -> float:
    return value(after, name, **labels) - value(before, name, **labels)


def family(samples: Samples, name: str) -> dict[tuple[tuple[str, str], ...], float]:
    return {labels: v for (n, labels), v in samples.items() if n == name}


@pytest.fixture
async def live(database_url: str) -> AsyncIterator[Live]:
    async with live_service(database_url, providers=PROVIDERS) as live:
        yield live


@pytest.fixture
def scraper(live: Live) -> Scraper:
    return Scraper(live.client)


# -- who may scrape ------------------------------------------------------------------------------


async def test_a_scrape_needs_a_key_that_may_read(live: Live) -> None:
    _key, writer = await live.service.store.keys.create("writer", scopes=frozenset({"send"}))
    _key, reader = await live.service.store.keys.create("prometheus", scopes=frozenset({"read"}))
    async with httpx.AsyncClient(base_url=live.url) as client:
        anonymous = await client.get("/metrics")
        wrong = await client.get("/metrics", headers={"Authorization": f"Bearer {writer}"})
        right = await client.get("/metrics", headers={"Authorization": f"Bearer {reader}"})

    assert anonymous.status_code == 401
    assert anonymous.json()["error"]["code"] == "unauthorized"
    assert wrong.status_code == 403
    assert right.status_code == 200
    assert "tidings_queue_messages" in right.text


async def test_metrics_public_serves_anyone(database_url: str) -> None:
    async with live_service(database_url, worker=False, metrics_public=True) as live:
        async with httpx.AsyncClient(base_url=live.url) as client:
            response = await client.get("/metrics")

    assert response.status_code == 200
    assert response.headers["content-type"].startswith("text/plain")
    names = {f.name for f in text_string_to_metric_families(response.text)}
    assert {"tidings_database_up", "tidings_queue_messages", "tidings_messages_accepted"} <= names


# -- counted as messages go ------------------------------------------------------------------------


async def test_a_delivered_message_is_counted_accepted_sent_and_delivered_once(
    live: Live, scraper: Scraper
) -> None:
    before = await scraper.scrape()

    sent = await live.send(to=ORDINARY, body="hello")
    await live.wait_for(sent["id"], "delivered")

    # The receipt's webhook is counted once it is answered, a moment after the message it
    # delivered is committed: wait for that, then every figure must be exactly one.
    receipts = {"provider": "fake", "event": "status", "outcome": "processed"}
    after = await scraper.until(
        lambda s: delta(before, s, "tidings_webhooks_total", **receipts) >= 1, what="the receipt counted"
    )
    by = {"provider": "fake", "channel": "sms"}
    assert delta(before, after, "tidings_messages_accepted_total", **by) == 1
    assert delta(before, after, "tidings_messages_sent_total", **by) == 1
    assert delta(before, after, "tidings_messages_delivered_total", **by) == 1
    assert delta(before, after, "tidings_messages_failed_total", **by) == 0
    assert delta(before, after, "tidings_send_seconds_count", provider="fake") == 1
    assert delta(before, after, "tidings_accepted_to_delivered_seconds_count", provider="fake") == 1
    # The fake's receipt came through the webhook pipeline.
    assert delta(before, after, "tidings_webhooks_total", **receipts) == 1
    assert delta(before, after, "tidings_webhook_seconds_count", provider="fake") == 1


async def test_a_refused_send_counts_a_failure_and_the_providers_code_not_a_send(
    live: Live, scraper: Scraper
) -> None:
    before = await scraper.scrape()

    sent = await live.send(to=PERMANENT_FAILURE, body="hello")
    await live.wait_for(sent["id"], "failed")

    after = await scraper.scrape()
    by = {"provider": "fake", "channel": "sms"}
    assert delta(before, after, "tidings_messages_failed_total", **by) == 1
    assert delta(before, after, "tidings_messages_sent_total", **by) == 0
    assert delta(before, after, "tidings_provider_errors_total", provider="fake", code="invalid_number") == 1
    assert delta(before, after, "tidings_send_seconds_count", provider="fake") == 1


async def test_a_receipt_of_failure_counts_a_send_and_a_failure(live: Live, scraper: Scraper) -> None:
    before = await scraper.scrape()

    sent = await live.send(to=RECEIPT_FAILED, body="hello")
    await live.wait_for(sent["id"], "failed")

    after = await scraper.scrape()
    by = {"provider": "fake", "channel": "sms"}
    assert delta(before, after, "tidings_messages_sent_total", **by) == 1
    assert delta(before, after, "tidings_messages_failed_total", **by) == 1
    assert delta(before, after, "tidings_messages_delivered_total", **by) == 0
    assert delta(before, after, "tidings_provider_errors_total", provider="fake", code="undeliverable") == 0


async def test_a_batch_counts_each_message_it_stores(live: Live, scraper: Scraper) -> None:
    before = await scraper.scrape()

    response = await live.client.post(
        "/v1/batches",
        json={
            "group_id": "metrics-batch",
            "template": "Hello {{ first_name }}",
            "recipients": [
                {"to": ORDINARY, "first_name": "Ada"},
                {"to": "+12025550124", "first_name": "Bo"},
                {"to": "not a number", "first_name": "Cy"},
            ],
        },
    )

    assert response.status_code == 202, response.text
    after = await scraper.scrape()
    assert delta(before, after, "tidings_messages_accepted_total", provider="fake", channel="sms") == 2


async def test_a_forged_webhook_is_counted_as_refused_under_its_code(live: Live, scraper: Scraper) -> None:
    before = await scraper.scrape()
    body = orjson.dumps({"id": "FKD0", "reference": "x", "status": "delivered"})

    async with httpx.AsyncClient(base_url=live.url) as client:
        forged = await client.post(
            "/webhooks/fake/fake/status",
            content=body,
            headers={"Content-Type": "application/json", "X-Fake-Signature": "sha256=" + "0" * 64},
        )
        unknown = await client.post(
            "/webhooks/fake/fake/made-up-event", content=body, headers={"Content-Type": "application/json"}
        )

    assert (forged.status_code, forged.json()["error"]["code"]) == (403, "invalid_signature")
    assert (unknown.status_code, unknown.json()["error"]["code"]) == (404, "not_found")
    after = await scraper.scrape()
    refused = {"provider": "fake", "event": "status", "outcome": "invalid_signature"}
    assert delta(before, after, "tidings_webhooks_total", **refused) == 1
    processed = {"provider": "fake", "event": "status", "outcome": "processed"}
    assert delta(before, after, "tidings_webhooks_total", **processed) == 0
    # A path segment anyone can write is no series of its own.
    other = {"provider": "fake", "event": "unknown", "outcome": "not_found"}
    assert delta(before, after, "tidings_webhooks_total", **other) == 1
    events = {dict(labels)["event"] for labels in family(after, "tidings_webhooks_total")}
    assert "made-up-event" not in events


class Hook:
    """A client application's callback endpoint, answering ``answers`` first, then 200s."""

    def __init__(self, answers: list[int]) -> None:
        self.answers = answers
        self.hits = 0
        self.url = ""
        self._runner: web.AppRunner | None = None

    async def _handle(self, _request: web.Request) -> web.Response:
        self.hits += 1
        return web.Response(status=self.answers.pop(0) if self.answers else 200)

    async def __aenter__(self) -> Hook:
        app = web.Application()
        app.router.add_post("/hook", self._handle)
        self._runner = web.AppRunner(app, access_log=None)
        await self._runner.setup()
        await web.TCPSite(self._runner, "127.0.0.1", 0).start()
        self.url = f"http://127.0.0.1:{self._runner.addresses[0][1]}/hook"
        return self

    async def __aexit__(self, *_exc: object) -> None:
        assert self._runner is not None
        await self._runner.cleanup()


async def test_callbacks_are_counted_by_outcome(database_url: str) -> None:
    # A fast back-off, so that the callback refused once is soon delivered.
    async with (
        live_service(
            database_url,
            providers=PROVIDERS,
            callback_retry_base_seconds=0.01,
            callback_retry_cap_seconds=0.05,
        ) as live,
        Hook(answers=[503]) as hook,
    ):
        scraper = Scraper(live.client)
        before = await scraper.scrape()

        sent = await live.send(to=NEVER_DELIVERED_TO, body="hello", callback_url=hook.url)
        await live.wait_for(sent["id"], "sent")
        # Both callbacks delivered (either may be the one refused first: they go out together).
        after = await scraper.until(
            lambda s: delta(before, s, "tidings_callbacks_total", outcome="delivered") >= 2,
            what="two delivered callbacks",
        )

    assert delta(before, after, "tidings_callbacks_total", outcome="retry") == 1
    assert delta(before, after, "tidings_callbacks_total", outcome="delivered") == 2
    assert delta(before, after, "tidings_callbacks_total", outcome="failed") == 0
    assert hook.hits == 3


NEVER_DELIVERED_TO = "+12025550105"
"""The fake accepts it and sends no receipt: two status changes after it is accepted (sending,
sent), so two callbacks."""


# -- read from the database ------------------------------------------------------------------------


async def test_queue_depth_and_the_oldest_due_message_come_from_the_database(database_url: str) -> None:
    async with live_service(database_url, providers=PROVIDERS, worker=False) as live:
        store = live.service.store
        now = utcnow()
        for minutes in (5, 1):
            new = NewMessage.sms(to=ORDINARY, text="waiting", provider="fake", max_attempts=3)
            await store.messages.insert(new, now=now - timedelta(minutes=minutes))
        later = NewMessage.sms(
            to=ORDINARY, text="later", provider="fake", max_attempts=3, send_at=now + timedelta(hours=1)
        )
        await store.messages.insert(later)
        async with store.transaction() as conn:
            # One of the three is claimed: sending.
            await store_claim(conn, "fake")

        samples = await Scraper(live.client).until(
            lambda s: value(s, "tidings_queue_messages", status="scheduled") == 1,
            what="the queue as the database holds it",
        )

    queue = {dict(labels)["status"]: v for labels, v in family(samples, "tidings_queue_messages").items()}
    assert queue == {"scheduled": 1, "pending": 1, "sending": 1, "sent": 0}
    # The claim took the oldest: the one left became due a minute ago.
    oldest = value(samples, "tidings_oldest_pending_seconds", provider="fake")
    assert 60 <= oldest < 120
    assert value(samples, "tidings_oldest_pending_seconds", provider="phone") == 0
    assert value(samples, "tidings_database_up") == 1


async def store_claim(conn: Any, provider: str) -> None:
    claimed = await queue.claim(
        conn, provider, Consumer(owner="test", lease_seconds=60), limit=1, now=utcnow()
    )
    assert len(claimed) == 1


async def test_a_gateways_last_poll_is_its_age(live: Live, scraper: Scraper) -> None:
    async with httpx.AsyncClient(auth=("phone", "pw")) as phone:
        polled = await phone.post(f"{live.url}/api/sms", json={})
    assert polled.status_code == 200

    samples = await scraper.until(
        lambda s: ("tidings_gateway_last_poll_age_seconds", (("gateway", "phone"),)) in s,
        what="the gateway's last poll",
    )

    assert 0 <= value(samples, "tidings_gateway_last_poll_age_seconds", gateway="phone") < 10


async def test_a_recent_batch_shows_its_progress_until_it_is_finished(database_url: str) -> None:
    async with live_service(database_url, providers=PROVIDERS, worker=False) as live:
        response = await live.client.post(
            "/v1/batches",
            json={
                "group_id": "progress",
                "template": "hi",
                "recipients": [{"to": ORDINARY}, {"to": "+12025550124"}],
            },
        )
        assert response.status_code == 202, response.text
        batch = response.json()["id"]
        scraper = Scraper(live.client)
        waiting = await scraper.until(
            lambda s: value(s, "tidings_batch_unfinished_messages", batch=batch) == 2,
            what="the new batch",
        )
        assert value(waiting, "tidings_batch_progress_ratio", batch=batch) == 0

        first = (await live.client.get("/v1/messages", params={"batch": batch})).json()["data"][0]["id"]
        assert (await live.client.post(f"/v1/messages/{first}/cancel")).status_code == 200
        half = await scraper.until(
            lambda s: value(s, "tidings_batch_unfinished_messages", batch=batch) == 1, what="half the batch"
        )
        assert value(half, "tidings_batch_progress_ratio", batch=batch) == 0.5

        cancelled = await live.client.post(f"/v1/batches/{batch}/cancel")
        assert cancelled.status_code == 200, cancelled.text
        await scraper.until(
            lambda s: ("tidings_batch_progress_ratio", (("batch", batch),)) not in s,
            what="the finished batch gone",
        )


async def test_open_alerts_are_reported_by_rule(database_url: str) -> None:
    async with live_service(database_url, providers=PROVIDERS, worker=False) as live:
        scraper = Scraper(live.client)
        none_open = family(await scraper.scrape(), "tidings_open_alerts")
        assert set(none_open.values()) == {0.0} and (("rule", "gateway_silent"),) in none_open
        store = live.service.store
        now = utcnow()
        raised = {}
        for rule, subject in (("pending", ""), ("gateway_silent", "phone-1"), ("gateway_silent", "phone-2")):
            raised[subject] = await store.alerts.raise_alert(
                rule=rule, subject=subject, value=1, threshold=0, detail={}, message="test", now=now
            )
        resolved = raised["phone-2"]
        assert resolved is not None
        await store.alerts.resolve(resolved["id"], now=now)
        samples = await scraper.until(
            lambda s: value(s, "tidings_open_alerts", rule="pending") == 1, what="the open alerts"
        )
        opened = family(samples, "tidings_open_alerts")
        assert opened[(("rule", "pending"),)] == 1
        assert opened[(("rule", "gateway_silent"),)] == 1
        assert opened[(("rule", "failure_rate"),)] == 0


# -- every other place a status changes --------------------------------------------------------------


async def test_a_message_whose_last_attempt_was_cut_off_is_counted_failed_by_the_reaper(
    database_url: str,
) -> None:
    async with live_service(database_url, providers=PROVIDERS, worker=False) as live:
        store = live.service.store
        scraper = Scraper(live.client)
        new = NewMessage.sms(to=ORDINARY, text="cut off", provider="fake", max_attempts=1)
        row, _created = await store.messages.insert(new)
        async with store.transaction() as conn:
            await store_claim(conn, "fake")
        before = await scraper.scrape()

        reaped = await store.queue.reap_expired_leases(now=utcnow() + timedelta(minutes=5))

        after = await scraper.scrape()
        assert reaped == 1
        assert (await store.messages.get(row["id"]) or {})["status"] == "failed"
    assert delta(before, after, "tidings_messages_failed_total", provider="fake", channel="sms") == 1


async def test_a_gateways_updates_and_auto_replies_are_counted(database_url: str) -> None:
    async with live_service(database_url, providers=PROVIDERS, opt_out_reply="You will get no more.") as live:
        scraper = Scraper(live.client)
        before = await scraper.scrape()
        sent = await live.send(to=ORDINARY, body="hello", provider="phone")

        async with httpx.AsyncClient(auth=("phone", "pw")) as phone:

            async def poll(**body: Any) -> dict[str, Any]:
                response = await phone.post(f"{live.url}/api/sms", json=body)
                assert response.status_code == 200, response.text
                answer: dict[str, Any] = response.json()
                return answer

            assert [m["id"] for m in (await poll())["messages"]] == [sent["id"]]
            await poll(updates=[{"id": sent["id"], "status": "SENT"}])
            await poll(updates=[{"id": sent["id"], "status": "DELIVERED"}])
            stop = {"id": "in-1", "from": "+254712345670", "content": "STOP", "sms_sent": 1}
            await poll(messages=[stop])

        after = await scraper.scrape()
    by = {"provider": "phone", "channel": "sms"}
    # The message sent, and the reply to the STOP.
    assert delta(before, after, "tidings_messages_accepted_total", **by) == 2
    assert delta(before, after, "tidings_messages_sent_total", **by) == 1
    assert delta(before, after, "tidings_messages_delivered_total", **by) == 1
    assert delta(before, after, "tidings_accepted_to_delivered_seconds_count", provider="phone") == 1


async def test_statements_sent_to_the_database_are_counted(live: Live, scraper: Scraper) -> None:
    before = await scraper.scrape()
    async with live.service.store.engine.connect() as conn:
        for _ in range(5):
            await conn.execute(text("SELECT 1"))
    after = await scraper.scrape()
    # This process is no `tidings api` or `worker`: its role is "other". The worker and the
    # scrape itself may add theirs.
    assert delta(before, after, "tidings_database_statements_total", role="other") >= 5
