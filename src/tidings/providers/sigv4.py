"""AWS Signature Version 4: the ``Authorization`` header every AWS API request carries.

:func:`sign` takes a request (method, URL, headers, body) and the credentials, and returns the
headers to send with it: the given ones plus ``X-Amz-Date``, ``X-Amz-Security-Token`` (with
temporary credentials), ``X-Amz-Content-Sha256`` (when asked) and ``Authorization``. The steps
are AWS's:

1. The *canonical request*: the method; the URL's path with dot segments and empty segments
   removed, then URI-encoded again (every service but S3 signs the path encoded twice); the query
   parameters decoded, encoded the RFC 3986 way (only ``A-Z a-z 0-9 - _ . ~`` left as they are),
   sorted by name then value; every header to sign (all given ones except those a proxy may
   change, such as ``User-Agent``; ``Host`` from the URL when not given) in lower case with runs
   of white space in the value folded to one space, sorted; their names; and the hex SHA-256 of
   the body.
2. The *string to sign*: ``AWS4-HMAC-SHA256``, the time (``YYYYMMDDTHHMMSSZ``), the scope
   (``date/region/service/aws4_request``) and the hex SHA-256 of the canonical request.
3. The *signing key*: HMAC-SHA256 chained from ``"AWS4" + secret`` over the date, the region, the
   service and ``aws4_request``; the signature is the hex HMAC of the string to sign with it.

The pieces are public so that a server (``testing/fake_ses.py``) can check a signature it is
given: :func:`parse_authorization` reads the header, :func:`canonical_request` and
:func:`signature` compute what it should be. ``tests/unit/test_sigv4.py`` checks every step
against botocore's own signer.
"""

from __future__ import annotations

import hashlib
import hmac
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from urllib.parse import quote, unquote, urlsplit

__all__ = [
    "ALGORITHM",
    "Authorization",
    "canonical_request",
    "parse_authorization",
    "payload_hash",
    "sign",
    "signature",
    "signed_headers_of",
    "signing_key",
    "string_to_sign",
]

ALGORITHM = "AWS4-HMAC-SHA256"
TIME_FORMAT = "%Y%m%dT%H%M%SZ"

UNSIGNED_HEADERS = frozenset(
    {
        "authorization",
        "baggage",
        "connection",
        "expect",
        "keep-alive",
        "proxy-authenticate",
        "proxy-authorization",
        "te",
        "traceparent",
        "tracestate",
        "trailer",
        "transfer-encoding",
        "upgrade",
        "user-agent",
        "x-amzn-trace-id",
    }
)
"""Headers never signed: hop-by-hop ones and those a proxy or tracer may add or change."""

_DEFAULT_PORTS = {"http": 80, "https": 443}


def payload_hash(body: bytes) -> str:
    """The hex SHA-256 of a request body (of ``b""`` for a request without one)."""
    return hashlib.sha256(body).hexdigest()


def _encode(value: str) -> str:
    """RFC 3986 encoding: everything but ``A-Z a-z 0-9 - _ . ~`` as ``%XX`` of its UTF-8 bytes."""
    return quote(value, safe="-_.~")


def _canonical_path(path: str) -> str:
    """The path with ``.`` and ``..`` segments resolved and empty segments dropped, encoded again."""
    if not path:
        return "/"
    kept: list[str] = []
    for segment in path.split("/"):
        if segment == "..":
            if kept:
                kept.pop()
        elif segment and segment != ".":
            kept.append(segment)
    leading = "/" if path.startswith("/") else ""
    trailing = "/" if path.endswith("/") and kept else ""
    return quote(leading + "/".join(kept) + trailing, safe="/~")


def _canonical_query(query: str) -> str:
    """The query string's parameters decoded, encoded the RFC 3986 way and sorted."""
    if not query:
        return ""
    pairs = []
    for item in query.split("&"):
        name, _, value = item.partition("=")
        pairs.append((_encode(unquote(name)), _encode(unquote(value))))
    return "&".join(f"{name}={value}" for name, value in sorted(pairs))


def _host(url: str) -> str:
    """The ``Host`` header an HTTP client sends for ``url``: lower case, without a default port."""
    parts = urlsplit(url)
    host = parts.hostname or ""
    if ":" in host:
        host = f"[{host}]"
    if parts.port is not None and parts.port != _DEFAULT_PORTS.get(parts.scheme):
        host = f"{host}:{parts.port}"
    return host


def _signed_headers(url: str, headers: Iterable[tuple[str, str]]) -> dict[str, list[str]]:
    """The headers to sign, by lower-case name, each with its values in the order given."""
    found: dict[str, list[str]] = {}
    for name, value in headers:
        lowered = name.lower()
        if lowered not in UNSIGNED_HEADERS:
            found.setdefault(lowered, []).append(value)
    if "host" not in found:
        found["host"] = [_host(url)]
    return found


def canonical_request(method: str, url: str, headers: Mapping[str, list[str]], content_sha256: str) -> str:
    """The canonical request of step 1. ``headers`` are the ones signed, by lower-case name."""
    parts = urlsplit(url)
    names = sorted(headers)
    canonical_headers = "".join(
        f"{name}:{','.join(' '.join(value.split()) for value in headers[name])}\n" for name in names
    )
    return "\n".join(
        [
            method.upper(),
            _canonical_path(parts.path),
            _canonical_query(parts.query),
            canonical_headers,
            ";".join(names),
            content_sha256,
        ]
    )


def string_to_sign(timestamp: str, scope: str, canonical: str) -> str:
    """The string to sign of step 2: ``timestamp`` is ``YYYYMMDDTHHMMSSZ``."""
    digest = hashlib.sha256(canonical.encode("utf-8")).hexdigest()
    return f"{ALGORITHM}\n{timestamp}\n{scope}\n{digest}"


def signing_key(secret_key: str, date: str, region: str, service: str) -> bytes:
    """The key of step 3, for one day (``YYYYMMDD``), region and service."""
    key = f"AWS4{secret_key}".encode()
    for part in (date, region, service, "aws4_request"):
        key = hmac.new(key, part.encode("utf-8"), hashlib.sha256).digest()
    return key


def signature(key: bytes, to_sign: str) -> str:
    """The hex signature of ``to_sign`` with a :func:`signing_key`."""
    return hmac.new(key, to_sign.encode("utf-8"), hashlib.sha256).hexdigest()


def sign(
    method: str,
    url: str,
    headers: Mapping[str, str],
    body: bytes,
    *,
    service: str,
    region: str,
    access_key: str,
    secret_key: str,
    session_token: str | None = None,
    now: datetime | None = None,
    content_sha256_header: bool = False,
) -> dict[str, str]:
    """The headers to send ``body`` to ``url`` with: ``headers`` plus the signature's own.

    ``url`` must be exactly what goes on the wire (its path and query already percent-encoded);
    ``now`` is the signing time (default now; a naive one is taken as UTC). A ``Host`` header is
    signed as given, else as the HTTP client will send it (from ``url``). An ``Authorization``
    or ``X-Amz-Date`` in ``headers`` is replaced, and so is ``X-Amz-Security-Token`` when
    ``session_token`` is given (an empty one is none). ``content_sha256_header`` adds (and signs)
    ``X-Amz-Content-Sha256``, which S3 requires and other services accept.
    """
    moment = now if now is not None else datetime.now(UTC)
    if moment.tzinfo is not None:
        moment = moment.astimezone(UTC)
    timestamp = moment.strftime(TIME_FORMAT)
    replaced = {"authorization", "x-amz-date"}
    if session_token:
        replaced.add("x-amz-security-token")
    if content_sha256_header:
        replaced.add("x-amz-content-sha256")
    out = {name: value for name, value in headers.items() if name.lower() not in replaced}
    out["X-Amz-Date"] = timestamp
    if session_token:
        out["X-Amz-Security-Token"] = session_token
    content_sha256 = payload_hash(body)
    if content_sha256_header:
        out["X-Amz-Content-Sha256"] = content_sha256
    signed = _signed_headers(url, out.items())
    scope = f"{timestamp[:8]}/{region}/{service}/aws4_request"
    canonical = canonical_request(method, url, signed, content_sha256)
    key = signing_key(secret_key, timestamp[:8], region, service)
    value = signature(key, string_to_sign(timestamp, scope, canonical))
    out["Authorization"] = (
        f"{ALGORITHM} Credential={access_key}/{scope}, "
        f"SignedHeaders={';'.join(sorted(signed))}, Signature={value}"
    )
    return out


@dataclass(frozen=True)
class Authorization:
    """What a SigV4 ``Authorization`` header says."""

    access_key: str
    date: str
    region: str
    service: str
    signed_headers: tuple[str, ...]
    signature: str

    @property
    def scope(self) -> str:
        return f"{self.date}/{self.region}/{self.service}/aws4_request"


_AUTHORIZATION = re.compile(
    re.escape(ALGORITHM)
    + r" +Credential=(?P<key>[^/,\s]+)/(?P<date>[0-9]{8})/(?P<region>[^/,\s]+)/(?P<service>[^/,\s]+)"
    r"/aws4_request *, *SignedHeaders=(?P<headers>[a-z0-9!#$%&'*+.^_`|~-]+(?:;[a-z0-9!#$%&'*+.^_`|~-]+)*)"
    r" *, *Signature=(?P<signature>[0-9a-f]{64})"
)


def parse_authorization(value: str | None) -> Authorization | None:
    """The parts of a SigV4 ``Authorization`` header; ``None`` when it is not one."""
    match = _AUTHORIZATION.fullmatch((value or "").strip())
    if match is None:
        return None
    return Authorization(
        access_key=match["key"],
        date=match["date"],
        region=match["region"],
        service=match["service"],
        signed_headers=tuple(match["headers"].split(";")),
        signature=match["signature"],
    )


def signed_headers_of(
    url: str, headers: Iterable[tuple[str, str]], names: Iterable[str]
) -> dict[str, list[str]]:
    """The values of the headers ``names`` (lower case) in a request a server received, for
    :func:`canonical_request`. ``host`` comes from ``url`` when the request has none; a name the
    request does not have gets no values (and the signature will not match)."""
    present: dict[str, list[str]] = {}
    for name, value in headers:
        present.setdefault(name.lower(), []).append(value)
    if "host" not in present:
        present["host"] = [_host(url)]
    return {name: present.get(name, []) for name in names}
