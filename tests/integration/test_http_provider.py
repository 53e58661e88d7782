"""The send pipeline of ``HttpProvider``, driven through a small adapter against a real HTTP server
on 127.0.0.1: the hooks, the answer, error classification, timeouts, refused connections and who
owns the session. The Pigeon example of ``providers/ADDING.md`` is loaded and sent through too."""

from __future__ import annotations

import asyncio
import importlib.util
import re
import sys
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import aiohttp
import orjson
import pytest
from aiohttp import web

import tidings.providers
from tests.live import free_port
from tests.scripted_api import ScriptedApi, answer, running, scripted_api
from tidings.clock import utcnow
from tidings.config import ProviderSettings
from tidings.domain.content import SmsContent
from tidings.domain.reports import Report
from tidings.domain.status import Status
from tidings.errors import PermanentProviderError, ProviderError, TemporaryProviderError
from tidings.providers.base import OutboundMessage, PollRequest, ProviderContext, SendResult
from tidings.providers.http import Answer, HttpProvider, HttpRequest

KEY = "parrot-key"


class ParrotSettings(ProviderSettings):
    kind: str = "parrot"
    base_url: str


class ParrotProvider(HttpProvider):
    """The smallest adapter: JSON in, ``{"id": …}`` out, the base's error classification."""

    kind = "parrot"
    settings_model = ParrotSettings
    service = "Parrot"
    can_poll = True

    settings: ParrotSettings

    def headers(self) -> dict[str, str]:
        return {"X-Key": KEY}

    def build_send(self, message: OutboundMessage) -> HttpRequest:
        body = {"to": message.to, "text": message.sms.text, "ref": message.id}
        return HttpRequest("POST", f"{self.settings.base_url}/messages", json=body)

    def parse_sent(self, answer: Answer) -> SendResult:
        return SendResult(provider_message_ids=(str(answer.data["id"]),), raw=answer.data)

    def build_poll(self, message: PollRequest) -> HttpRequest:
        return HttpRequest("GET", f"{self.settings.base_url}/messages/{message.provider_message_id}")

    def parse_poll(self, answer: Answer) -> Report | None:
        word = answer.data.get("status")
        return Report(
            status=Status.DELIVERED if word == "delivered" else None,
            source=f"provider:{self.name}",
            occurred_at=utcnow(),
            provider_status=str(word),
        )


def build(url: str, session: aiohttp.ClientSession | None = None, **settings: Any) -> ParrotProvider:
    values = {"kind": "parrot", "base_url": url, "timeout_seconds": 5, **settings}
    context = ProviderContext(base_url="http://tidings.test", session=session)
    return ParrotProvider("parrot", ParrotSettings.model_validate(values), context)


def message(to: str = "+14155550123", text: str = "hello") -> OutboundMessage:
    return OutboundMessage(
        id="msg-1", to=to, sender=None, attempt=1, content=SmsContent(text=text, segments=1, encoding="GSM-7")
    )


@pytest.fixture
async def api() -> AsyncIterator[ScriptedApi]:
    async with scripted_api() as api:
        yield api


@pytest.fixture
async def parrot(api: ScriptedApi) -> AsyncIterator[ParrotProvider]:
    async with running(build(api.url)) as provider:
        yield provider


# -- the pipeline ----------------------------------------------------------------------------------


async def test_a_send_is_built_called_and_parsed_by_the_hooks(
    api: ScriptedApi, parrot: ParrotProvider
) -> None:
    api.route("POST", "/messages", answer(201, {"id": "P-1", "status": "queued"}))
    result = await parrot.send(message(text="héllo"))

    assert result.provider_message_ids == ("P-1",)
    assert result.raw == {"id": "P-1", "status": "queued"}
    [seen] = api.seen
    assert seen.headers["X-Key"] == KEY
    assert seen.headers["Content-Type"] == "application/json"
    assert orjson.loads(seen.body) == {"to": "+14155550123", "text": "héllo", "ref": "msg-1"}


async def test_a_form_body_and_request_headers_go_out_as_given(
    api: ScriptedApi, parrot: ParrotProvider
) -> None:
    api.route("POST", "/form", answer(200, {}))
    request = HttpRequest("POST", f"{api.url}/form", headers={"X-Key": "override"}, form={"a": "1 2"})
    assert (await parrot.call(request)).status == 200
    [seen] = api.seen
    assert seen.body == b"a=1+2"
    assert seen.headers["Content-Type"] == "application/x-www-form-urlencoded"
    assert seen.headers["X-Key"] == "override"


@pytest.mark.parametrize(
    ("body", "data"),
    [
        (b'{"id": "x"}', {"id": "x"}),
        (b"", {}),
        (b"[1, 2]", {"body": [1, 2]}),
        (b'"just a string"', {"body": "just a string"}),
        (b"<html>Bad gateway</html>", {"body": "<html>Bad gateway</html>"}),
        (b"x" * 600, {"body": "x" * 500}),
    ],
)
async def test_an_answer_that_is_not_a_json_object_is_kept_as_its_body(
    api: ScriptedApi, parrot: ParrotProvider, body: bytes, data: dict[str, Any]
) -> None:
    async def raw(_request: web.Request) -> web.Response:
        return web.Response(status=502, body=body)

    api.route("GET", "/raw", raw)
    got = await parrot.call(HttpRequest("GET", f"{api.url}/raw"))
    assert (got.status, got.data) == (502, data)


async def test_answer_headers_are_case_insensitive(api: ScriptedApi, parrot: ParrotProvider) -> None:
    api.route("GET", "/h", answer(200, {}, headers={"location": "/there", "retry-after": "4"}))
    got = await parrot.call(HttpRequest("GET", f"{api.url}/h"))
    assert got.headers.get("Location") == "/there"
    assert got.retry_after == 4.0


# -- classification --------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("status", "headers", "retry_after"),
    [
        (429, {"Retry-After": "7"}, 7.0),
        (429, {"Retry-After": "Thu, 01 Jan 1970 00:00:00 GMT"}, 0.0),
        (429, {"Retry-After": "later"}, None),
        (500, {}, None),
        (503, {"Retry-After": "2"}, 2.0),
    ],
)
async def test_429_and_5xx_are_temporary_with_the_providers_retry_after(
    api: ScriptedApi, parrot: ParrotProvider, status: int, headers: dict[str, str], retry_after: float | None
) -> None:
    api.route("POST", "/messages", answer(status, {"message": "slow down"}, headers))
    with pytest.raises(TemporaryProviderError) as caught:
        await parrot.send(message())
    error = caught.value
    assert (error.code, error.message, error.retry_after) == (f"http_{status}", "slow down", retry_after)
    assert error.raw == {"message": "slow down"}


@pytest.mark.parametrize("status", [400, 401, 403, 404, 409, 422])
async def test_any_other_refusal_is_permanent(api: ScriptedApi, parrot: ParrotProvider, status: int) -> None:
    api.route("POST", "/messages", answer(status, None, {"Retry-After": "5"}))
    with pytest.raises(PermanentProviderError) as caught:
        await parrot.send(message())
    assert (caught.value.code, caught.value.message) == (f"http_{status}", f"HTTP {status}")


async def test_an_answer_in_no_sent_status_is_a_refusal(api: ScriptedApi, parrot: ParrotProvider) -> None:
    api.route("POST", "/messages", answer(202, {"id": "P-2"}))
    with pytest.raises(PermanentProviderError):
        await parrot.send(message())


async def test_a_provider_that_does_not_answer_in_time_is_a_temporary_timeout(api: ScriptedApi) -> None:
    async def never(_request: web.Request) -> web.Response:
        await api.release.wait()
        return web.Response(status=200)

    api.route("POST", "/messages", never)
    async with running(build(api.url, timeout_seconds=0.3)) as provider:
        with pytest.raises(TemporaryProviderError) as caught:
            await provider.send(message())
    assert caught.value.code == "timeout"
    assert caught.value.message == "Parrot did not answer within 0.3 s"
    assert isinstance(caught.value.__cause__, TimeoutError)


async def test_a_refused_connection_is_a_temporary_connection_error() -> None:
    async with running(build(f"http://127.0.0.1:{free_port()}")) as provider:
        with pytest.raises(TemporaryProviderError) as caught:
            await provider.send(message())
    assert caught.value.code == "connection_error"
    assert caught.value.message.startswith("Parrot is unreachable: ")
    assert isinstance(caught.value.__cause__, aiohttp.ClientConnectionError)


async def test_a_connection_dropped_mid_answer_is_a_temporary_connection_error(
    api: ScriptedApi, parrot: ParrotProvider
) -> None:
    async def hang_up(request: web.Request) -> web.StreamResponse:
        response = web.StreamResponse(status=200, headers={"Content-Length": "100"})
        await response.prepare(request)
        await response.write(b'{"id": ')
        assert request.transport is not None
        request.transport.close()
        return response

    api.route("POST", "/messages", hang_up)
    with pytest.raises(TemporaryProviderError) as caught:
        await parrot.send(message())
    assert caught.value.code == "connection_error"
    assert isinstance(caught.value.__cause__, aiohttp.ClientError)


# -- polling ---------------------------------------------------------------------------------------


async def test_polling_goes_through_the_same_call(api: ScriptedApi, parrot: ParrotProvider) -> None:
    polled = PollRequest(id="msg-1", to="+14155550123", sender=None, provider_message_id="P-1")
    api.route("GET", "/messages/P-1", answer(200, {"status": "delivered"}))
    report = await parrot.poll(polled)
    assert report is not None and report.status is Status.DELIVERED
    assert api.seen[-1].headers["X-Key"] == KEY

    api.route("GET", "/messages/P-1", answer(404, {"message": "no such message"}))
    assert await parrot.poll(polled) is None

    api.route("GET", "/messages/P-1", answer(503, {"message": "down"}))
    with pytest.raises(TemporaryProviderError):
        await parrot.poll(polled)


# -- the session -----------------------------------------------------------------------------------


async def test_the_adapter_opens_and_closes_its_own_session(api: ScriptedApi) -> None:
    api.route("POST", "/messages", answer(201, {"id": "P-1"}))
    provider = build(api.url)
    with pytest.raises(RuntimeError, match="not started"):
        await provider.send(message())
    await provider.start()
    await provider.send(message())
    await provider.close()
    with pytest.raises(RuntimeError, match="not started"):
        await provider.send(message())


async def test_a_session_given_by_the_service_is_used_and_left_open(api: ScriptedApi) -> None:
    api.route("POST", "/messages", answer(201, {"id": "P-1"}))
    async with aiohttp.ClientSession(headers={"X-Shared": "yes"}) as shared:
        provider = build(api.url, session=shared)
        await provider.start()
        await provider.send(message())
        await provider.close()
        assert not shared.closed
        assert api.seen[-1].headers["X-Shared"] == "yes"


async def test_the_adapter_keeps_no_cookies(api: ScriptedApi, parrot: ParrotProvider) -> None:
    async def cookie(request: web.Request) -> web.Response:
        response = web.json_response({"id": "P-1", "cookie": request.headers.get("Cookie")}, status=201)
        response.set_cookie("session", "abc")
        return response

    api.route("POST", "/messages", cookie)
    await parrot.send(message())
    second = await parrot.send(message())
    assert second.raw["cookie"] is None


async def test_sends_in_flight_are_limited_by_concurrency(api: ScriptedApi) -> None:
    in_flight = peak = 0

    async def slow(_request: web.Request) -> web.Response:
        nonlocal in_flight, peak
        in_flight += 1
        peak = max(peak, in_flight)
        await asyncio.sleep(0.05)
        in_flight -= 1
        return web.json_response({"id": "P"}, status=201)

    api.route("POST", "/messages", slow)
    async with running(build(api.url, concurrency=2)) as provider:
        await asyncio.gather(*(provider.send(message()) for _ in range(6)))
    assert peak == 2


# -- the example of ADDING.md ----------------------------------------------------------------------


@pytest.fixture
def pigeon_module(tmp_path: Path) -> Iterator[Any]:
    """The Pigeon adapter of ``providers/ADDING.md``, imported from the document's code."""
    adding = Path(tidings.providers.__file__).with_name("ADDING.md").read_text()
    code = next(
        block for block in re.findall(r"```python\n(.*?)```", adding, re.S) if "class Pigeon" in block
    )
    path = tmp_path / "pigeon_example.py"
    path.write_text(code)
    spec = importlib.util.spec_from_file_location("pigeon_example", path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules["pigeon_example"] = module
    try:
        spec.loader.exec_module(module)
        yield module
    finally:
        del sys.modules["pigeon_example"]


async def test_the_example_adapter_of_adding_md_sends_and_reads_refusals(
    api: ScriptedApi, pigeon_module: Any
) -> None:
    settings = pigeon_module.PigeonSettings.model_validate(
        {"kind": "pigeon", "api_key": "k-1", "base_url": api.url + "/"}
    )
    provider = pigeon_module.PigeonProvider(
        "pigeon", settings, ProviderContext(base_url="http://tidings.test")
    )
    assert isinstance(provider, HttpProvider)
    api.route("POST", "/v2/sms", answer(201, {"id": "pg-9"}))
    async with running(provider):
        assert (await provider.send(message())).provider_message_ids == ("pg-9",)
        assert api.seen[-1].headers["X-Api-Key"] == "k-1"
        assert orjson.loads(api.seen[-1].body)["reference"] == "msg-1"

        api.route("POST", "/v2/sms", answer(400, {"error": "bad_number", "detail": "not a number"}))
        with pytest.raises(PermanentProviderError) as refused:
            await provider.send(message())
        assert (refused.value.code, refused.value.message) == ("bad_number", "not a number")

        api.route("POST", "/v2/sms", answer(503, None, {"Retry-After": "9"}))
        with pytest.raises(ProviderError) as unavailable:
            await provider.send(message())
        assert unavailable.value.temporary and unavailable.value.retry_after == 9.0
        assert unavailable.value.code == "http_503"
