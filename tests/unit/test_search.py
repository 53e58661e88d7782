"""What a search asks for, checked and made exact (``domain/search.py``): the words of a text
query, number prefixes as ranges, amounts in millionths."""

from __future__ import annotations

import unicodedata

import pytest
from hypothesis import given
from hypothesis import strategies as st

from tidings.domain.costs import format_micros
from tidings.domain.search import (
    MAX_QUERY_CHARS,
    MAX_TERMS,
    amount_micros,
    cost_range,
    currency_code,
    number_prefix,
    search_terms,
)
from tidings.errors import InvalidInput


@pytest.mark.parametrize(
    ("query", "terms"),
    [
        ("appointment", ("appointment",)),
        ("  appointment   tomorrow ", ("appointment", "tomorrow")),
        ("amina@example.org", ("amina", "example", "org")),
        ('"near" AND body: subject*', ("near", "AND", "body", "subject")),
        ("NEAR(a b)", ("NEAR", "a", "b")),
        ("don't", ("don", "t")),
        ("+254 712-345", ("254", "712", "345")),
        ("re\u0301sultat", ("résultat",)),
        ("résultat résultat", ("résultat",)),
        ("Привет, мир", ("Привет", "мир")),
        ("a\x00b", ("a", "b")),
    ],
)
def test_a_query_is_cut_into_words_at_anything_but_letters_digits_and_marks(
    query: str, terms: tuple[str, ...]
) -> None:
    assert search_terms(query) == terms


@pytest.mark.parametrize("query", ["", "   ", '"', "'", "*", "()", "-:-", "\x00", "\ud800", "💬💬"])
def test_a_query_without_a_word_is_refused_naming_q(query: str) -> None:
    with pytest.raises(InvalidInput) as refused:
        search_terms(query)

    assert refused.value.field == "q"
    assert refused.value.code == "invalid_input"


def test_a_query_with_too_many_words_or_too_long_is_refused() -> None:
    search_terms(" ".join(f"w{n}" for n in range(MAX_TERMS)))
    for query in (
        " ".join(f"w{n}" for n in range(MAX_TERMS + 1)),
        "a" * 65,
        "a " * (MAX_QUERY_CHARS // 2 + 1),
    ):
        with pytest.raises(InvalidInput) as refused:
            search_terms(query)
        assert refused.value.field == "q"


@given(st.text(alphabet=st.characters(codec=None), max_size=MAX_QUERY_CHARS))
def test_any_query_gives_words_of_letters_digits_and_marks_or_is_refused(query: str) -> None:
    try:
        terms = search_terms(query)
    except InvalidInput as exc:
        assert exc.field == "q"
        return
    assert 1 <= len(terms) <= MAX_TERMS
    assert len(set(terms)) == len(terms)
    for term in terms:
        assert term
        assert all(unicodedata.category(c)[0] in "LNM" or unicodedata.category(c) == "Co" for c in term)
        term.encode("utf-8")


@pytest.mark.parametrize(
    ("prefix", "low", "high"),
    [
        ("+2547", "+2547", "+2548"),
        ("+1", "+1", "+2"),
        ("+2549", "+2549", "+255"),
        ("+25499", "+25499", "+255"),
        ("+9", "+9", None),
        ("+999", "+999", None),
        ("+123456789012345", "+123456789012345", "+123456789012346"),
    ],
)
def test_a_number_prefix_is_a_range_of_digits(prefix: str, low: str, high: str | None) -> None:
    assert number_prefix(prefix) == (low, high)


@pytest.mark.parametrize(
    "prefix",
    ["", "+", "2547", "+0", "+25 47", "+2547x", "+1234567890123456", "+\uff12\uff15", "+254\n", "%2B254"],
)
def test_a_number_prefix_that_is_not_plus_and_digits_is_refused(prefix: str) -> None:
    with pytest.raises(InvalidInput) as refused:
        number_prefix(prefix)

    assert refused.value.field == "to_prefix"


@given(st.from_regex(r"\+[1-9][0-9]{0,14}", fullmatch=True), st.from_regex(r"\+[0-9]{1,16}", fullmatch=True))
def test_a_number_is_in_a_prefixs_range_exactly_when_it_starts_with_it(prefix: str, number: str) -> None:
    low, high = number_prefix(prefix)

    assert (low <= number and (high is None or number < high)) == number.startswith(prefix)


@pytest.mark.parametrize(
    ("amount", "micros"),
    [
        ("0", 0),
        ("0.0075", 7500),
        ("0.000001", 1),
        ("1", 1_000_000),
        ("12.5", 12_500_000),
        ("999999999999.999999", 999_999_999_999_999_999),
    ],
)
def test_an_amount_is_exact_in_millionths(amount: str, micros: int) -> None:
    assert amount_micros(amount, "cost_min") == micros


@pytest.mark.parametrize(
    "amount",
    ["", "-1", "+1", "1e3", "0.0000001", ".5", "1.", " 1", "1,5", "NaN", "Infinity", "١٢", "1" * 13, "0x10"],
)
def test_an_amount_that_is_not_a_plain_decimal_is_refused_naming_its_field(amount: str) -> None:
    with pytest.raises(InvalidInput) as refused:
        amount_micros(amount, "cost_max")

    assert refused.value.field == "cost_max"


@given(st.integers(min_value=0, max_value=999_999_999_999_999_999))
def test_an_amount_as_the_api_writes_it_reads_back_the_same(micros: int) -> None:
    assert amount_micros(format_micros(micros), "cost") == micros


def test_a_currency_is_three_letters_made_upper_case() -> None:
    assert currency_code("kes") == "KES"
    for code in ("KE", "KESH", "K3S", "ÉUR", ""):
        with pytest.raises(InvalidInput):
            currency_code(code)


def test_a_cost_range_is_exact_in_its_currency() -> None:
    assert cost_range("kes", "0.05", "0.5") == ("KES", 50_000, 500_000)
    assert cost_range("KES", None, None) == ("KES", None, None)
    assert cost_range(None, None, None) == (None, None, None)
    assert cost_range("KES", "0.5", "0.5") == ("KES", 500_000, 500_000)


@pytest.mark.parametrize(
    ("currency", "low", "high", "field"),
    [
        (None, "0.05", None, "cost_min"),
        (None, None, "0.05", "cost_max"),
        ("KES", "0.5", "0.499999", "cost_max"),
        ("KES", "-1", None, "cost_min"),
        ("KESH", None, None, "currency"),
    ],
)
def test_a_cost_range_that_cannot_hold_is_refused_naming_the_field(
    currency: str | None, low: str | None, high: str | None, field: str
) -> None:
    with pytest.raises(InvalidInput) as refused:
        cost_range(currency, low, high)

    assert refused.value.field == field
