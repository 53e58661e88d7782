"""The send pipeline of a provider reached over HTTP, written once.

:class:`HttpProvider` is a template: it owns the pipeline, and an adapter fills in the steps that
are its provider's own. ``send`` runs::

    build_send(message) -> HttpRequest      adapter: the provider's request for one message
    call(request) -> Answer                 base: the HTTP exchange (below)
    status in sent_statuses:
        parse_sent(answer) -> SendResult    adapter: the provider's id and status
    otherwise:
        raise send_error(answer)            base: 429 and 5xx temporary, anything else permanent,
                                            with the code and text of error_details(answer);
                                            an adapter overrides either for its own codes

and ``poll`` runs ``build_poll`` → ``call`` → ``parse_poll`` the same way (404: nothing to say).

:meth:`HttpProvider.call` is the one place an adapter's requests go through: one aiohttp session
per adapter (opened by ``start``, closed by ``close``, or the service's own when it gives one),
the headers of :meth:`HttpProvider.headers` on every request, ``settings.timeout_seconds`` for the
whole exchange, the body read as a JSON object, ``Retry-After`` read by :func:`retry_after`, and
aiohttp's failures translated at this boundary: a timeout is ``TemporaryProviderError`` code
``timeout``, any other client error code ``connection_error``. When the adapter has an
:class:`Auth` (an OAuth2 token, ``providers.oauth``), its ``Authorization`` goes with each request,
and a 401 drops it and tries the request once more with a new one.
"""

from __future__ import annotations

import abc
import logging
import math
from collections.abc import Mapping
from dataclasses import dataclass, field
from email.utils import parsedate_to_datetime
from typing import Any, ClassVar, Protocol

import aiohttp
import orjson

from tidings.clock import to_db, utcnow
from tidings.config import ProviderSettings
from tidings.domain.reports import Report
from tidings.errors import PermanentProviderError, ProviderError, TemporaryProviderError
from tidings.providers.base import OutboundMessage, PollRequest, Provider, ProviderContext, SendResult

__all__ = ["Answer", "Auth", "HttpProvider", "HttpRequest", "retry_after"]

log = logging.getLogger(__name__)

JSON = "application/json"


def retry_after(value: str | None) -> float | None:
    """The seconds a ``Retry-After`` header asks us to wait: it holds seconds or an HTTP date.

    A date is counted from now, and one already past is 0; ``None`` when there is no header or it
    cannot be read (a provider's garbage must not become a wait).
    """
    if not value:
        return None
    value = value.strip()
    try:
        seconds = float(value)
    except ValueError:
        pass
    else:
        return max(0.0, seconds) if math.isfinite(seconds) else None
    try:
        when = parsedate_to_datetime(value)
    except (TypeError, ValueError, IndexError):
        return None
    return max(0.0, (to_db(when) - utcnow()).total_seconds())


@dataclass(frozen=True)
class HttpRequest:
    """One request to the provider, as an adapter describes it."""

    method: str
    url: str
    headers: Mapping[str, str] = field(default_factory=dict)
    """Added to (and winning over) :meth:`HttpProvider.headers`."""
    form: Mapping[str, str] | None = None
    """A body sent URL-encoded."""
    json: object = None
    """A body sent as JSON (when not ``None``)."""
    what: str | None = None
    """Who answers, in error messages (``"the Orange token endpoint"``); default the provider's
    :attr:`HttpProvider.service`."""
    auth: bool = True
    """Whether the provider's :class:`Auth` authorizes this request; ``False`` for a request that
    carries its own credentials (the token endpoint)."""


@dataclass(frozen=True)
class Answer:
    """What the provider answered."""

    status: int
    headers: Mapping[str, str]
    """Case-insensitive."""
    data: dict[str, Any]
    """The JSON object it answered; any other body is ``{"body": …}`` (text cut at 500
    characters), an empty one ``{}``."""
    retry_after: float | None
    """Its ``Retry-After`` in seconds, when it said one we can read."""


class Auth(Protocol):
    """Credentials the API may refuse when they go stale (an access token)."""

    async def authorization(self) -> str:
        """The ``Authorization`` header value to send now."""
        ...

    def refused(self, authorization: str) -> None:
        """The API answered 401 to ``authorization``: do not hand it out again."""
        ...


def _body(raw: bytes) -> dict[str, Any]:
    try:
        parsed = orjson.loads(raw) if raw else {}
    except orjson.JSONDecodeError:
        return {"body": raw[:500].decode("utf-8", "replace")}
    return parsed if isinstance(parsed, dict) else {"body": parsed}


class HttpProvider(Provider):
    """A provider reached over HTTP: an adapter supplies the hooks, the base runs the pipeline."""

    service: ClassVar[str] = "the provider"
    """Who answers, in error messages: ``"Twilio"``, ``"the Orange SMS API"``."""
    sent_statuses: ClassVar[frozenset[int]] = frozenset({200, 201})
    """The HTTP statuses that mean the provider took the message."""

    auth: Auth | None = None
    """Set by an adapter whose API takes a token that can expire (see ``providers.oauth``)."""

    def __init__(self, name: str, settings: ProviderSettings, context: ProviderContext) -> None:
        super().__init__(name, settings, context)
        self._session: aiohttp.ClientSession | None = None

    async def start(self) -> None:
        """Open the adapter's HTTP session (or take the one the service gives)."""
        if self._session is None:
            self._session = self.context.session or aiohttp.ClientSession(
                connector=aiohttp.TCPConnector(limit=self.settings.concurrency),
                cookie_jar=aiohttp.DummyCookieJar(),
            )

    async def close(self) -> None:
        """Close the session :meth:`start` opened; one the service gave is the service's to close."""
        session, self._session = self._session, None
        if session is not None and session is not self.context.session:
            await session.close()

    # -- the hooks ---------------------------------------------------------------------------------

    def headers(self) -> Mapping[str, str]:
        """Headers sent with every request (static credentials, ``Accept``)."""
        return {}

    @abc.abstractmethod
    def build_send(self, message: OutboundMessage) -> HttpRequest:
        """The request that hands ``message`` to the provider."""

    @abc.abstractmethod
    def parse_sent(self, answer: Answer) -> SendResult:
        """What an answer in :attr:`sent_statuses` says about the message taken."""

    def error_details(self, answer: Answer) -> tuple[str, str]:
        """The provider's error code and text in a refusal: by default ``http_<status>`` and the
        answer's ``message``."""
        return f"http_{answer.status}", str(answer.data.get("message") or f"HTTP {answer.status}")

    def send_error(self, answer: Answer) -> ProviderError:
        """The error a refusal raises: 429 and 5xx are temporary (the provider's ``Retry-After``
        kept), anything else permanent."""
        code, text = self.error_details(answer)
        if answer.status == 429 or answer.status >= 500:
            return TemporaryProviderError(text, code=code, raw=answer.data, retry_after=answer.retry_after)
        return PermanentProviderError(text, code=code, raw=answer.data)

    def build_poll(self, message: PollRequest) -> HttpRequest | None:
        """The request that asks the provider about ``message`` (``None``: it cannot be asked)."""
        return None

    def parse_poll(self, answer: Answer) -> Report | None:
        """What a 200 answer to :meth:`build_poll`'s request says; ``None`` when nothing new."""
        return None

    # -- the pipeline ------------------------------------------------------------------------------

    async def send(self, message: OutboundMessage) -> SendResult:
        answer = await self.call(self.build_send(message))
        if answer.status in self.sent_statuses:
            return self.parse_sent(answer)
        raise self.send_error(answer)

    async def poll(self, message: PollRequest) -> Report | None:
        request = self.build_poll(message)
        if request is None:
            return None
        answer = await self.call(request)
        if answer.status == 404:
            return None
        if answer.status != 200:
            raise self.send_error(answer)
        return self.parse_poll(answer)

    async def call(self, request: HttpRequest) -> Answer:
        """Make ``request``; with an :class:`Auth`, a 401 gets a new token and one more try.

        Raises ``TemporaryProviderError`` (code ``timeout`` or ``connection_error``) when no answer
        comes; any answer, whatever its status, is returned.
        """
        auth = self.auth if request.auth else None
        if auth is None:
            return await self._exchange(request, None)
        authorization = await auth.authorization()
        answer = await self._exchange(request, authorization)
        if answer.status != 401:
            return answer
        log.info(
            "%s refused the access token (%s); getting a new one",
            request.what or self.service,
            answer.data.get("message") or "HTTP 401",
            extra={"action": "token", "provider": self.name},
        )
        auth.refused(authorization)
        return await self._exchange(request, await auth.authorization())

    async def _exchange(self, request: HttpRequest, authorization: str | None) -> Answer:
        session = self._session
        if session is None:
            raise RuntimeError(f"provider {self.name} is not started")
        headers = dict(self.headers())
        if authorization is not None:
            headers["Authorization"] = authorization
        body: Any = request.form
        if request.json is not None:
            headers["Content-Type"] = JSON
            body = orjson.dumps(request.json)
        headers.update(request.headers)
        what = request.what or self.service
        timeout = self.settings.timeout_seconds
        try:
            async with session.request(
                request.method,
                request.url,
                headers=headers,
                data=body,
                timeout=aiohttp.ClientTimeout(total=timeout),
            ) as response:
                raw = await response.read()
                status, answer_headers = response.status, response.headers
        except TimeoutError as exc:
            # Before ClientError: aiohttp's own timeouts are both.
            raise TemporaryProviderError(f"{what} did not answer within {timeout} s", code="timeout") from exc
        except aiohttp.ClientError as exc:
            raise TemporaryProviderError(f"{what} is unreachable: {exc!r}", code="connection_error") from exc
        return Answer(
            status=status,
            headers=answer_headers,
            data=_body(raw),
            retry_after=retry_after(answer_headers.get("Retry-After")),
        )
