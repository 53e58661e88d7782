"""``Retry-After`` as providers send it: seconds or an HTTP date, read by one parser."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from email.utils import format_datetime

import pytest

from tidings.providers.http import retry_after


@pytest.mark.parametrize(
    ("value", "seconds"),
    [("3", 3.0), ("0", 0.0), (" 120 ", 120.0), ("1.5", 1.5), ("-5", 0.0)],
)
def test_seconds_are_read_as_seconds_and_never_negative(value: str, seconds: float) -> None:
    assert retry_after(value) == seconds


def test_an_http_date_is_the_seconds_from_now_until_it() -> None:
    in_two_minutes = format_datetime(datetime.now(UTC) + timedelta(seconds=120), usegmt=True)
    waited = retry_after(in_two_minutes)
    assert waited is not None
    # The header has whole seconds, and a little time passes while the test runs.
    assert 115 <= waited <= 121


@pytest.mark.parametrize(
    "value",
    ["Thu, 01 Jan 1970 00:00:00 GMT", format_datetime(datetime(2001, 9, 9, 1, 46, 40, tzinfo=UTC))],
)
def test_a_date_already_past_means_no_wait(value: str) -> None:
    assert retry_after(value) == 0.0


@pytest.mark.parametrize(
    "value", [None, "", "   ", "soon", "inf", "nan", "3 seconds", "Thu, 32 Foo 2024 25:00:00 GMT"]
)
def test_garbage_is_no_retry_after(value: str | None) -> None:
    assert retry_after(value) is None
