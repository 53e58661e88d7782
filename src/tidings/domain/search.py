"""What a search of messages asks for, checked and made exact: the words of a text query, a
number prefix, an amount of money. No I/O; ``store/search.py`` turns these into SQL.

A text query is user text, and the full-text engines' own query languages are hostile to it
(FTS5 reads quotes, ``*``, ``NEAR``, ``AND``/``OR``/``NOT`` and ``column:`` filters). So the text
is never handed over as a query: it is cut into words the way the indexes cut bodies (runs of
letters, digits and marks; everything else separates), and each word is then matched as a word.
"""

from __future__ import annotations

import re
import unicodedata

from tidings.domain.costs import check_currency, to_micros
from tidings.errors import InvalidInput

MAX_QUERY_CHARS = 200
"""The longest text query, in characters."""
MAX_TERMS = 10
"""The most words a text query may have: each is one more index list to intersect."""
MAX_TERM_CHARS = 64
"""The longest word: longer ones are not words anyone searches for, and cost index work."""

MAX_TAGS = 10
"""The most tags a search may ask a message to have."""

AMOUNT_PATTERN = r"^[0-9]{1,12}(\.[0-9]{1,6})?$"
"""A decimal amount as a search takes it: no sign, no exponent, at most 6 decimals."""
_AMOUNT = re.compile(AMOUNT_PATTERN)
CURRENCY_PATTERN = r"^[A-Za-z]{3}$"
_CURRENCY = re.compile(CURRENCY_PATTERN)
PREFIX_PATTERN = r"^\+[1-9][0-9]{0,14}$"
"""A number prefix: ``+`` and 1 to 15 digits, as E.164 numbers begin."""
_PREFIX = re.compile(PREFIX_PATTERN)


def _word_character(c: str) -> bool:
    # Letters, digits, private use and combining marks, as SQLite's unicode61 tokenizer counts
    # them (categories L*, N*, Co; marks stay with their letter here and are removed by the
    # index's diacritics folding).
    category = unicodedata.category(c)
    return category[0] in "LNM" or category == "Co"


def search_terms(query: str, field: str = "q") -> tuple[str, ...]:
    """The words of the text query ``query``, in order, each once: a message matches when it
    has all of them. :class:`InvalidInput` naming ``field`` when no word is left, when there are
    more than :data:`MAX_TERMS` or one is longer than :data:`MAX_TERM_CHARS`."""
    if len(query) > MAX_QUERY_CHARS:
        raise InvalidInput(f"{field} may be at most {MAX_QUERY_CHARS} characters", field=field)
    # Composed form: "é" typed as e + combining accent is the same word as "é".
    text = unicodedata.normalize("NFC", query)
    terms: list[str] = []
    word: list[str] = []
    for c in [*text, " "]:
        if _word_character(c):
            word.append(c)
        elif word:
            # Case is left to the indexes, which fold it the way they folded the bodies.
            term = "".join(word)
            word.clear()
            if len(term) > MAX_TERM_CHARS:
                raise InvalidInput(f"{field}: a word may be at most {MAX_TERM_CHARS} characters", field=field)
            if term not in terms:
                terms.append(term)
    if not terms:
        raise InvalidInput(f"{field} has no word to search for (letters or digits)", field=field)
    if len(terms) > MAX_TERMS:
        raise InvalidInput(f"{field} may have at most {MAX_TERMS} words", field=field)
    return tuple(terms)


def number_prefix(prefix: str, field: str = "to_prefix") -> tuple[str, str | None]:
    """The range of E.164 numbers that start with ``prefix`` (``+`` and 1 to 15 digits, such as
    ``+2547``): ``(low, high)`` with ``low <= number < high``, ``high`` ``None`` when nothing
    bounds it (a prefix of nines). Both ends are digits, so the range is the same in any
    collation that orders digits as digits."""
    if not _PREFIX.fullmatch(prefix):
        raise InvalidInput(f"{field} must be + and 1 to 15 digits (e.g. +2547)", field=field)
    digits = prefix[1:].rstrip("9")
    if not digits:
        return prefix, None
    return prefix, "+" + digits[:-1] + str(int(digits[-1]) + 1)


def amount_micros(amount: str, field: str) -> int:
    """The exact amount of ``amount`` (a plain decimal such as ``0.0075``, at most 6 decimals) in
    millionths (``domain/costs.py``); :class:`InvalidInput` naming ``field`` for anything else
    (signs, exponents, more decimals than the amounts are stored with). No float is involved."""
    if _AMOUNT.fullmatch(amount) is None:
        raise InvalidInput(
            f"{field} must be a decimal amount with at most 6 decimals, such as 0.0075", field=field
        )
    try:
        return to_micros(amount, field=field)
    except ValueError as exc:
        raise InvalidInput(str(exc), field=field) from exc


def currency_code(code: str, field: str = "currency") -> str:
    """``code`` as an ISO 4217 code (three letters, upper case); :class:`InvalidInput` naming
    ``field`` for anything else."""
    if not _CURRENCY.fullmatch(code):
        raise InvalidInput(f"{field} must be a three-letter ISO 4217 code, such as KES", field=field)
    return check_currency(code, field=field)


def cost_range(
    currency: str | None, cost_min: str | None, cost_max: str | None
) -> tuple[str | None, int | None, int | None]:
    """A cost filter made exact: the currency (upper case) and the bounds in millionths, both
    inclusive. A bound needs the currency, since amounts in two currencies do not compare; a
    maximum below the minimum is refused. :class:`InvalidInput` names the field at fault."""
    code = currency_code(currency) if currency is not None else None
    low = amount_micros(cost_min, "cost_min") if cost_min is not None else None
    high = amount_micros(cost_max, "cost_max") if cost_max is not None else None
    if code is None and (low is not None or high is not None):
        field = "cost_min" if low is not None else "cost_max"
        raise InvalidInput(f"{field} needs currency: amounts in two currencies do not compare", field=field)
    if low is not None and high is not None and high < low:
        raise InvalidInput("cost_max is below cost_min", field="cost_max")
    return code, low, high
