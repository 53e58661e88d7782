"""Exact amounts and price tables (``domain/costs.py``) and the settings that declare them."""

from __future__ import annotations

from decimal import Decimal

import pytest
from hypothesis import given
from hypothesis import strategies as st

from tidings.config import ProviderSettings
from tidings.domain.costs import Cost, PriceTable, format_micros, to_micros


@pytest.mark.parametrize(
    ("text", "micros"),
    [
        ("0", 0),
        ("0.0075", 7_500),
        ("1.5", 1_500_000),
        ("0.000001", 1),
        ("12", 12_000_000),
        (" 0.10 ", 100_000),
    ],
)
def test_amounts_become_exact_micros(text: str, micros: int) -> None:
    assert to_micros(text) == micros


@pytest.mark.parametrize("text", ["0.0000001", "abc", "NaN", "Infinity", "-1", "", "1e400"])
def test_amounts_that_are_not_exact_decimals_are_refused_naming_the_field(text: str) -> None:
    with pytest.raises(ValueError, match=r"^price: "):
        to_micros(text, field="price")


def test_a_negative_amount_is_read_only_where_allowed() -> None:
    assert to_micros("-0.00750", negative=True) == -7_500


@pytest.mark.parametrize(
    ("micros", "text"), [(7_500, "0.0075"), (1_500_000, "1.50"), (0, "0.00"), (-1, "-0.000001")]
)
def test_micros_print_as_plain_decimals(micros: int, text: str) -> None:
    assert format_micros(micros) == text


@given(st.decimals(min_value=-(10**9), max_value=10**9, places=6, allow_nan=False, allow_infinity=False))
def test_printing_and_reading_an_amount_gives_it_back(amount: Decimal) -> None:
    micros = to_micros(amount, negative=True)
    assert Decimal(format_micros(micros)) == amount
    assert to_micros(format_micros(micros), negative=True) == micros


def table() -> PriceTable:
    parsed = PriceTable.parse("kes", {"+254": "0.80", "+2547": 0.5, "*": "1.20"})
    assert parsed is not None
    return parsed


def test_the_longest_prefix_wins_and_sms_costs_per_segment() -> None:
    assert table().price("sms", "+254711000000", 2) == Cost(1_000_000, "KES")
    assert table().price("sms", "+254201000000", 1) == Cost(800_000, "KES")
    assert table().price("sms", "+14155550123", 3) == Cost(3_600_000, "KES")


def test_email_costs_the_star_price_per_message() -> None:
    assert table().price("email", "ada@example.org", None) == Cost(1_200_000, "KES")
    only_sms = PriceTable.parse("USD", {"+1": "0.0079"})
    assert only_sms is not None
    assert only_sms.price("email", "ada@example.org", None) is None
    assert only_sms.price("sms", "+447700900123", 1) is None


def test_a_float_from_toml_keeps_the_decimal_that_was_written() -> None:
    parsed = PriceTable.parse("USD", {"*": 0.1})
    assert parsed is not None and parsed.prices == (("*", 100_000),)


@pytest.mark.parametrize(
    ("currency", "prices", "message"),
    [
        (None, {"*": "1"}, "currency: set it"),
        ("dollars", {"*": "1"}, "currency: 'dollars' is not a currency code"),
        ("USD", {"254": "1"}, r"prices\.254: a destination is \+ and 1 to 15 digits"),
        ("USD", {"+1": "0.00000001"}, r"prices\.\+1: '0.00000001' has more than six decimal places"),
        ("USD", {"+1": "-1"}, r"prices\.\+1: '-1' is negative"),
    ],
)
def test_a_wrong_price_table_stops_start_up_naming_the_entry(
    currency: str | None, prices: dict[str, str], message: str
) -> None:
    with pytest.raises(ValueError, match=message):
        ProviderSettings(kind="fake", currency=currency, prices=prices)


def test_a_provider_without_prices_has_no_table() -> None:
    assert ProviderSettings(kind="fake").price_table is None
