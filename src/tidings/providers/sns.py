"""Amazon SNS messages posted to an HTTP(S) endpoint, and proof that SNS sent them.

SNS posts one JSON object per request (``Content-Type: text/plain; charset=UTF-8``, with headers
``x-amz-sns-message-type``, ``x-amz-sns-message-id`` and ``x-amz-sns-topic-arn``). Its ``Type`` is
``SubscriptionConfirmation`` (the endpoint must GET the ``SubscribeURL`` before anything else is
delivered to it), ``Notification`` (what was published to the topic, in ``Message``) or
``UnsubscribeConfirmation``. Every message is signed:

* ``SigningCertURL`` names an X.509 certificate, which must be fetched over HTTPS from SNS itself:
  the host ``sns.<region>.amazonaws.com`` of the region we configured (``.amazonaws.com.cn`` too
  for a China region), and a path ending in ``.pem``. A certificate is fetched once per URL and
  kept (:class:`CertificateCache`); it must be valid at the time of each use and hold an RSA key.
* The string to sign is ``name\\nvalue\\n`` for each of these fields, in this order, a missing
  optional one left out: for a ``Notification`` ``Message``, ``MessageId``, ``Subject`` (only if
  present), ``Timestamp``, ``TopicArn``, ``Type``; for the two confirmations ``Message``,
  ``MessageId``, ``SubscribeURL``, ``Timestamp``, ``Token``, ``TopicArn``, ``Type``.
* ``Signature`` is the base64 RSA PKCS #1 v1.5 signature of that string with SHA-1
  (``SignatureVersion`` ``1``) or SHA-256 (``2``).

Anything else (a certificate elsewhere, another topic than the configured one, a bad signature, an
expired certificate) is :class:`~tidings.errors.WebhookUnauthorized`; a body that is not an SNS
message at all is :class:`~tidings.errors.WebhookRejected`. A certificate that cannot be fetched
right now (SNS unreachable, 5xx) is :class:`CertificateUnavailable`, a 503, so that SNS, which
retries only server errors, posts the message again.

``certificate_origin`` replaces the SNS host rule by one origin (``http://127.0.0.1:PORT``), for a
fake SNS in tests only: with it, anyone who can serve a certificate there can sign messages.
"""

from __future__ import annotations

import base64
import binascii
import re
from collections import OrderedDict
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any
from urllib.parse import urlsplit

import orjson
from cryptography import x509
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import padding, rsa

from tidings.errors import TidingsError, WebhookRejected, WebhookUnauthorized
from tidings.providers.base import WebhookRequest

__all__ = [
    "NOTIFICATION",
    "SUBSCRIPTION_CONFIRMATION",
    "UNSUBSCRIBE_CONFIRMATION",
    "CertificateCache",
    "CertificateUnavailable",
    "SnsMessage",
    "SnsVerifier",
    "parse_message",
    "sns_url_allowed",
    "string_to_sign",
]

NOTIFICATION = "Notification"
SUBSCRIPTION_CONFIRMATION = "SubscriptionConfirmation"
UNSUBSCRIBE_CONFIRMATION = "UnsubscribeConfirmation"

_CONFIRMATION_FIELDS = ("Message", "MessageId", "SubscribeURL", "Timestamp", "Token", "TopicArn", "Type")
SIGNED_FIELDS: Mapping[str, tuple[str, ...]] = {
    NOTIFICATION: ("Message", "MessageId", "Subject", "Timestamp", "TopicArn", "Type"),
    SUBSCRIPTION_CONFIRMATION: _CONFIRMATION_FIELDS,
    UNSUBSCRIBE_CONFIRMATION: _CONFIRMATION_FIELDS,
}
"""The fields each type of message signs, in the order they are signed."""
OPTIONAL_FIELDS = frozenset({"Subject"})
_SIGNATURE_FIELDS = ("SignatureVersion", "Signature", "SigningCertURL")

HASHES: Mapping[str, type[hashes.HashAlgorithm]] = {"1": hashes.SHA1, "2": hashes.SHA256}
"""The digest of each ``SignatureVersion``."""

MAX_CERTIFICATE_BYTES = 65_536
CACHED_CERTIFICATES = 16

_REGION = re.compile(r"[a-z]{2}(-[a-z]+)+-[0-9]+")


class CertificateUnavailable(TidingsError):
    """The SNS signing certificate cannot be fetched right now; send the message again later."""

    code = "sns_certificate_unavailable"
    http_status = 503


@dataclass(frozen=True)
class SnsMessage:
    """One message SNS posted: its string fields by name (SNS sends nothing else)."""

    fields: Mapping[str, str]

    def get(self, name: str) -> str | None:
        return self.fields.get(name)

    @property
    def type(self) -> str:
        return self.fields["Type"]

    @property
    def message_id(self) -> str:
        return self.fields["MessageId"]

    @property
    def topic_arn(self) -> str:
        return self.fields["TopicArn"]

    @property
    def message(self) -> str:
        return self.fields["Message"]

    @property
    def signing_cert_url(self) -> str:
        return self.fields["SigningCertURL"]

    @property
    def subscribe_url(self) -> str | None:
        return self.fields.get("SubscribeURL")


def parse_message(body: bytes) -> SnsMessage:
    """The SNS message in a request body; :class:`WebhookRejected` when it is not one."""
    try:
        data: Any = orjson.loads(body)
    except orjson.JSONDecodeError as exc:
        raise WebhookRejected(f"an SNS message is a JSON object; this body is not JSON: {exc}") from exc
    if not isinstance(data, dict):
        raise WebhookRejected("an SNS message is a JSON object")
    kind = data.get("Type")
    signed = SIGNED_FIELDS.get(kind) if isinstance(kind, str) else None
    if signed is None:
        raise WebhookRejected(f"not an SNS message type: {kind!r}")
    missing = [
        name
        for name in (*signed, *_SIGNATURE_FIELDS)
        if name not in OPTIONAL_FIELDS and not isinstance(data.get(name), str)
    ]
    if missing:
        raise WebhookRejected(f"an SNS {kind} needs {', '.join(missing)} (strings)")
    if "Subject" in data and not isinstance(data["Subject"], str):
        raise WebhookRejected("an SNS message's Subject is a string")
    return SnsMessage({name: value for name, value in data.items() if isinstance(value, str)})


def string_to_sign(message: SnsMessage) -> bytes:
    """What SNS signed for ``message``: ``name\\nvalue\\n`` for each signed field, in order."""
    parts = []
    for name in SIGNED_FIELDS[message.type]:
        value = message.get(name)
        if value is not None:
            parts.append(f"{name}\n{value}\n")
    return "".join(parts).encode("utf-8")


def sns_url_allowed(url: str, region: str, origin: str | None = None) -> bool:
    """Whether ``url`` is on SNS's own host for ``region`` over HTTPS (or on ``origin``, in tests)."""
    try:
        parts = urlsplit(url)
        port = parts.port
    except ValueError:
        return False
    if parts.username is not None or parts.password is not None or parts.hostname is None:
        return False
    if origin is not None:
        wanted = urlsplit(origin)
        return (parts.scheme, parts.hostname, port) == (wanted.scheme, wanted.hostname, wanted.port)
    if parts.scheme != "https" or port not in (None, 443):
        return False
    hosts = {f"sns.{region}.amazonaws.com"}
    if region.startswith("cn-"):
        hosts.add(f"sns.{region}.amazonaws.com.cn")
    return parts.hostname in hosts


def _topic_allowed(topic_arn: str, region: str, expected: str | None) -> bool:
    if expected is not None:
        return topic_arn == expected
    partition, _, rest = topic_arn.removeprefix("arn:").partition(":sns:")
    return topic_arn.startswith("arn:") and partition.startswith("aws") and rest.startswith(region + ":")


class CertificateCache:
    """Signing certificates by URL, fetched once each with ``fetch`` (which returns the HTTP status
    and body, or raises :class:`CertificateUnavailable`); the last :data:`CACHED_CERTIFICATES`."""

    def __init__(self, fetch: Callable[[str], Awaitable[tuple[int, bytes]]]) -> None:
        self._fetch = fetch
        self._certificates: OrderedDict[str, x509.Certificate] = OrderedDict()

    def cached(self, url: str) -> x509.Certificate | None:
        certificate = self._certificates.get(url)
        if certificate is not None:
            self._certificates.move_to_end(url)
        return certificate

    async def get(self, url: str) -> x509.Certificate:
        certificate = self.cached(url)
        if certificate is not None:
            return certificate
        status, body = await self._fetch(url)
        if status >= 500 or status == 429:
            raise CertificateUnavailable(f"the SNS signing certificate answered HTTP {status}")
        if status != 200:
            raise WebhookUnauthorized(f"no certificate at SigningCertURL (HTTP {status})")
        try:
            certificate = x509.load_pem_x509_certificate(body)
        except ValueError as exc:
            raise WebhookUnauthorized("SigningCertURL does not hold a PEM certificate") from exc
        self._certificates[url] = certificate
        while len(self._certificates) > CACHED_CERTIFICATES:
            self._certificates.popitem(last=False)
        return certificate


class SnsVerifier:
    """Checks that SNS messages come from SNS, from the expected topic, for one region."""

    def __init__(
        self,
        region: str,
        fetch: Callable[[str], Awaitable[tuple[int, bytes]]],
        *,
        topic_arn: str | None = None,
        certificate_origin: str | None = None,
    ) -> None:
        if _REGION.fullmatch(region) is None:
            raise ValueError(f"{region!r} is not an AWS region")
        self.region = region
        self.topic_arn = topic_arn
        self.certificate_origin = certificate_origin.rstrip("/") if certificate_origin else None
        self.certificates = CertificateCache(fetch)

    def url_allowed(self, url: str) -> bool:
        """Whether ``url`` is on SNS's host (for ``SigningCertURL`` and ``SubscribeURL``)."""
        return sns_url_allowed(url, self.region, self.certificate_origin)

    def message(self, request: WebhookRequest) -> SnsMessage:
        """The SNS message ``request`` carries, checked for everything but its signature: where its
        certificate and ``SubscribeURL`` are, its topic, its signature version, and that SNS's
        headers agree with it."""
        message = parse_message(request.body)
        for header, field in (("x-amz-sns-message-type", "Type"), ("x-amz-sns-topic-arn", "TopicArn")):
            given = request.header(header)
            if given is not None and given != message.get(field):
                raise WebhookRejected(f"header {header} says {given!r}, the message {message.get(field)!r}")
        if message.get("SignatureVersion") not in HASHES:
            raise WebhookUnauthorized(f"unknown SNS SignatureVersion {message.get('SignatureVersion')!r}")
        if not self.url_allowed(message.signing_cert_url) or not urlsplit(
            message.signing_cert_url
        ).path.endswith(".pem"):
            raise WebhookUnauthorized(
                f"SigningCertURL {message.signing_cert_url!r} is not an SNS certificate"
            )
        if not _topic_allowed(message.topic_arn, self.region, self.topic_arn):
            raise WebhookUnauthorized(f"messages from topic {message.topic_arn!r} are not taken here")
        subscribe_url = message.subscribe_url
        if subscribe_url is not None and not self.url_allowed(subscribe_url):
            raise WebhookUnauthorized(f"SubscribeURL {subscribe_url!r} is not on SNS's host")
        return message

    def verify_cached(self, message: SnsMessage, now: datetime | None = None) -> bool:
        """Verify the signature if the certificate is already at hand: true when it was verified,
        false when the certificate must be fetched first; :class:`WebhookUnauthorized` when it
        does not verify."""
        certificate = self.certificates.cached(message.signing_cert_url)
        if certificate is None:
            return False
        _verify(message, certificate, now)
        return True

    async def verify(self, message: SnsMessage, now: datetime | None = None) -> None:
        """Verify the signature, fetching the certificate when it is not at hand."""
        _verify(message, await self.certificates.get(message.signing_cert_url), now)


def _verify(message: SnsMessage, certificate: x509.Certificate, now: datetime | None) -> None:
    moment = now if now is not None else datetime.now(UTC)
    if not certificate.not_valid_before_utc <= moment <= certificate.not_valid_after_utc:
        start, end = certificate.not_valid_before_utc, certificate.not_valid_after_utc
        raise WebhookUnauthorized(
            f"the SNS signing certificate is not valid now (valid {start:%Y-%m-%d} to {end:%Y-%m-%d})"
        )
    key = certificate.public_key()
    if not isinstance(key, rsa.RSAPublicKey):
        raise WebhookUnauthorized("the SNS signing certificate does not hold an RSA key")
    try:
        signature = base64.b64decode(message.fields["Signature"], validate=True)
    except (binascii.Error, ValueError) as exc:
        raise WebhookUnauthorized("the SNS Signature is not base64") from exc
    digest = HASHES[message.fields["SignatureVersion"]]()
    try:
        key.verify(signature, string_to_sign(message), padding.PKCS1v15(), digest)
    except InvalidSignature as exc:
        raise WebhookUnauthorized("the SNS Signature does not match the message") from exc
