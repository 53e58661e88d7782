"""The status machine: reports only move up, order of arrival does not matter."""

from __future__ import annotations

from datetime import datetime, timedelta

import pytest
from hypothesis import given
from hypothesis import strategies as st

from tidings.domain.reports import Report
from tidings.domain.status import CANCELLABLE, RANK, Status, apply_report, moves_up_from

T0 = datetime(2026, 1, 1)
REPORTABLE = [s for s in Status if s is not Status.CANCELLED]


def report(status: Status, n: int = 0, provider_status: str | None = None) -> Report:
    at = T0 + timedelta(seconds=n)
    return Report(status=status, source="test", occurred_at=at, provider_status=provider_status)


def test_order_is_the_documented_one() -> None:
    ordered = sorted(RANK, key=RANK.__getitem__)
    assert ordered == [
        Status.SCHEDULED,
        Status.PENDING,
        Status.SENDING,
        Status.SENT,
        Status.FAILED,
        Status.DELIVERED,
    ]


def test_delivered_arriving_before_sent_is_not_undone_by_sent() -> None:
    assert apply_report(Status.DELIVERED, Status.SENT) is Status.DELIVERED
    assert apply_report(Status.SENDING, Status.DELIVERED) is Status.DELIVERED


def test_proof_of_delivery_lifts_a_failed_message() -> None:
    assert apply_report(Status.FAILED, Status.DELIVERED) is Status.DELIVERED


def test_failed_is_not_undone_by_a_late_sent() -> None:
    assert apply_report(Status.FAILED, Status.SENT) is Status.FAILED


def test_cancelled_is_final_for_reports() -> None:
    for reported in REPORTABLE:
        assert apply_report(Status.CANCELLED, reported) is Status.CANCELLED


def test_only_scheduled_and_pending_are_cancellable() -> None:
    assert frozenset({Status.SCHEDULED, Status.PENDING}) == CANCELLABLE


def test_cancelled_cannot_be_reported() -> None:
    with pytest.raises(ValueError):
        moves_up_from(Status.CANCELLED)


@given(st.sampled_from(REPORTABLE), st.sampled_from(REPORTABLE))
def test_a_report_never_moves_a_message_down(current: Status, reported: Status) -> None:
    after = apply_report(current, reported)
    assert RANK[after] >= RANK[current]
    if reported is Status.SENDING:
        assert after is current
    else:
        assert RANK[after] == max(RANK[current], RANK[reported])


@pytest.mark.parametrize("current", [Status.SCHEDULED, Status.PENDING])
def test_a_report_of_sending_never_puts_a_message_in_sending(current: Status) -> None:
    # Only a claim does, under a lease: a provider's "queued" must not strand a waiting message.
    assert apply_report(current, Status.SENDING) is current
