"""Why a message failed, in words every provider shares. Pure: no I/O.

Each provider answers in its own codes (Twilio ``21211``, Orange ``SVC0004``, the Android app's
``radio-off``…), so an application could not write one rule for "the number is wrong". Each
adapter maps the codes it knows to a :class:`FailureReason` (its ``failure_reasons`` table); the
provider's own code stays beside it in ``error_code``.
"""

from __future__ import annotations

from collections.abc import Mapping
from enum import StrEnum


class FailureReason(StrEnum):
    INVALID_NUMBER = "invalid_number"
    """The address does not exist, or cannot take this channel (a landline for SMS)."""
    UNREACHABLE = "unreachable"
    """The handset is off, out of coverage or full: the address is right, the person was not there."""
    OPTED_OUT = "opted_out"
    """The recipient asked not to get messages (here, or at the provider)."""
    BLOCKED = "blocked"
    """The provider or a carrier refused to carry it (an unregistered sender, a region not allowed)."""
    INSUFFICIENT_FUNDS = "insufficient_funds"
    """The account has no credit left."""
    RATE_LIMITED = "rate_limited"
    """Refused for going too fast, until the attempts ran out."""
    REJECTED_CONTENT = "rejected_content"
    """The content was refused (a carrier's filter, an empty or invalid body)."""
    EXPIRED = "expired"
    """Its time to be delivered passed first."""
    PROVIDER_UNAVAILABLE = "provider_unavailable"
    """The provider could not be reached (timeouts, 5xx, refused credentials) until the attempts ran out."""
    UNKNOWN = "unknown"
    """The provider did not say, or said something we do not know."""


COMMON: Mapping[str, FailureReason] = {
    # Codes tidings itself gives a failure, whatever the provider.
    "timeout": FailureReason.PROVIDER_UNAVAILABLE,
    "connection_error": FailureReason.PROVIDER_UNAVAILABLE,
    "adapter_error": FailureReason.PROVIDER_UNAVAILABLE,
    "provider_unavailable": FailureReason.PROVIDER_UNAVAILABLE,
    "lease_expired": FailureReason.UNKNOWN,
    "recipient_opted_out": FailureReason.OPTED_OUT,
}


def reason_for(code: str | None, known: Mapping[str, FailureReason]) -> FailureReason:
    """The reason for the provider's ``code``: from its table ``known``, else tidings' own codes
    (an ``http_5xx`` is the provider being unavailable), else unknown."""
    if code is None:
        return FailureReason.UNKNOWN
    found = known.get(code) or COMMON.get(code)
    if found is not None:
        return found
    if code.startswith("http_5"):
        return FailureReason.PROVIDER_UNAVAILABLE
    return FailureReason.UNKNOWN
