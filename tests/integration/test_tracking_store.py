"""The store's side of tracking: late receipts taken for polling, receipts matched by recipient,
and per-recipient order in the claim."""

from __future__ import annotations

import asyncio
from datetime import timedelta

from tidings.clock import utcnow
from tidings.store import Store
from tidings.store.messages import NewMessage

TO = "+254712345678"


def new(to: str = TO, *, ordered: bool = False) -> NewMessage:
    return NewMessage(
        to=to, body="hi", segments=1, encoding="GSM-7", provider="p", max_attempts=3, ordered=ordered
    )


async def sent(store: Store, to: str = TO, provider_id: str | None = "X") -> str:
    row, _ = await store.messages.insert(new(to))
    [claimed] = await store.messages.claim("p", worker="w", limit=1, lease_seconds=60)
    assert claimed.id == row["id"]
    await store.messages.record_accepted(
        row["id"],
        worker="w",
        provider_message_id=provider_id and f"{provider_id}-{row['id']}",
        provider_status="ok",
    )
    return str(row["id"])


async def test_late_messages_are_taken_for_polling_once_per_round(store: Store) -> None:
    ids = {await sent(store) for _ in range(5)}
    await sent(store, provider_id=None)  # nothing to ask the provider about
    later = utcnow() + timedelta(seconds=1)

    async def take() -> list[str]:
        taken = await store.messages.take_for_polling(
            "p", sent_before=later, polled_before=later - timedelta(hours=1), max_polls=2, limit=3
        )
        return [m.id for m in taken]

    first, second = await asyncio.gather(take(), take())
    assert not set(first) & set(second)
    assert set(first) | set(second) == ids
    assert await take() == []  # polled a moment ago

    again = await store.messages.take_for_polling(
        "p", sent_before=later, polled_before=later + timedelta(seconds=1), max_polls=2, limit=10
    )
    assert {m.id for m in again} == ids
    exhausted = await store.messages.take_for_polling(
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
    claimed = await store.messages.claim("p", worker="w", limit=10, lease_seconds=60)
    assert {c.id for c in claimed} == {first["id"], other["id"]}
    # Still being sent: the second keeps waiting.
    assert await store.messages.claim("p", worker="w", limit=10, lease_seconds=60) == []
    await store.messages.record_accepted(
        first["id"], worker="w", provider_message_id="a", provider_status="ok"
    )
    [next_one] = await store.messages.claim("p", worker="w", limit=10, lease_seconds=60)
    assert next_one.id == second["id"]
