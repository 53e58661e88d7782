"""An email as MIME: what the ``smtp`` provider sends and what ``ses`` sends as a raw message.

The structure is the usual one: ``multipart/mixed`` (when there are attachments) around a
``multipart/alternative`` of the text and HTML parts (or the one part there is). Headers that are
not ASCII (a subject in Swahili or Arabic, a display name with accents) are encoded as RFC 2047
says; bodies are UTF-8 (base64). ``Message-ID`` is our message id at the sender's domain, the same
at every attempt.
"""

from __future__ import annotations

import base64
from email import encoders
from email.message import EmailMessage, Message
from email.mime.base import MIMEBase
from email.mime.multipart import MIMEMultipart
from email.mime.text import MIMEText
from email.policy import SMTP, compat32
from email.utils import formataddr, formatdate, parseaddr

from tidings.domain.content import RESERVED_HEADERS
from tidings.providers.base import OutboundMessage

WIRE = compat32.clone(linesep="\r\n")
"""How a message is written for the wire: CRLF line ends. (The message is built with the classic
``email.mime`` classes and written with this policy: several times faster than ``EmailMessage``,
whose headers are parsed again on every write; every header is ASCII already.)"""


def message_id_header(message: OutboundMessage, domain: str) -> str:
    """The ``Message-ID`` of ``message``: our id at the sender's domain, the same at every attempt,
    so that a receiving system that got an attempt whose answer was lost sees the next as a copy."""
    return f"<{message.id}@{domain}>"


def _text(value: str) -> str:
    """A header value as ASCII: RFC 2047 encoded words when it is not, separated by spaces where
    the header may be folded, and short enough (52 characters) that the first fits on the header's
    first line (a fold right after the colon reads back as a leading space)."""
    if "\r" in value or "\n" in value:
        raise ValueError(f"a header value holds a line break: {value[:60]!r}")
    if value.isascii():
        return value
    words: list[str] = []
    chunk = ""
    for char in value:
        if len((chunk + char).encode()) > 30:
            words.append(chunk)
            chunk = char
        else:
            chunk += char
    words.append(chunk)
    return " ".join("=?utf-8?b?" + base64.b64encode(w.encode()).decode("ascii") + "?=" for w in words)


def _address(value: str) -> str:
    """A ``Name <address>`` (or an address) with its name encoded when it is not ASCII."""
    name, address = parseaddr(value)
    if not address:
        return _text(value)
    return formataddr((name, address), charset="utf-8") if name else address


def build_mime(message: OutboundMessage, sender: str, *, message_id_domain: str | None = None) -> Message:
    """``message`` (an email) as a MIME message from ``sender`` (``"Name <address>"`` or an address).
    Addresses that are not ASCII need SMTPUTF8 and an ``EmailMessage``; everything else is built
    with the classic classes, to be written with :data:`WIRE`."""
    email = message.email
    addresses = [message.to, parseaddr(sender)[1], parseaddr(email.reply_to or "")[1]]
    if not all(a.isascii() for a in addresses):
        return _build_utf8(message, sender, message_id_domain=message_id_domain)
    text = email.text
    if text is None and email.html is None:
        text = ""
    parts: list[Message] = []
    if text is not None:
        parts.append(MIMEText(text, "plain", "utf-8"))
    if email.html is not None:
        parts.append(MIMEText(email.html, "html", "utf-8"))
    body: Message = parts[0]
    if len(parts) > 1:
        # Boundaries of our own: the parts are base64, which has no "_", so they cannot clash (and
        # the writer need not search the text for a free one).
        body = MIMEMultipart("alternative", boundary=f"=_alt_{message.id}", _subparts=parts)
    mime = body
    if email.attachments:
        mime = MIMEMultipart("mixed", boundary=f"=_mix_{message.id}", _subparts=[body])
        for attachment in email.attachments:
            maintype, _, subtype = attachment.content_type.partition("/")
            part = MIMEBase(maintype or "application", subtype or "octet-stream")
            part.set_payload(attachment.data)
            encoders.encode_base64(part)
            name = attachment.filename
            part.add_header(
                "Content-Disposition", "attachment", filename=name if name.isascii() else ("utf-8", "", name)
            )
            mime.attach(part)
    mime["From"] = _address(sender)
    mime["To"] = message.to
    mime["Subject"] = _text(email.subject)
    if email.reply_to:
        mime["Reply-To"] = _address(email.reply_to)
    mime["Date"] = formatdate(localtime=False, usegmt=True)
    mime["Message-ID"] = message_id_header(message, message_id_domain or _domain_of(sender))
    for name, value in email.headers.items():
        if name.lower() not in RESERVED_HEADERS:
            mime[name] = _text(value)
    if "MIME-Version" not in mime:
        mime["MIME-Version"] = "1.0"
    return mime


def _build_utf8(
    message: OutboundMessage, sender: str, *, message_id_domain: str | None = None
) -> EmailMessage:
    """The message as ``EmailMessage`` writes it: for addresses that are not ASCII (SMTPUTF8),
    which the classic classes cannot write."""
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
    address = parseaddr(sender)[1]
    domain = address.rpartition("@")[2].strip().lower()
    return domain or "localhost"
