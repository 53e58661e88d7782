"""Identifiers: time-ordered, URL-safe, 26 characters (the ULID layout).

48 bits of milliseconds since the epoch then 80 random bits, in Crockford base32, so ids sort by
creation time and a page cursor can simply be the last id seen.
"""

from __future__ import annotations

import os
import threading
import time
from datetime import UTC, datetime

_ALPHABET = "0123456789ABCDEFGHJKMNPQRSTVWXYZ"
_PAIRS = [a + b for a in _ALPHABET for b in _ALPHABET]
"""Every 10-bit value as its two characters: an id is 13 of them."""
_SHIFTS = tuple(range(120, -1, -10))


_lock = threading.Lock()
_last = (0, 0)


def new_id(now_ms: int | None = None) -> str:
    """A new 26-character identifier, greater than every id this process made before.

    Within one millisecond the random part is incremented rather than drawn again, so ids made
    by one process sort in the order they were made (messages list "newest first" by id).
    """
    global _last
    ms = int(time.time() * 1000) if now_ms is None else now_ms
    with _lock:
        last_ms, last_random = _last
        if ms <= last_ms and last_random < (1 << 80) - 1:
            ms, random_part = last_ms, last_random + 1
        else:
            random_part = int.from_bytes(os.urandom(10), "big")
        _last = (ms, random_part)
    return _encode((ms << 80) | random_part)


def _encode(value: int) -> str:
    pairs = _PAIRS
    return "".join([pairs[(value >> shift) & 1023] for shift in _SHIFTS])


def lowest_at(at: datetime) -> str:
    """The smallest id made at ``at`` (naive UTC, as stored) or later: ``id >= lowest_at(t)``
    selects the rows made since ``t`` through an index that holds the ids."""
    ms = int(at.replace(tzinfo=UTC).timestamp() * 1000)
    return _encode(max(ms, 0) << 80)


def is_id(value: str) -> bool:
    """Whether ``value`` has the shape of an id made by :func:`new_id`."""
    return len(value) == 26 and all(c in _ALPHABET for c in value)
