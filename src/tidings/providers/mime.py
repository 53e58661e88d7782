"""An email as MIME: what the ``smtp`` provider sends and what ``ses`` sends as a raw message.

The structure is the usual one: ``multipart/mixed`` (when there are attachments) around a
``multipart/alternative`` of the text and HTML parts (or the one part there is). Headers that are
not ASCII (a subject in Swahili or Arabic, a display name with accents) are encoded as RFC 2047
says; bodies are UTF-8. ``Message-ID`` is our message id at the sender's domain, the same at every attempt.
"""

from __future__ import annotations

from email.headerregistry import Address
from email.message import EmailMessage
from email.policy import SMTP
from email.utils import formatdate

from tidings.domain.content import RESERVED_HEADERS
from tidings.providers.base import OutboundMessage


def message_id_header(message: OutboundMessage, domain: str) -> str:
    """The ``Message-ID`` of ``message``: our id at the sender's domain, the same at every attempt,
    so that a receiving system that got an attempt whose answer was lost sees the next as a copy."""
    return f"<{message.id}@{domain}>"


def build_mime(
    message: OutboundMessage, sender: str, *, message_id_domain: str | None = None
) -> EmailMessage:
    """``message`` (an email) as a MIME message from ``sender`` (``"Name <address>"`` or an address)."""
    email = message.email
    mime = EmailMessage(policy=SMTP)
    mime["From"] = sender
    mime["To"] = message.to
    mime["Subject"] = email.subject
    if email.reply_to:
        mime["Reply-To"] = email.reply_to
    mime["Date"] = formatdate(localtime=False, usegmt=True)
    domain = message_id_domain or _domain_of(sender)
    mime["Message-ID"] = message_id_header(message, domain)
    for name, value in email.headers.items():
        if name.lower() not in RESERVED_HEADERS:
            mime[name] = value
    text = email.text
    if text is None and email.html is None:
        text = ""
    if text is not None:
        mime.set_content(text, subtype="plain", charset="utf-8")
        if email.html is not None:
            mime.add_alternative(email.html, subtype="html", charset="utf-8")
    else:
        assert email.html is not None
        mime.set_content(email.html, subtype="html", charset="utf-8")
    for attachment in email.attachments:
        maintype, _, subtype = attachment.content_type.partition("/")
        mime.add_attachment(
            attachment.data,
            maintype=maintype or "application",
            subtype=subtype or "octet-stream",
            filename=attachment.filename,
        )
    return mime


def _domain_of(sender: str) -> str:
    """The domain of ``sender``'s address (``localhost`` when it has none)."""
    address = sender.rsplit("<", 1)[-1].rstrip(">").strip()
    try:
        return Address(addr_spec=address).domain or "localhost"
    except (ValueError, IndexError):
        return "localhost"
