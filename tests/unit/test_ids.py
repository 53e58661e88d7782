from __future__ import annotations

from datetime import datetime, timedelta

from tidings import ids
from tidings.clock import utcnow


def test_ids_made_in_one_process_sort_in_creation_order() -> None:
    made = [ids.new_id() for _ in range(5000)]
    assert made == sorted(made)
    assert len(set(made)) == len(made)


def test_ids_have_the_documented_shape() -> None:
    value = ids.new_id()
    assert ids.is_id(value)
    assert not ids.is_id(value.lower()[:-1] + "!")
    assert not ids.is_id(value + "0")


def test_the_lowest_id_of_a_moment_bounds_the_ids_made_at_and_after_it() -> None:
    before = utcnow()
    made = ids.new_id()
    after = utcnow() + timedelta(milliseconds=1)
    assert ids.is_id(ids.lowest_at(before))
    assert ids.lowest_at(before - timedelta(milliseconds=1)) < ids.lowest_at(before) <= made
    assert made < ids.lowest_at(after)
    assert ids.lowest_at(datetime(1960, 1, 1)) == "0" * 26
