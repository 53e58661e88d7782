"""Reading the gateway app's requests, and recognising updates it sends again."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from tidings.domain.status import Status
from tidings.errors import GatewayProtocolError
from tidings.providers.gateway import parse_poll
from tidings.services.gateway import repeated_prefix


def test_items_are_read_and_malformed_ones_skipped_with_a_reason() -> None:
    poll = parse_poll(
        b'{"messages": [{"id": "1", "from": "+254700000001", "content": "hi", "sms_sent": 1700000000000},'
        b' {"id": "2", "content": "x"}],'
        b' "updates": [{"id": "m", "status": "failed", "reason": "no credit"}, {"status": "SENT"}, 7]}'
    )
    [sms] = poll.inbound
    assert (sms.id, sms.sender, sms.body) == ("1", "+254700000001", "hi")
    assert sms.sent_at is not None and sms.sent_at.year == 2023
    [update] = poll.updates
    assert (update.status, update.word, update.reason, update.label) == (
        Status.FAILED,
        "failed",
        "no credit",
        "failed",
    )
    assert len(poll.skipped) == 3


@pytest.mark.parametrize("body", [b"[]", b"nope", b'"text"'])
def test_a_body_that_is_not_an_object_is_refused(body: bytes) -> None:
    with pytest.raises(GatewayProtocolError):
        parse_poll(body)


def test_lists_that_are_not_lists_are_skipped() -> None:
    poll = parse_poll(b'{"messages": {"id": 1}, "updates": "SENT"}')
    assert poll.inbound == [] and poll.updates == []
    assert poll.skipped == ["messages is not a list", "updates is not a list"]


Key = tuple[str | None, str | None]
keys = st.lists(
    st.sampled_from([("UNSENT", None), ("PENDING", None), ("SENT", None), ("FAILED", "x")]), max_size=6
)


@given(keys, keys)
def test_a_resent_request_is_recognised_whatever_came_before(earlier: list[Key], batch: list[Key]) -> None:
    recorded = earlier + batch
    # The whole batch was recorded already: all of it is a repeat.
    assert repeated_prefix(recorded, batch) == len(batch)
    # A batch that repeats its start and adds more: only the new part is kept.
    assert repeated_prefix(recorded, [*batch, ("DELIVERED", None)]) == len(batch)


def test_a_new_update_equal_to_an_older_one_is_not_a_repeat() -> None:
    assert repeated_prefix([("UNSENT", None), ("PENDING", None)], [("UNSENT", None)]) == 0
