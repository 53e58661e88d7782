"""Phone number normalisation: whatever a caller writes, store and send E.164 (``+254712345678``).

One canonical form means one number is one recipient: idempotency, suppression and reporting all
compare numbers as strings, and providers all accept E.164. Parsing and validation are done by
``phonenumbers`` (a port of Google's libphonenumber), whose metadata knows each country's number
lengths and prefixes. This module does no I/O.
"""

from __future__ import annotations

import functools
import re

import phonenumbers

from tidings.errors import InvalidPhoneNumber

_E164 = re.compile(r"\+([1-9][0-9]{5,14})")
_COUNTRY_CODES = frozenset(phonenumbers.COUNTRY_CODE_TO_REGION_CODE)

_FIELD = "to"
_MAX_ECHO = 40  # longest input quoted back in an error message


def _quote(raw: str) -> str:
    if len(raw) > _MAX_ECHO:
        raw = raw[: _MAX_ECHO - 1] + "…"
    return repr(raw)


def is_valid_region(code: str) -> bool:
    """Whether ``code`` is an ISO 3166 alpha-2 region phonenumbers can parse national numbers for.

    Case-insensitive, like :func:`normalize_e164`. Used to check ``TIDINGS_DEFAULT_REGION``.
    """
    return code.strip().upper() in phonenumbers.SUPPORTED_REGIONS


@functools.lru_cache(maxsize=8192)
def normalize_e164(raw: str, default_region: str | None = None) -> str:
    """Parse a phone number as an API user wrote it and return it in E.164 form.

    Accepts international numbers (``+254 712 345 678``, with any spaces, dashes, dots or
    parentheses), the ``tel:`` URI form some providers use (``tel:+254712345678``), and national
    numbers (``0712 345 678``) when ``default_region`` (ISO 3166 alpha-2, e.g. ``"KE"``) says which
    country they belong to. A number with a ``+`` is always read as international, whatever the
    default region.

    Raises :class:`~tidings.errors.InvalidPhoneNumber` (``field="to"``) when the input is empty,
    is not a phone number, is a national number with no default region, carries an extension
    (which cannot receive SMS), or is not a valid number according to the numbering plan.
    Raises ``ValueError`` if ``default_region`` is not a known region: that is a configuration bug
    (validate it with :func:`is_valid_region` at start-up), not the API user's fault.

    The numbers read last are remembered (the same people get message after message): reading
    one again costs a dictionary lookup instead of the numbering plan's checks (20 µs).
    """
    canonical = _valid_e164(raw)
    if canonical is not None:
        return canonical
    text = raw.strip()
    if text[:4].lower() == "tel:":
        text = text[4:].strip()
    if not text:
        raise InvalidPhoneNumber("The phone number is empty.", field=_FIELD)

    region: str | None = None
    if default_region is not None:
        region = default_region.strip().upper()
        if region not in phonenumbers.SUPPORTED_REGIONS:
            raise ValueError(f"unknown default region {default_region!r}: expected ISO 3166 alpha-2")

    # Without a region, only an international number can be read. Checking here rather than
    # decoding phonenumbers' error lets the message say exactly what to do. U+FF0B is the
    # fullwidth plus, which phonenumbers also accepts.
    if region is None and "+" not in text and "\uff0b" not in text:
        raise InvalidPhoneNumber(
            f"The phone number {_quote(text)} has no country code. Write it in international format, "
            "starting with + and the country code (e.g. +254712345678), "
            "or set TIDINGS_DEFAULT_REGION to the country national numbers belong to.",
            field=_FIELD,
        )

    try:
        number = phonenumbers.parse(text, region)
    except phonenumbers.NumberParseException as exc:
        raise InvalidPhoneNumber(_parse_error_message(text, int(exc.error_type)), field=_FIELD) from exc

    if number.extension:
        raise InvalidPhoneNumber(
            f"The phone number {_quote(text)} has an extension; extensions cannot receive SMS. "
            "Send to the number without the extension.",
            field=_FIELD,
        )
    if not phonenumbers.is_valid_number(number):
        raise InvalidPhoneNumber(
            f"The phone number {_quote(text)} is not a valid number: "
            "check the country code and the number of digits.",
            field=_FIELD,
        )
    return str(phonenumbers.format_number(number, phonenumbers.PhoneNumberFormat.E164))


def phone_number(raw: str, default_region: str | None, field: str) -> str:
    """``raw`` in E.164 (:func:`normalize_e164`); :class:`InvalidPhoneNumber` naming ``field``
    (``normalize_e164`` names ``to``)."""
    try:
        return normalize_e164(raw, default_region)
    except InvalidPhoneNumber as exc:
        exc.field = field
        raise


def _valid_e164(raw: str) -> str | None:
    """``raw`` when it is already a valid number written in E.164, found without parsing it (the
    common case, and a third of the cost); ``None`` sends it the long way. A national part that
    starts with 0 always goes the long way (leading zeros are kept apart in phonenumbers)."""
    match = _E164.fullmatch(raw)
    if match is None:
        return None
    digits = match.group(1)
    for length in (1, 2, 3):
        code = int(digits[:length])
        if code in _COUNTRY_CODES:
            national = digits[length:]
            if not national or national[0] == "0":
                return None
            number = phonenumbers.PhoneNumber(country_code=code, national_number=int(national))
            regions = phonenumbers.COUNTRY_CODE_TO_REGION_CODE[code]
            if len(regions) == 1:
                # What is_valid_number does after finding the region, which takes it longer.
                valid = phonenumbers.is_valid_number_for_region(number, regions[0])
            else:
                valid = phonenumbers.is_valid_number(number)
            return raw if valid else None
    return None


def _parse_error_message(text: str, error_type: int) -> str:
    quoted = _quote(text)
    if error_type == phonenumbers.NumberParseException.INVALID_COUNTRY_CODE:
        return f"The phone number {quoted} does not start with a valid country code after the +."
    if error_type in (
        phonenumbers.NumberParseException.TOO_SHORT_NSN,
        phonenumbers.NumberParseException.TOO_SHORT_AFTER_IDD,
    ):
        return f"The phone number {quoted} is too short."
    if error_type == phonenumbers.NumberParseException.TOO_LONG:
        return f"The phone number {quoted} is too long."
    return f"{quoted} is not a phone number."
