"""The hot routes without the framework's layers.

``POST /v1/messages`` is the request tidings answers most. Through FastAPI it pays for dependency
solving, the exception wrappers and the request and response objects: more of its CPU than
validating and storing the message. :class:`FastLane` answers the ordinary case itself, below
the request log, the guard and the body limit (which has read the body already), and hands
everything else to the FastAPI route unchanged, so the two can never disagree on an error:

- the body is validated with the route's own model (pydantic's JSON mode, in Rust); a body that
  is not JSON, not an object or not valid goes to the route, which answers it as it always has
  (and, like the route, before a key is counted against its rate);
- the key is checked by the service's one :class:`~tidings.services.keys.KeyChecker`;
- a content type other than JSON, or an ``Idempotency-Key`` the route would refuse, goes to the
  route as well.

The route stays where it is: it documents the operation in OpenAPI and answers what the lane
hands over.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable

import orjson
from pydantic import ValidationError
from starlette.responses import Response
from starlette.types import ASGIApp, Receive, Scope, Send

from tidings.api.common import error_response
from tidings.api.schemas import MessageIn, message_json
from tidings.errors import DatabaseUnavailable, TidingsError
from tidings.services import Service
from tidings.services.accepting import MAX_IDEMPOTENCY_KEY
from tidings.services.keys import in_scope

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

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http":
            handler = self.routes.get((scope["method"], scope["path"]))
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
