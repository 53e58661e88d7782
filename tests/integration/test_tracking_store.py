"""The store's side of tracking: late receipts taken for polling, receipts matched by recipient,
and per-recipient order in the claim."""

from __future__ import annotations

import asyncio
from datetime import timedelta

from tidings.clock import utcnow
from tidings.domain.messages import NewMessage
from tidings.domain.reports import ProviderReport, Report
from tidings.domain.status import Status
from tidings.services.tracking import Tracker
from tidings.store import Store

TO = "+254712345678"


def new(to: str = TO, *, ordered: bool = False) -> NewMessage:
    return NewMessage.sms(to=to, text="hi", provider="p", max_attempts=3, ordered=ordered)


async def sent(store: Store, to: str = TO, provider_id: str | None = "X") -> str:
    row, _ = await store.messages.insert(new(to))
    [claimed] = await store.queue.claim("p", worker="w", limit=1, lease_seconds=60)
    assert claimed.id == row["id"]
    await store.reports.record_accepted(
        row["id"],
        provider_message_ids=[f"{provider_id}-{row['id']}"] if provider_id else [],
        provider_status="ok",
    )
    return str(row["id"])


async def test_late_messages_are_taken_for_polling_once_per_round(store: Store) -> None:
    ids = {await sent(store) for _ in range(5)}
    await sent(store, provider_id=None)  # nothing to ask the provider about
    later = utcnow() + timedelta(seconds=1)

    async def take() -> list[str]:
        taken = await store.queue.take_for_polling(
            "p", sent_before=later, polled_before=later - timedelta(hours=1), max_polls=2, limit=3
        )
        return [m.id for m in taken]

    first, second = await asyncio.gather(take(), take())
    assert not set(first) & set(second)
    assert set(first) | set(second) == ids
    assert await take() == []  # polled a moment ago

    again = await store.queue.take_for_polling(
        "p", sent_before=later, polled_before=later + timedelta(seconds=1), max_polls=2, limit=10
    )
    assert {m.id for m in again} == ids
    exhausted = await store.queue.take_for_polling(
        "p", sent_before=later, polled_before=later + timedelta(hours=1), max_polls=2, limit=10
    )
    assert exhausted == []
    row = await store.messages.get(next(iter(ids)))
    assert row is not None and row["polls"] == 2


async def test_a_receipt_without_ids_finds_the_latest_sent_message_to_its_number(store: Store) -> None:
    older = await sent(store)
    newer = await sent(store)
    await sent(store, to="+254700000001")
    since = utcnow() - timedelta(hours=24)
    assert await store.messages.find_recent_sent("p", TO, since) == newer
    assert await store.messages.find_recent_sent("other", TO, since) is None
    assert await store.messages.find_recent_sent("p", TO, utcnow() + timedelta(seconds=1)) is None
    assert older != newer


async def test_an_ordered_message_waits_for_earlier_ones_to_the_same_number(store: Store) -> None:
    first, _ = await store.messages.insert(new(ordered=True))
    second, _ = await store.messages.insert(new(ordered=True))
    other, _ = await store.messages.insert(new("+254700000001", ordered=True))
    claimed = await store.queue.claim("p", worker="w", limit=10, lease_seconds=60)
    assert {c.id for c in claimed} == {first["id"], other["id"]}
    # Still being sent: the second keeps waiting.
    assert await store.queue.claim("p", worker="w", limit=10, lease_seconds=60) == []
    await store.reports.record_accepted(first["id"], provider_message_ids=["a"], provider_status="ok")
    [next_one] = await store.queue.claim("p", worker="w", limit=10, lease_seconds=60)
    assert next_one.id == second["id"]


async def test_a_receipt_naming_any_of_a_messages_provider_ids_finds_it(store: Store) -> None:
    # A provider that gives one id per SMS part (SMPP) may send a receipt for any of them.
    row, _ = await store.messages.insert(new())
    await store.queue.claim("p", worker="w", limit=1, lease_seconds=60)
    await store.reports.record_accepted(
        row["id"], provider_message_ids=["part-1", "part-2"], provider_status="ok"
    )
    stored = await store.messages.get(row["id"])
    assert stored is not None and stored["provider_message_id"] == "part-1"

    receipt = Report(
        status=Status.DELIVERED, source="provider:p", occurred_at=utcnow(), provider_status="DELIVRD"
    )
    result = await Tracker(store, {}).apply(
        "p", [ProviderReport(report=receipt, provider_message_id="part-2")]
    )
    assert [(o.message_id, o.status_after) for o in result.applied] == [(row["id"], Status.DELIVERED)]
    # Another provider's id of the same value is another message.
    other = await Tracker(store, {}).apply(
        "q", [ProviderReport(report=receipt, provider_message_id="part-2")]
    )
    assert other.applied == [] and other.unmatched == 1


async def test_a_message_sent_again_is_still_found_by_the_first_sends_id(store: Store) -> None:
    # Its worker died after the provider took it; the reaper returned it and it went out again.
    row, _ = await store.messages.insert(new())
    await store.queue.claim("p", worker="w", limit=1, lease_seconds=0.01)
    await asyncio.sleep(0.05)
    assert await store.queue.reap_expired_leases() == 1
    await store.queue.claim("p", worker="w", limit=1, lease_seconds=60)
    await store.reports.record_accepted(row["id"], provider_message_ids=["second"], provider_status="ok")
    assert await store.messages.find_by_provider_id("p", "second") == row["id"]
    # The first send's id arrives late, as if its answer had been lost.
    await store.reports.record_accepted(row["id"], provider_message_ids=["first"], provider_status="ok")
    assert await store.messages.find_by_provider_id("p", "first") == row["id"]
    assert await store.messages.find_by_provider_id("p", "second") == row["id"]
