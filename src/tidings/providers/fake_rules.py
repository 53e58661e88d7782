"""How the fake provider behaves: shared by the in-process adapter and the fake HTTP server.

A few *magic numbers* force each path a message can take, so a new user (and the tests) can see
every one of them. Any other number is accepted, then confirmed ``delivered`` by a receipt, unless
the configured random failure rates say otherwise.
"""

from __future__ import annotations

import random
from dataclasses import dataclass
from enum import StrEnum

PERMANENT_FAILURE = "+12025550101"
"""Refused at send with a permanent error (code ``invalid_number``)."""
TEMPORARY_FAILURE = "+12025550102"
"""Refused at every send with a temporary error (code ``throttled``): retried until attempts run out."""
TEMPORARY_THEN_OK = "+12025550103"
"""Refused with a temporary error on the first attempt, accepted on the next."""
RECEIPT_FAILED = "+12025550104"
"""Accepted, then a receipt reports it ``failed`` (code ``undeliverable``)."""
NO_RECEIPT = "+12025550105"
"""Accepted, and no receipt ever arrives: the message stays ``sent``."""

MAGIC_LOCAL_PARTS = {
    "bounce": PERMANENT_FAILURE,
    "tempfail": TEMPORARY_FAILURE,
    "tempfail-once": TEMPORARY_THEN_OK,
    "undeliverable": RECEIPT_FAILED,
    "no-receipt": NO_RECEIPT,
}
"""Email's magic addresses: the part before the ``@`` (any domain) stands for the magic number;
``bounce@example.org`` is refused for good, as ``+12025550101`` is."""
ENGAGED = "engaged"
"""An email to ``engaged@…`` is delivered, then opened, then clicked."""
COMPLAINS = "complains"
"""An email to ``complains@…`` is delivered, then its recipient marks it as spam."""


def local_part(to: str) -> str | None:
    """The part of an email address before the ``@`` in lower case (``None`` for a number)."""
    return to.rsplit("@", 1)[0].lower() if "@" in to else None


class Outcome(StrEnum):
    """What the fake does with one send request."""

    DELIVERED = "delivered"
    """Accepted; a receipt of ``delivered`` follows."""
    RECEIPT_FAILED = "receipt_failed"
    """Accepted; a receipt of ``failed`` follows."""
    NO_RECEIPT = "no_receipt"
    """Accepted; no receipt follows."""
    TEMPORARY = "temporary"
    """Refused with a temporary error (like a 429 or a 503)."""
    PERMANENT = "permanent"
    """Refused with a permanent error (like an invalid number)."""


@dataclass(frozen=True)
class FakeBehaviour:
    """Random failure rates, applied to numbers that are not magic."""

    temporary_failure_rate: float = 0.0
    permanent_failure_rate: float = 0.0
    undelivered_rate: float = 0.0


ERROR_CODES = {
    Outcome.TEMPORARY: ("throttled", "Too many requests, try again later."),
    Outcome.PERMANENT: ("invalid_number", "The destination number is not reachable."),
    Outcome.RECEIPT_FAILED: ("undeliverable", "The handset could not be reached."),
}


def decide(to: str, attempt: int, behaviour: FakeBehaviour, rng: random.Random) -> Outcome:
    """The outcome of the ``attempt``-th send (1-based) of a message to ``to``."""
    local = local_part(to)
    if local is not None:
        to = MAGIC_LOCAL_PARTS.get(local, to)
    if to == PERMANENT_FAILURE:
        return Outcome.PERMANENT
    if to == TEMPORARY_FAILURE:
        return Outcome.TEMPORARY
    if to == TEMPORARY_THEN_OK:
        return Outcome.TEMPORARY if attempt <= 1 else Outcome.DELIVERED
    if to == RECEIPT_FAILED:
        return Outcome.RECEIPT_FAILED
    if to == NO_RECEIPT:
        return Outcome.NO_RECEIPT
    draw = rng.random()
    if draw < behaviour.permanent_failure_rate:
        return Outcome.PERMANENT
    if draw < behaviour.permanent_failure_rate + behaviour.temporary_failure_rate:
        return Outcome.TEMPORARY
    if rng.random() < behaviour.undelivered_rate:
        return Outcome.RECEIPT_FAILED
    return Outcome.DELIVERED
