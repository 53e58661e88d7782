"""The ``smtp`` provider against a real SMTP server in process (``tidings.testing.fake_smtp``).

Most tests send through :class:`SmtpProvider` itself over a real socket on 127.0.0.1 and look at
what the server received: the MIME, the envelope, TLS, the login, how many connections were used.
The last ones go through the whole service: the API accepts an email, the worker sends it over
SMTP, and the message's status follows.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import signal
import sys
from collections.abc import AsyncIterator
from datetime import UTC, datetime
from email.message import EmailMessage
from typing import Any

import dkim  # type: ignore[import-untyped]
import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa
from pydantic import ValidationError

from tests.live import Live, free_port, live_service
from tidings.domain.content import Attachment, Channel, EmailContent
from tidings.domain.failures import FailureReason
from tidings.domain.reports import Report
from tidings.domain.status import Status
from tidings.errors import PermanentProviderError, TemporaryProviderError
from tidings.providers import KINDS
from tidings.providers.base import OutboundMessage, ProviderContext, SendResult
from tidings.providers.smtp import SmtpProvider, SmtpSettings
from tidings.testing.fake_smtp import FakeSmtpConfig, FakeSmtpServer

USER = "postmaster@clinic.example"
PASSWORD = "correct horse battery staple"
FROM = "Kliniki ya Amani <noreply@clinic.example>"
TO = "amina@example.org"

SUBJECTS = [
    pytest.param("Habari za asubuhi, miadi yako ni kesho saa tatu", id="swahili"),
    pytest.param("موعدك غداً في الساعة التاسعة صباحاً", id="arabic"),
    pytest.param("Your results are ready 🎉🩺 — see you soon 👋🏾", id="emoji"),
]


@pytest.fixture
async def fake(request: pytest.FixtureRequest) -> AsyncIterator[FakeSmtpServer]:
    config = getattr(request, "param", None) or FakeSmtpConfig(username=USER, password=PASSWORD)
    server = FakeSmtpServer(config)
    await server.start()
    try:
        yield server
    finally:
        await server.stop()


def settings_for(fake: FakeSmtpServer, **extra: Any) -> dict[str, Any]:
    """Provider settings that reach ``fake``: its port, its CA, its account."""
    table: dict[str, Any] = {
        "kind": "smtp",
        "host": "127.0.0.1",
        "port": fake.port,
        "from": FROM,
        "timeout_seconds": 5,
        "helo_name": "tidings.test",
    }
    if fake.config.security != "none":
        table["ca_file"] = fake.ca_file
        table["security"] = fake.config.security
    else:
        table["security"] = "none"
    if fake.config.username is not None:
        table["username"] = fake.config.username
        table["password"] = fake.config.password
    table.update(extra)
    return table


@contextlib.asynccontextmanager
async def running(table: dict[str, Any]) -> AsyncIterator[SmtpProvider]:
    provider = SmtpProvider(
        "mail", SmtpSettings.model_validate(table), ProviderContext(base_url="http://127.0.0.1:9")
    )
    await provider.start()
    try:
        yield provider
    finally:
        await provider.close()


@pytest.fixture
async def provider(fake: FakeSmtpServer) -> AsyncIterator[SmtpProvider]:
    async with running(settings_for(fake)) as adapter:
        yield adapter


def email(
    to: str = TO, *, id: str = "msg_01HXYZ", sender: str | None = None, **content: Any
) -> OutboundMessage:
    content.setdefault("subject", "Your appointment")
    if "html" not in content and "text" not in content:
        content["text"] = "See you tomorrow at 9."
    return OutboundMessage(id=id, to=to, sender=sender, attempt=1, content=EmailContent(**content))


def body(message: EmailMessage, subtype: str) -> str:
    part = message.get_body(preferencelist=(subtype,))
    assert part is not None, f"no text/{subtype} part"
    content = part.get_content()
    assert isinstance(content, str)
    return content


# -- what arrives -----------------------------------------------------------------------------------


async def test_an_email_arrives_as_text_and_html_with_its_attachments(
    provider: SmtpProvider, fake: FakeSmtpServer
) -> None:
    pdf = b"%PDF-1.7\n" + bytes(range(256)) * 40
    csv = "name,result\r\nAmina,négatif\r\n".encode()
    result = await provider.send(
        email(
            subject="Your results",
            text="Hello Amina,\nyour results are attached.",
            html="<p>Hello Amina,</p><p>your results are <b>attached</b>.</p>",
            attachments=(
                Attachment("résultats.pdf", "application/pdf", pdf),
                Attachment("results.csv", "text/csv", csv),
            ),
        )
    )

    assert len(fake.received) == 1
    received = fake.received[0]
    assert received.mail_from == "noreply@clinic.example"
    assert received.rcpt_tos == (TO,)
    message = received.message
    assert message.get_content_type() == "multipart/mixed"
    alternative = message.get_body(preferencelist=("related", "html", "plain"))
    assert alternative is not None
    parts = list(message.iter_parts())
    assert parts[0].get_content_type() == "multipart/alternative"
    assert [p.get_content_type() for p in parts[0].iter_parts()] == ["text/plain", "text/html"]
    assert body(message, "plain").rstrip("\n") == "Hello Amina,\nyour results are attached."
    assert body(message, "html").rstrip("\n") == "<p>Hello Amina,</p><p>your results are <b>attached</b>.</p>"
    attachments = list(message.iter_attachments())
    assert [(a.get_filename(), a.get_content_type()) for a in attachments] == [
        ("résultats.pdf", "application/pdf"),
        ("results.csv", "text/csv"),
    ]
    assert attachments[0].get_payload(decode=True) == pdf
    assert attachments[1].get_payload(decode=True) == csv

    assert isinstance(result, SendResult)
    assert result.status is Status.SENT
    assert result.provider_message_ids == (message["Message-ID"],)
    assert "msg_01HXYZ" in message["Message-ID"]
    assert result.provider_status == "250 2.0.0 Ok: queued as FAKE000001"


async def test_an_html_only_email_is_a_single_html_part(provider: SmtpProvider, fake: FakeSmtpServer) -> None:
    await provider.send(email(html="<h1>Karibu</h1>"))
    message = fake.received[0].message
    assert message.get_content_type() == "text/html"
    assert body(message, "html").rstrip("\n") == "<h1>Karibu</h1>"


@pytest.mark.parametrize("subject", SUBJECTS)
async def test_utf8_subjects_names_and_bodies_arrive_equal(
    provider: SmtpProvider, fake: FakeSmtpServer, subject: str
) -> None:
    await provider.send(
        email(
            sender="Zahanati ya Mwembeni — عيادة <kliniki@clinic.example>",
            subject=subject,
            text=f"{subject}\n\nAsante sana.",
            html=f"<p>{subject}</p>",
        )
    )
    received = fake.received[0]
    message = received.message
    assert message["Subject"] == subject
    assert message["From"].addresses[0].display_name == "Zahanati ya Mwembeni — عيادة"
    assert received.mail_from == "kliniki@clinic.example"
    assert body(message, "plain").rstrip("\n") == f"{subject}\n\nAsante sana."
    assert body(message, "html").rstrip("\n") == f"<p>{subject}</p>"
    # Headers stay ASCII on the wire (RFC 2047), whatever the body's transfer encoding.
    head = received.raw.split(b"\r\n\r\n", 1)[0]
    assert head.isascii()


async def test_extra_headers_arrive_and_reserved_ones_are_not_replaced(
    provider: SmtpProvider, fake: FakeSmtpServer
) -> None:
    unsubscribe = "<https://clinic.example/unsubscribe/abc>, <mailto:unsubscribe@clinic.example?subject=abc>"
    await provider.send(
        email(
            subject="Newsletter",
            reply_to="Front desk <desk@clinic.example>",
            headers={
                "List-Unsubscribe": unsubscribe,
                "List-Unsubscribe-Post": "List-Unsubscribe=One-Click",
                "X-Campaign": "march-2025",
                "From": "attacker@evil.example",
                "To": "someone-else@evil.example",
                "Subject": "not the subject",
                "Message-ID": "<forged@evil.example>",
                "Reply-To": "attacker@evil.example",
                "Date": "Thu, 01 Jan 1970 00:00:00 +0000",
                "Content-Type": "text/plain",
            },
        )
    )
    received = fake.received[0]
    message = received.message
    assert message["List-Unsubscribe"] == unsubscribe
    assert message["List-Unsubscribe-Post"] == "List-Unsubscribe=One-Click"
    assert message["X-Campaign"] == "march-2025"
    for name in ("From", "To", "Subject", "Message-ID", "Reply-To", "Date"):
        assert len(message.get_all(name) or []) == 1, name
    assert message["From"] == FROM
    assert message["To"] == TO
    assert message["Subject"] == "Newsletter"
    assert message["Reply-To"] == "Front desk <desk@clinic.example>"
    assert "msg_01HXYZ" in message["Message-ID"]
    assert "1970" not in message["Date"]
    assert received.mail_from == "noreply@clinic.example"
    assert received.rcpt_tos == (TO,)


async def test_the_messages_sender_replaces_the_default_from(
    provider: SmtpProvider, fake: FakeSmtpServer
) -> None:
    await provider.send(email(sender="results@lab.example", id="msg_a"))
    await provider.send(email(id="msg_b"))
    first, second = fake.received
    assert (first.message["From"], first.mail_from) == ("results@lab.example", "results@lab.example")
    assert (second.message["From"], second.mail_from) == (FROM, "noreply@clinic.example")
    assert first.message["Message-ID"].endswith("@lab.example>")
    assert "msg_a" in first.message["Message-ID"] and "msg_b" in second.message["Message-ID"]


async def test_a_non_ascii_address_goes_with_smtputf8(provider: SmtpProvider, fake: FakeSmtpServer) -> None:
    await provider.send(email(to="jürgen@münchen.example"))
    received = fake.received[0]
    assert received.rcpt_tos == ("jürgen@münchen.example",)
    assert "SMTPUTF8" in received.mail_options
    assert received.message["To"] == "jürgen@münchen.example"


async def test_a_header_with_a_line_break_is_refused_permanently(
    provider: SmtpProvider, fake: FakeSmtpServer
) -> None:
    with pytest.raises(PermanentProviderError) as refused:
        await provider.send(email(headers={"X-Tag": "a\r\nBcc: victim@example.org"}))
    assert refused.value.code == "invalid_message"
    assert fake.received == []


# -- TLS and authentication -------------------------------------------------------------------------


async def test_starttls_and_auth_are_used(provider: SmtpProvider, fake: FakeSmtpServer) -> None:
    await provider.send(email())
    received = fake.received[0]
    assert received.tls is True
    assert received.login == USER


async def test_a_wrong_password_is_a_temporary_error(fake: FakeSmtpServer) -> None:
    async with running(settings_for(fake, password="wrong")) as provider:
        with pytest.raises(TemporaryProviderError) as refused:
            await provider.send(email())
    assert refused.value.code == "smtp_535"
    assert "5.7.8" in refused.value.message
    assert fake.stats["auth_failures"] >= 1
    assert fake.received == []


async def test_no_credentials_where_the_server_wants_them_is_a_temporary_error(fake: FakeSmtpServer) -> None:
    table = settings_for(fake)
    del table["username"], table["password"]
    async with running(table) as provider:
        with pytest.raises(TemporaryProviderError) as refused:
            await provider.send(email())
    assert refused.value.code == "smtp_530"
    assert fake.received == []


async def test_a_certificate_not_trusted_is_a_temporary_connection_error(fake: FakeSmtpServer) -> None:
    table = settings_for(fake)
    del table["ca_file"]
    async with running(table) as provider:
        with pytest.raises(TemporaryProviderError) as refused:
            await provider.send(email())
    assert refused.value.code == "connection_error"
    assert "TLS" in refused.value.message
    assert fake.received == []

    async with running({**table, "validate_certs": False}) as provider:
        await provider.send(email())
    assert fake.received[0].tls is True


@pytest.mark.parametrize(
    "fake", [FakeSmtpConfig(security="tls", username=USER, password=PASSWORD)], indirect=True
)
async def test_implicit_tls(fake: FakeSmtpServer) -> None:
    async with running(settings_for(fake)) as provider:
        await provider.send(email())
    received = fake.received[0]
    assert received.tls is True
    assert received.login == USER


@pytest.mark.parametrize("fake", [FakeSmtpConfig(security="none")], indirect=True)
async def test_a_plain_connection_without_tls_or_auth(fake: FakeSmtpServer) -> None:
    async with running(settings_for(fake)) as provider:
        await provider.send(email())
    assert fake.received[0].tls is False
    assert fake.received[0].login is None


@pytest.mark.parametrize("fake", [FakeSmtpConfig(security="none")], indirect=True)
async def test_starttls_required_from_a_server_without_it_is_a_temporary_error(fake: FakeSmtpServer) -> None:
    async with running({**settings_for(fake), "security": "starttls"}) as provider:
        with pytest.raises(TemporaryProviderError) as refused:
            await provider.send(email())
    assert refused.value.code == "connection_error"
    assert fake.received == []


# -- the pool ---------------------------------------------------------------------------------------


async def test_fifty_messages_share_the_pools_two_connections(fake: FakeSmtpServer) -> None:
    async with running(settings_for(fake, pool_size=2, concurrency=10)) as provider:
        in_flight = asyncio.Semaphore(provider.settings.concurrency)  # what the worker does

        async def send(n: int) -> SendResult:
            async with in_flight:
                return await provider.send(email(f"patient{n}@example.org", id=f"msg_{n:02d}"))

        results = await asyncio.gather(*(send(n) for n in range(50)))
        assert fake.stats["open_connections"] == 2
    assert len({r.provider_message_id for r in results}) == 50
    assert fake.stats["connections"] == 2
    assert provider.connections_opened == 2
    assert len(fake.received) == 50
    assert {r.connection for r in fake.received} == {1, 2}
    assert sorted(r.rcpt_tos[0] for r in fake.received) == sorted(
        f"patient{n}@example.org" for n in range(50)
    )
    # close() said goodbye on both.
    await fake.wait_for(lambda: fake.stats["open_connections"] == 0)


async def test_after_the_server_hangs_up_on_idle_connections_the_next_send_reconnects(
    provider: SmtpProvider, fake: FakeSmtpServer
) -> None:
    await provider.send(email(id="msg_1"))
    assert await fake.close_connections() == 1
    await provider.send(email(id="msg_2"))
    assert fake.stats["connections"] == 2
    assert [r.connection for r in fake.received] == [1, 2]

    # And again without giving the client a moment to notice the hang-up: the message is tried
    # once more at once on a new connection, as nothing of it was sent.
    assert await fake.close_connections(wait=False) == 1
    await provider.send(email(id="msg_3"))
    assert fake.stats["connections"] == 3
    assert [r.connection for r in fake.received] == [1, 2, 3]


async def test_a_connection_idle_for_a_while_is_asked_a_noop_first(
    fake: FakeSmtpServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr("tidings.providers.smtp.PROBE_AFTER_SECONDS", 0.0)
    async with running(settings_for(fake)) as provider:
        await provider.send(email(id="msg_1"))
        await provider.send(email(id="msg_2"))
        assert (fake.stats["noops"], fake.stats["connections"]) == (1, 1)
        # The server hung up, the client has not noticed: the NOOP finds out, and a new connection is opened.
        await fake.close_connections(wait=False)
        await provider.send(email(id="msg_3"))
    assert fake.stats["connections"] == 2
    assert [r.connection for r in fake.received] == [1, 1, 2]


async def test_a_refusal_leaves_the_connection_in_the_pool(
    provider: SmtpProvider, fake: FakeSmtpServer
) -> None:
    with pytest.raises(PermanentProviderError):
        await provider.send(email("bounce@example.org"))
    await provider.send(email())
    assert fake.stats["connections"] == 1
    assert fake.received[0].rcpt_tos == (TO,)


# -- refusals and failures --------------------------------------------------------------------------


async def test_an_unknown_mailbox_is_permanent_with_the_servers_text(
    provider: SmtpProvider, fake: FakeSmtpServer
) -> None:
    with pytest.raises(PermanentProviderError) as refused:
        await provider.send(email("bounce@example.org"))
    assert refused.value.code == "smtp_550"
    assert refused.value.message == "5.1.1 <bounce@example.org>: Recipient address rejected: User unknown"
    assert fake.received == []


@pytest.mark.parametrize(
    ("to", "code"), [("tempfail@example.org", "smtp_451"), ("greylist@example.org", "smtp_450")]
)
async def test_a_4xx_is_temporary(provider: SmtpProvider, fake: FakeSmtpServer, to: str, code: str) -> None:
    with pytest.raises(TemporaryProviderError) as refused:
        await provider.send(email(to))
    assert refused.value.code == code
    assert fake.received == []


async def test_a_greylisted_message_goes_through_on_the_next_attempt(
    provider: SmtpProvider, fake: FakeSmtpServer
) -> None:
    with pytest.raises(TemporaryProviderError):
        await provider.send(email("greylist@example.org"))
    await provider.send(email("greylist@example.org"))
    assert fake.received[0].rcpt_tos == ("greylist@example.org",)


@pytest.mark.parametrize(
    ("to", "code", "reason"),
    [
        ("full@example.org", "smtp_552", FailureReason.UNREACHABLE),
        ("spam@example.org", "smtp_554", FailureReason.BLOCKED),
    ],
)
async def test_a_refusal_at_the_end_of_data_is_permanent(
    provider: SmtpProvider, fake: FakeSmtpServer, to: str, code: str, reason: FailureReason
) -> None:
    with pytest.raises(PermanentProviderError) as refused:
        await provider.send(email(to))
    assert refused.value.code == code
    assert fake.received == []
    failed = Report(
        status=Status.FAILED,
        source="worker",
        occurred_at=datetime.now(UTC),
        error_code=refused.value.code,
        error_message=refused.value.message,
    )
    assert provider.explain(failed).failure_reason is reason


async def test_a_connection_dropped_in_the_middle_of_data_is_temporary(
    provider: SmtpProvider, fake: FakeSmtpServer
) -> None:
    await provider.send(email(id="msg_before"))
    with pytest.raises(TemporaryProviderError) as failed:
        await provider.send(email("drop@example.org", id="msg_dropped", text="line\n" * 2000))
    assert failed.value.code == "connection_error"
    assert fake.stats["dropped"] == 1
    await provider.send(email(id="msg_after"))
    before, after = (r.message["Message-ID"] for r in fake.received)
    assert (before, after) == ("<msg_before@clinic.example>", "<msg_after@clinic.example>")
    assert [r.connection for r in fake.received] == [1, 2]


@pytest.mark.parametrize("fake", [FakeSmtpConfig(security="none", slow_seconds=60)], indirect=True)
async def test_a_server_that_does_not_answer_in_time_is_a_timeout(fake: FakeSmtpServer) -> None:
    async with running(settings_for(fake, timeout_seconds=1)) as provider:
        with pytest.raises(TemporaryProviderError) as failed:
            await provider.send(email("slow@example.org"))
        assert failed.value.code == "timeout"
        await provider.send(email())
    assert [r.rcpt_tos for r in fake.received] == [(TO,)]


async def test_nothing_listening_is_a_temporary_connection_error() -> None:
    table = {"kind": "smtp", "host": "127.0.0.1", "port": free_port(), "from": FROM, "security": "none"}
    async with running(table) as provider:
        with pytest.raises(TemporaryProviderError) as failed:
            await provider.send(email())
    assert failed.value.code == "connection_error"


def test_failure_reasons_of_smtp_codes() -> None:
    provider = SmtpProvider(
        "mail",
        SmtpSettings.model_validate({"kind": "smtp", "host": "127.0.0.1", "from": FROM}),
        ProviderContext(base_url="http://127.0.0.1:9"),
    )

    def reason(code: str, text: str = "") -> FailureReason:
        report = Report(Status.FAILED, "worker", datetime.now(UTC), error_code=code, error_message=text)
        reason = provider.explain(report).failure_reason
        assert reason is not None
        return reason

    assert (
        reason("smtp_550", "Requested action not taken: mailbox unavailable") is FailureReason.INVALID_NUMBER
    )
    assert reason("smtp_550", "5.1.1 <x@example.org>: User unknown") is FailureReason.INVALID_NUMBER
    assert reason("smtp_550", "5.7.1 Message rejected due to local policy") is FailureReason.BLOCKED
    assert reason("smtp_550", "5.7.26 Unauthenticated email is not accepted (DMARC)") is FailureReason.BLOCKED
    assert reason("smtp_553", "sorry, that domain isn't in my list") is FailureReason.INVALID_NUMBER
    assert reason("smtp_552", "Message size exceeds fixed limit") is FailureReason.REJECTED_CONTENT
    assert reason("smtp_552", "5.2.2 Mailbox full") is FailureReason.UNREACHABLE
    assert reason("smtp_554", "Transaction failed") is FailureReason.BLOCKED
    assert reason("smtp_451", "attempts used up (5); last error: 4.3.0 try later") is (
        FailureReason.PROVIDER_UNAVAILABLE
    )
    assert reason("smtp_535") is FailureReason.PROVIDER_UNAVAILABLE
    assert (
        reason("smtp_535", "5.7.8 Authentication credentials invalid") is FailureReason.PROVIDER_UNAVAILABLE
    )
    assert reason("smtp_530", "5.7.0 Authentication required") is FailureReason.PROVIDER_UNAVAILABLE
    assert reason("connection_error") is FailureReason.PROVIDER_UNAVAILABLE
    assert reason("timeout") is FailureReason.PROVIDER_UNAVAILABLE
    assert reason("smtp_599") is FailureReason.UNKNOWN


# -- DKIM -------------------------------------------------------------------------------------------


def rsa_key_pair(private_format: serialization.PrivateFormat) -> tuple[str, bytes]:
    """A new RSA key as PEM, and its public half as a DKIM DNS record."""
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    pem = key.private_bytes(serialization.Encoding.PEM, private_format, serialization.NoEncryption())
    public = key.public_key().public_bytes(
        serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    return pem.decode("ascii"), b"v=DKIM1; k=rsa; p=" + base64.b64encode(public)


@pytest.mark.parametrize(
    "private_format",
    [serialization.PrivateFormat.PKCS8, serialization.PrivateFormat.TraditionalOpenSSL],
    ids=["pkcs8", "pkcs1"],
)
async def test_a_dkim_signature_verifies_with_the_public_key(
    fake: FakeSmtpServer, private_format: serialization.PrivateFormat
) -> None:
    pem, record = rsa_key_pair(private_format)
    looked_up: list[bytes] = []

    def dns(name: bytes, timeout: float = 5) -> bytes | None:
        looked_up.append(name)
        return record if name == b"mail2025._domainkey.clinic.example." else None

    table = settings_for(fake, dkim_selector="mail2025", dkim_domain="clinic.example", dkim_private_key=pem)
    async with running(table) as provider:
        await provider.send(
            email(
                subject="Matokeo yako — نتائجك 🎉",
                text="Habari Amina,\nmatokeo yako yamefika. ✓",
                html="<p>Habari Amina — مرحبا 🎉</p>",
                headers={
                    "List-Unsubscribe": "<https://clinic.example/u/abc>",
                    "List-Unsubscribe-Post": "List-Unsubscribe=One-Click",
                },
                attachments=(Attachment("ripoti.pdf", "application/pdf", b"%PDF\x00\xff" * 100),),
            )
        )

    received = fake.received[0]
    assert received.raw.startswith(b"DKIM-Signature: ")
    assert dkim.verify(received.raw, dnsfunc=dns) is True
    assert looked_up == [b"mail2025._domainkey.clinic.example."]
    signature = received.message["DKIM-Signature"]
    tags = {k.strip(): v.strip() for k, _, v in (t.partition("=") for t in str(signature).split(";"))}
    assert (tags["d"], tags["s"], tags["a"], tags["c"]) == (
        "clinic.example",
        "mail2025",
        "rsa-sha256",
        "relaxed/relaxed",
    )
    signed = tags["h"].replace(" ", "").replace("\r\n", "").lower().split(":")
    assert {
        "from",
        "to",
        "subject",
        "date",
        "message-id",
        "list-unsubscribe",
        "list-unsubscribe-post",
    } <= set(signed)
    # A signed message is 7-bit clean, and still arrives equal.
    assert "BODY=8BITMIME" not in received.mail_options
    assert received.raw.isascii()
    assert received.message["Subject"] == "Matokeo yako — نتائجك 🎉"
    assert body(received.message, "plain").rstrip("\n") == "Habari Amina,\nmatokeo yako yamefika. ✓"

    tampered = received.raw.replace(b"Subject: ", b"Subject: Re: ", 1)
    assert dkim.verify(tampered, dnsfunc=dns) is False


# -- settings ---------------------------------------------------------------------------------------


def test_smtp_is_a_registered_email_kind() -> None:
    assert KINDS["smtp"] is SmtpProvider
    assert SmtpProvider.channels == frozenset({Channel.EMAIL})


def test_settings_defaults() -> None:
    settings = SmtpSettings.model_validate({"kind": "smtp", "host": "smtp.example.org", "from": FROM})
    assert (settings.effective_port, settings.security, settings.pool_size) == (587, "starttls", 5)
    assert settings.validate_certs is True
    tls = SmtpSettings.model_validate(
        {"kind": "smtp", "host": "smtp.example.org", "from": FROM, "security": "tls"}
    )
    assert tls.effective_port == 465


@pytest.mark.parametrize(
    ("extra", "problem"),
    [
        ({"from": "not an address"}, "from"),
        ({"username": "u"}, "password"),
        ({"password": "p"}, "username"),
        ({"dkim_selector": "s", "dkim_domain": "clinic.example"}, "dkim_private_key"),
        (
            {"dkim_selector": "s", "dkim_domain": "d.example", "dkim_private_key": "-----BEGIN nonsense"},
            "PEM",
        ),
        ({"security": "ssl"}, "security"),
        ({"pool_size": 0}, "pool_size"),
    ],
)
def test_settings_that_cannot_work_are_refused(extra: dict[str, Any], problem: str) -> None:
    with pytest.raises(ValidationError) as refused:
        SmtpSettings.model_validate({"kind": "smtp", "host": "smtp.example.org", "from": FROM, **extra})
    assert problem in str(refused.value)


# -- the fake standalone ----------------------------------------------------------------------------


async def test_the_fake_smtp_server_runs_standalone() -> None:
    process = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "tidings.testing.fake_smtp", "--port", "0", stdout=asyncio.subprocess.PIPE
    )
    try:
        assert process.stdout is not None
        line = (await asyncio.wait_for(process.stdout.readline(), 20)).decode()
        assert line.startswith("listening on smtp://127.0.0.1:")
        port = int(line.strip().rpartition(":")[2])
        ca = (await asyncio.wait_for(process.stdout.readline(), 20)).decode()
        assert ca.startswith("ca_file ")
        table = {
            "kind": "smtp",
            "host": "127.0.0.1",
            "port": port,
            "from": FROM,
            "ca_file": ca.split(" ", 1)[1].strip(),
        }
        async with running(table) as provider:
            result = await provider.send(email())
        assert result.provider_status is not None and result.provider_status.startswith("250 ")
        process.send_signal(signal.SIGTERM)
        assert await asyncio.wait_for(process.wait(), 20) == 0
    finally:
        if process.returncode is None:
            process.kill()
            await process.wait()


# -- through the service ----------------------------------------------------------------------------


@pytest.fixture
async def live(database_url: str, fake: FakeSmtpServer) -> AsyncIterator[Live]:
    providers = {
        "fake": {"kind": "fake", "latency_ms": 0, "receipt_delay_ms": 10},
        "mail": settings_for(fake),
    }
    async with live_service(database_url, providers=providers, default_email_provider="mail") as live:
        yield live


def api_email(to: str, **fields: Any) -> dict[str, Any]:
    payload: dict[str, Any] = {
        "channel": "email",
        "to": to,
        "subject": "Miadi yako ni kesho 📅",
        "html": "<p>Your visit is <b>tomorrow</b> at 9.</p>",
        "text": "Your visit is tomorrow at 9.",
    }
    payload.update(fields)
    return payload


async def test_an_email_sent_through_the_api_arrives_and_is_sent(live: Live, fake: FakeSmtpServer) -> None:
    pdf = b"%PDF-1.4\x00\xff results"
    accepted = await live.send(
        **api_email(
            "Amina@Example.ORG",
            sender="Kibera Clinic <noreply@clinic.example>",
            reply_to="desk@clinic.example",
            headers={"X-Campaign": "march"},
            attachments=[
                {
                    "filename": "visit.pdf",
                    "content_type": "application/pdf",
                    "content": base64.b64encode(pdf).decode(),
                }
            ],
        )
    )
    message = await live.wait_for(accepted["id"], "sent", "failed")

    assert message["status"] == "sent", message
    assert message["provider"] == "mail"
    assert len(fake.received) == 1
    received = fake.received[0]
    assert received.rcpt_tos == ("Amina@example.org",)
    assert received.mail_from == "noreply@clinic.example"
    mime = received.message
    assert mime["Subject"] == "Miadi yako ni kesho 📅"
    assert mime["Reply-To"] == "desk@clinic.example"
    assert mime["X-Campaign"] == "march"
    assert accepted["id"] in mime["Message-ID"]
    assert message["provider_message_id"] == mime["Message-ID"]
    assert message["provider_status"] == "250 2.0.0 Ok: queued as FAKE000001"
    assert body(mime, "html").rstrip("\n") == "<p>Your visit is <b>tomorrow</b> at 9.</p>"
    assert [(a.get_filename(), a.get_payload(decode=True)) for a in mime.iter_attachments()] == [
        ("visit.pdf", pdf)
    ]


async def test_an_unknown_mailbox_fails_the_email_at_once(live: Live, fake: FakeSmtpServer) -> None:
    accepted = await live.send(**api_email("bounce@example.org"))
    message = await live.wait_for(accepted["id"], "failed")
    assert message["error_code"] == "smtp_550"
    assert message["failure_reason"] == "invalid_number"
    assert "User unknown" in message["error_message"]
    assert message["attempts"] == 1
    assert fake.received == []


async def test_a_greylisted_email_is_retried_and_sent(live: Live, fake: FakeSmtpServer) -> None:
    accepted = await live.send(**api_email("greylist@example.org"))
    message = await live.wait_for(accepted["id"], "sent", "failed")
    assert message["status"] == "sent", message
    assert message["attempts"] == 2
    assert [r.rcpt_tos for r in fake.received] == [("greylist@example.org",)]
