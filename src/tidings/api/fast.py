"""The hot routes without the framework's layers.

``POST /v1/messages``, the providers' webhooks and the gateway's poll are the requests tidings
answers most. Through FastAPI a send pays for dependency solving, the exception wrappers and the
request and response objects: more of its CPU than validating and storing the message.
:class:`FastLane` answers the ordinary case itself, below the request log, the guard and the
body limit (which has read the body already), and hands everything else to the FastAPI route
unchanged, so the two can never disagree on an error:

- the body is validated with the route's own model (pydantic's JSON mode, in Rust); a body that
  is not JSON, not an object or not valid goes to the route, which answers it as it always has
  (and, like the route, before a key is counted against its rate);
- the key is checked by the service's one :class:`~tidings.services.keys.KeyChecker`;
- a content type other than JSON, or an ``Idempotency-Key`` the route would refuse, goes to the
  route as well.

A webhook's route does nothing but find the provider and hand the request to the webhook
pipeline (which checks, logs and answers it), and the Android app's poll (``/api/sms``) is one
function of its headers, body and peer (``gateway.answer_poll``). The lane does the same, with
the headers, URL and peer read as the route reads them (a path with characters a URL escapes goes
to the route). The routes stay where they are: they document the operations in OpenAPI and
answer what the lane hands over.
"""

from __future__ import annotations

import re
from collections.abc import Awaitable, Callable

import orjson
from pydantic import ValidationError
from starlette.responses import Response
from starlette.types import ASGIApp, Receive, Scope, Send

from tidings.api.common import error_response
from tidings.api.gateway import answer_poll
from tidings.api.schemas import MessageIn, message_json
from tidings.api.webhooks import webhook_request
from tidings.errors import DatabaseUnavailable, TidingsError
from tidings.providers.base import Provider
from tidings.services import Service
from tidings.services.accepting import MAX_IDEMPOTENCY_KEY
from tidings.services.keys import in_scope

WEBHOOKS = "/webhooks/"
_ODD = re.compile(r"[?#\\%]")
"""Characters a request's URL escapes: a path with any of them is left to the route."""

BODY = "tidings.body"
"""The scope entry where :class:`~tidings.api.app.BodyLimit` leaves a body it has read."""

JSON = b"application/json"

Answer = tuple[int, bytes] | Response
"""A status and a JSON body, or (for an error) a response of the error contract."""
Handler = Callable[[Scope, bytes], Awaitable[Answer | None]]


class FastLane:
    """Answers the routes it knows when their request is ordinary; ``None`` from a handler means
    "not ordinary": the request goes on to the app."""

    def __init__(self, app: ASGIApp, service: Service) -> None:
        self.app = app
        self.service = service
        self.routes: dict[tuple[str, str], Handler] = {("POST", "/v1/messages"): self.send_message}
        for path, (provider, event) in service.webhooks.legacy_paths.items():
            self.routes["POST", path] = self._legacy_webhook(provider, event)
        self.routes["POST", "/api/sms"] = self.routes["POST", "/api/sms/"] = self.gateway_poll

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http":
            path: str = scope["path"]
            handler = self.routes.get((scope["method"], path))
            if handler is None and path.startswith(WEBHOOKS) and scope["method"] == "POST":
                handler = self.webhook
            body = scope.get(BODY)
            if handler is not None and body is not None:
                answer = await handler(scope, body)
                if isinstance(answer, Response):
                    await answer(scope, receive, send)
                    return
                if answer is not None:
                    status, content = answer
                    headers = [(b"content-type", JSON), (b"content-length", str(len(content)).encode())]
                    await send({"type": "http.response.start", "status": status, "headers": headers})
                    await send({"type": "http.response.body", "body": content})
                    return
        await self.app(scope, receive, send)

    async def send_message(self, scope: Scope, body: bytes) -> Answer | None:
        authorization: str | None = None
        idempotency_key: str | None = None
        content_type: bytes | None = None
        for name, value in scope["headers"]:
            if name == b"authorization" and authorization is None:
                authorization = value.decode("latin-1")
            elif name == b"idempotency-key":
                if idempotency_key is not None:
                    return None
                idempotency_key = value.decode("latin-1")
            elif name == b"content-type":
                content_type = value.split(b";", 1)[0].strip().lower()
        if content_type != JSON:
            return None
        if idempotency_key is not None and len(idempotency_key) > MAX_IDEMPOTENCY_KEY:
            return None
        try:
            payload = MessageIn.model_validate_json(body)
        except ValidationError:
            return None
        try:
            key = in_scope(await self.service.key_checker.check(authorization), "send")
            row, created = await self.service.accepting.accept(
                payload.request(), key=key, idempotency_key=idempotency_key
            )
        except DatabaseUnavailable:
            raise  # the guard's answer: 503 with Retry-After, logged
        except TidingsError as exc:
            return error_response(exc)
        return 202 if created else 200, orjson.dumps(message_json(row))

    async def webhook(self, scope: Scope, body: bytes) -> Answer | None:
        """``POST /webhooks/{kind}/{name}/{event}``: the route's work, which is all the pipeline's."""
        parts = scope["path"][len(WEBHOOKS) :].split("/")
        if len(parts) != 3 or not all(parts):
            return None  # the router's answer (404), or a path the route reads differently
        kind, name, event = parts
        try:
            provider = self.service.webhooks.provider(kind, name)
        except TidingsError as exc:
            return error_response(exc)
        return await self._webhook(scope, body, provider, event)

    def _legacy_webhook(self, provider: Provider, event: str) -> Handler:
        async def legacy(scope: Scope, body: bytes) -> Answer | None:
            return await self._webhook(scope, body, provider, event)

        return legacy

    async def _webhook(self, scope: Scope, body: bytes, provider: Provider, event: str) -> Answer | None:
        if _ODD.search(scope["path"]):
            return None
        headers = _headers(scope)
        query = scope.get("query_string", b"").decode("latin-1")
        incoming = webhook_request(self.service, scope["path"], query, headers, body)
        client = scope.get("client")
        try:
            answer = await self.service.webhooks.receive(
                provider, event, incoming, client[0] if client else None
            )
        except DatabaseUnavailable:
            raise
        except TidingsError as exc:
            return error_response(exc)  # a refusal, logged by the pipeline
        return Response(content=answer.body, status_code=answer.status, media_type=answer.content_type)

    async def gateway_poll(self, scope: Scope, body: bytes) -> Answer | None:
        """``POST /api/sms``: the Android app's poll, answered as its route answers it."""
        client = scope.get("client")
        return await answer_poll(self.service, _headers(scope), body, client[0] if client else None)


def _headers(scope: Scope) -> dict[str, str]:
    """The request's headers as Starlette reads them into a dict: the first of each name."""
    headers: dict[str, str] = {}
    for name, value in scope["headers"]:
        headers.setdefault(name.decode("latin-1"), value.decode("latin-1"))
    return headers
