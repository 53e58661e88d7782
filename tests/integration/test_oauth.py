"""``ClientCredentials``, the OAuth2 token cache, as the ``auth`` of an HTTP adapter, against a
token endpoint and an API on 127.0.0.1. Time is a clock the test moves, so no test sleeps out a
token's lifetime."""

from __future__ import annotations

import asyncio
import base64
import logging
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from typing import Any

import pytest
from aiohttp import web

from tests.scripted_api import ScriptedApi, answer, running, scripted_api
from tidings.config import ProviderSettings
from tidings.domain.content import SmsContent
from tidings.errors import PermanentProviderError, TemporaryProviderError
from tidings.providers.base import OutboundMessage, ProviderContext, SendResult
from tidings.providers.http import Answer, HttpProvider, HttpRequest
from tidings.providers.oauth import REFUSED_PAUSE, ClientCredentials

CLIENT_ID, CLIENT_SECRET = "client-1", "s3cret"
NAME = "ex"


class Clock:
    """Monotonic seconds that move only when the test says."""

    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


@dataclass
class TokenEndpoint:
    """An OAuth2 client-credentials token endpoint and an API that takes its tokens."""

    api: ScriptedApi
    expires_in: Any = 3600
    """``None``: the answer has no ``expires_in``."""
    delay: float = 0.0
    refuse: dict[str, Any] | None = None
    """A 4xx ``(status, body)`` to answer instead of a token."""
    unavailable: bool = False
    issued: list[str] = field(default_factory=list)
    valid: set[str] = field(default_factory=set)

    async def token(self, request: web.Request) -> web.Response:
        form = await request.post()
        expected = "Basic " + base64.b64encode(f"{CLIENT_ID}:{CLIENT_SECRET}".encode()).decode()
        if request.headers.get("Authorization") != expected or form.get("grant_type") != "client_credentials":
            return web.json_response({"error": "invalid_request"}, status=400)
        if self.delay:
            await asyncio.sleep(self.delay)
        if self.unavailable:
            return web.json_response(
                {"message": "down for maintenance"}, status=503, headers={"Retry-After": "30"}
            )
        if self.refuse is not None:
            return web.json_response(self.refuse["body"], status=self.refuse["status"])
        token = f"t{len(self.issued) + 1}"
        self.issued.append(token)
        self.valid.add(token)
        answer: dict[str, Any] = {"access_token": token, "token_type": "Bearer"}
        if self.expires_in is not None:
            answer["expires_in"] = self.expires_in
        return web.json_response(answer)

    async def sms(self, request: web.Request) -> web.Response:
        if request.headers.get("Authorization", "").removeprefix("Bearer ") not in self.valid:
            return web.json_response({"code": 42, "message": "Expired credentials"}, status=401)
        return web.json_response({"id": f"sms-{self.api.hits('/sms')}"}, status=201)

    def bearer_tokens(self) -> list[str]:
        """The tokens the API was called with, in order."""
        return [s.headers["Authorization"].removeprefix("Bearer ") for s in self.api.seen if s.path == "/sms"]


class ExampleSettings(ProviderSettings):
    kind: str = "example"
    base_url: str


class ExampleProvider(HttpProvider):
    """An adapter whose API takes OAuth2 tokens."""

    kind = "example"
    settings_model = ExampleSettings
    service = "the Example API"

    settings: ExampleSettings

    def build_send(self, message: OutboundMessage) -> HttpRequest:
        return HttpRequest("POST", f"{self.settings.base_url}/sms", json={"to": message.to})

    def parse_sent(self, answer: Answer) -> SendResult:
        return SendResult(provider_message_ids=(str(answer.data["id"]),), raw=answer.data)


MESSAGE = OutboundMessage(
    id="m-1",
    to="+14155550123",
    sender=None,
    attempt=1,
    content=SmsContent("hi", segments=1, encoding="GSM-7"),
)


@pytest.fixture
async def endpoint() -> AsyncIterator[TokenEndpoint]:
    async with scripted_api() as api:
        endpoint = TokenEndpoint(api)
        api.route("POST", "/oauth/token", endpoint.token)
        api.route("POST", "/sms", endpoint.sms)
        yield endpoint


@pytest.fixture
def clock() -> Clock:
    return Clock()


@pytest.fixture
async def provider(endpoint: TokenEndpoint, clock: Clock) -> AsyncIterator[ExampleProvider]:
    async with running(build(endpoint, clock)) as provider:
        yield provider


def build(endpoint: TokenEndpoint, clock: Clock, **settings: Any) -> ExampleProvider:
    values = {"kind": "example", "base_url": endpoint.api.url, "timeout_seconds": 5, **settings}
    provider = ExampleProvider(
        NAME,
        ExampleSettings.model_validate(values),
        ProviderContext(base_url="http://tidings.test"),
    )
    provider.auth = credentials(provider, clock)
    return provider


def credentials(provider: ExampleProvider, clock: Clock, margin: float = 60.0) -> ClientCredentials:
    return ClientCredentials(
        provider.call,
        token_url=f"{provider.settings.base_url}/oauth/token",
        client_id=CLIENT_ID,
        client_secret=CLIENT_SECRET,
        issuer="Example",
        provider=NAME,
        margin=margin,
        clock=clock,
    )


def cache(provider: ExampleProvider) -> ClientCredentials:
    assert isinstance(provider.auth, ClientCredentials)
    return provider.auth


# -- one token for everyone ------------------------------------------------------------------------


async def test_the_token_request_is_client_credentials_with_http_basic(
    endpoint: TokenEndpoint, provider: ExampleProvider
) -> None:
    assert await cache(provider).token() == "t1"
    [seen] = endpoint.api.seen
    assert seen.body == b"grant_type=client_credentials"
    assert seen.headers["Content-Type"] == "application/x-www-form-urlencoded"
    assert seen.headers["Accept"] == "application/json"


async def test_concurrent_sends_share_one_token_request(
    endpoint: TokenEndpoint, provider: ExampleProvider
) -> None:
    endpoint.delay = 0.1  # every caller arrives while the first request is in flight
    results = await asyncio.gather(*(provider.send(MESSAGE) for _ in range(20)))
    assert len(results) == 20
    assert endpoint.issued == ["t1"]
    assert endpoint.bearer_tokens() == ["t1"] * 20


async def test_a_token_is_renewed_margin_seconds_before_it_expires(
    endpoint: TokenEndpoint, provider: ExampleProvider, clock: Clock
) -> None:
    endpoint.expires_in = 100
    provider.auth = credentials(provider, clock, margin=30)
    tokens = cache(provider)
    assert await tokens.token() == "t1"
    clock.now += 69.9
    assert await tokens.token() == "t1"
    clock.now += 0.1
    assert await tokens.token() == "t2"
    assert endpoint.issued == ["t1", "t2"]


@pytest.mark.parametrize(
    ("expires_in", "margin", "kept"),
    [
        (10, 60.0, 5.0),  # the margin is at most half the lifetime
        (None, 60.0, 3540.0),  # no expires_in: an hour
        ("soon", 0.0, 3600.0),  # an unreadable expires_in: an hour
    ],
)
async def test_how_long_a_token_is_kept(
    endpoint: TokenEndpoint,
    provider: ExampleProvider,
    clock: Clock,
    expires_in: Any,
    margin: float,
    kept: float,
) -> None:
    endpoint.expires_in = expires_in
    tokens = credentials(provider, clock, margin)
    assert await tokens.token() == "t1"
    clock.now += kept - 0.01
    assert await tokens.token() == "t1"
    clock.now += 0.01
    assert await tokens.token() == "t2"


# -- a token the API refuses -----------------------------------------------------------------------


async def test_a_401_from_the_api_gets_one_new_token_and_one_more_try(
    endpoint: TokenEndpoint, provider: ExampleProvider
) -> None:
    await provider.send(MESSAGE)
    endpoint.valid.clear()  # the API forgets t1 before it expires
    result = await provider.send(MESSAGE)
    assert result.provider_message_ids == ("sms-3",)
    assert endpoint.issued == ["t1", "t2"]
    assert endpoint.bearer_tokens() == ["t1", "t1", "t2"]


async def test_a_second_401_is_the_answer_not_another_retry(
    endpoint: TokenEndpoint, provider: ExampleProvider
) -> None:
    endpoint.api.route("POST", "/sms", answer(401, {"code": 42, "message": "Expired credentials"}))
    with pytest.raises(PermanentProviderError) as caught:
        await provider.send(MESSAGE)
    assert caught.value.code == "http_401"
    assert endpoint.issued == ["t1", "t2"]
    assert endpoint.api.hits("/sms") == 2


async def test_invalidate_forgets_only_the_token_it_names(
    endpoint: TokenEndpoint, provider: ExampleProvider
) -> None:
    tokens = cache(provider)
    assert await tokens.token() == "t1"
    tokens.invalidate("not-a-token-we-have")
    assert await tokens.token() == "t1"
    tokens.invalidate("t1")
    assert await tokens.token() == "t2"
    # A caller late with its 401 for t1 does not throw away t2, which another caller fetched.
    tokens.invalidate("t1")
    assert await tokens.token() == "t2"
    assert endpoint.issued == ["t1", "t2"]


# -- a token endpoint that says no -----------------------------------------------------------------


@pytest.mark.parametrize(
    ("refusal", "code"),
    [
        (
            {"status": 401, "body": {"error": "invalid_client", "error_description": "Bad credentials"}},
            "invalid_client",
        ),
        (
            {"status": 400, "body": {"error": "invalid_scope", "error_description": "Bad credentials"}},
            "invalid_scope",
        ),
    ],
)
async def test_refused_credentials_wait_out_a_pause_before_the_endpoint_is_asked_again(
    endpoint: TokenEndpoint,
    provider: ExampleProvider,
    clock: Clock,
    caplog: pytest.LogCaptureFixture,
    refusal: dict[str, Any],
    code: str,
) -> None:
    endpoint.refuse = refusal
    with caplog.at_level(logging.ERROR, logger="tidings.providers.oauth"):
        with pytest.raises(TemporaryProviderError) as caught:
            await provider.send(MESSAGE)
    assert (caught.value.code, caught.value.message) == (
        code,
        "Example refused the credentials: Bad credentials",
    )
    assert caught.value.raw == refusal["body"]
    assert [r.levelname for r in caplog.records] == ["ERROR"]
    assert endpoint.api.hits("/oauth/token") == 1 and endpoint.api.hits("/sms") == 0

    clock.now += REFUSED_PAUSE - 0.01
    for _ in range(3):
        with pytest.raises(TemporaryProviderError) as again:
            await provider.send(MESSAGE)
        assert again.value.code == code and again.value is not caught.value
    assert endpoint.api.hits("/oauth/token") == 1

    clock.now += 0.01
    endpoint.refuse = None  # the operator fixed the credentials
    assert (await provider.send(MESSAGE)).provider_message_ids == ("sms-1",)
    assert endpoint.api.hits("/oauth/token") == 2


async def test_an_unavailable_token_endpoint_is_temporary_and_asked_again_at_once(
    endpoint: TokenEndpoint, provider: ExampleProvider
) -> None:
    endpoint.unavailable = True
    for _ in range(2):
        with pytest.raises(TemporaryProviderError) as caught:
            await provider.send(MESSAGE)
        assert caught.value.code == "token_unavailable"
        assert caught.value.retry_after == 30.0
        assert caught.value.message == "the Example token endpoint is unavailable: down for maintenance"
    assert endpoint.api.hits("/oauth/token") == 2


async def test_a_token_endpoint_that_does_not_answer_is_a_timeout(
    endpoint: TokenEndpoint, clock: Clock
) -> None:
    async def never(_request: web.Request) -> web.Response:
        await endpoint.api.release.wait()
        return web.Response(status=200)

    endpoint.api.route("POST", "/oauth/token", never)
    async with running(build(endpoint, clock, timeout_seconds=0.3)) as provider:
        with pytest.raises(TemporaryProviderError) as caught:
            await provider.send(MESSAGE)
    assert caught.value.code == "timeout"
    assert caught.value.message == "the Example token endpoint did not answer within 0.3 s"
    assert endpoint.api.hits("/sms") == 0
