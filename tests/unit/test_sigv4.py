"""Our AWS Signature Version 4 signer against botocore's: the same request signed at the same moment
must carry the same ``Authorization``, ``X-Amz-Date``, ``X-Amz-Security-Token`` and
``X-Amz-Content-Sha256``, whatever the method, path, query, headers, body and credentials."""

from __future__ import annotations

import hashlib
from datetime import UTC, datetime, timedelta, timezone
from unittest import mock
from urllib.parse import quote

import pytest
from botocore.auth import SigV4Auth  # type: ignore[import-untyped]
from botocore.awsrequest import AWSRequest  # type: ignore[import-untyped]
from botocore.credentials import Credentials  # type: ignore[import-untyped]
from hypothesis import given, settings
from hypothesis import strategies as st

from tidings.providers import sigv4

# The example of AWS's own SigV4 test suite ("get-vanilla").
EXAMPLE_KEY = "AKIDEXAMPLE"
EXAMPLE_SECRET = "wJalrXUtnFEMI/K7MDENG+bPxRfiCYEXAMPLEKEY"
EXAMPLE_TIME = datetime(2015, 8, 30, 12, 36, tzinfo=UTC)

RESERVED = {"authorization", "date", "x-amz-date", "x-amz-security-token", "x-amz-content-sha256", "host"}


def botocore_headers(
    method: str,
    url: str,
    headers: dict[str, str],
    body: bytes,
    *,
    service: str,
    region: str,
    access_key: str,
    secret_key: str,
    session_token: str | None,
    now: datetime,
    params: dict[str, str] | None = None,
    content_sha256_header: bool = False,
) -> dict[str, str]:
    """The headers botocore's SigV4Auth gives the request, its clock stopped at ``now``."""
    request = AWSRequest(method=method, url=url, headers=dict(headers), data=body, params=params)
    if content_sha256_header:
        request.headers["X-Amz-Content-SHA256"] = hashlib.sha256(body).hexdigest()
    naive = now.astimezone(UTC).replace(tzinfo=None)
    signer = SigV4Auth(Credentials(access_key, secret_key, session_token), service, region)
    with mock.patch("botocore.auth.get_current_datetime", return_value=naive):
        signer.add_auth(request)
    return {name.lower(): value for name, value in request.headers.items()}


def lowered(headers: dict[str, str]) -> dict[str, str]:
    return {name.lower(): value for name, value in headers.items()}


def test_the_aws_test_suite_example() -> None:
    headers = sigv4.sign(
        "GET",
        "https://example.amazonaws.com/",
        {},
        b"",
        service="service",
        region="us-east-1",
        access_key=EXAMPLE_KEY,
        secret_key=EXAMPLE_SECRET,
        now=EXAMPLE_TIME,
    )
    assert headers == {
        "X-Amz-Date": "20150830T123600Z",
        "Authorization": (
            "AWS4-HMAC-SHA256 Credential=AKIDEXAMPLE/20150830/us-east-1/service/aws4_request, "
            "SignedHeaders=host;x-amz-date, "
            "Signature=5fa00fa31553b73ebf1942676e86291e8372ff2a2260956d9b8aae1d763fbf31"
        ),
    }


def test_a_naive_time_is_utc_and_an_aware_one_is_converted() -> None:
    def signed(now: datetime) -> dict[str, str]:
        return sigv4.sign(
            "GET",
            "https://h/",
            {},
            b"",
            service="ses",
            region="eu-west-1",
            access_key=EXAMPLE_KEY,
            secret_key=EXAMPLE_SECRET,
            now=now,
        )

    naive = signed(datetime(2024, 1, 1, 0, 30))
    aware = signed(datetime(2024, 1, 1, 2, 30, tzinfo=timezone(timedelta(hours=2))))
    assert naive == aware
    assert naive["X-Amz-Date"] == "20240101T003000Z"


def test_given_signature_headers_are_replaced_not_duplicated() -> None:
    headers = sigv4.sign(
        "POST",
        "https://email.eu-west-1.amazonaws.com/v2/email/outbound-emails",
        {"authorization": "old", "x-amz-date": "old", "x-amz-security-token": "old", "Accept": "*/*"},
        b"{}",
        service="ses",
        region="eu-west-1",
        access_key=EXAMPLE_KEY,
        secret_key=EXAMPLE_SECRET,
        session_token="new-token",
        now=EXAMPLE_TIME,
        content_sha256_header=True,
    )
    assert sorted(headers) == [
        "Accept",
        "Authorization",
        "X-Amz-Content-Sha256",
        "X-Amz-Date",
        "X-Amz-Security-Token",
    ]
    assert headers["X-Amz-Security-Token"] == "new-token"
    assert headers["X-Amz-Content-Sha256"] == hashlib.sha256(b"{}").hexdigest()
    assert (
        "SignedHeaders=accept;host;x-amz-content-sha256;x-amz-date;x-amz-security-token,"
        in (headers["Authorization"])
    )


def test_an_authorization_header_is_read_back() -> None:
    headers = sigv4.sign(
        "GET",
        "https://h/",
        {"X-Custom": "1"},
        b"",
        service="ses",
        region="ap-south-1",
        access_key="AKIA123",
        secret_key="s",
        now=EXAMPLE_TIME,
    )
    parsed = sigv4.parse_authorization(headers["Authorization"])
    assert parsed is not None
    assert (parsed.access_key, parsed.date, parsed.region, parsed.service) == (
        "AKIA123",
        "20150830",
        "ap-south-1",
        "ses",
    )
    assert parsed.signed_headers == ("host", "x-amz-date", "x-custom")
    assert parsed.scope == "20150830/ap-south-1/ses/aws4_request"
    assert headers["Authorization"].endswith(parsed.signature)


@pytest.mark.parametrize(
    "value",
    [
        None,
        "",
        "Basic dXNlcjpwYXNz",
        "AWS4-HMAC-SHA256 Credential=AK/2015/us-east-1/ses/aws4_request, SignedHeaders=host, Signature=ab",
        "AWS4-HMAC-SHA256 Credential=AK/20150830/us-east-1/ses/aws4_request, Signature=" + "a" * 64,
    ],
)
def test_what_is_not_a_sigv4_authorization_header(value: str | None) -> None:
    assert sigv4.parse_authorization(value) is None


def test_a_receiver_recomputes_the_signature_from_the_request_it_got() -> None:
    url = "http://127.0.0.1:8080/v2/email/outbound-emails"
    body = b'{"a": 1}'
    sent = sigv4.sign(
        "POST",
        url,
        {"Content-Type": "application/json"},
        body,
        service="ses",
        region="us-east-1",
        access_key="AK",
        secret_key="secret",
        now=EXAMPLE_TIME,
    )
    # What the server sees: the client's headers plus Host and what the client adds unsigned.
    received = [*sent.items(), ("Host", "127.0.0.1:8080"), ("User-Agent", "aiohttp"), ("Content-Length", "8")]
    parsed = sigv4.parse_authorization(sent["Authorization"])
    assert parsed is not None
    headers = sigv4.signed_headers_of(url, received, parsed.signed_headers)
    canonical = sigv4.canonical_request("POST", url, headers, sigv4.payload_hash(body))
    key = sigv4.signing_key("secret", parsed.date, parsed.region, parsed.service)
    to_sign = sigv4.string_to_sign(sent["X-Amz-Date"], parsed.scope, canonical)
    assert sigv4.signature(key, to_sign) == parsed.signature
    tampered = sigv4.canonical_request("PUT", url, headers, sigv4.payload_hash(body))
    assert sigv4.signature(key, sigv4.string_to_sign(sent["X-Amz-Date"], parsed.scope, tampered)) != (
        parsed.signature
    )


# --- against botocore ----------------------------------------------------------------------------

segments = st.one_of(
    st.sampled_from(["", ".", "..", "a b", "~user", "%", "ü", "a+b", "x=y", "v2", "a/b", "é%20"]),
    st.text(max_size=8),
)
"""Path segments before encoding: empty ones and dot segments are normalised away."""

names_and_values = st.text(max_size=10)

header_names = st.from_regex(r"\A[A-Za-z][A-Za-z0-9-]{0,12}\Z").filter(lambda n: n.lower() not in RESERVED)
header_values = st.text(
    alphabet=st.characters(min_codepoint=32, max_codepoint=126) | st.just("\t"), max_size=20
)
unsigned_names = st.sampled_from(["User-Agent", "X-Amzn-Trace-Id", "Expect", "Transfer-Encoding"])

hosts = st.sampled_from(
    [
        "email.us-east-1.amazonaws.com",
        "Email.EU-West-1.amazonaws.com",
        "127.0.0.1:8080",
        "localhost:443",
        "localhost:80",
        "[::1]:9000",
    ]
)

offsets = st.sampled_from([UTC, timezone(timedelta(hours=5, minutes=30)), timezone(timedelta(hours=-8))])
moments = st.datetimes(min_value=datetime(2000, 1, 1), max_value=datetime(2099, 12, 31), timezones=offsets)

credentials = st.fixed_dictionaries(
    {
        "service": st.from_regex(r"\A[a-z][a-z0-9-]{0,11}\Z"),
        "region": st.from_regex(r"\A[a-z]{2}(-[a-z]{2,9}){1,2}-[0-9]\Z"),
        "access_key": st.from_regex(r"\A(AKIA|ASIA)[A-Z0-9]{12,16}\Z"),
        "secret_key": st.text(alphabet=st.characters(codec="utf-8"), min_size=1, max_size=40),
        "session_token": st.none()
        | st.text(alphabet=st.characters(min_codepoint=33, max_codepoint=126), max_size=60),
    }
)


def encode_path(parts: list[str]) -> str:
    return "/" + "/".join(quote(part, safe="") for part in parts)


def every_byte_encoded(value: str, lower: bool) -> str:
    """A valid but not canonical encoding: every byte as ``%XX``, unreserved characters too."""
    pattern = "%{:02x}" if lower else "%{:02X}"
    return "".join(pattern.format(b) for b in value.encode("utf-8"))


@settings(max_examples=300, deadline=None)
@given(
    method=st.sampled_from(["GET", "POST", "PUT", "DELETE", "PATCH", "HEAD", "post"]),
    scheme=st.sampled_from(["http", "https"]),
    host=hosts,
    path=st.lists(segments, max_size=5),
    query=st.lists(st.tuples(names_and_values, names_and_values), max_size=5),
    headers=st.dictionaries(header_names, header_values, max_size=5),
    unsigned=st.dictionaries(unsigned_names, header_values, max_size=2),
    explicit_host=st.booleans(),
    body=st.binary(max_size=64),
    creds=credentials,
    now=moments,
    content_sha256_header=st.booleans(),
)
def test_same_signature_as_botocore_for_a_query_in_the_url(
    method: str,
    scheme: str,
    host: str,
    path: list[str],
    query: list[tuple[str, str]],
    headers: dict[str, str],
    unsigned: dict[str, str],
    explicit_host: bool,
    body: bytes,
    creds: dict[str, str | None],
    now: datetime,
    content_sha256_header: bool,
) -> None:
    """Repeated keys, unsorted keys and values, encoded characters: botocore signs the query of the
    URL as written, so it is written here the canonical way, and both must agree."""
    url = f"{scheme}://{host}{encode_path(path)}"
    if query:
        url += "?" + "&".join(f"{quote(k, safe='-_.~')}={quote(v, safe='-_.~')}" for k, v in query)
    given_headers = {**headers, **unsigned}
    if explicit_host:
        given_headers["Host"] = "signed.example:1234"
    session_token = creds["session_token"]
    service, region, access_key, secret_key = (
        str(creds["service"]),
        str(creds["region"]),
        str(creds["access_key"]),
        str(creds["secret_key"]),
    )
    ours = sigv4.sign(
        method,
        url,
        given_headers,
        body,
        service=service,
        region=region,
        access_key=access_key,
        secret_key=secret_key,
        session_token=session_token,
        now=now,
        content_sha256_header=content_sha256_header,
    )
    theirs = botocore_headers(
        method,
        url,
        given_headers,
        body,
        service=service,
        region=region,
        access_key=access_key,
        secret_key=secret_key,
        session_token=session_token,
        now=now,
        content_sha256_header=content_sha256_header,
    )
    mine = lowered(ours)
    assert mine["authorization"] == theirs["authorization"]
    assert mine["x-amz-date"] == theirs["x-amz-date"]
    assert mine.get("x-amz-security-token") == theirs.get("x-amz-security-token")
    assert mine.get("x-amz-content-sha256") == theirs.get("x-amz-content-sha256")
    if content_sha256_header:
        assert mine["x-amz-content-sha256"] == hashlib.sha256(body).hexdigest()
    # Nothing else changed: what was given is sent as given.
    assert {k: v for k, v in ours.items() if k in given_headers} == given_headers


@settings(max_examples=200, deadline=None)
@given(
    method=st.sampled_from(["GET", "POST", "PUT", "DELETE"]),
    host=hosts,
    path=st.lists(segments, max_size=4),
    params=st.dictionaries(names_and_values, names_and_values, max_size=5),
    lower_hex=st.booleans(),
    body=st.binary(max_size=32),
    creds=credentials,
    now=moments,
)
def test_same_signature_as_botocore_whatever_the_query_encoding(
    method: str,
    host: str,
    path: list[str],
    params: dict[str, str],
    lower_hex: bool,
    body: bytes,
    creds: dict[str, str | None],
    now: datetime,
) -> None:
    """botocore given the parameters themselves; we given a URL that encodes every byte of them
    (``%7E`` for ``~``, lower-case hex): we decode and encode again, so the signatures agree."""
    base = f"https://{host}{encode_path(path)}"
    url = base
    if params:
        url += "?" + "&".join(
            f"{every_byte_encoded(k, lower_hex)}={every_byte_encoded(v, lower_hex)}"
            for k, v in params.items()
        )
    session_token = creds["session_token"]
    service, region, access_key, secret_key = (
        str(creds["service"]),
        str(creds["region"]),
        str(creds["access_key"]),
        str(creds["secret_key"]),
    )
    ours = sigv4.sign(
        method,
        url,
        {},
        body,
        service=service,
        region=region,
        access_key=access_key,
        secret_key=secret_key,
        session_token=session_token,
        now=now,
    )
    theirs = botocore_headers(
        method,
        base,
        {},
        body,
        service=service,
        region=region,
        access_key=access_key,
        secret_key=secret_key,
        session_token=session_token,
        now=now,
        params=params,
    )
    assert lowered(ours)["authorization"] == theirs["authorization"]
    assert lowered(ours)["x-amz-date"] == theirs["x-amz-date"]
