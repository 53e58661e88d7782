"""gRPC timestamps are the instants the REST API shows: ``convert.timestamp`` reads API times with
``datetime.fromisoformat`` instead of protobuf's slower ``FromJsonString``, and must agree with
it to the nanosecond."""

from __future__ import annotations

from datetime import UTC, datetime

from google.protobuf.timestamp_pb2 import Timestamp
from hypothesis import given
from hypothesis import strategies as st

from tidings.clock import to_api
from tidings.rpc.convert import timestamp

stored = st.datetimes(min_value=datetime(1970, 1, 1), max_value=datetime(9999, 12, 31))


def reference(text: str) -> Timestamp:
    found = Timestamp()
    found.FromJsonString(text)
    return found


@given(stored)
def test_an_api_time_is_read_as_protobuf_reads_it(moment: datetime) -> None:
    text = to_api(moment)
    assert text is not None
    assert timestamp(text) == reference(text)


@given(stored)
def test_a_stored_time_is_the_instant_the_api_shows(moment: datetime) -> None:
    text = to_api(moment)
    assert text is not None
    assert timestamp(moment) == reference(text)


@given(stored)
def test_an_aware_time_is_its_utc_instant(moment: datetime) -> None:
    text = moment.replace(tzinfo=UTC).isoformat(timespec="milliseconds")
    assert timestamp(text) == reference(text)


def test_none_is_none() -> None:
    assert timestamp(None) is None
