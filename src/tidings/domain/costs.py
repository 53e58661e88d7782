"""What a message costs: exact amounts, and the price tables that give them when a provider does not.

Amounts are kept as whole millionths of the currency unit (*micros*): an ``int`` here and a
``BIGINT`` in the database, so sums are exact on both databases and no float ever touches money.
Six decimal places cover every price a provider quotes (Twilio's have five).

A provider's price table (``prices`` and ``currency`` in its settings) maps destination prefixes
(``"+254"``) to the price of one SMS segment there; the longest matching prefix wins and ``"*"``
covers the rest. For email, ``"*"`` is the price of one message. A provider that states what a
message cost (Twilio's ``price``) is believed over the table.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass
from decimal import Decimal, InvalidOperation

from tidings.domain.content import Channel

MICROS = 1_000_000
"""Micros per currency unit."""

ANY_DESTINATION = "*"

_CURRENCY = re.compile(r"^[A-Z]{3}$")
_PREFIX = re.compile(r"^\+[0-9]{1,15}$")


def to_micros(amount: str | Decimal | int, *, field: str = "amount", negative: bool = False) -> int:
    """``amount`` (a decimal string like ``"0.0075"``) in micros, exactly. Raises ``ValueError``
    naming ``field`` for anything that is not a finite decimal with at most six decimal places, or
    for a negative one unless ``negative`` is allowed."""
    try:
        value = Decimal(str(amount).strip())
    except InvalidOperation as exc:
        raise ValueError(f"{field}: {amount!r} is not a decimal number") from exc
    if not value.is_finite():
        raise ValueError(f"{field}: {amount!r} is not a finite number")
    if value < 0 and not negative:
        raise ValueError(f"{field}: {amount!r} is negative")
    micros = value * MICROS
    if micros != micros.to_integral_value():
        raise ValueError(f"{field}: {amount!r} has more than six decimal places")
    if abs(micros) >= 2**63:
        raise ValueError(f"{field}: {amount!r} is too large")
    return int(micros)


def format_micros(micros: int) -> str:
    """Micros as a plain decimal string with at least two decimal places: ``7500`` → ``"0.0075"``,
    ``1_500_000`` → ``"1.50"``."""
    sign = "-" if micros < 0 else ""
    whole, fraction = divmod(abs(micros), MICROS)
    digits = f"{fraction:06d}".rstrip("0")
    return f"{sign}{whole}.{digits.ljust(2, '0')}"


def check_currency(value: str, *, field: str = "currency") -> str:
    """An ISO 4217 code, upper-cased; ``ValueError`` naming ``field`` otherwise."""
    code = value.strip().upper()
    if not _CURRENCY.match(code):
        raise ValueError(f"{field}: {value!r} is not a currency code like USD or KES")
    return code


@dataclass(frozen=True)
class Cost:
    """What one message cost. ``quoted``: the provider said so (else it came from a price table)."""

    micros: int
    currency: str
    quoted: bool = False


@dataclass(frozen=True)
class PriceTable:
    """One provider's prices: per SMS segment by destination prefix, or per email (``*``)."""

    currency: str
    prices: tuple[tuple[str, int], ...]
    """(prefix, micros), longest prefix first, ``*`` last."""

    @classmethod
    def parse(cls, currency: str | None, prices: Mapping[str, str | int | float]) -> PriceTable | None:
        """The table of a provider's ``currency`` and ``prices`` settings (``None`` when it has no
        prices). Raises ``ValueError`` naming the entry that is wrong."""
        if not prices:
            return None
        if currency is None:
            raise ValueError("currency: set it (e.g. USD) with prices")
        entries = []
        for prefix, price in prices.items():
            key = prefix.strip()
            if key != ANY_DESTINATION and not _PREFIX.match(key):
                raise ValueError(f"prices.{prefix}: a destination is + and 1 to 15 digits (like +254), or *")
            if isinstance(price, float):
                # TOML reads 0.05 as a float; its shortest repr is the decimal that was written.
                price = repr(price)
            entries.append((key, to_micros(price, field=f"prices.{prefix}")))
        entries.sort(key=lambda entry: (entry[0] == ANY_DESTINATION, -len(entry[0])))
        return cls(check_currency(currency), tuple(entries))

    def price(self, channel: str, to: str, segments: int | None) -> Cost | None:
        """What a message costs by this table: the longest prefix of ``to`` (or ``*``) times its
        segments for SMS, the ``*`` price for email; ``None`` when no entry covers it."""
        for prefix, micros in self.prices:
            if prefix == ANY_DESTINATION or (channel == Channel.SMS.value and to.startswith(prefix)):
                count = 1 if channel != Channel.SMS.value else max(segments or 1, 1)
                return Cost(micros * count, self.currency)
        return None
