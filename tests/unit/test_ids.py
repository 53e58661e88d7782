from __future__ import annotations

from tidings import ids


def test_ids_made_in_one_process_sort_in_creation_order() -> None:
    made = [ids.new_id() for _ in range(5000)]
    assert made == sorted(made)
    assert len(set(made)) == len(made)


def test_ids_have_the_documented_shape() -> None:
    value = ids.new_id()
    assert ids.is_id(value)
    assert not ids.is_id(value.lower()[:-1] + "!")
    assert not ids.is_id(value + "0")
