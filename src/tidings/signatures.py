"""Signing callbacks and signed requests, and checking them on the receiving side.

Every callback carries ``Tidings-Signature: t=<unix seconds>,v1=<hex>``, where the hex is the
HMAC-SHA256 of ``"<t>.<body>"`` keyed with the API key's callback secret. A receiver recomputes
it over the raw body and rejects an old timestamp, so a captured request cannot be replayed later.
While a rotated secret's grace lasts, the header carries one ``v1`` per secret, new first: a
receiver that still holds the old secret keeps verifying.

The same scheme signs requests *to* tidings (``POST /v1/batches``): a client that holds a key's
signing secret sends ``Tidings-Key: <key id>`` and ``Tidings-Signature`` over the raw body instead
of a bearer token; tidings checks it here and refuses a signature it has seen before.
"""

from __future__ import annotations

import hashlib
import hmac
import time
from collections.abc import Sequence

HEADER = "Tidings-Signature"
KEY_HEADER = "Tidings-Key"
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
    return signed_with(body, header, [secret], tolerance=tolerance, now=now) is not None


def signed_with(
    body: bytes,
    header: str | None,
    secrets: Sequence[str],
    *,
    tolerance: float = DEFAULT_TOLERANCE_SECONDS,
    now: float | None = None,
) -> tuple[int, str] | None:
    """The timestamp and signature (hex) of ``header`` that signs ``body`` with one of
    ``secrets`` within ``tolerance`` seconds of now; ``None`` when none does."""
    if not header:
        return None
    parts: dict[str, list[str]] = {}
    for item in header.split(","):
        name, _, value = item.strip().partition("=")
        parts.setdefault(name, []).append(value)
    try:
        moment = int(parts["t"][0])
    except (KeyError, ValueError):
        return None
    current = time.time() if now is None else now
    if abs(current - moment) > tolerance:
        return None
    for secret in secrets:
        expected = hmac.new(secret.encode(), f"{moment}.".encode() + body, hashlib.sha256).hexdigest()
        for given in parts.get("v1", []):
            if hmac.compare_digest(expected, given):
                return moment, expected
    return None
