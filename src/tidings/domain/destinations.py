"""Where tidings may post callbacks: not to itself, its machine or its private network, unless
the operator opens a range. Pure: no I/O (names are resolved by the caller).

A callback URL is chosen by an API client. Without a check, ``http://169.254.169.254/…`` (a cloud
metadata service), ``http://localhost:5432`` or a private address would make tidings a proxy into
the network it runs in, and the first bytes of the answer would be shown back. So loopback,
private, link-local, multicast, reserved and unspecified addresses are refused, checked when a URL
is accepted (literal addresses and ``localhost``) and again against each address a name resolves
to when tidings connects (so a name that later points inside, DNS rebinding, is refused too).
``callback_allow_networks`` opens what an operator needs (an application on the same private
network is a normal self-hosted setup).
"""

from __future__ import annotations

import ipaddress
from collections.abc import Sequence
from urllib.parse import urlsplit

Address = ipaddress.IPv4Address | ipaddress.IPv6Address
Network = ipaddress.IPv4Network | ipaddress.IPv6Network


def networks(cidrs: Sequence[str]) -> list[Network]:
    return [ipaddress.ip_network(c, strict=False) for c in cidrs]


def address_refusal(address: Address, allowed: Sequence[Network]) -> str | None:
    """Why tidings will not connect to ``address``, or ``None`` when it may."""
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
        address = address.ipv4_mapped
    if any(address.version == n.version and address in n for n in allowed):
        return None
    for refused, reason in (
        (address.is_unspecified, "an unspecified address"),
        (address.is_loopback, "a loopback address"),
        (address.is_link_local, "a link-local address"),
        (address.is_multicast, "a multicast address"),
        (address.is_private, "a private address"),
        (address.is_reserved, "a reserved address"),
    ):
        if refused:
            return f"{address} is {reason}"
    return None


def url_refusal(url: str, allowed: Sequence[Network]) -> str | None:
    """Why a callback may not go to ``url``, as far as can be told without resolving its name, or
    ``None``."""
    try:
        parts = urlsplit(url)
        host = parts.hostname
        parts.port  # noqa: B018 - raises ValueError for a port out of range
    except ValueError:
        return "it is not a valid URL"
    if parts.scheme not in ("http", "https") or not host:
        return "it must be an http or https URL with a host"
    try:
        address = ipaddress.ip_address(host)
    except ValueError:
        name = host.rstrip(".").lower()
        if name == "localhost" or name.endswith(".localhost"):
            return address_refusal(ipaddress.ip_address("127.0.0.1"), allowed) and f"{host} is this machine"
        return None
    return address_refusal(address, allowed)
