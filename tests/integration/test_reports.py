"""The one status writer, on SQLite and PostgreSQL: whatever order reports arrive in, a message
ends in the same status with the same history."""

from __future__ import annotations

from collections import Counter
from datetime import datetime, timedelta
from typing import Any

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tidings import ids
from tidings.domain.messages import NewMessage
from tidings.domain.reports import Report
from tidings.domain.status import RANK, Status
from tidings.store import Store
from tidings.store.reports import ReportItem

T0 = datetime(2026, 1, 1)
REPORTABLE = [s for s in Status if s is not Status.CANCELLED]


def report(status: Status, n: int = 0, provider_status: str | None = None) -> Report:
    at = T0 + timedelta(seconds=n)
    return Report(status=status, source="test", occurred_at=at, provider_status=provider_status)


reports_strategy = st.lists(
    st.builds(
        report,
        st.sampled_from(REPORTABLE),
        st.integers(min_value=0, max_value=5),
        st.sampled_from([None, "DeliveredToNetwork", "undelivered", "SENT"]),
    ),
    max_size=8,
)


async def message_in(store: Store, initial: Status) -> str:
    # A provider of its own, so that earlier examples' messages (the store is shared) stay apart.
    provider = ids.new_id()
    send_at = datetime(2100, 1, 1) if initial is Status.SCHEDULED else None
    new = NewMessage.sms(
        to="+254712345678",
        text="hi",
        provider=provider,
        max_attempts=3,
        send_at=send_at,
    )
    row, _ = await store.messages.insert(new)
    if initial is Status.SENDING:
        [claimed] = await store.queue.claim(provider, worker="w", limit=1, lease_seconds=60)
        assert claimed.id == row["id"]
    return str(row["id"])


def recorded(events: list[dict[str, Any]]) -> Counter[tuple[Any, ...]]:
    return Counter(
        (e["status"], e["provider_status"], e["occurred_at"]) for e in events if e["type"] == "report"
    )


async def test_a_duplicate_report_changes_nothing_but_is_recorded(store: Store) -> None:
    message_id = await message_in(store, Status.SENDING)
    first = await store.reports.apply(ReportItem(message_id, report(Status.SENT, 1)))
    second = await store.reports.apply(ReportItem(message_id, report(Status.SENT, 2)))
    assert first is not None and first.changed
    assert second is not None and not second.changed
    events = [e for e in await store.messages.events(message_id) if e["type"] == "report"]
    assert [e["changed"] for e in events] == [True, False]
    row = await store.messages.get(message_id)
    assert row is not None and row["status"] == "sent"


@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(reports_strategy, st.data(), st.sampled_from([Status.SCHEDULED, Status.PENDING, Status.SENDING]))
async def test_any_permutation_of_reports_gives_the_same_status_and_history(
    store: Store, reports: list[Report], data: st.DataObject, initial: Status
) -> None:
    permuted = data.draw(st.permutations(reports))
    first, second = await message_in(store, initial), await message_in(store, initial)
    for message_id, order in ((first, reports), (second, permuted)):
        for item in order:
            outcome = await store.reports.apply(ReportItem(message_id, item))
            assert outcome is not None
    row_a, row_b = await store.messages.get(first), await store.messages.get(second)
    assert row_a is not None and row_b is not None
    assert row_a["status"] == row_b["status"]
    # Every report is one event, whatever it changed: the same multiset of reports either way.
    events_a, events_b = await store.messages.events(first), await store.messages.events(second)
    assert recorded(events_a) == recorded(events_b)
    assert sum(recorded(events_a).values()) == len(reports)
    # And the final status is the highest one reported (or where it started); a report of
    # sending moves nothing (only a claim does).
    moving = [r.status for r in reports if r.status is not Status.SENDING]
    expected = max([initial, *moving], key=RANK.__getitem__)
    assert row_a["status"] == expected.value
