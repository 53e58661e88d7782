"""A real Dispatcher over both databases: every path a message can take with the in-process fake.

Each test inserts messages straight into the store, runs ``Dispatcher.run`` as a task, and polls
the store until the messages reach the status the fake's magic numbers force.
"""

from __future__ import annotations

import asyncio
import itertools
import time
from collections import Counter
from collections.abc import AsyncIterator, Awaitable, Callable, Collection
from contextlib import asynccontextmanager
from datetime import datetime, timedelta
from typing import Any

import pytest
from aiohttp import web

from tests.conftest import make_settings
from tests.live import live_service
from tests.scripted_api import scripted_api
from tests.stall_watch import SlowWait
from tidings.clock import utcnow
from tidings.domain.messages import NewMessage
from tidings.domain.reports import Report
from tidings.domain.status import Status
from tidings.providers.fake_rules import (
    NO_RECEIPT,
    PERMANENT_FAILURE,
    RECEIPT_FAILED,
    TEMPORARY_FAILURE,
    TEMPORARY_THEN_OK,
)
from tidings.services import Service
from tidings.store import Store
from tidings.store.reports import ReportItem
from tidings.worker.dispatcher import Dispatcher

ORDINARY = "+12025550123"
TIMEOUT = 20.0
"""How long a wait for a status may last before the test fails: long, because a shared machine can
pause for seconds; a wait over a few seconds is shown in the session's summary (``SlowWait``)."""
# Long enough that a receipt never overtakes the worker's own record of the send, so the event
# order of a delivered message is deterministic.
RECEIPT_DELAY_MS = 100

ServiceFactory = Callable[..., Awaitable[Service]]


# -- helpers ---------------------------------------------------------------------------------------


def new_message(to: str = ORDINARY, *, max_attempts: int = 5, send_at: datetime | None = None) -> NewMessage:
    return NewMessage.sms(
        to=to,
        text="hello from the worker tests",
        provider="fake",
        max_attempts=max_attempts,
        send_at=send_at,
    )


async def insert(store: Store, to: str = ORDINARY, **kwargs: Any) -> str:
    row, created = await store.messages.insert(new_message(to, **kwargs))
    assert created
    return str(row["id"])


async def get(store: Store, message_id: str) -> dict[str, Any]:
    row = await store.messages.get(message_id)
    assert row is not None
    return row


async def wait_for_status(
    store: Store, message_id: str, statuses: Collection[str], timeout: float = TIMEOUT
) -> dict[str, Any]:
    """Poll until the message is in one of ``statuses``; fail with its history after ``timeout``."""
    deadline = time.monotonic() + timeout
    slow = SlowWait(f"message {message_id} to be {sorted(statuses)}")
    while True:
        row = await get(store, message_id)
        if row["status"] in statuses:
            return row
        slow.check()
        if time.monotonic() > deadline:
            events = [(e["type"], e["status"]) for e in await store.messages.events(message_id)]
            pytest.fail(
                f"message {message_id} is {row['status']!r} after {timeout}s, expected one of "
                f"{sorted(statuses)}; events: {events}"
            )
        await asyncio.sleep(0.02)


async def event_types(store: Store, message_id: str) -> list[str]:
    return [e["type"] for e in await store.messages.events(message_id)]


@asynccontextmanager
async def running(service: Service) -> AsyncIterator[Dispatcher]:
    """A dispatcher running as a task; stopped (and its sends drained) on exit."""
    dispatcher = service.dispatcher()
    stop = asyncio.Event()
    task = asyncio.create_task(dispatcher.run(stop))
    try:
        yield dispatcher
    finally:
        stop.set()
        await asyncio.wait_for(task, timeout=10)


@pytest.fixture
async def make_service(store: Store, database_url: str) -> AsyncIterator[ServiceFactory]:
    """Build started services over the test database, with the fake provider tuned per test."""
    services: list[Service] = []

    async def factory(**fake: Any) -> Service:
        provider = {"kind": "fake", "latency_ms": 0, "receipt_delay_ms": RECEIPT_DELAY_MS, **fake}
        settings = make_settings(database_url, providers={"fake": provider})
        service = Service(settings, store=Store.connect(database_url))
        services.append(service)
        await service.start()
        return service

    try:
        yield factory
    finally:
        for service in services:
            await service.close()


@pytest.fixture
async def worker(make_service: ServiceFactory) -> Service:
    return await make_service()


# -- every path a message can take -----------------------------------------------------------------


async def test_ordinary_number_is_delivered(store: Store, worker: Service) -> None:
    message_id = await insert(store)
    async with running(worker):
        row = await wait_for_status(store, message_id, {"delivered", "failed"})
    assert row["status"] == "delivered"
    assert row["attempts"] == 1
    assert row["sent_at"] is not None and row["delivered_at"] is not None
    assert row["sent_at"] <= row["delivered_at"]
    assert row["provider_message_id"] is not None and row["provider_message_id"].startswith("FK")
    assert row["provider_status"] == "delivered"
    assert row["error_code"] is None
    assert row["lease_owner"] is None and row["lease_expires_at"] is None

    events = await store.messages.events(message_id)
    assert [e["type"] for e in events] == ["accepted", "claimed", "send_accepted", "report"]
    assert [e["status"] for e in events] == ["pending", "sending", "sent", "delivered"]
    assert all(e["changed"] for e in events)
    assert events[3]["source"] == "provider:fake"


async def test_permanent_failure_fails_at_once(store: Store, worker: Service) -> None:
    message_id = await insert(store, PERMANENT_FAILURE, max_attempts=5)
    async with running(worker):
        row = await wait_for_status(store, message_id, {"failed", "delivered", "sent"})
        # Give a wrongly scheduled retry the time to show itself.
        await asyncio.sleep(0.2)
    row = await get(store, message_id)
    assert row["status"] == "failed"
    assert row["error_code"] == "invalid_number"
    assert row["attempts"] == 1
    assert row["failed_at"] is not None
    assert row["sent_at"] is None
    assert row["lease_owner"] is None
    assert await event_types(store, message_id) == ["accepted", "claimed", "send_failed"]


async def test_temporary_failure_fails_after_max_attempts(store: Store, worker: Service) -> None:
    message_id = await insert(store, TEMPORARY_FAILURE, max_attempts=3)
    async with running(worker):
        await wait_for_status(store, message_id, {"failed", "delivered", "sent"})
        await asyncio.sleep(0.2)
    row = await get(store, message_id)
    assert row["status"] == "failed"
    assert row["attempts"] == 3
    assert row["error_code"] == "throttled"
    assert row["failed_at"] is not None
    assert await event_types(store, message_id) == [
        "accepted",
        "claimed",
        "retry_scheduled",
        "claimed",
        "retry_scheduled",
        "claimed",
        "send_failed",
    ]
    events = await store.messages.events(message_id)
    retries = [e for e in events if e["type"] == "retry_scheduled"]
    assert [e["detail"]["attempt"] for e in retries] == [1, 2]
    assert all(e["error_code"] == "throttled" and e["status"] == "pending" for e in retries)
    claims = [e for e in events if e["type"] == "claimed"]
    assert [e["detail"]["attempt"] for e in claims] == [1, 2, 3]


async def test_temporary_then_ok_is_delivered_on_the_second_attempt(store: Store, worker: Service) -> None:
    message_id = await insert(store, TEMPORARY_THEN_OK, max_attempts=3)
    async with running(worker):
        row = await wait_for_status(store, message_id, {"delivered", "failed"})
    assert row["status"] == "delivered"
    assert row["attempts"] == 2
    # The truth wins: the earlier temporary error is not left on a delivered message.
    assert row["error_code"] is None
    assert await event_types(store, message_id) == [
        "accepted",
        "claimed",
        "retry_scheduled",
        "claimed",
        "send_accepted",
        "report",
    ]


async def test_receipt_failed_ends_failed(store: Store, worker: Service) -> None:
    message_id = await insert(store, RECEIPT_FAILED)
    async with running(worker):
        row = await wait_for_status(store, message_id, {"failed", "delivered"})
    assert row["status"] == "failed"
    assert row["error_code"] == "undeliverable"
    assert row["attempts"] == 1
    assert row["sent_at"] is not None and row["failed_at"] is not None
    assert row["provider_status"] == "failed"
    events = await store.messages.events(message_id)
    assert [e["type"] for e in events] == ["accepted", "claimed", "send_accepted", "report"]
    assert events[-1]["status"] == "failed" and events[-1]["error_code"] == "undeliverable"


async def test_no_receipt_stays_sent(store: Store, worker: Service) -> None:
    message_id = await insert(store, NO_RECEIPT)
    async with running(worker):
        await wait_for_status(store, message_id, {"sent", "delivered", "failed"})
        # Several receipt delays later, still nothing has come.
        await asyncio.sleep(RECEIPT_DELAY_MS / 1000 * 3)
    row = await get(store, message_id)
    assert row["status"] == "sent"
    assert row["attempts"] == 1
    assert row["sent_at"] is not None and row["delivered_at"] is None
    assert await event_types(store, message_id) == ["accepted", "claimed", "send_accepted"]


async def test_scheduled_message_is_promoted_then_delivered_not_before(store: Store, worker: Service) -> None:
    send_at = utcnow() + timedelta(seconds=1)
    message_id = await insert(store, send_at=send_at)
    assert (await get(store, message_id))["status"] == "scheduled"
    async with running(worker):
        # Well before its time, the dispatcher leaves it alone.
        while utcnow() < send_at - timedelta(milliseconds=150):
            assert (await get(store, message_id))["status"] == "scheduled"
            await asyncio.sleep(0.05)
        row = await wait_for_status(store, message_id, {"delivered", "failed"})
    assert row["status"] == "delivered"
    assert row["sent_at"] >= send_at
    events = await store.messages.events(message_id)
    assert [e["type"] for e in events] == ["accepted", "promoted", "claimed", "send_accepted", "report"]
    assert events[0]["status"] == "scheduled"
    promoted, claimed = events[1], events[2]
    assert promoted["status"] == "pending" and promoted["source"] == "scheduler"
    assert promoted["occurred_at"] >= send_at
    assert claimed["occurred_at"] >= send_at


async def test_expired_lease_is_reaped_and_the_message_delivered(store: Store, worker: Service) -> None:
    message_id = await insert(store, max_attempts=3)
    # A worker claims it and dies: it never sends, never records anything.
    claimed = await store.queue.claim("fake", worker="ghost", limit=1, lease_seconds=0.1)
    assert [c.id for c in claimed] == [message_id]
    assert (await get(store, message_id))["status"] == "sending"
    await asyncio.sleep(0.15)
    async with running(worker):
        row = await wait_for_status(store, message_id, {"delivered", "failed"})
    assert row["status"] == "delivered"
    assert row["attempts"] == 2
    events = await store.messages.events(message_id)
    assert [e["type"] for e in events] == [
        "accepted",
        "claimed",
        "lease_expired",
        "claimed",
        "send_accepted",
        "report",
    ]
    assert events[1]["detail"]["worker"] == "ghost"
    assert events[2]["status"] == "pending" and events[2]["source"] == "reaper"
    assert events[3]["detail"]["worker"] != "ghost"


async def test_expired_lease_with_attempts_used_up_fails(store: Store, worker: Service) -> None:
    message_id = await insert(store, max_attempts=1)
    claimed = await store.queue.claim("fake", worker="ghost", limit=1, lease_seconds=0.1)
    assert [(c.id, c.attempts, c.max_attempts) for c in claimed] == [(message_id, 1, 1)]
    await asyncio.sleep(0.15)
    async with running(worker):
        await wait_for_status(store, message_id, {"failed", "delivered", "sent", "pending"})
        await asyncio.sleep(0.2)
    row = await get(store, message_id)
    assert row["status"] == "failed"
    assert row["error_code"] == "lease_expired"
    assert row["attempts"] == 1
    assert row["failed_at"] is not None and row["sent_at"] is None
    assert row["lease_owner"] is None and row["lease_expires_at"] is None
    events = await store.messages.events(message_id)
    assert [e["type"] for e in events] == ["accepted", "claimed", "lease_expired"]
    assert events[-1]["status"] == "failed"


async def test_claim_takes_at_most_limit_messages(store: Store) -> None:
    """The dispatcher asks for as many messages as it has free slots; the store must not give more."""
    ids = [await insert(store) for _ in range(6)]
    first = await store.queue.claim("fake", worker="w1", limit=2, lease_seconds=60)
    assert len(first) == 2, f"asked for 2, claimed {len(first)}"
    second = await store.queue.claim("fake", worker="w2", limit=3, lease_seconds=60)
    assert len(second) == 3, f"asked for 3, claimed {len(second)}"
    assert not {c.id for c in first} & {c.id for c in second}
    # Oldest first.
    assert {c.id for c in first} == set(ids[:2])
    assert {c.id for c in second} == set(ids[2:5])
    counts = await store.messages.count_by_status()
    assert counts == {"sending": 5, "pending": 1}


async def test_per_provider_concurrency_is_respected(store: Store, make_service: ServiceFactory) -> None:
    service = await make_service(concurrency=2, latency_ms=200, receipt_delay_ms=10)
    ids = [await insert(store) for _ in range(6)]
    most_sending = 0
    async with running(service):
        deadline = time.monotonic() + TIMEOUT
        slow = SlowWait("6 messages to be delivered")
        while True:
            slow.check()
            counts = await store.messages.count_by_status()
            most_sending = max(most_sending, counts.get("sending", 0))
            assert counts.get("sending", 0) <= 2, counts
            if counts.get("delivered", 0) == len(ids):
                break
            assert time.monotonic() < deadline, f"not all delivered in time: {counts}"
            await asyncio.sleep(0.01)
    # The limit is used, not just respected: two sends ran side by side.
    assert most_sending == 2
    for message_id in ids:
        assert (await get(store, message_id))["attempts"] == 1


async def test_many_messages_all_delivered_once(store: Store, make_service: ServiceFactory) -> None:
    service = await make_service(concurrency=5, receipt_delay_ms=10)
    ids = [await insert(store) for _ in range(40)]
    async with running(service):
        deadline = time.monotonic() + TIMEOUT
        slow = SlowWait("40 messages to be delivered")
        while (await store.messages.count_by_status()).get("delivered", 0) < len(ids):
            slow.check()
            assert time.monotonic() < deadline, await store.messages.count_by_status()
            await asyncio.sleep(0.02)
    for message_id in ids:
        row = await get(store, message_id)
        assert row["attempts"] == 1
        assert (await event_types(store, message_id)).count("claimed") == 1


# -- reports in every order ------------------------------------------------------------------------

T0 = datetime(2030, 1, 1, 12, 0, 0)
SENT = Report(status=Status.SENT, source="provider:fake", occurred_at=T0, provider_status="accepted")
FAILED = Report(
    status=Status.FAILED,
    source="provider:fake",
    occurred_at=T0 + timedelta(seconds=1),
    provider_status="undelivered",
    error_code="undeliverable",
    error_message="The handset could not be reached.",
)
DELIVERED = Report(
    status=Status.DELIVERED,
    source="provider:fake",
    occurred_at=T0 + timedelta(seconds=2),
    provider_status="delivered",
)
SENT_AGAIN = Report(status=Status.SENT, source="provider:fake", occurred_at=T0, provider_status="accepted")
REPORTS = (SENT, DELIVERED, FAILED, SENT_AGAIN)


async def test_reports_in_any_order_end_the_same(store: Store) -> None:
    expected_events = Counter(
        [
            ("accepted", "pending", None),
            ("claimed", "sending", None),
            ("report", "sent", "accepted"),
            ("report", "sent", "accepted"),
            ("report", "failed", "undelivered"),
            ("report", "delivered", "delivered"),
        ]
    )
    orders = list(itertools.permutations(REPORTS))
    assert len(orders) == 24
    for order in orders:
        message_id = await insert(store)
        claimed = await store.queue.claim("fake", worker="w", limit=1, lease_seconds=60)
        assert [c.id for c in claimed] == [message_id]
        for report in order:
            outcome = await store.reports.apply(ReportItem(message_id, report))
            assert outcome is not None
        row = await get(store, message_id)
        shown = [r.status.value for r in order]
        assert row["status"] == "delivered", shown
        assert row["provider_status"] == "delivered", shown
        assert row["delivered_at"] == DELIVERED.occurred_at, shown
        assert row["error_code"] is None and row["error_message"] is None, shown
        assert row["lease_owner"] is None and row["lease_expires_at"] is None, shown
        assert row["sent_at"] is not None, shown
        events = await store.messages.events(message_id)
        got = Counter((e["type"], e["status"], e["provider_status"]) for e in events)
        assert got == expected_events, shown
        # Every report is recorded; exactly the ones that moved the status up say so.
        changed = [e["changed"] for e in events[2:]]
        ranks = {"sent": 3, "failed": 4, "delivered": 5}
        best = 2
        for report, was_changed in zip(order, changed, strict=True):
            moved = ranks[report.status.value] > best
            assert was_changed == moved, shown
            best = max(best, ranks[report.status.value])


async def test_a_huge_retry_after_waits_a_day_at_most(store: Store, database_url: str) -> None:
    # A provider may answer any Retry-After; a wait past the end of time must not crash the
    # worker (the message would sit leased, then be retried by the reaper, for ever).
    async with scripted_api() as api:

        async def throttled(_request: web.Request) -> web.StreamResponse:
            return web.json_response(
                {"error": {"code": "throttled", "message": "later"}},
                status=429,
                headers={"Retry-After": "99999999999999"},
            )

        api.route("POST", "/v1/messages", throttled)
        settings = make_settings(
            database_url,
            retry_base_seconds=1,
            providers={"fake": {"kind": "fake", "url": api.url, "latency_ms": 0}},
        )
        service = Service(settings, store=Store.connect(database_url))
        await service.start()
        try:
            message_id = await insert(store)
            dispatcher = service.dispatcher()
            assert await dispatcher.claim_once() == 1
            await dispatcher.drain()
            row = await get(store, message_id)
            assert row["status"] == "pending" and row["attempts"] == 1
            wait = row["next_attempt_at"] - utcnow()
            assert timedelta(hours=23) < wait <= timedelta(days=1)
        finally:
            await service.close()


async def test_a_receipt_the_in_process_fake_lost_with_a_restart_is_polled(database_url: str) -> None:
    # The in-process fake keeps its receipts in memory: stopped before they are due, they are lost.
    # Polled like any provider, its messages still reach their final status.
    slow = {"fake": {"kind": "fake", "latency_ms": 0, "receipt_delay_ms": 60_000}}
    async with live_service(database_url, providers=slow) as live:
        ids = [(await live.send(to=to, body="hi"))["id"] for to in (ORDINARY, RECEIPT_FAILED, NO_RECEIPT)]
        for message_id in ids:
            await live.wait_for(message_id, "sent")
    polling = {"poll_after_seconds": 0.01, "poll_repeat_seconds": 0.01, "poll_check_seconds": 0.05}
    async with live_service(database_url, providers=slow, empty=False, **polling) as live:
        delivered = await live.wait_for(ids[0], "delivered")
        failed = await live.wait_for(ids[1], "failed")
        assert failed["error_code"] == "undeliverable"
        assert delivered["polls"] >= 1
        # No receipt ever comes for this one: it stays sent, and polling it changes nothing.
        assert (await live.message(ids[2]))["status"] == "sent"


async def test_the_in_process_fakes_receipts_are_in_the_webhook_log(database_url: str) -> None:
    # They take the path a provider's posted webhook takes, log entry included.
    async with live_service(database_url) as live:
        sent = await live.send(to=ORDINARY, body="hi")
        await live.wait_for(sent["id"], "delivered")
        async with asyncio.timeout(10):
            while not [e for e in await live.service.store.webhooks.search(provider="fake") if e.processed]:
                await asyncio.sleep(0.02)
        [entry] = await live.service.store.webhooks.search(provider="fake")
        assert (entry.event, entry.verified, entry.state, entry.message_id) == (
            "status",
            True,
            "processed",
            sent["id"],
        )
