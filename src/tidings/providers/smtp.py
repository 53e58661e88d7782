"""The ``smtp`` provider: email through an SMTP server (a submission port, a relay, a mail provider's
SMTP endpoint).

Sending is one SMTP mail transaction per message, on a pooled connection: ``MAIL FROM`` the From
address (with ``SIZE`` when the server offers it, ``BODY=8BITMIME`` when it offers that, and
``SMTPUTF8`` when the recipient's address is not ASCII), ``RCPT TO`` the recipient, then ``DATA``
with the message as MIME (``providers/mime.py``). The From is the message's ``sender`` or the
``from`` setting. With ``dkim_selector``, ``dkim_domain`` and ``dkim_private_key`` set, the exact
bytes sent are signed first (``rsa-sha256``, ``relaxed/relaxed``; the RFC 6376 list of headers plus
``List-Unsubscribe-Post``, with ``From`` signed twice so none can be added) and the
``DKIM-Signature`` header is put in front; a signed message is always sent 7-bit clean (text parts
in base64), so that a relay that cannot pass 8-bit data does not break the signature.
``security`` is ``starttls`` (the default: plain connection upgraded with STARTTLS, which must
succeed), ``tls`` (TLS from the first byte, port 465) or ``none``; certificates are checked against
the system's CAs, or ``ca_file``, unless ``validate_certs`` is false. ``username`` and ``password``
log in (AUTH PLAIN or LOGIN) after TLS.

Our statuses: the server's ``250`` at the end of DATA means it took the message: ``sent``, with
the ``Message-ID`` header (which carries our id) as the provider's id and ``"250 <its text>"`` as the
provider status. SMTP has no delivery receipts, so the message stays ``sent``; a bounce mailed back
to the sender later is not read.

Errors: a reply that refuses the transaction (at MAIL FROM, RCPT TO or DATA) gives the code
``smtp_<reply code>`` and the server's text: 5xx is permanent, 4xx temporary. Temporary whatever
the reply, because the operator must act and the message is not at fault: refused credentials (530,
534, 535, 538), and anything that goes wrong opening a connection (refused, reset, timed out, a TLS
handshake or certificate failure, a greeting or EHLO refused; code ``connection_error`` or
``timeout``). A connection lost or timing out during the transaction is temporary too
(``connection_error``, ``timeout``): the message is retried, never marked sent, even when the server
had already read its DATA. A header the email module refuses (a line break in a value) is
permanent, ``invalid_message``; an address that cannot go on an SMTP command line is permanent,
``invalid_address``; a non-ASCII address to a server without SMTPUTF8 is permanent,
``smtputf8_unsupported``.

The pool: up to ``pool_size`` connections are opened as sends need them (none at start), kept open
and reused for later messages; a send that finds all of them busy waits for one (``concurrency``
still caps the sends in flight). A connection is taken back most recently used first; one the
server has closed is dropped and replaced, and one idle for more than :data:`PROBE_AFTER_SECONDS`
is asked a ``NOOP`` first. A reused connection found gone before DATA (the server hung up, or said
``421``) is replaced and the message tried once more straight away, as nothing of it was sent. A
connection that failed in any other way, or whose send was cancelled, is closed, never put back.
``close`` ends every connection with ``QUIT``.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import logging
import re
import socket
import ssl
import time
from collections.abc import Mapping
from email.headerregistry import Address
from email.message import EmailMessage, Message
from typing import ClassVar, Literal

import aiosmtplib
import dkim  # type: ignore[import-untyped]
from aiosmtplib.email import flatten_message
from dkim.crypto import UnparsableKeyError, parse_pem_private_key  # type: ignore[import-untyped]
from pydantic import Field, SecretStr, field_validator, model_validator

from tidings.config import ProviderSettings
from tidings.domain.content import Channel
from tidings.domain.failures import FailureReason, reason_for
from tidings.domain.reports import Report
from tidings.errors import (
    ConfigError,
    PermanentProviderError,
    ProviderError,
    TemporaryProviderError,
)
from tidings.providers.base import OutboundMessage, Provider, ProviderContext, SendResult
from tidings.providers.mime import WIRE, build_mime

__all__ = ["FAILURE_REASONS", "SmtpProvider", "SmtpSettings"]

log = logging.getLogger(__name__)

PROBE_AFTER_SECONDS = 30.0
"""A pooled connection idle for longer than this is asked a NOOP before it carries a message."""
QUIT_TIMEOUT_SECONDS = 2.0
"""The longest ``close`` waits for a server's answer to QUIT, per connection."""

CREDENTIAL_CODES = frozenset({530, 534, 535, 538})
"""Replies about our credentials (authentication required, mechanism too weak, credentials invalid,
encryption required): the operator must fix the settings, so they are temporary."""

DKIM_SIGNED_HEADERS = frozenset(name.lower() for name in dkim.DKIM.SHOULD) | {b"list-unsubscribe-post"}
"""The headers a DKIM signature covers when the message has them: RFC 6376's list, plus
``List-Unsubscribe-Post``, which RFC 8058 requires signed for one-click unsubscribe."""

FAILURE_REASONS: Mapping[str, FailureReason] = {
    # There is no "invalid address" reason yet: ``invalid_number`` says "the address does not exist".
    "smtp_550": FailureReason.INVALID_NUMBER,  # mailbox unavailable (no such user)
    "smtp_551": FailureReason.INVALID_NUMBER,  # user not local
    "smtp_553": FailureReason.INVALID_NUMBER,  # mailbox name not allowed
    "smtp_521": FailureReason.INVALID_NUMBER,  # the domain accepts no mail (RFC 7504)
    "smtp_556": FailureReason.INVALID_NUMBER,  # the domain accepts no mail (RFC 7504)
    "smtp_552": FailureReason.REJECTED_CONTENT,  # too big for the server (or the mailbox)
    "smtp_554": FailureReason.BLOCKED,  # transaction failed: usually a policy or spam refusal
    "smtp_421": FailureReason.PROVIDER_UNAVAILABLE,  # service not available, closing
    "smtp_450": FailureReason.PROVIDER_UNAVAILABLE,  # mailbox busy, greylisted
    "smtp_451": FailureReason.PROVIDER_UNAVAILABLE,  # local error in processing
    "smtp_452": FailureReason.PROVIDER_UNAVAILABLE,  # insufficient storage
    "smtp_454": FailureReason.PROVIDER_UNAVAILABLE,  # TLS or a temporary authentication failure
    "smtp_530": FailureReason.PROVIDER_UNAVAILABLE,  # authentication required
    "smtp_534": FailureReason.PROVIDER_UNAVAILABLE,  # authentication mechanism too weak
    "smtp_535": FailureReason.PROVIDER_UNAVAILABLE,  # credentials refused
    "smtp_538": FailureReason.PROVIDER_UNAVAILABLE,  # encryption required to authenticate
    "invalid_address": FailureReason.INVALID_NUMBER,
    "invalid_message": FailureReason.REJECTED_CONTENT,
    "smtputf8_unsupported": FailureReason.BLOCKED,
}
"""SMTP reply codes in shared words; an enhanced status code in the server's text refines a 5xx
(:data:`ENHANCED_REASONS`)."""

ENHANCED_REASONS: Mapping[str, FailureReason] = {
    "5.1": FailureReason.INVALID_NUMBER,  # addressing: bad mailbox, bad domain, bad syntax
    "5.1.7": FailureReason.BLOCKED,  # bad sender's mailbox syntax
    "5.1.8": FailureReason.BLOCKED,  # bad sender's system address
    "5.2": FailureReason.UNREACHABLE,  # the mailbox: disabled, full
    "5.2.3": FailureReason.REJECTED_CONTENT,  # message longer than the mailbox takes
    "5.3.4": FailureReason.REJECTED_CONTENT,  # message too big for the system
    "5.6": FailureReason.REJECTED_CONTENT,  # media: content the server cannot take
    "5.7": FailureReason.BLOCKED,  # security or policy: spam, DMARC, relaying denied
}
"""RFC 3463 enhanced status codes (``class.subject`` or ``class.subject.detail``) of permanent
refusals in shared words: a ``550 5.7.1`` is a policy refusal, not a wrong address."""

_ENHANCED = re.compile(r"(?<![\d.])([45])\.(\d{1,3})\.(\d{1,3})(?![\d.])")
_LINE_ENDINGS = re.compile(rb"\r\n|\r|\n")

Security = Literal["starttls", "tls", "none"]


class SmtpSettings(ProviderSettings):
    kind: str = "smtp"
    host: str = Field(min_length=1)
    port: int | None = Field(default=None, ge=1, le=65535)
    """Default 587, or 465 with ``security = "tls"``."""
    security: Security = "starttls"
    username: str | None = Field(default=None, min_length=1)
    password: SecretStr | None = None
    from_: str = Field(alias="from", min_length=1)
    """The From of messages that do not give one: ``"Name <address>"`` or an address."""
    pool_size: int = Field(default=5, ge=1, le=1000)
    """Connections kept open and reused across messages."""
    validate_certs: bool = True
    ca_file: str | None = Field(default=None, min_length=1)
    """A PEM file of the CAs to trust for the server's certificate instead of the system's."""
    helo_name: str | None = Field(default=None, min_length=1)
    """The name given in EHLO (default: this machine's fully qualified name)."""
    dkim_selector: str | None = Field(default=None, min_length=1)
    dkim_domain: str | None = Field(default=None, min_length=1)
    dkim_private_key: SecretStr | None = None
    """The RSA private key, PEM (PKCS#1 or PKCS#8)."""

    @property
    def effective_port(self) -> int:
        if self.port is not None:
            return self.port
        return 465 if self.security == "tls" else 587

    @property
    def dkim_signing(self) -> bool:
        """Whether messages are DKIM-signed."""
        return self.dkim_private_key is not None

    @field_validator("from_")
    @classmethod
    def _one_address(cls, value: str) -> str:
        if _address_of(value) is None:
            raise ValueError(f"{value!r} is not an email address, nor 'Name <address>'")
        return value

    @field_validator("dkim_private_key")
    @classmethod
    def _pem_key(cls, value: SecretStr | None) -> SecretStr | None:
        if value is None:
            return None
        pem = _normalised_pem(value.get_secret_value())
        try:
            parse_pem_private_key(pem)
        except (UnparsableKeyError, ValueError, TypeError, IndexError) as exc:
            raise ValueError("is not a PEM RSA private key (PKCS#1 or PKCS#8)") from exc
        return SecretStr(pem.decode("ascii"))

    @model_validator(mode="after")
    def _complete(self) -> SmtpSettings:
        if (self.username is None) != (self.password is None):
            raise ValueError("set both `username` and `password`, or neither")
        dkim_parts = (self.dkim_selector, self.dkim_domain, self.dkim_private_key)
        if any(part is not None for part in dkim_parts) and any(part is None for part in dkim_parts):
            raise ValueError("set all of `dkim_selector`, `dkim_domain` and `dkim_private_key`, or none")
        return self


def _normalised_pem(text: str) -> bytes:
    """A PEM block with ``\\n`` line endings (dkimpy looks for ``--\\n``), as bytes."""
    return text.strip().replace("\r\n", "\n").replace("\r", "\n").encode("ascii", errors="replace") + b"\n"


def _address_of(mailbox: str) -> str | None:
    """The address of ``"Name <address>"`` or ``"address"``, or ``None`` when it is not one."""
    message = EmailMessage()
    try:
        message["From"] = mailbox
        addresses = message["From"].addresses
    except (ValueError, IndexError, TypeError):
        return None
    if len(addresses) != 1 or not isinstance(addresses[0], Address):
        return None
    address = addresses[0].addr_spec
    return address if address and "@" in address else None


@dataclasses.dataclass(eq=False)
class _Connection:
    client: aiosmtplib.SMTP
    number: int
    idle_since: float
    reused: bool = False


class _Refused(Exception):
    """A reply that refused the transaction."""

    def __init__(self, code: int, text: str) -> None:
        super().__init__(code, text)
        self.code = code
        self.text = text


class _Gone(Exception):
    """A reused connection turned out to be closed before DATA: try again on a new one."""


class SmtpProvider(Provider):
    kind = "smtp"
    settings_model = SmtpSettings
    channels: ClassVar[frozenset[Channel]] = frozenset({Channel.EMAIL})
    failure_reasons = FAILURE_REASONS

    settings: SmtpSettings

    def __init__(self, name: str, settings: ProviderSettings, context: ProviderContext) -> None:
        super().__init__(name, settings, context)
        self._idle: list[_Connection] = []
        self._slots = asyncio.Semaphore(self.settings.pool_size)
        self._tls: ssl.SSLContext | None = None
        self._helo = self.settings.helo_name
        self._opened = 0
        self._closed = False

    @property
    def connections_opened(self) -> int:
        """How many connections this provider has opened so far."""
        return self._opened

    # -- life cycle ------------------------------------------------------------------------------

    async def start(self) -> None:
        settings = self.settings
        if settings.security != "none":
            try:
                self._tls = await asyncio.to_thread(_tls_context, settings)
            except (OSError, ssl.SSLError) as exc:
                raise ConfigError(
                    f"providers.{self.name}.ca_file: cannot load {settings.ca_file!r}: {exc}",
                    field=f"providers.{self.name}.ca_file",
                ) from exc
        if self._helo is None:
            self._helo = await asyncio.to_thread(socket.getfqdn)
        if settings.dkim_signing:
            # Sign a message once, so that a key dkimpy cannot use stops the start, not every send.
            try:
                await asyncio.to_thread(self._sign, b"From: a@example.com\r\nSubject: t\r\n\r\nt\r\n")
            except dkim.DKIMException as exc:
                raise ConfigError(
                    f"providers.{self.name}.dkim_private_key: cannot sign with it: {exc}",
                    field=f"providers.{self.name}.dkim_private_key",
                ) from exc
        self._closed = False

    async def close(self) -> None:
        """QUIT every idle connection; one still sending is closed when its send ends."""
        self._closed = True
        idle, self._idle = self._idle, []
        await asyncio.gather(*(self._shut(conn, polite=True) for conn in idle))

    # -- sending ---------------------------------------------------------------------------------

    async def send(self, message: OutboundMessage) -> SendResult:
        sender = message.sender or self.settings.from_
        try:
            mime = build_mime(message, sender)
        except (ValueError, TypeError) as exc:
            raise PermanentProviderError(
                f"the message cannot be written as MIME: {exc}", code="invalid_message"
            ) from exc
        envelope_from = _address_of(str(mime["From"]))
        if envelope_from is None:
            raise PermanentProviderError(
                f"the sender {sender!r} is not an email address", code="invalid_address"
            )
        message_id = str(mime["Message-ID"])
        conn = await self._acquire()
        try:
            reply = await self._run(conn, mime, envelope_from, message.to)
        except _Gone:
            log.debug(
                "SMTP connection %d of provider %s was closed by the server; sending on a new one",
                conn.number,
                self.name,
                extra={"action": "send", "provider": self.name, "message_id": message.id},
            )
            conn = await self._replace()
            reply = await self._run(conn, mime, envelope_from, message.to)
        await self._release(conn, healthy=True)
        return SendResult(
            provider_message_ids=(message_id,),
            provider_status=f"{reply.code} {reply.message}".strip(),
            raw={"code": reply.code, "message": reply.message, "message_id": message_id},
        )

    async def _run(
        self, conn: _Connection, mime: Message, envelope_from: str, recipient: str
    ) -> aiosmtplib.SMTPResponse:
        """:meth:`_transaction` on ``conn``; when it fails, ``conn`` is released (kept when a reply
        refused the message and RSET works, closed otherwise) and the failure raised as a
        ``ProviderError``, or as ``_Gone``."""
        try:
            return await self._transaction(conn, mime, envelope_from, recipient)
        except _Refused as exc:
            await self._release(conn, healthy=await self._reset(conn))
            raise self._refusal(exc.code, exc.text) from None
        except PermanentProviderError:
            # Refused by us before anything was sent (an address SMTP cannot carry).
            await self._release(conn, healthy=await self._reset(conn))
            raise
        except BaseException as exc:
            await self._release(conn, healthy=False)
            if isinstance(exc, Exception) and not isinstance(exc, (_Gone, ProviderError)):
                raise _transport_error(exc, "while sending") from exc
            raise

    async def _transaction(
        self, conn: _Connection, mime: Message, envelope_from: str, recipient: str
    ) -> aiosmtplib.SMTPResponse:
        """MAIL, RCPT and DATA for one message on ``conn``; ``_Refused`` for a refusing reply."""
        client = conn.client
        utf8 = not (envelope_from + recipient).isascii()
        if utf8 and not client.supports_extension("smtputf8"):
            raise PermanentProviderError(
                f"the address {recipient!r} is not ASCII and the server does not offer SMTPUTF8",
                code="smtputf8_unsupported",
            )
        eight_bit = client.supports_extension("8bitmime") and not self.settings.dkim_signing
        payload = self._payload(mime, utf8=utf8, eight_bit=eight_bit)
        if self.settings.dkim_signing:
            payload = await asyncio.to_thread(self._sign, payload)
        options = []
        if client.supports_extension("size"):
            options.append(f"SIZE={len(payload)}")
        if eight_bit:
            options.append("BODY=8BITMIME")
        if utf8:
            options.append("SMTPUTF8")
        encoding = "utf-8" if utf8 else "ascii"
        try:
            await client.mail(envelope_from, options=options, encoding=encoding)
            await client.rcpt(recipient, encoding=encoding)
        except aiosmtplib.SMTPResponseException as exc:
            if exc.code == 421 and conn.reused:
                raise _Gone from exc
            raise _Refused(exc.code, exc.message) from exc
        except (aiosmtplib.SMTPServerDisconnected, ConnectionError) as exc:
            if conn.reused:
                raise _Gone from exc
            raise
        except ValueError as exc:
            raise PermanentProviderError(
                f"an address cannot be sent over SMTP: {exc}", code="invalid_address"
            ) from exc
        try:
            return await client.data(payload)
        except aiosmtplib.SMTPResponseException as exc:
            raise _Refused(exc.code, exc.message) from exc

    @staticmethod
    def _payload(mime: Message, *, utf8: bool, eight_bit: bool) -> bytes:
        """``mime`` as the bytes DATA carries (before dot-stuffing), lines ending in CRLF."""
        if not isinstance(mime, EmailMessage):
            # Built with the classic classes: every header and body part is ASCII already.
            return mime.as_bytes(policy=WIRE)
        flat = flatten_message(mime, utf8=utf8, cte_type="8bit" if eight_bit else "7bit")
        return _LINE_ENDINGS.sub(b"\r\n", flat)

    def _sign(self, payload: bytes) -> bytes:
        """``payload`` with a ``DKIM-Signature`` header in front."""
        settings = self.settings
        assert settings.dkim_selector and settings.dkim_domain and settings.dkim_private_key
        head = payload.split(b"\r\n\r\n", 1)[0]
        names = [
            line.split(b":", 1)[0].strip() for line in head.split(b"\r\n") if line and line[:1] not in b" \t"
        ]
        signed = [name for name in names if name.lower() in DKIM_SIGNED_HEADERS]
        signature: bytes = dkim.sign(
            payload,
            settings.dkim_selector.encode("ascii"),
            settings.dkim_domain.encode("ascii"),
            settings.dkim_private_key.get_secret_value().encode("ascii"),
            canonicalize=(b"relaxed", b"relaxed"),
            include_headers=[*signed, b"from"],
            linesep=b"\r\n",
        )
        return signature + payload

    def _refusal(self, code: int, text: str) -> ProviderError:
        error_code = f"smtp_{code}"
        text = text or f"the SMTP server answered {code}"
        if code in CREDENTIAL_CODES:
            self._log_credentials(code, text)
            return TemporaryProviderError(
                f"the SMTP server did not accept our credentials: {text}", code=error_code
            )
        if 400 <= code < 500:
            return TemporaryProviderError(text, code=error_code)
        return PermanentProviderError(text, code=error_code)

    def _log_credentials(self, code: int, text: str) -> None:
        log.error(
            "the SMTP server did not accept provider %s's credentials (%d %s): "
            "check providers.%s.username and password",
            self.name,
            code,
            text,
            self.name,
            extra={"action": "send", "provider": self.name, "error_code": f"smtp_{code}"},
        )

    # -- failure reasons -------------------------------------------------------------------------

    def failure_reason(self, report: Report) -> FailureReason:
        """The reply code's reason, refined by the enhanced status code in the server's text."""
        code = report.error_code or ""
        credentials = code in {f"smtp_{c}" for c in CREDENTIAL_CODES}
        if code.startswith("smtp_5") and not credentials and report.error_message:
            match = _ENHANCED.search(report.error_message)
            if match is not None and match.group(1) == "5":
                klass, subject, detail = match.groups()
                found = ENHANCED_REASONS.get(f"{klass}.{subject}.{detail}") or ENHANCED_REASONS.get(
                    f"{klass}.{subject}"
                )
                if found is not None:
                    return found
        return reason_for(report.error_code, self.failure_reasons)

    # -- the pool --------------------------------------------------------------------------------

    async def _acquire(self) -> _Connection:
        """A connection for one transaction: an idle one that still works, or a new one."""
        if self._closed:
            raise TemporaryProviderError(f"provider {self.name} is closed", code="connection_error")
        await self._slots.acquire()
        try:
            while self._idle:
                conn = self._idle.pop()
                if await self._usable(conn):
                    conn.reused = True
                    return conn
                await self._shut(conn, polite=False)
            conn = await self._open()
        except BaseException:
            self._slots.release()
            raise
        return conn

    async def _replace(self) -> _Connection:
        """A new connection in place of one just released as broken."""
        await self._slots.acquire()
        try:
            conn = await self._open()
        except BaseException:
            self._slots.release()
            raise
        return conn

    async def _release(self, conn: _Connection, *, healthy: bool) -> None:
        try:
            if healthy and not self._closed and conn.client.is_connected:
                conn.idle_since = time.monotonic()
                self._idle.append(conn)
            else:
                await self._shut(conn, polite=healthy)
        finally:
            self._slots.release()

    async def _usable(self, conn: _Connection) -> bool:
        if not conn.client.is_connected:
            return False
        if time.monotonic() - conn.idle_since < PROBE_AFTER_SECONDS:
            return True
        try:
            await conn.client.noop()
        except (aiosmtplib.SMTPException, OSError):
            return False
        return conn.client.is_connected

    async def _reset(self, conn: _Connection) -> bool:
        """RSET after a refusal, so the connection can take the next message; false when it cannot."""
        if not conn.client.is_connected:
            return False
        try:
            await conn.client.rset()
        except (aiosmtplib.SMTPException, OSError):
            return False
        return conn.client.is_connected

    async def _open(self) -> _Connection:
        settings = self.settings
        self._opened += 1
        number = self._opened
        client = aiosmtplib.SMTP(
            hostname=settings.host,
            port=settings.effective_port,
            username=settings.username,
            password=settings.password.get_secret_value() if settings.password is not None else None,
            local_hostname=self._helo,
            timeout=settings.timeout_seconds,
            use_tls=settings.security == "tls",
            start_tls=settings.security == "starttls",
            tls_context=self._tls,
        )
        try:
            await client.connect()
        except aiosmtplib.SMTPResponseException as exc:
            client.close()
            if exc.code in CREDENTIAL_CODES:
                self._log_credentials(exc.code, exc.message)
                raise TemporaryProviderError(
                    f"the SMTP server did not accept our credentials: {exc.message}", code=f"smtp_{exc.code}"
                ) from exc
            raise TemporaryProviderError(
                f"the SMTP server refused the connection: {exc.code} {exc.message}", code=f"smtp_{exc.code}"
            ) from exc
        except Exception as exc:
            client.close()
            raise _transport_error(exc, f"connecting to {settings.host}:{settings.effective_port}") from exc
        if client.is_ehlo_or_helo_needed:
            # After STARTTLS the server's extensions are asked again; know them before MAIL.
            try:
                await client.ehlo()
            except Exception as exc:
                client.close()
                raise _transport_error(exc, "greeting the server (EHLO)") from exc
        log.debug(
            "SMTP connection %d of provider %s opened to %s:%d",
            number,
            self.name,
            settings.host,
            settings.effective_port,
            extra={"action": "send", "provider": self.name},
        )
        return _Connection(client, number, time.monotonic())

    async def _shut(self, conn: _Connection, *, polite: bool) -> None:
        """Close ``conn`` (after QUIT when ``polite``) and wait until its socket is closed."""
        client = conn.client
        protocol = client.protocol
        if polite and client.is_connected:
            with contextlib.suppress(aiosmtplib.SMTPException, OSError):
                await client.quit(timeout=min(QUIT_TIMEOUT_SECONDS, self.settings.timeout_seconds))
        client.close()
        if protocol is None:
            return
        # The transport closes on a later turn of the loop (after TLS's close_notify, when there is
        # one); wait for it, so that nothing is left open once ``close`` returns.
        deadline = time.monotonic() + QUIT_TIMEOUT_SECONDS
        while protocol.transport is not None and time.monotonic() < deadline:
            await asyncio.sleep(0.005)
        if isinstance(protocol.transport, asyncio.Transport):
            protocol.transport.abort()


def _tls_context(settings: SmtpSettings) -> ssl.SSLContext:
    """The TLS context of every connection, built once (loading CAs takes a moment)."""
    context = ssl.create_default_context(ssl.Purpose.SERVER_AUTH, cafile=settings.ca_file)
    if not settings.validate_certs:
        context.check_hostname = False
        context.verify_mode = ssl.CERT_NONE
    return context


def _transport_error(exc: BaseException, doing: str) -> TemporaryProviderError:
    """A failure of the connection itself, as a temporary error: ``timeout`` or ``connection_error``."""
    if isinstance(exc, (aiosmtplib.SMTPTimeoutError, TimeoutError)):
        return TemporaryProviderError(f"SMTP timed out {doing}: {exc}", code="timeout")
    if isinstance(exc, ssl.SSLError) or isinstance(exc.__cause__, ssl.SSLError):
        return TemporaryProviderError(f"TLS failed {doing}: {exc}", code="connection_error")
    return TemporaryProviderError(f"SMTP connection failed {doing}: {exc}", code="connection_error")
