"""What each API key may do, how fast, and test keys whose messages never reach a real provider."""

from __future__ import annotations

import httpx
import pytest

from tests.live import live_service
from tidings.api.app import create_app
from tidings.services import Service
from tidings.services.accepting import TEST_PROVIDER
from tidings.store.keys import ALL_SCOPES

PERSON = "+254712345678"


def auth(secret: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {secret}"}


@pytest.mark.parametrize(
    ("scopes", "allowed"),
    [
        ({"send"}, {"send", "cancel"}),
        ({"read"}, {"list", "get", "log", "inbound", "callbacks", "gateways", "opt-outs", "settings"}),
        ({"admin"}, {"opt-out", "callback-url", "rotate"}),
        (set(ALL_SCOPES), {"*"}),
    ],
)
async def test_a_key_may_do_only_what_its_scopes_say(
    database_url: str, scopes: set[str], allowed: set[str]
) -> None:
    async with live_service(database_url, worker=False) as live:
        _key, secret = await live.service.store.keys.create("scoped", scopes=frozenset(scopes))
        message = await live.send(to=PERSON, body="x", send_at="2100-01-01T00:00:00Z")
        calls = {
            "send": ("POST", "/v1/messages", {"to": PERSON, "body": "hi"}),
            "cancel": ("POST", f"/v1/messages/{message['id']}/cancel", None),
            "list": ("GET", "/v1/messages", None),
            "get": ("GET", f"/v1/messages/{message['id']}", None),
            "log": ("GET", "/v1/log", None),
            "inbound": ("GET", "/v1/inbound", None),
            "callbacks": ("GET", "/v1/callbacks", None),
            "gateways": ("GET", "/v1/gateways", None),
            "opt-outs": ("GET", "/v1/opt-outs", None),
            "settings": ("GET", "/v1/callback-settings", None),
            "opt-out": ("POST", "/v1/opt-outs", {"number": "+254700000009"}),
            "callback-url": ("PUT", "/v1/callback-settings", {"url": None}),
            "rotate": ("POST", "/v1/callback-settings/rotate-secret", None),
        }
        async with httpx.AsyncClient(base_url=live.url, headers=auth(secret)) as client:
            for name, (method, path, body) in calls.items():
                response = await client.request(method, path, json=body)
                if name in allowed or "*" in allowed:
                    assert response.status_code < 400, (name, response.text)
                else:
                    assert response.status_code == 403, (name, response.text)
                    assert response.json()["error"]["code"] == "insufficient_scope"


async def test_a_key_over_its_rate_gets_429_with_retry_after(service: Service) -> None:
    # The rate is per second of the key checker's clock: held still here, so that a slow machine
    # cannot spread the five requests over more than one second.
    app = create_app(service)
    now = [1000.0]
    app.state.keys.clock = lambda: now[0]
    _key, secret = await service.store.keys.create("slow", rate_limit=3)
    _other, other = await service.store.keys.create("other")
    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(transport=transport, base_url="http://tidings.test") as client:
        answers = [await client.get("/v1/messages", headers=auth(secret)) for _ in range(5)]
        assert [a.status_code for a in answers[:3]] == [200, 200, 200]
        refused = answers[3]
        assert refused.status_code == 429 and refused.json()["error"]["code"] == "rate_limited"
        assert refused.headers["retry-after"] == "1"
        # Another key is not slowed by it.
        assert (await client.get("/v1/messages", headers=auth(other))).status_code == 200


async def test_a_test_keys_messages_only_reach_the_fake_provider(database_url: str) -> None:
    settings = {
        "providers": {
            "tw": {
                "kind": "twilio",
                "account_sid": "AC" + "0" * 32,
                "auth_token": "x",
                "from": "+15005550006",
                # Nothing listens here: a message that reached it would fail.
                "base_url": "http://127.0.0.1:9",
            }
        },
        "default_provider": "tw",
    }
    async with live_service(database_url, **settings) as live:
        _key, secret = await live.service.store.keys.create("sandbox", test=True)
        assert secret.startswith("tdg_test_")
        async with httpx.AsyncClient(base_url=live.url, headers=auth(secret)) as client:
            posted = await client.post("/v1/messages", json={"to": PERSON, "body": "hi", "provider": "tw"})
        assert posted.status_code == 202, posted.text
        sent = posted.json()
        assert sent["provider"] == TEST_PROVIDER and sent["route"] == [TEST_PROVIDER]
        delivered = await live.wait_for(sent["id"], "delivered")
        assert delivered["provider_message_id"].startswith("FK")
