"""A fake SMTP server, built on aiosmtpd, for the ``smtp`` provider's tests and for trying it out.

It runs in the caller's event loop on a real socket (``127.0.0.1``, port 0 picks a free one) and
speaks real ESMTP: ``SIZE``, ``8BITMIME``, ``SMTPUTF8``, ``STARTTLS`` (``security="starttls"``, the
default, where it is required before MAIL), TLS from the first byte (``security="tls"``) or neither
(``"none"``). For TLS it makes a throwaway CA and a certificate for ``localhost`` and ``127.0.0.1``
when it starts, in a temporary directory it removes when it stops; a client trusts the server by
loading :attr:`FakeSmtpServer.ca_file` (the ``smtp`` provider's ``ca_file`` setting), or by not
checking certificates at all (``validate_certs = false``). With a ``username`` and ``password``,
AUTH PLAIN and LOGIN are offered (over TLS only, as real servers do) and MAIL is refused with
``530`` until the client has logged in; wrong credentials get ``535 5.7.8``. A ``NOOP`` is
answered and counted.

Every accepted message is kept in :attr:`FakeSmtpServer.received` with its envelope, its raw bytes,
the same parsed with the ``email`` package, the connection it came on and whether that was over TLS.
Connections are counted (``stats``), to show a client's pooling, and
:meth:`FakeSmtpServer.close_connections` hangs up on every client (``421``, then closed), as a
server ending idle sessions would.

Magic recipients, like the fake SMS provider's magic numbers: the local part, before any ``+tag``,
decides (``bounce+1@example.org`` is ``bounce``; any domain):

* ``bounce``: ``550 5.1.1`` at RCPT (no such user);
* ``tempfail``: ``451 4.3.0`` at RCPT;
* ``greylist``: ``450 4.7.1`` at RCPT the first time a (sender, recipient) pair is seen, accepted
  after that;
* ``full``: ``552 5.2.2`` at the end of DATA (mailbox full);
* ``spam``: ``554 5.7.1`` at the end of DATA (refused as spam);
* ``drop``: the server reads the first line of the message after ``354``, then closes the
  connection without an answer;
* ``slow``: the answer to DATA comes ``slow_seconds`` late (a client's timeout).

Any other recipient is accepted: ``250 2.0.0 Ok: queued as <id>``.

Run it standalone with ``python -m tidings.testing.fake_smtp --port 2525``: it prints
``listening on smtp://HOST:PORT`` (and, with TLS, ``ca_file PATH``) and serves until SIGTERM or
SIGINT, logging each message it accepts.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import datetime as dt
import email
import email.policy
import ipaddress
import logging
import shutil
import signal
import ssl
import sys
import tempfile
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from email.message import EmailMessage
from pathlib import Path
from typing import Any, Literal

from aiosmtpd.smtp import SMTP, AuthResult, Envelope, LoginPassword, Session
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from tidings.testing.http_fake import cli_parser

__all__ = ["FakeSmtpConfig", "FakeSmtpServer", "ReceivedEmail", "magic_of", "main"]

log = logging.getLogger(__name__)

Security = Literal["starttls", "tls", "none"]

BOUNCE = "bounce"
TEMPFAIL = "tempfail"
GREYLIST = "greylist"
FULL = "full"
SPAM = "spam"
DROP = "drop"
SLOW = "slow"
MAGIC = frozenset({BOUNCE, TEMPFAIL, GREYLIST, FULL, SPAM, DROP, SLOW})

HANG_UP = "421 4.4.2 fake-smtp closing idle connection"


def _not_login_data_notice(record: logging.LogRecord) -> bool:
    """aiosmtpd warns that ``Session.login_data`` is deprecated on every successful AUTH, from its
    own code; the notice says nothing about the client, so the fake drops it."""
    return not str(record.msg).startswith("Session.login_data is deprecated")


def magic_of(address: str) -> str | None:
    """The magic word of a recipient address (its local part before any ``+tag``), if it has one."""
    local = address.rpartition("@")[0] or address
    word = local.split("+", 1)[0].lower()
    return word if word in MAGIC else None


@dataclass(frozen=True)
class FakeSmtpConfig:
    security: Security = "starttls"
    username: str | None = None
    password: str | None = None
    hostname: str = "localhost"
    """The name the server gives in its greeting and EHLO answer."""
    slow_seconds: float = 10.0
    """How late the answer to DATA comes for a ``slow`` recipient."""
    data_size_limit: int = 33_554_432
    """The ``SIZE`` offered; larger messages get ``552``."""

    def __post_init__(self) -> None:
        if (self.username is None) != (self.password is None):
            raise ValueError("give both username and password, or neither")
        if self.username is not None and self.security == "none":
            raise ValueError("AUTH is offered over TLS only: use security starttls or tls with a username")


@dataclass(frozen=True)
class ReceivedEmail:
    """One message the server accepted."""

    mail_from: str
    rcpt_tos: tuple[str, ...]
    mail_options: tuple[str, ...]
    raw: bytes
    """The message as received (dot-stuffing undone), CRLF line endings."""
    message: EmailMessage
    """``raw`` parsed by the ``email`` package (with LF line endings, as a mail store keeps it)."""
    connection: int
    """Which connection carried it (1 for the first the server accepted)."""
    tls: bool
    login: str | None
    """The user the client logged in as, if it did."""


@dataclass
class _Counters:
    connections: int = 0
    messages: int = 0
    refused: int = 0
    dropped: int = 0
    auth_failures: int = 0
    noops: int = 0
    greylisted: set[tuple[str, str]] = field(default_factory=set)


class _Session(SMTP):
    """aiosmtpd's SMTP protocol, one per connection, that reports to its :class:`FakeSmtpServer`."""

    def __init__(self, fake: FakeSmtpServer, number: int, **kwargs: Any) -> None:
        super().__init__(fake._handler, **kwargs)
        self.fake = fake
        self.number = number
        self.login: str | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        first = self.transport is None
        super().connection_made(transport)
        if first:  # not the TLS layer that STARTTLS puts on the same connection
            self.fake._opened(self)

    def connection_lost(self, error: Exception | None) -> None:
        super().connection_lost(error)
        self.fake._closed(self)

    @property
    def over_tls(self) -> bool:
        return self.transport is not None and self.transport.get_extra_info("ssl_object") is not None

    def hang_up(self, reply: str) -> None:
        transport = self.transport
        if isinstance(transport, asyncio.WriteTransport) and not transport.is_closing():
            transport.write(reply.encode("ascii") + b"\r\n")
            transport.close()

    async def smtp_DATA(self, arg: str) -> None:
        envelope = self.envelope
        if envelope is not None and any(magic_of(a) == DROP for a in envelope.rcpt_tos):
            await self.push("354 End data with <CR><LF>.<CR><LF>")
            # Read a part of the message, then hang up without a word.
            with contextlib.suppress(asyncio.IncompleteReadError, asyncio.LimitOverrunError, ConnectionError):
                await self._reader.readuntil(b"\r\n")
            self.fake._counters.dropped += 1
            # As aiosmtpd's QUIT does: stop serving (the rest of the message must not be read as
            # commands), then close.
            if self._handler_coroutine is not None:
                self._handler_coroutine.cancel()
            if self.transport is not None:
                self.transport.close()
            await asyncio.sleep(0)  # where the cancellation lands
            return
        await super().smtp_DATA(arg)


class FakeSmtpServer:
    """A fake SMTP server: :meth:`start` it, send to it, look at :attr:`received`, :meth:`stop` it."""

    def __init__(self, config: FakeSmtpConfig | None = None) -> None:
        self.config = config or FakeSmtpConfig()
        self.received: list[ReceivedEmail] = []
        self._counters = _Counters()
        self._handler = _Handler(self)
        self._server: asyncio.Server | None = None
        self._sessions: set[_Session] = set()
        self._tasks: set[asyncio.Task[None]] = set()
        self._dir: Path | None = None
        self._ca_file: Path | None = None
        self._host = "127.0.0.1"
        self._port: int | None = None

    # -- life cycle ------------------------------------------------------------------------------

    async def start(self, host: str = "127.0.0.1", port: int = 0) -> int:
        """Listen on ``host``:``port`` (0 picks a free port) and return the port."""
        if self._server is not None:
            raise RuntimeError("the fake SMTP server is already started")
        loop = asyncio.get_running_loop()
        aiosmtpd_log = logging.getLogger("mail.log")
        if _not_login_data_notice not in aiosmtpd_log.filters:
            aiosmtpd_log.addFilter(_not_login_data_notice)
        tls: ssl.SSLContext | None = None
        if self.config.security != "none":
            self._dir = Path(tempfile.mkdtemp(prefix="tidings-fake-smtp-"))
            tls, self._ca_file = await asyncio.to_thread(_make_tls, self._dir)
        implicit = self.config.security == "tls"

        def session() -> _Session:
            self._counters.connections += 1
            return _Session(
                self,
                self._counters.connections,
                hostname=self.config.hostname,
                ident="tidings fake SMTP",
                data_size_limit=self.config.data_size_limit,
                enable_SMTPUTF8=True,
                tls_context=None if implicit else tls,
                require_starttls=self.config.security == "starttls",
                # Over implicit TLS aiosmtpd does not know the connection is encrypted.
                auth_require_tls=not implicit,
                authenticator=self._handler.authenticate,
                loop=loop,
            )

        try:
            self._server = await loop.create_server(session, host, port, ssl=tls if implicit else None)
        except BaseException:
            self._remove_files()
            raise
        self._host = host
        self._port = self._server.sockets[0].getsockname()[1]
        log.info("fake SMTP server listening on %s", self.url)
        return self._port

    async def stop(self) -> None:
        """Stop listening, close every connection and remove the certificate files."""
        server, self._server = self._server, None
        if server is not None:
            server.close()
        for each in list(self._sessions):
            if each.transport is not None:
                each.transport.close()
        with contextlib.suppress(TimeoutError):
            await self.wait_for(lambda: not self._sessions, timeout=5.0)
        for each in list(self._sessions):
            if isinstance(each.transport, asyncio.Transport):
                each.transport.abort()
        tasks = [task for task in self._tasks if not task.done()]
        if tasks:
            await asyncio.wait(tasks, timeout=5.0)
        if server is not None:
            await server.wait_closed()
        self._remove_files()
        self._port = None

    def _remove_files(self) -> None:
        directory, self._dir = self._dir, None
        self._ca_file = None
        if directory is not None:
            shutil.rmtree(directory, ignore_errors=True)

    # -- what tests look at ----------------------------------------------------------------------

    @property
    def port(self) -> int:
        if self._port is None:
            raise RuntimeError("the fake SMTP server is not started")
        return self._port

    @property
    def host(self) -> str:
        return self._host

    @property
    def url(self) -> str:
        return f"smtp://{self._host}:{self.port}"

    @property
    def ca_file(self) -> str:
        """The CA certificate (PEM) that signed the server's certificate; only with TLS."""
        if self._ca_file is None:
            raise RuntimeError("the fake SMTP server has no certificate (security is none, or not started)")
        return str(self._ca_file)

    @property
    def stats(self) -> dict[str, int]:
        counters = self._counters
        return {
            "connections": counters.connections,
            "open_connections": len(self._sessions),
            "messages": counters.messages,
            "refused": counters.refused,
            "dropped": counters.dropped,
            "auth_failures": counters.auth_failures,
            "noops": counters.noops,
        }

    def reset(self) -> None:
        """Forget the messages and zero the counters (open connections stay open)."""
        self.received.clear()
        self._counters = _Counters(connections=self._counters.connections)

    async def close_connections(
        self, reply: str = HANG_UP, *, wait: bool = True, timeout: float = 5.0
    ) -> int:
        """Hang up on every client (``reply``, then close) and return how many there were; with
        ``wait``, once they are gone (else at once, before a client can have noticed)."""
        sessions = list(self._sessions)
        for each in sessions:
            each.hang_up(reply)
        if not wait:
            return len(sessions)
        await self.wait_for(lambda: not any(each in self._sessions for each in sessions), timeout=timeout)
        return len(sessions)

    async def wait_for(self, condition: Callable[[], bool], timeout: float = 5.0) -> None:
        """Return once ``condition()`` is true; :class:`TimeoutError` after ``timeout`` seconds."""
        deadline = time.monotonic() + timeout
        while not condition():
            if time.monotonic() > deadline:
                raise TimeoutError("the fake SMTP server did not reach the expected state in time")
            await asyncio.sleep(0.01)

    # -- bookkeeping of connections --------------------------------------------------------------

    def _opened(self, session: _Session) -> None:
        self._sessions.add(session)
        task = session._handler_coroutine  # aiosmtpd's task serving the connection
        if task is not None:
            self._tasks.add(task)
            task.add_done_callback(self._finished)

    def _finished(self, task: asyncio.Task[None]) -> None:
        self._tasks.discard(task)
        if not task.cancelled() and task.exception() is not None:
            log.debug("fake SMTP session ended with %r", task.exception())

    def _closed(self, session: _Session) -> None:
        self._sessions.discard(session)


class _Handler:
    """The aiosmtpd handler: what the server answers, and what it keeps (in its :class:`FakeSmtpServer`).

    A class of its own, as aiosmtpd looks through every attribute of its handler.
    """

    def __init__(self, fake: FakeSmtpServer) -> None:
        self.fake = fake

    def authenticate(
        self, server: SMTP, session: Session, envelope: Envelope, mechanism: str, auth_data: Any
    ) -> AuthResult:
        config = self.fake.config
        if (
            config.username is not None
            and isinstance(auth_data, LoginPassword)
            and auth_data.login == config.username.encode()
            and auth_data.password == (config.password or "").encode()
        ):
            if isinstance(server, _Session):
                server.login = config.username
            return AuthResult(success=True, auth_data=config.username)
        self.fake._counters.auth_failures += 1
        return AuthResult(success=False, handled=False)

    async def handle_EHLO(
        self, server: SMTP, session: Session, envelope: Envelope, hostname: str, responses: list[str]
    ) -> list[str]:
        session.host_name = hostname
        if self.fake.config.username is None:
            # No accounts: do not offer AUTH.
            return [line for line in responses if not line[4:].upper().startswith("AUTH")]
        return responses

    async def handle_NOOP(self, server: SMTP, session: Session, envelope: Envelope, arg: str) -> str:
        self.fake._counters.noops += 1
        return "250 2.0.0 Ok"

    async def handle_MAIL(
        self, server: SMTP, session: Session, envelope: Envelope, address: str, mail_options: list[str]
    ) -> str:
        if self.fake.config.username is not None and not session.authenticated:
            return "530 5.7.0 Authentication required"
        envelope.mail_from = address
        envelope.mail_options.extend(mail_options)
        return "250 2.1.0 Ok"

    async def handle_RCPT(
        self, server: SMTP, session: Session, envelope: Envelope, address: str, rcpt_options: list[str]
    ) -> str:
        magic = magic_of(address)
        if magic == BOUNCE:
            return self._refuse(f"550 5.1.1 <{address}>: Recipient address rejected: User unknown")
        if magic == TEMPFAIL:
            return self._refuse(f"451 4.3.0 <{address}>: Temporary lookup failure")
        if magic == GREYLIST:
            pair = (str(envelope.mail_from), address.lower())
            if pair not in self.fake._counters.greylisted:
                self.fake._counters.greylisted.add(pair)
                return self._refuse(f"450 4.7.1 <{address}>: Recipient address rejected: Greylisted")
        envelope.rcpt_tos.append(address)
        envelope.rcpt_options.extend(rcpt_options)
        return "250 2.1.5 Ok"

    async def handle_DATA(self, server: SMTP, session: Session, envelope: Envelope) -> str:
        magics = {magic_of(address) for address in envelope.rcpt_tos}
        if FULL in magics:
            return self._refuse("552 5.2.2 Mailbox full: the recipient is over quota")
        if SPAM in magics:
            return self._refuse("554 5.7.1 Message rejected as spam")
        if SLOW in magics:
            await asyncio.sleep(self.fake.config.slow_seconds)
        raw = envelope.original_content or b""
        # Parsed as a mail store keeps it, lines ending in LF, so that a text part reads as it was written.
        parsed = email.message_from_bytes(raw.replace(b"\r\n", b"\n"), policy=email.policy.default)
        assert isinstance(parsed, EmailMessage)
        assert isinstance(server, _Session)
        self.fake._counters.messages += 1
        queue_id = f"FAKE{self.fake._counters.messages:06d}"
        self.fake.received.append(
            ReceivedEmail(
                mail_from=str(envelope.mail_from),
                rcpt_tos=tuple(envelope.rcpt_tos),
                mail_options=tuple(envelope.mail_options),
                raw=raw,
                message=parsed,
                connection=server.number,
                tls=server.over_tls,
                login=server.login,
            )
        )
        log.info(
            "accepted %s from %s to %s: %r",
            queue_id,
            envelope.mail_from,
            ", ".join(envelope.rcpt_tos),
            parsed["Subject"],
        )
        return f"250 2.0.0 Ok: queued as {queue_id}"

    def _refuse(self, reply: str) -> str:
        self.fake._counters.refused += 1
        return reply


def _make_tls(directory: Path) -> tuple[ssl.SSLContext, Path]:
    """A throwaway CA and a server certificate it signs (``localhost``, ``127.0.0.1``, ``::1``),
    written under ``directory``; the server's TLS context and the CA's file."""
    now = dt.datetime.now(dt.UTC)
    valid = (now - dt.timedelta(hours=1), now + dt.timedelta(days=2))
    ca_key = ec.generate_private_key(ec.SECP256R1())
    ca_name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "tidings fake SMTP CA")])
    ca_ski = x509.SubjectKeyIdentifier.from_public_key(ca_key.public_key())
    ca = (
        x509.CertificateBuilder()
        .subject_name(ca_name)
        .issuer_name(ca_name)
        .public_key(ca_key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(valid[0])
        .not_valid_after(valid[1])
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .add_extension(
            x509.KeyUsage(
                digital_signature=False,
                content_commitment=False,
                key_encipherment=False,
                data_encipherment=False,
                key_agreement=False,
                key_cert_sign=True,
                crl_sign=True,
                encipher_only=False,
                decipher_only=False,
            ),
            critical=True,
        )
        .add_extension(ca_ski, critical=False)
        .sign(ca_key, hashes.SHA256())
    )
    key = ec.generate_private_key(ec.SECP256R1())
    names: list[x509.GeneralName] = [
        x509.DNSName("localhost"),
        x509.IPAddress(ipaddress.ip_address("127.0.0.1")),
        x509.IPAddress(ipaddress.ip_address("::1")),
    ]
    certificate = (
        x509.CertificateBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "localhost")]))
        .issuer_name(ca_name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(valid[0])
        .not_valid_after(valid[1])
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(x509.SubjectAlternativeName(names), critical=False)
        .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH]), critical=False)
        .add_extension(x509.AuthorityKeyIdentifier.from_issuer_subject_key_identifier(ca_ski), critical=False)
        .sign(ca_key, hashes.SHA256())
    )
    ca_file = directory / "ca.pem"
    cert_file = directory / "server.pem"
    key_file = directory / "server.key"
    ca_file.write_bytes(ca.public_bytes(serialization.Encoding.PEM))
    cert_file.write_bytes(certificate.public_bytes(serialization.Encoding.PEM))
    key_file.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.load_cert_chain(cert_file, key_file)
    return context, ca_file


# --- command line ---------------------------------------------------------------------------------


def _parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = cli_parser("tidings.testing.fake_smtp", "Run a fake SMTP server (for tests and trying out).")
    parser.add_argument("--security", choices=["starttls", "tls", "none"], default="starttls")
    parser.add_argument("--username", default=None)
    parser.add_argument("--password", default=None)
    parser.add_argument("--slow-seconds", type=float, default=10.0)
    return parser.parse_args(argv)


async def _serve(server: FakeSmtpServer, host: str, port: int) -> None:
    stopping = asyncio.Event()
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGTERM, signal.SIGINT):
        with contextlib.suppress(NotImplementedError):  # not available on Windows
            loop.add_signal_handler(signum, stopping.set)
    await server.start(host, port)
    try:
        # The line a parent process reads to learn the port when it asked for port 0.
        sys.stdout.write(f"listening on {server.url}\n")
        if server.config.security != "none":
            sys.stdout.write(f"ca_file {server.ca_file}\n")
        sys.stdout.flush()
        await stopping.wait()
    finally:
        await server.stop()


def main(argv: Sequence[str] | None = None) -> None:
    """Run the fake SMTP server until SIGTERM or SIGINT."""
    args = _parse_args(argv)
    config = FakeSmtpConfig(
        security=args.security,
        username=args.username,
        password=args.password,
        slow_seconds=args.slow_seconds,
    )
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    # aiosmtpd logs every command at INFO; its warnings are enough here.
    logging.getLogger("mail.log").setLevel(logging.WARNING)
    asyncio.run(_serve(FakeSmtpServer(config), args.host, args.port))


if __name__ == "__main__":
    main()
