"""Email addresses: what a caller writes, checked and written one way (``email-validator``).

One address is one recipient: the domain is lower-cased and internationalised domains are kept
in their Unicode form, so that suppression and reporting compare addresses as strings. No DNS is
asked (whether the domain takes mail is the provider's to find out, as a bounce). This module does
no I/O.
"""

from __future__ import annotations

import functools

from email_validator import EmailNotValidError, validate_email

from tidings.errors import InvalidEmailAddress

_MAX_ECHO = 60


@functools.lru_cache(maxsize=4096)
def _normalized(raw: str) -> str | EmailNotValidError:
    try:
        return str(validate_email(raw, check_deliverability=False).normalized)
    except EmailNotValidError as exc:
        return exc


def normalize_email(raw: str, field: str = "to") -> str:
    """``raw`` as the one form tidings keeps; :class:`InvalidEmailAddress` naming ``field``."""
    text = raw.strip()
    found = _normalized(text)
    if isinstance(found, EmailNotValidError):
        shown = text if len(text) <= _MAX_ECHO else text[: _MAX_ECHO - 1] + "…"
        raise InvalidEmailAddress(f"{shown!r} is not a valid email address: {found}", field=field)
    return found


def normalize_sender(raw: str, field: str = "from") -> str:
    """A From or Reply-To as written (``Clinic <noreply@clinic.example>`` or an address), with its
    address checked and normalised."""
    text = raw.strip()
    if text.endswith(">") and "<" in text:
        name, _, address = text[:-1].rpartition("<")
        checked = normalize_email(address, field)
        name = name.strip().strip('"').strip()
        return f"{name} <{checked}>" if name else checked
    return normalize_email(text, field)
