"""Fake Twilio and Orange servers for the tests that need both, and the provider table that points
a service at them (with the in-process fake provider and an Android gateway beside them)."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import httpx
import pytest

from tidings.api.app import create_app
from tidings.services import Service
from tidings.testing.fake_orange import FakeOrangeServer
from tidings.testing.fake_twilio import DEFAULT_ACCOUNT_SID, DEFAULT_AUTH_TOKEN, FakeTwilioServer

OUR_NUMBER = "+15005550006"
"""The number the ``tw`` provider sends from."""
ORANGE_SENDER = "+2250000000000"


@pytest.fixture
async def twilio() -> AsyncIterator[FakeTwilioServer]:
    server = FakeTwilioServer()
    await server.start()
    try:
        yield server
    finally:
        await server.stop()


@pytest.fixture
async def orange() -> AsyncIterator[FakeOrangeServer]:
    server = FakeOrangeServer()
    await server.start()
    try:
        yield server
    finally:
        await server.stop()


def every_provider(twilio: FakeTwilioServer, orange: FakeOrangeServer) -> dict[str, Any]:
    """Providers ``fake``, ``tw`` (Twilio), ``orange`` and ``phone`` (a gateway), as settings."""
    return {
        "fake": {"kind": "fake", "latency_ms": 0, "receipt_delay_ms": 10},
        "tw": {
            "kind": "twilio",
            "account_sid": DEFAULT_ACCOUNT_SID,
            "auth_token": DEFAULT_AUTH_TOKEN,
            "from": OUR_NUMBER,
            "base_url": twilio.url,
        },
        "orange": {
            "kind": "orange",
            "webhook_allow_ips": ["127.0.0.0/8"],
            "client_id": "fake-orange-client",
            "client_secret": "fake-orange-secret",
            "sender": f"tel:{ORANGE_SENDER}",
            "base_url": orange.url,
        },
        "phone": {"kind": "gateway", "username": "phone", "password": "pw"},
    }


@pytest.fixture
async def api(service: Service, api_key: str) -> AsyncIterator[httpx.AsyncClient]:
    """An HTTP client with a valid key, over the app in process; an exception inside the app comes
    back as the 500 it answers (as an API user would see it), not as a traceback."""
    transport = httpx.ASGITransport(app=create_app(service), raise_app_exceptions=False)
    async with httpx.AsyncClient(
        transport=transport, base_url="http://tidings.test", headers={"Authorization": f"Bearer {api_key}"}
    ) as client:
        yield client
