"""Where a webhook came from, and what of it is kept in the log."""

from __future__ import annotations

import ipaddress

import pytest

from tidings.config import ProviderSettings, Settings
from tidings.services.webhooks import client_address, redact_url
from tidings.store.webhooks import redact_headers

PROXIES = [ipaddress.ip_network("127.0.0.1/32"), ipaddress.ip_network("10.0.0.0/8")]


@pytest.mark.parametrize(
    ("peer", "forwarded", "expected"),
    [
        ("203.0.113.5", None, "203.0.113.5"),
        # Not from a trusted proxy: the header is anyone's to write, and ignored.
        ("203.0.113.5", "10.9.9.9", "203.0.113.5"),
        ("127.0.0.1", "198.51.100.7", "198.51.100.7"),
        # Through two trusted proxies: the first untrusted hop from the right is the client.
        ("127.0.0.1", "198.51.100.7, 10.1.1.1", "198.51.100.7"),
        # A client that writes its own X-Forwarded-For cannot hide behind it.
        ("127.0.0.1", "10.0.0.1, 198.51.100.7, 10.1.1.1", "198.51.100.7"),
        ("127.0.0.1", "not-an-ip", "not-an-ip"),
        ("127.0.0.1", "", "127.0.0.1"),
        (None, "198.51.100.7", None),
    ],
)
def test_client_address(peer: str | None, forwarded: str | None, expected: str | None) -> None:
    assert client_address(peer, forwarded, PROXIES) == expected


def test_forwarded_for_is_ignored_when_no_proxy_is_trusted() -> None:
    assert client_address("127.0.0.1", "198.51.100.7", []) == "127.0.0.1"


def test_credentials_are_not_logged() -> None:
    headers = redact_headers(
        {"Authorization": "Basic abc", "Cookie": "s=1", "X-Twilio-Signature": "sig", "Content-Type": "x"}
    )
    assert headers == {"x-twilio-signature": "sig", "content-type": "x"}
    assert redact_url("https://t.example/webhooks/orange/o/delivery?token=s3cret&x=1") == (
        "https://t.example/webhooks/orange/o/delivery?token=%2A%2A%2A&x=1"
    )
    assert redact_url("https://t.example/a") == "https://t.example/a"


def test_allowlists_and_proxies_must_be_networks() -> None:
    assert ProviderSettings(kind="x", webhook_allow_ips=["10.1.2.3/8"]).webhook_allow_ips == ["10.0.0.0/8"]
    with pytest.raises(ValueError, match="not an IP address"):
        ProviderSettings(kind="x", webhook_allow_ips=["example.com"])
    with pytest.raises(ValueError, match="not an IP address"):
        Settings.model_validate({"trusted_proxies": ["10.0.0.0/33"]})
