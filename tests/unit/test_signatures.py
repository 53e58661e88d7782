"""Callback signatures as a receiver checks them."""

from __future__ import annotations

import hashlib
import hmac

from tidings import verify_signature
from tidings.signatures import sign

BODY = b'{"type":"message.status","id":"01J","status":"delivered"}'


def test_a_signature_is_hmac_sha256_of_timestamp_dot_body() -> None:
    header = sign(BODY, "s3cret", timestamp=1_700_000_000)
    expected = hmac.new(b"s3cret", b"1700000000." + BODY, hashlib.sha256).hexdigest()
    assert header == f"t=1700000000,v1={expected}"
    assert verify_signature(BODY, header, "s3cret", now=1_700_000_100)


def test_stale_tampered_or_malformed_signatures_are_rejected() -> None:
    header = sign(BODY, "s3cret", timestamp=1_700_000_000)
    assert not verify_signature(BODY, header, "s3cret", now=1_700_000_301)  # older than 5 minutes
    assert not verify_signature(BODY, header, "s3cret", now=1_699_999_600)  # from the future
    assert verify_signature(BODY, header, "s3cret", now=1_700_000_900, tolerance=1000)
    assert not verify_signature(BODY + b" ", header, "s3cret", now=1_700_000_000)
    assert not verify_signature(BODY, header, "other", now=1_700_000_000)
    for bad in (None, "", "v1=abc", "t=notanumber,v1=abc", "t=1700000000"):
        assert not verify_signature(BODY, bad, "s3cret", now=1_700_000_000)


def test_one_of_several_signatures_may_match_during_a_secret_change() -> None:
    old = sign(BODY, "old", timestamp=1_700_000_000)
    new = sign(BODY, "new", timestamp=1_700_000_000).split("v1=")[1]
    assert verify_signature(BODY, f"{old},v1={new}", "new", now=1_700_000_000)


def test_the_package_exports_only_what_receivers_need() -> None:
    import tidings

    assert tidings.__all__ == ["verify_signature"]
    assert tidings.verify_signature is verify_signature
