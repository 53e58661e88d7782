"""Signing callbacks, and checking them on the receiving side.

Every callback carries ``Tidings-Signature: t=<unix seconds>,v1=<hex>``, where the hex is the
HMAC-SHA256 of ``"<t>.<body>"`` keyed with the API key's callback secret. A receiver recomputes
it over the raw body and rejects an old timestamp, so a captured request cannot be replayed later.
While a rotated secret's grace lasts, the header carries one ``v1`` per secret, new first: a
receiver that still holds the old secret keeps verifying.
"""

from __future__ import annotations

import hashlib
import hmac
import time
from collections.abc import Sequence

HEADER = "Tidings-Signature"
DEFAULT_TOLERANCE_SECONDS = 300


def sign(body: bytes, secret: str | Sequence[str], timestamp: int | None = None) -> str:
    """The ``Tidings-Signature`` header value for ``body``, signed with ``secret`` (or with each
    of several secrets)."""
    moment = int(time.time()) if timestamp is None else timestamp
    keys = [secret] if isinstance(secret, str) else list(secret)
    digests = [hmac.new(k.encode(), f"{moment}.".encode() + body, hashlib.sha256).hexdigest() for k in keys]
    return ",".join([f"t={moment}", *(f"v1={d}" for d in digests)])


def verify_signature(
    body: bytes,
    header: str | None,
    secret: str,
    *,
    tolerance: float = DEFAULT_TOLERANCE_SECONDS,
    now: float | None = None,
) -> bool:
    """Whether ``header`` (the ``Tidings-Signature`` value) signs ``body`` (the raw request body)
    with ``secret``, at a time within ``tolerance`` seconds of now."""
    if not header:
        return False
    parts: dict[str, list[str]] = {}
    for item in header.split(","):
        name, _, value = item.strip().partition("=")
        parts.setdefault(name, []).append(value)
    try:
        moment = int(parts["t"][0])
    except (KeyError, ValueError):
        return False
    current = time.time() if now is None else now
    if abs(current - moment) > tolerance:
        return False
    expected = hmac.new(secret.encode(), f"{moment}.".encode() + body, hashlib.sha256).hexdigest()
    return any(hmac.compare_digest(expected, given) for given in parts.get("v1", []))
