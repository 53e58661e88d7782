"""SMS encoding and segment counting: how many billable parts a message body becomes.

An SMS carries 140 octets of user data. A body is sent in one of two encodings:

* **GSM-7** (3GPP TS 23.038, the "GSM 03.38 default alphabet"): 7-bit septets, so 160 per SMS.
  It is only possible when *every* character is in the default alphabet or its extension table.
  Extension characters (``^ { } \\ [ ~ ] | €`` and form feed) are sent as ESC + character, so they
  cost two septets each.
* **UCS-2** otherwise: 16-bit code units, so 70 per SMS. Handsets actually use UTF-16, so a
  character outside the Basic Multilingual Plane (most emoji) is a surrogate pair of two units.

A body that does not fit in one SMS is sent as a concatenated ("multipart") message. Each part
then gives up 6 octets to the user data header (UDH) that numbers the parts, leaving 153 septets
or 67 code units per part. The split must never cut an ESC + character pair or a surrogate pair in
two, since the receiving handset decodes each part on its own; so a part may end one unit short
(152 septets or 66 code units) when the next character is two units wide.

This module decides what users are billed and what providers charge for, so it is exact rather
than approximate. It does no I/O.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from dataclasses import dataclass
from enum import StrEnum


class Encoding(StrEnum):
    GSM7 = "GSM-7"
    UCS2 = "UCS-2"


@dataclass(frozen=True)
class SegmentInfo:
    """How a body is encoded and how many SMS segments it takes.

    ``units`` is septets for GSM-7 (extension characters count 2) and UTF-16 code units for
    UCS-2 (characters outside the BMP count 2). ``characters`` is the number of Unicode code points
    (``len(body)``), which is what a user typing the message sees, give or take combining marks.
    """

    encoding: Encoding
    segments: int
    units: int
    characters: int


# The GSM 03.38 default alphabet in code order, 0x00-0x7F, sixteen positions per line.
# Position 0x1B is ESC, which introduces an extension character; it is not a user character.
_GSM7_BASIC_TABLE = (
    "@£$¥èéùìòÇ\nØø\rÅå"  # 0x00-0x0F
    "Δ_ΦΓΛΩΠΨΣΘΞ\x1bÆæßÉ"  # 0x10-0x1F
    " !\"#¤%&'()*+,-./"  # 0x20-0x2F
    "0123456789:;<=>?"  # 0x30-0x3F
    "¡ABCDEFGHIJKLMNO"  # 0x40-0x4F
    "PQRSTUVWXYZÄÖÑÜ§"  # 0x50-0x5F
    "¿abcdefghijklmno"  # 0x60-0x6F
    "pqrstuvwxyzäöñüà"  # 0x70-0x7F
)

#: Characters of the GSM 03.38 default alphabet: one septet each.
GSM7_BASIC: frozenset[str] = frozenset(_GSM7_BASIC_TABLE) - {"\x1b"}

#: Characters of the GSM 03.38 default extension table: ESC + character, two septets each.
#: (The table's other entries, a nested escape and a page-break control, are not characters a
#: user can type.)
GSM7_EXTENSION: frozenset[str] = frozenset("\f^{}\\[~]|€")

GSM7_SINGLE_SEGMENT = 160
GSM7_MULTIPART_SEGMENT = 153
UCS2_SINGLE_SEGMENT = 70
UCS2_MULTIPART_SEGMENT = 67


def _gsm7_cost(char: str) -> int:
    return 2 if char in GSM7_EXTENSION else 1


def _utf16_cost(char: str) -> int:
    # A lone surrogate (only possible in a malformed str) cannot be sent as UTF-16 anyway;
    # counting it as one unit keeps analyze() total rather than raising on it.
    return 2 if ord(char) > 0xFFFF else 1


def _count_segments(costs: Iterable[int], total: int, single: int, per_part: int) -> int:
    """Segments needed for characters of the given unit costs, never splitting a character."""
    if total <= single:
        return 1
    segments = 1
    used = 0
    for cost in costs:
        if used + cost > per_part:
            segments += 1
            used = 0
        used += cost
    return segments


_GSM7_BASIC_ONLY = re.compile("[" + re.escape("".join(sorted(GSM7_BASIC))) + "]*")


def analyze(body: str) -> SegmentInfo:
    """Work out the encoding and the number of SMS segments ``body`` will be sent as.

    Raises ``ValueError`` for an empty body: it would be zero segments, which no provider sends,
    and callers reject empty bodies before getting here, so reaching this is a bug.
    """
    if not body:
        raise ValueError("cannot analyze an empty SMS body")
    if len(body) <= GSM7_SINGLE_SEGMENT and _GSM7_BASIC_ONLY.fullmatch(body):
        # The common case, decided without a loop in Python: one septet per character, one part.
        return SegmentInfo(encoding=Encoding.GSM7, segments=1, units=len(body), characters=len(body))
    if all(char in GSM7_BASIC or char in GSM7_EXTENSION for char in body):
        costs = [_gsm7_cost(char) for char in body]
        encoding = Encoding.GSM7
        single, per_part = GSM7_SINGLE_SEGMENT, GSM7_MULTIPART_SEGMENT
    else:
        costs = [_utf16_cost(char) for char in body]
        encoding = Encoding.UCS2
        single, per_part = UCS2_SINGLE_SEGMENT, UCS2_MULTIPART_SEGMENT
    units = sum(costs)
    return SegmentInfo(
        encoding=encoding,
        segments=_count_segments(costs, units, single, per_part),
        units=units,
        characters=len(body),
    )
