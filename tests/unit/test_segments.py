"""Tests for tidings.domain.segments.

The GSM alphabet below is written independently of the module (by Unicode character name, in
3GPP TS 23.038 code order), and segment counts are checked against a reference splitter that
works differently from the module: it cuts the encoded unit stream every 153 septets / 67 code
units and steps back one when the cut would land inside an ESC pair or a surrogate pair.
"""

from __future__ import annotations

import string
import unicodedata

import pytest
from hypothesis import given
from hypothesis import strategies as st

from tidings.domain.segments import Encoding, SegmentInfo, analyze

# --- Independent reference data -------------------------------------------------------------

# GSM 03.38 default alphabet, 0x00-0x7F. None marks 0x1B (ESC), which is not a character.
_NAMED_BASIC: list[str | None] = [
    # 0x00-0x0F
    "COMMERCIAL AT", "POUND SIGN", "DOLLAR SIGN", "YEN SIGN",
    "LATIN SMALL LETTER E WITH GRAVE", "LATIN SMALL LETTER E WITH ACUTE",
    "LATIN SMALL LETTER U WITH GRAVE", "LATIN SMALL LETTER I WITH GRAVE",
    "LATIN SMALL LETTER O WITH GRAVE", "LATIN CAPITAL LETTER C WITH CEDILLA",
    "LINE FEED", "LATIN CAPITAL LETTER O WITH STROKE", "LATIN SMALL LETTER O WITH STROKE",
    "CARRIAGE RETURN", "LATIN CAPITAL LETTER A WITH RING ABOVE", "LATIN SMALL LETTER A WITH RING ABOVE",
    # 0x10-0x1F
    "GREEK CAPITAL LETTER DELTA", "LOW LINE", "GREEK CAPITAL LETTER PHI", "GREEK CAPITAL LETTER GAMMA",
    "GREEK CAPITAL LETTER LAMDA", "GREEK CAPITAL LETTER OMEGA", "GREEK CAPITAL LETTER PI",
    "GREEK CAPITAL LETTER PSI", "GREEK CAPITAL LETTER SIGMA", "GREEK CAPITAL LETTER THETA",
    "GREEK CAPITAL LETTER XI", None, "LATIN CAPITAL LETTER AE", "LATIN SMALL LETTER AE",
    "LATIN SMALL LETTER SHARP S", "LATIN CAPITAL LETTER E WITH ACUTE",
    # 0x20-0x2F
    "SPACE", "EXCLAMATION MARK", "QUOTATION MARK", "NUMBER SIGN", "CURRENCY SIGN", "PERCENT SIGN",
    "AMPERSAND", "APOSTROPHE", "LEFT PARENTHESIS", "RIGHT PARENTHESIS", "ASTERISK", "PLUS SIGN",
    "COMMA", "HYPHEN-MINUS", "FULL STOP", "SOLIDUS",
    # 0x30-0x3F
    *(f"DIGIT {d}" for d in ("ZERO", "ONE", "TWO", "THREE", "FOUR", "FIVE", "SIX", "SEVEN", "EIGHT", "NINE")),
    "COLON", "SEMICOLON", "LESS-THAN SIGN", "EQUALS SIGN", "GREATER-THAN SIGN", "QUESTION MARK",
    # 0x40-0x5F
    "INVERTED EXCLAMATION MARK",
    *(f"LATIN CAPITAL LETTER {c}" for c in string.ascii_uppercase),
    "LATIN CAPITAL LETTER A WITH DIAERESIS", "LATIN CAPITAL LETTER O WITH DIAERESIS",
    "LATIN CAPITAL LETTER N WITH TILDE", "LATIN CAPITAL LETTER U WITH DIAERESIS", "SECTION SIGN",
    # 0x60-0x7F
    "INVERTED QUESTION MARK",
    *(f"LATIN SMALL LETTER {c}" for c in string.ascii_uppercase),
    "LATIN SMALL LETTER A WITH DIAERESIS", "LATIN SMALL LETTER O WITH DIAERESIS",
    "LATIN SMALL LETTER N WITH TILDE", "LATIN SMALL LETTER U WITH DIAERESIS",
    "LATIN SMALL LETTER A WITH GRAVE",
]  # fmt: skip

_CONTROL_NAMES = {"LINE FEED": "\n", "CARRIAGE RETURN": "\r"}  # unicodedata.lookup has no controls


def _char(name: str) -> str:
    return _CONTROL_NAMES.get(name) or unicodedata.lookup(name)


BASIC = frozenset(_char(name) for name in _NAMED_BASIC if name is not None)
EXTENSION = frozenset(
    ["\f"]
    + [
        unicodedata.lookup(name)
        for name in (
            "CIRCUMFLEX ACCENT",
            "LEFT CURLY BRACKET",
            "RIGHT CURLY BRACKET",
            "REVERSE SOLIDUS",
            "LEFT SQUARE BRACKET",
            "TILDE",
            "RIGHT SQUARE BRACKET",
            "VERTICAL LINE",
            "EURO SIGN",
        )
    ]
)
GSM = BASIC | EXTENSION

# Characters that look like, or are often assumed to be, GSM characters but are not.
NEAR_MISSES = [
    "ç",  # only the capital Ç is in the alphabet
    "—",  # em dash (word processors)
    "\u2013",  # en dash
    "\u2019",  # right single quotation mark (smart quote)
    "\u201c",  # left double quotation mark
    "`",
    "\t",
    "\x1b",  # ESC itself is not a user character
    "\x00",
    "\u0391",  # GREEK CAPITAL LETTER ALPHA, looks like A
    "\u2126",  # OHM SIGN, looks like Ω
    "\u03b4",  # greek small delta
    "á",
    "ê",
    "À",
    "\u0308",  # combining diaeresis (as in a decomposed ü)
    "\u00a0",  # no-break space
    "\ufe0f",  # emoji variation selector
    "😀",
]


def gsm_septets(text: str) -> int:
    return sum(2 if ch in EXTENSION else 1 for ch in text)


def reference_gsm_segments(text: str) -> int:
    stream: list[str] = []
    for ch in text:
        if ch in EXTENSION:
            stream.append("ESC")
        stream.append(ch)
    if len(stream) <= 160:
        return 1
    parts = 0
    pos = 0
    while pos < len(stream):
        end = min(pos + 153, len(stream))
        if stream[end - 1] == "ESC":
            end -= 1
        parts += 1
        pos = end
    return parts


def utf16_units(text: str) -> list[int]:
    data = text.encode("utf-16-be")
    return [int.from_bytes(data[i : i + 2], "big") for i in range(0, len(data), 2)]


def reference_ucs2_segments(text: str) -> int:
    units = utf16_units(text)
    if len(units) <= 70:
        return 1
    parts = 0
    pos = 0
    while pos < len(units):
        end = min(pos + 67, len(units))
        if 0xD800 <= units[end - 1] <= 0xDBFF:  # cut after a high surrogate: keep the pair together
            end -= 1
        parts += 1
        pos = end
    return parts


def test_reference_alphabet_is_the_full_table() -> None:
    assert len(_NAMED_BASIC) == 128
    assert len(BASIC) == 127
    assert len(EXTENSION) == 10
    assert not BASIC & EXTENSION


# --- Examples ---------------------------------------------------------------------------------


def test_empty_body_raises() -> None:
    with pytest.raises(ValueError):
        analyze("")


def test_short_ascii_is_one_gsm_segment() -> None:
    assert analyze("Hello") == SegmentInfo(encoding=Encoding.GSM7, segments=1, units=5, characters=5)


def test_encoding_values() -> None:
    assert str(Encoding.GSM7) == "GSM-7"
    assert str(Encoding.UCS2) == "UCS-2"
    assert Encoding("GSM-7") is Encoding.GSM7


@pytest.mark.parametrize(
    ("length", "segments"),
    [(1, 1), (153, 1), (159, 1), (160, 1), (161, 2), (305, 2), (306, 2), (307, 3), (459, 3), (460, 4)],
)
def test_gsm_boundaries(length: int, segments: int) -> None:
    info = analyze("a" * length)
    assert info == SegmentInfo(Encoding.GSM7, segments, length, length)


@pytest.mark.parametrize(("count", "units", "segments"), [(80, 160, 1), (81, 162, 2), (153, 306, 3)])
def test_extension_chars_count_two_septets(count: int, units: int, segments: int) -> None:
    info = analyze("€" * count)
    assert info == SegmentInfo(Encoding.GSM7, segments, units, count)


@pytest.mark.parametrize("char", sorted(EXTENSION))
def test_each_extension_char_is_two_septets(char: str) -> None:
    assert analyze(char) == SegmentInfo(Encoding.GSM7, 1, 2, 1)
    assert analyze(char * 80).segments == 1
    assert analyze(char * 81).segments == 2


@pytest.mark.parametrize("char", sorted(BASIC))
def test_each_basic_char_is_one_septet(char: str) -> None:
    assert analyze(char) == SegmentInfo(Encoding.GSM7, 1, 1, 1)
    assert analyze(char * 160).segments == 1


def test_extension_char_is_not_split_at_the_153_boundary() -> None:
    # 306 septets would fit exactly in two parts, but the € would straddle septets 153-154:
    # part 1 is 152 septets, part 2 is € + 151 a, part 3 is the last a.
    body = "a" * 152 + "€" + "a" * 152
    info = analyze(body)
    assert info.units == 306
    assert info.segments == 3


def test_extension_char_just_before_the_boundary_fits() -> None:
    body = "a" * 151 + "€" + "a" * 153  # € is septets 152-153, so the first part is full
    info = analyze(body)
    assert info.units == 306
    assert info.segments == 2


def test_extension_char_in_single_segment_is_not_a_boundary_issue() -> None:
    # Within a single 160-septet SMS there are no part boundaries at all.
    info = analyze("a" * 152 + "€" + "a" * 6)
    assert (info.units, info.segments) == (160, 1)


@pytest.mark.parametrize("char", NEAR_MISSES)
def test_one_non_gsm_char_makes_the_whole_message_ucs2(char: str) -> None:
    body = "a" * 100 + char
    info = analyze(body)
    assert info.encoding is Encoding.UCS2
    assert info.units == len(body.encode("utf-16-le")) // 2
    assert info.segments == 2  # > 70 code units
    assert info.characters == len(body)


def test_capital_c_cedilla_stays_gsm() -> None:
    assert analyze("Ça va").encoding is Encoding.GSM7
    assert analyze("Ç" * 160) == SegmentInfo(Encoding.GSM7, 1, 160, 160)
    assert analyze("ça va").encoding is Encoding.UCS2


def test_gsm_greek_capitals_and_symbols() -> None:
    body = "ΔΦΓΛΩΠΨΣΘΞ @£$¥¤§¿¡ ÄÖÑÜäöñüà ÆæßÉ\r\n"
    assert analyze(body) == SegmentInfo(Encoding.GSM7, 1, len(body), len(body))


@pytest.mark.parametrize(
    ("length", "segments"),
    [(1, 1), (67, 1), (70, 1), (71, 2), (133, 2), (134, 2), (135, 3), (201, 3), (202, 4)],
)
def test_ucs2_boundaries(length: int, segments: int) -> None:
    info = analyze("ç" * length)
    assert info == SegmentInfo(Encoding.UCS2, segments, length, length)


def test_emoji_is_two_code_units() -> None:
    assert analyze("😀") == SegmentInfo(Encoding.UCS2, 1, 2, 1)
    assert analyze("😀" * 35) == SegmentInfo(Encoding.UCS2, 1, 70, 35)
    # 36 emoji = 72 units; parts hold 33 emoji (66 units) each since 67 is odd.
    assert analyze("😀" * 36) == SegmentInfo(Encoding.UCS2, 2, 72, 36)
    assert analyze("😀" * 66) == SegmentInfo(Encoding.UCS2, 2, 132, 66)
    assert analyze("😀" * 67) == SegmentInfo(Encoding.UCS2, 3, 134, 67)


def test_emoji_is_not_split_at_the_67_boundary() -> None:
    # 134 units would fit exactly in two parts, but the emoji would straddle units 67-68.
    body = "ç" * 66 + "😀" + "ç" * 66
    info = analyze(body)
    assert info.units == 134
    assert info.segments == 3


def test_emoji_just_before_the_boundary_fits() -> None:
    body = "ç" * 65 + "😀" + "ç" * 67
    info = analyze(body)
    assert info.units == 134
    assert info.segments == 2


def test_emoji_in_gsm_text_forces_ucs2_and_counts_code_units() -> None:
    body = "See you soon " + "👍"
    info = analyze(body)
    assert info == SegmentInfo(Encoding.UCS2, 1, len(body) + 1, len(body))


def test_extension_chars_cost_one_unit_in_ucs2() -> None:
    # Once the message is UCS-2 there is no escape: € is a single code unit.
    info = analyze("€" * 69 + "ç")
    assert info == SegmentInfo(Encoding.UCS2, 1, 70, 70)


def test_every_bmp_code_point_is_classified_exactly() -> None:
    # Exhaustive over the BMP: GSM-7 exactly for the 137 characters of the two GSM tables.
    gsm_seen = set()
    for cp in range(0x10000):
        if 0xD800 <= cp <= 0xDFFF:
            continue
        ch = chr(cp)
        info = analyze(ch)
        if info.encoding is Encoding.GSM7:
            gsm_seen.add(ch)
            assert info.units == (2 if ch in EXTENSION else 1), repr(ch)
        else:
            assert info.units == 1, repr(ch)
        assert info.segments == 1
    assert gsm_seen == GSM


# --- Properties -------------------------------------------------------------------------------

# Lengths are drawn to land near the segment boundaries often, not just in the small sizes
# Hypothesis favours.
_lengths = st.one_of(
    st.integers(min_value=1, max_value=700),
    st.sampled_from([70, 71, 80, 81, 134, 135, 152, 153, 154, 160, 161, 201, 202, 305, 306, 307, 459, 460]),
    st.sampled_from([70, 134, 153, 160, 306]).flatmap(lambda n: st.integers(n - 3, n + 3)),
)
_gsm_chars = st.one_of(st.sampled_from(sorted(BASIC)), st.sampled_from(sorted(EXTENSION)))
_ucs2_chars = st.one_of(
    st.sampled_from(["ç", "—", "é", "a", "€"]),
    st.sampled_from(["😀", "👍🏽", "𝄞"]),
    st.characters(exclude_categories=["Cs"]),
)


@st.composite
def gsm_text(draw: st.DrawFn) -> str:
    n = draw(_lengths)
    return "".join(draw(st.lists(_gsm_chars, min_size=n, max_size=n)))


@st.composite
def ucs2_text(draw: st.DrawFn) -> str:
    n = draw(_lengths)
    chars = draw(st.lists(_ucs2_chars, min_size=n, max_size=n))
    position = draw(st.integers(min_value=0, max_value=n))
    chars.insert(position, draw(st.sampled_from(NEAR_MISSES)))
    return "".join(chars)


@given(gsm_text())
def test_gsm_properties(body: str) -> None:
    info = analyze(body)
    assert info.encoding is Encoding.GSM7
    assert info.characters == len(body)
    assert info.units == gsm_septets(body)
    assert (info.segments == 1) == (info.units <= 160)
    if info.segments > 1:
        # Each part holds at most 153 septets; a full part can be one short (152) only when the
        # next character is an ESC pair, and the last part holds at least one septet.
        assert info.segments * 153 >= info.units > (info.segments - 1) * 152
    assert info.segments == reference_gsm_segments(body)


@given(ucs2_text())
def test_ucs2_properties(body: str) -> None:
    info = analyze(body)
    assert info.encoding is Encoding.UCS2
    assert info.characters == len(body)
    assert info.units == len(utf16_units(body))
    assert (info.segments == 1) == (info.units <= 70)
    if info.segments > 1:
        # Same reasoning as GSM-7, with 67-unit parts that may end at 66 before a surrogate pair.
        assert info.segments * 67 >= info.units > (info.segments - 1) * 66
    assert info.segments == reference_ucs2_segments(body)


@given(st.text(alphabet=st.one_of(_gsm_chars, st.sampled_from(NEAR_MISSES), st.characters()), min_size=1))
def test_any_text_is_analyzed_and_gsm_iff_all_chars_are_gsm(body: str) -> None:
    info = analyze(body)
    assert (info.encoding is Encoding.GSM7) == all(ch in GSM for ch in body)
    assert info.segments >= 1
    assert info.characters == len(body)
