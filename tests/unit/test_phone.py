"""Tests for tidings.domain.phone."""

from __future__ import annotations

import pytest

from tidings.domain.phone import is_valid_region, normalize_e164
from tidings.errors import InvalidPhoneNumber


@pytest.mark.parametrize(
    "raw",
    ["+254712345678", "+44 20 7946 0958", "+12015550123", "+33 1 23 45 67 89"],
)
def test_e164_passthrough(raw: str) -> None:
    expected = "+" + "".join(ch for ch in raw if ch.isdigit())
    assert normalize_e164(raw) == expected
    assert normalize_e164(expected) == expected


@pytest.mark.parametrize(
    "raw",
    [
        "+254 712 345 678",
        "+254-712-345-678",
        "+254 (712) 345-678",
        "(+254) 712.345.678",
        "  +254712345678\n",
        "\t+254 712 345678 ",
    ],
)
def test_formatting_characters_are_stripped(raw: str) -> None:
    assert normalize_e164(raw) == "+254712345678"


@pytest.mark.parametrize("raw", ["0712 345 678", "0712345678", "712345678", " 0712-345-678 "])
def test_national_number_with_region(raw: str) -> None:
    assert normalize_e164(raw, "KE") == "+254712345678"


def test_region_is_case_insensitive() -> None:
    assert normalize_e164("0712 345 678", "ke") == "+254712345678"


def test_region_does_not_override_an_international_number() -> None:
    assert normalize_e164("+44 20 7946 0958", "KE") == "+442079460958"


def test_same_digits_differ_by_region() -> None:
    assert normalize_e164("020 7946 0958", "GB") == "+442079460958"
    assert normalize_e164("(201) 555-0123", "US") == "+12015550123"


@pytest.mark.parametrize("raw", ["0712 345 678", "712345678", "00254712345678"])
def test_national_number_without_region_raises_helpfully(raw: str) -> None:
    with pytest.raises(InvalidPhoneNumber) as info:
        normalize_e164(raw)
    message = info.value.message
    assert "country code" in message
    assert "+" in message
    assert "TIDINGS_DEFAULT_REGION" in message
    assert info.value.field == "to"


@pytest.mark.parametrize("raw", ["", "   ", "\n", "tel:", "tel:  "])
def test_empty_raises(raw: str) -> None:
    with pytest.raises(InvalidPhoneNumber, match="empty") as info:
        normalize_e164(raw, "KE")
    assert info.value.field == "to"


@pytest.mark.parametrize(
    ("raw", "region"),
    [
        ("hello", None),
        ("hello", "KE"),
        ("+", None),
        ("+1", None),
        ("+999 1234 5678", None),  # no such country code
        ("+254 712", None),  # too short for Kenya
        ("+2547123456789999", None),  # too long
        ("+254712345678;+254700000000", None),  # two numbers
        ("+254712345678xyz", None),
        ("0000", "KE"),
        ("+1 555 555", None),
        # Right length for the country but not in its numbering plan:
        ("+1 201 055 0123", None),  # US exchange codes never start with 0
        ("+254 312 345 678", None),
        ("+1 555 555 5555", None),
        ("+" + "1" * 300, None),
    ],
)
def test_invalid_numbers_raise(raw: str, region: str | None) -> None:
    with pytest.raises(InvalidPhoneNumber) as info:
        normalize_e164(raw, region)
    assert info.value.field == "to"
    assert info.value.code == "invalid_phone_number"
    assert info.value.to_dict()["error"] == {
        "code": "invalid_phone_number",
        "message": info.value.message,
        "field": "to",
    }
    assert len(info.value.message) < 250  # long input is not echoed in full


def test_invalid_number_message_names_the_number() -> None:
    with pytest.raises(InvalidPhoneNumber, match=r"'\+254 712'"):
        normalize_e164("+254 712")


def test_invalid_country_code_message() -> None:
    with pytest.raises(InvalidPhoneNumber, match="country code"):
        normalize_e164("+999 1234 5678")


@pytest.mark.parametrize("raw", ["+254712345678 ext 5", "+254712345678 x5", "tel:+254712345678;ext=5"])
def test_extension_is_rejected(raw: str) -> None:
    with pytest.raises(InvalidPhoneNumber, match="extension"):
        normalize_e164(raw)


@pytest.mark.parametrize(
    "raw", ["tel:+254712345678", "TEL:+254712345678", " tel:+254-712-345-678", "tel: +254712345678"]
)
def test_tel_prefix(raw: str) -> None:
    assert normalize_e164(raw) == "+254712345678"


def test_tel_prefix_with_national_number_uses_region() -> None:
    assert normalize_e164("tel:0712345678", "KE") == "+254712345678"


def test_unknown_default_region_is_a_caller_bug() -> None:
    with pytest.raises(ValueError, match="region"):
        normalize_e164("0712345678", "XX")


@pytest.mark.parametrize("code", ["KE", "US", "GB", "DE", "ng", " ke "])
def test_valid_regions(code: str) -> None:
    assert is_valid_region(code)


@pytest.mark.parametrize("code", ["", "XX", "ZZ", "001", "KEN", "UK", "254"])
def test_invalid_regions(code: str) -> None:
    assert not is_valid_region(code)


def test_a_number_already_in_e164_is_read_the_same_as_when_parsed_in_every_region() -> None:
    # normalize_e164 takes a short cut for numbers written in E.164; it must agree with the full
    # parse on every region's example numbers of every type.
    import phonenumbers

    from tidings.domain.phone import _valid_e164

    short_cuts = 0
    for region in sorted(phonenumbers.SUPPORTED_REGIONS):
        for kind in range(11):
            example = phonenumbers.example_number_for_type(region, kind)
            if example is None:
                continue
            written = phonenumbers.format_number(example, phonenumbers.PhoneNumberFormat.E164)
            parsed = phonenumbers.parse(written)
            fast = _valid_e164(written)
            if fast is not None:
                assert phonenumbers.is_valid_number(parsed), written
                assert fast == phonenumbers.format_number(parsed, phonenumbers.PhoneNumberFormat.E164)
                short_cuts += 1
    assert short_cuts > 1000
