"""A fake Twilio Programmable Messaging server that speaks Twilio's real wire format over real HTTP.

It lets the Twilio adapter (and the tests) exercise every path a Twilio message can take without an
account: authentication, Twilio's error JSON, the test credentials' magic numbers, signed status
callbacks (late, duplicated or out of order on demand), status polling and signed inbound webhooks.

Wire format
-----------
``POST /2010-04-01/Accounts/{AccountSid}/Messages.json`` with HTTP Basic auth
(``AccountSid:AuthToken``) and an ``application/x-www-form-urlencoded`` body: ``To``, ``From`` or
``MessagingServiceSid``, ``Body`` and an optional ``StatusCallback`` URL. The answer is one of:

* ``201`` and the Message resource as Twilio returns it: ``sid`` (``SM`` + 32 hex), ``account_sid``,
  ``to``, ``from`` (``null`` until a sender is assigned when only ``MessagingServiceSid`` is given),
  ``messaging_service_sid``, ``body``, ``status`` (``queued``, or ``accepted`` with a Messaging
  Service), ``num_segments`` and ``num_media`` (strings; ``num_segments`` is ``"0"`` with a Messaging
  Service until the message is sent), ``direction`` ``outbound-api``, ``api_version`` ``2010-04-01``,
  ``price`` (``null`` until the message is sent, then what it cost as Twilio writes it: a negative
  decimal string with five places, ``"-0.01580"``, when ``price_per_segment`` is configured),
  ``price_unit`` ``USD``, ``error_code``, ``error_message``, ``date_created``,
  ``date_updated`` and ``date_sent`` (RFC 2822, ``date_sent`` is ``null`` until sent), ``uri`` and
  ``subresource_uris``;
* a Twilio error, always ``{"code": int, "message": str, "more_info": url, "status": int}``:
  ``401`` code 20003 (wrong or missing credentials, or an AccountSid in the path that is not the
  caller's; with ``WWW-Authenticate: Basic realm="Twilio API"``), ``400`` code 21604 (no ``To``),
  21602 (no ``Body``), 21603 (neither ``From`` nor ``MessagingServiceSid``), 21211 (``To`` is not
  ``+`` and digits), ``429`` code 20429 with ``Retry-After: 1`` (over ``max_per_second``), or the
  error of a magic number (below).

``GET /2010-04-01/Accounts/{AccountSid}/Messages/{Sid}.json`` (Basic auth) answers the resource with
its current status, or ``404`` code 20404.

Magic ``To`` numbers. Twilio's test numbers: ``+15005550001`` 400/21211 (invalid number),
``+15005550002`` 400/21612 (unreachable), ``+15005550003`` 400/21408 (no permission for the region),
``+15005550004`` 400/21610 (unsubscribed recipient), ``+15005550009`` 400/21614 (not a mobile
number). Ours, shared with :mod:`tidings.providers.fake_rules`: ``+12025550101`` 400/21211;
``+12025550102`` always 429/20429 with ``Retry-After: 1``; ``+12025550103`` 500/20500 on the first
send of a (``To``, ``Body``) pair, accepted on later ones; ``+12025550104`` accepted, then callbacks
``sent`` and ``undelivered`` (ErrorCode 30003); ``+12025550105`` accepted, then only a ``sent``
callback, though the resource turns ``delivered`` one step later (so polling can resolve it);
``+12025550106`` accepted, then ``sent`` and ``failed`` (ErrorCode 30008); ``+12025550107``
accepted, but the answer comes 5 s later (a client timeout that did send the message). Any other
number is accepted, then ``sent`` and ``delivered``. The n-th send of a (``To``, ``Body``) pair that
gets past authentication, validation and the rate limit is attempt n.

Every accepted message walks through its statuses, one step every ``callback_delay_ms`` (the first
one that long after the answer); the resource changes as it goes. When a ``StatusCallback`` was
given, each step is posted to it as a form: ``SmsSid``, ``SmsStatus``, ``MessageStatus``,
``MessageSid``, ``AccountSid``, ``From``, ``To``, ``ApiVersion``, plus ``ErrorCode`` (undelivered or
failed), ``MessagingServiceSid`` (when used) and ``RawDlrDoneDate`` (delivered, ``YYMMDDhhmm``).
The ``X-Twilio-Signature`` header is :func:`signature` over the exact callback URL (query string
included) and the parameters, with the auth token. A callback is retried up to 3 times (4 posts) on
connection errors, timeouts and 5xx answers. ``duplicate_callbacks`` posts each one twice;
``reverse_callbacks`` posts a message's callbacks last first (``delivered`` before ``sent``) while the
resource already shows the most advanced status posted.

:meth:`FakeTwilioServer.post_inbound` and :meth:`FakeTwilioServer.post_status` post signed webhooks
the way Twilio does, to test the receiving side.

``GET /_stats`` returns counters, ``POST /_reset`` clears them (and the stored messages), ``GET /`` is
a health check.

Run it standalone with ``python -m tidings.testing.fake_twilio --port 0``: it prints one line,
``listening on http://HOST:PORT``, and serves until SIGTERM or SIGINT.
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import collections
import contextlib
import hashlib
import hmac
import math
import random
import re
import uuid
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from decimal import Decimal
from email.utils import format_datetime
from urllib.parse import urlencode

import aiohttp
import phonenumbers
from aiohttp import web

from tidings.providers.fake_rules import (
    NO_RECEIPT,
    PERMANENT_FAILURE,
    RECEIPT_FAILED,
    TEMPORARY_FAILURE,
    TEMPORARY_THEN_OK,
)
from tidings.testing.http_fake import (
    FakeHttpServer,
    PostPolicy,
    cli_parser,
    json_response,
    over_rate,
    post_once,
    run_until_signalled,
)

__all__ = [
    "FakeTwilioConfig",
    "FakeTwilioMessage",
    "FakeTwilioServer",
    "main",
    "signature",
]

API_VERSION = "2010-04-01"
SIGNATURE_HEADER = "X-Twilio-Signature"
DEFAULT_ACCOUNT_SID = "AC" + "0" * 31 + "1"
DEFAULT_AUTH_TOKEN = "fake-twilio-auth-token"
SERVICE_SENDER = "+15005550006"
"""The sender assigned to messages sent through a Messaging Service (Twilio's magic valid From)."""

FAILED_AFTER_SENT = "+12025550106"
"""Accepted, then callbacks ``sent`` and ``failed`` (ErrorCode 30008)."""
SLOW_ANSWER = "+12025550107"
"""Accepted, but the answer to the send comes :data:`SLOW_ANSWER_S` seconds later."""
SLOW_ANSWER_S = 5.0

CALLBACK_ATTEMPTS = 4
"""How many times one status callback is posted (the first post and 3 retries) before giving up."""
CALLBACK_BACKOFF_S = 0.1
"""The pause after the first failed callback post; it doubles after each failure."""
CALLBACK_TIMEOUT_S = 10.0
"""The time allowed to connect, and to wait for each read, when posting one callback."""
CALLBACK_CONNECTION_LIMIT = 64
"""At most this many callback posts are in flight at once."""

_CALLBACKS = PostPolicy(
    kind="status callback",
    attempts=CALLBACK_ATTEMPTS,
    backoff_s=CALLBACK_BACKOFF_S,
    timeout_s=CALLBACK_TIMEOUT_S,
    connection_limit=CALLBACK_CONNECTION_LIMIT,
)
_FORM = "application/x-www-form-urlencoded"
_E164 = re.compile(r"\+[1-9][0-9]{1,14}")
_ERROR_MESSAGES = {
    30003: "Unreachable destination handset",
    30008: "Unknown error",
}
_GSM7_BASIC = frozenset(
    "@£$¥èéùìòÇ\nØø\rÅåΔ_ΦΓΛΩΠΨΣΘΞÆæßÉ !\"#¤%&'()*+,-./0123456789:;<=>?"
    "¡ABCDEFGHIJKLMNOPQRSTUVWXYZÄÖÑÜ§¿abcdefghijklmnopqrstuvwxyzäöñüà"
)
_GSM7_EXTENDED = frozenset("\f^{}\\[~]|€")


def signature(auth_token: str, url: str, params: Mapping[str, str]) -> str:
    """The ``X-Twilio-Signature`` value for a webhook to ``url`` (exactly as posted) with ``params``.

    Base64 of HMAC-SHA1, keyed with the auth token, over the URL followed by every parameter's name
    and value, sorted by name.
    """
    payload = url + "".join(name + params[name] for name in sorted(params))
    mac = hmac.new(auth_token.encode("utf-8"), payload.encode("utf-8"), hashlib.sha1)
    return base64.b64encode(mac.digest()).decode("ascii")


def num_segments(body: str) -> int:
    """How many SMS segments ``body`` takes: GSM-7 (160, or 153 per part) or UCS-2 (70, or 67)."""
    if all(char in _GSM7_BASIC or char in _GSM7_EXTENDED for char in body):
        septets = len(body) + sum(1 for char in body if char in _GSM7_EXTENDED)
        return 1 if septets <= 160 else math.ceil(septets / 153)
    units = len(body.encode("utf-16-le")) // 2
    return 1 if units <= 70 else math.ceil(units / 67)


def _rfc2822(moment: datetime | None) -> str | None:
    return None if moment is None else format_datetime(moment)


def _now() -> datetime:
    return datetime.now(UTC)


@dataclass
class FakeTwilioConfig:
    """How a :class:`FakeTwilioServer` behaves."""

    account_sid: str = DEFAULT_ACCOUNT_SID
    """The AccountSid callers authenticate as (and put in the path)."""
    auth_token: str = DEFAULT_AUTH_TOKEN
    """The auth token callers authenticate with; it also signs the webhooks."""
    callback_delay_ms: float = 30.0
    """The pause before each status step (and its callback)."""
    latency_ms: float = 0.0
    """A pause before each answer to a send."""
    duplicate_callbacks: bool = False
    """Post every status callback twice."""
    reverse_callbacks: bool = False
    """Post a message's callbacks in reverse order (``delivered`` before ``sent``)."""
    max_per_second: float | None = None
    """Sends beyond this many accepted in the last second get 429 code 20429; ``None``: no limit."""
    seed: int | None = None
    """Seed for the message SIDs, for reproducible runs; ``None`` draws random ones."""
    price_per_segment: str | None = None
    """What one segment costs, once sent (a decimal string); ``None``: ``price`` stays ``null``."""


@dataclass
class FakeTwilioMessage:
    """One accepted message, as the fake stores it."""

    sid: str
    to: str
    from_: str | None
    body: str
    messaging_service_sid: str | None
    status_callback: str | None
    status: str
    error_code: int | None
    created_at: datetime
    attempt: int
    """This send was the n-th of its (``To``, ``Body``) pair."""
    error_message: str | None = None
    updated_at: datetime | None = None
    sent_at: datetime | None = None


@dataclass(frozen=True)
class _Step:
    status: str
    error_code: int | None = None
    post: bool = True
    """Whether this step is posted as a status callback."""


_DELIVERED_STEPS = (_Step("sent"), _Step("delivered"))
_STEPS_BY_NUMBER = {
    RECEIPT_FAILED: (_Step("sent"), _Step("undelivered", 30003)),
    NO_RECEIPT: (_Step("sent"), _Step("delivered", post=False)),
    FAILED_AFTER_SENT: (_Step("sent"), _Step("failed", 30008)),
}


@dataclass(frozen=True)
class _Refusal:
    status: int
    code: int
    message: str


def _refusal_for(to: str, from_: str | None, attempt: int) -> _Refusal | None:
    """The error a magic ``To`` number answers on this attempt, if any."""
    if to in ("+15005550001", PERMANENT_FAILURE):
        return _Refusal(400, 21211, f"The 'To' number {to} is not a valid phone number.")
    if to == "+15005550002":
        sender = from_ if from_ is not None else SERVICE_SENDER
        return _Refusal(
            400,
            21612,
            f"The 'To' phone number: {to}, is not currently reachable using the 'From' phone "
            f"number: {sender} via SMS.",
        )
    if to == "+15005550003":
        return _Refusal(
            400,
            21408,
            f"Permission to send an SMS has not been enabled for the region indicated by the "
            f"'To' number: {to}.",
        )
    if to == "+15005550004":
        return _Refusal(400, 21610, "Attempt to send to unsubscribed recipient")
    if to == "+15005550009":
        return _Refusal(400, 21614, f"'To' number {to} is not a valid mobile number")
    if to == TEMPORARY_FAILURE:
        return _Refusal(429, 20429, "Too Many Requests")
    if to == TEMPORARY_THEN_OK and attempt <= 1:
        return _Refusal(500, 20500, "Internal Server Error")
    return None


@dataclass
class _Stats:
    requests: int = 0
    accepted: int = 0
    rejected: int = 0
    callbacks_sent: int = 0
    callbacks_failed: int = 0
    attempts: dict[str, int] = field(default_factory=dict)
    """Sends seen per ``to|body`` key that got as far as the magic numbers."""
    accepted_by_key: dict[str, int] = field(default_factory=dict)

    def as_dict(self) -> dict[str, object]:
        return {
            "requests": self.requests,
            "accepted": self.accepted,
            "rejected": self.rejected,
            "callbacks_sent": self.callbacks_sent,
            "callbacks_failed": self.callbacks_failed,
            "duplicates": sorted(key for key, n in self.accepted_by_key.items() if n > 1),
        }


def _twilio_error(
    status: int, code: int, message: str, headers: dict[str, str] | None = None
) -> web.Response:
    payload = {
        "code": code,
        "message": message,
        "more_info": f"https://www.twilio.com/docs/errors/{code}",
        "status": status,
    }
    return json_response(status, payload, headers)


def _field(form: Mapping[str, object], name: str) -> str | None:
    value = form.get(name)
    return value if isinstance(value, str) and value else None


def _basic_credentials(authorization: str | None) -> tuple[bytes, bytes]:
    """The login and password of a Basic ``Authorization`` header; empty ones when it is not one."""
    scheme, _, encoded = (authorization or "").partition(" ")
    if scheme.lower() != "basic":
        return b"", b""
    try:
        decoded = base64.b64decode(encoded.strip(), validate=True)
    except ValueError:
        return b"", b""
    login, _, password = decoded.partition(b":")
    return login, password


class FakeTwilioServer(FakeHttpServer):
    """A fake Twilio on a real socket: :meth:`start` it, send it messages, then :meth:`stop` it."""

    def __init__(self, config: FakeTwilioConfig | None = None) -> None:
        super().__init__("fake Twilio server", _CALLBACKS)
        self.config = config if config is not None else FakeTwilioConfig()
        self.messages: dict[str, FakeTwilioMessage] = {}
        """Every accepted message, by SID."""
        self.sends: list[FakeTwilioMessage] = []
        """The accepted sends, in arrival order."""
        self._rng = random.Random(self.config.seed)
        self._stats = _Stats()
        self._recent_sends: collections.deque[float] = collections.deque()
        self._task_by_sid: dict[str, asyncio.Task[None]] = {}
        self._stopping = asyncio.Event()

    @property
    def stats(self) -> dict[str, object]:
        """The same counters as ``GET /_stats``."""
        return self._stats.as_dict()

    def _add_routes(self, router: web.UrlDispatcher) -> None:
        base = f"/{API_VERSION}/Accounts/{{account_sid}}"
        router.add_post(f"{base}/Messages.json", self._handle_send)
        router.add_get(f"{base}/Messages/{{sid}}.json", self._handle_fetch)

    def _reset(self) -> None:
        # Steps already scheduled still run, but on messages no longer stored, and they count into
        # the old (discarded) stats.
        self._stats = _Stats()
        self.messages = {}
        self.sends = []
        self._recent_sends.clear()
        self._rng = random.Random(self.config.seed)

    async def start(self, host: str = "127.0.0.1", port: int = 0) -> str:
        """Listen on ``host``:``port`` (0 picks a free port) and return the base URL."""
        if self._runner is None:
            # The last stop set the old event; a new one (rather than clearing it) also suits a
            # restart in another event loop.
            self._stopping = asyncio.Event()
        return await super().start(host, port)

    async def stop(self) -> None:
        """Stop listening, cut short the delayed answers, cancel pending callbacks, close the session."""
        # Set first: stopping the runner waits for the handlers, some of which are pausing.
        self._stopping.set()
        await super().stop()
        self._task_by_sid.clear()

    async def wait_for_callbacks(self, timeout: float) -> None:
        """Wait until no message has status steps (or callbacks) pending; :class:`TimeoutError` after
        ``timeout`` seconds."""
        await self._wait_for_tasks(timeout)

    def set_status(self, sid: str, status: str, error_code: int | None = None) -> None:
        """Make ``GET`` report ``status`` (and ``error_code``) for message ``sid``, posting no callback.

        The message's status steps and callbacks not yet posted are cancelled, so the status stays.
        Raises :class:`KeyError` for an unknown SID.
        """
        message = self.messages[sid]
        task = self._task_by_sid.pop(sid, None)
        if task is not None:
            task.cancel()
        self._apply(message, _Step(status, error_code, post=False))

    async def post_inbound(
        self, url: str, from_: str, to: str, body: str, *, auth_token: str | None = None
    ) -> tuple[int, bytes]:
        """Post a signed inbound SMS webhook to ``url`` as Twilio does; return (status, response body).

        ``auth_token`` signs it instead of the configured token (to test a wrong signature).
        """
        sid = self._new_sid()
        params = {
            "MessageSid": sid,
            "SmsSid": sid,
            "SmsMessageSid": sid,
            "AccountSid": self.config.account_sid,
            "From": from_,
            "To": to,
            "Body": body,
            "NumMedia": "0",
            "NumSegments": str(num_segments(body)),
            "SmsStatus": "received",
            "ApiVersion": API_VERSION,
        }
        for name, number in (("FromCountry", from_), ("ToCountry", to)):
            country = _country(number)
            if country:
                params[name] = country
        return await self._post_form(url, params, auth_token)

    async def post_status(
        self, url: str, params: dict[str, str], *, auth_token: str | None = None
    ) -> tuple[int, bytes]:
        """Post ``params`` to ``url`` as a signed status callback; return (status, response body)."""
        return await self._post_form(url, params, auth_token)

    # --- handlers -------------------------------------------------------------------------------

    async def _handle_send(self, request: web.Request) -> web.Response:
        stats = self._stats
        stats.requests += 1
        form = await request.post()
        response, message = self._answer_send(
            stats, request.match_info["account_sid"], request.headers.get("Authorization"), form
        )
        if message is None:
            stats.rejected += 1
        delay = self.config.latency_ms / 1000
        if message is not None and message.to == SLOW_ANSWER:
            delay += SLOW_ANSWER_S
        await self._pause(delay)
        if message is not None:
            self._schedule_steps(stats, message)
        return response

    def _authenticated(self, path_account_sid: str, authorization: str | None) -> bool:
        login, password = _basic_credentials(authorization)
        expected_sid = self.config.account_sid.encode()
        return (
            hmac.compare_digest(login, expected_sid)
            & hmac.compare_digest(password, self.config.auth_token.encode())
            & hmac.compare_digest(path_account_sid.encode("utf-8", "surrogateescape"), expected_sid)
        )

    def _unauthenticated(self) -> web.Response:
        return _twilio_error(401, 20003, "Authenticate", {"WWW-Authenticate": 'Basic realm="Twilio API"'})

    def _answer_send(
        self,
        stats: _Stats,
        path_account_sid: str,
        authorization: str | None,
        form: Mapping[str, object],
    ) -> tuple[web.Response, FakeTwilioMessage | None]:
        """The answer to one send and, when it is accepted, the new message."""
        if not self._authenticated(path_account_sid, authorization):
            return self._unauthenticated(), None
        to, body = _field(form, "To"), _field(form, "Body")
        from_, service_sid = _field(form, "From"), _field(form, "MessagingServiceSid")
        status_callback = _field(form, "StatusCallback")
        if to is None:
            return _twilio_error(400, 21604, "A 'To' phone number is required."), None
        if body is None:
            return _twilio_error(400, 21602, "Message body is required."), None
        if from_ is None and service_sid is None:
            return _twilio_error(400, 21603, "A 'From' phone number is required."), None
        if _E164.fullmatch(to) is None:
            return _twilio_error(400, 21211, f"The 'To' number {to} is not a valid phone number."), None
        if over_rate(self._recent_sends, self.config.max_per_second):
            return _twilio_error(429, 20429, "Too Many Requests", {"Retry-After": "1"}), None

        key = f"{to}|{body}"
        attempt = stats.attempts.get(key, 0) + 1
        stats.attempts[key] = attempt
        refusal = _refusal_for(to, from_, attempt)
        if refusal is not None:
            headers = {"Retry-After": "1"} if refusal.status == 429 else None
            return _twilio_error(refusal.status, refusal.code, refusal.message, headers), None

        stats.accepted += 1
        stats.accepted_by_key[key] = stats.accepted_by_key.get(key, 0) + 1
        now = _now()
        message = FakeTwilioMessage(
            sid=self._new_sid(),
            to=to,
            from_=from_,
            body=body,
            messaging_service_sid=service_sid,
            status_callback=status_callback,
            status="accepted" if service_sid is not None else "queued",
            error_code=None,
            created_at=now,
            attempt=attempt,
            updated_at=now,
        )
        self.messages[message.sid] = message
        self.sends.append(message)
        return json_response(201, self._resource(message)), message

    async def _handle_fetch(self, request: web.Request) -> web.Response:
        if not self._authenticated(request.match_info["account_sid"], request.headers.get("Authorization")):
            return self._unauthenticated()
        message = self.messages.get(request.match_info["sid"])
        if message is None:
            return _twilio_error(404, 20404, f"The requested resource {request.path} was not found")
        return json_response(200, self._resource(message))

    def _resource(self, message: FakeTwilioMessage) -> dict[str, object]:
        uri = f"/{API_VERSION}/Accounts/{self.config.account_sid}/Messages/{message.sid}"
        segments = (
            "0"
            if message.messaging_service_sid is not None and message.sent_at is None
            else str(num_segments(message.body))
        )
        return {
            "account_sid": self.config.account_sid,
            "api_version": API_VERSION,
            "body": message.body,
            "date_created": _rfc2822(message.created_at),
            "date_sent": _rfc2822(message.sent_at),
            "date_updated": _rfc2822(message.updated_at or message.created_at),
            "direction": "outbound-api",
            "error_code": message.error_code,
            "error_message": message.error_message,
            "from": message.from_,
            "messaging_service_sid": message.messaging_service_sid,
            "num_media": "0",
            "num_segments": segments,
            "price": self._price(message),
            "price_unit": "USD",
            "sid": message.sid,
            "status": message.status,
            "subresource_uris": {
                "media": f"{uri}/Media.json",
                "feedback": f"{uri}/Feedback.json",
            },
            "to": message.to,
            "uri": f"{uri}.json",
        }

    def _price(self, message: FakeTwilioMessage) -> str | None:
        if self.config.price_per_segment is None or message.sent_at is None:
            return None
        cost = Decimal(self.config.price_per_segment) * num_segments(message.body)
        return f"{-cost:.5f}"

    # --- status steps and callbacks -------------------------------------------------------------

    def _new_sid(self) -> str:
        if self.config.seed is None:
            return "SM" + uuid.uuid4().hex
        return f"SM{self._rng.getrandbits(128):032x}"

    async def _pause(self, seconds: float) -> None:
        """Sleep, but wake up as soon as the server stops."""
        if seconds <= 0 or self._stopping.is_set():
            return
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._stopping.wait(), seconds)

    def _schedule_steps(self, stats: _Stats, message: FakeTwilioMessage) -> None:
        if self._stopping.is_set():
            return
        steps = _STEPS_BY_NUMBER.get(message.to, _DELIVERED_STEPS)
        task = self._spawn(self._run_steps(stats, message, steps))
        self._task_by_sid[message.sid] = task
        task.add_done_callback(lambda done: self._forget_task(message.sid, done))

    def _forget_task(self, sid: str, task: asyncio.Task[None]) -> None:
        if self._task_by_sid.get(sid) is task:
            del self._task_by_sid[sid]

    async def _run_steps(self, stats: _Stats, message: FakeTwilioMessage, steps: Sequence[_Step]) -> None:
        """Walk ``message`` through ``steps``, posting the callbacks (in the configured order)."""
        posted = [(index, step) for index, step in enumerate(steps) if step.post]
        if message.status_callback is None:
            posted = []
        elif self.config.reverse_callbacks:
            posted.reverse()
        reached = -1
        delay = self.config.callback_delay_ms / 1000
        for position in range(len(steps)):
            if delay > 0:
                await asyncio.sleep(delay)
            to_post = posted[position] if position < len(posted) else None
            # The resource shows at least the status of the callback about to be posted.
            target = max(position, to_post[0] if to_post is not None else -1)
            if target > reached:
                self._apply(message, steps[target])
                reached = target
            if to_post is not None and message.status_callback is not None:
                params = self._callback_params(message, to_post[1])
                for _ in range(2 if self.config.duplicate_callbacks else 1):
                    if await self._deliver_callback(message.status_callback, params):
                        stats.callbacks_sent += 1
                    else:
                        stats.callbacks_failed += 1

    def _apply(self, message: FakeTwilioMessage, step: _Step) -> None:
        now = _now()
        message.status = step.status
        message.error_code = step.error_code
        message.error_message = _ERROR_MESSAGES.get(step.error_code) if step.error_code else None
        message.updated_at = now
        if step.status in ("sent", "delivered", "undelivered", "failed") and message.sent_at is None:
            message.sent_at = now
            if message.from_ is None:
                message.from_ = SERVICE_SENDER

    def _callback_params(self, message: FakeTwilioMessage, step: _Step) -> dict[str, str]:
        params = {
            "SmsSid": message.sid,
            "SmsStatus": step.status,
            "MessageStatus": step.status,
            "MessageSid": message.sid,
            "AccountSid": self.config.account_sid,
            "From": message.from_ or SERVICE_SENDER,
            "To": message.to,
            "ApiVersion": API_VERSION,
        }
        if step.error_code is not None:
            params["ErrorCode"] = str(step.error_code)
        if message.messaging_service_sid is not None:
            params["MessagingServiceSid"] = message.messaging_service_sid
        if step.status == "delivered":
            params["RawDlrDoneDate"] = _now().strftime("%y%m%d%H%M")
        return params

    def _signed_request(
        self, url: str, params: Mapping[str, str], auth_token: str | None
    ) -> tuple[bytes, dict[str, str]]:
        token = auth_token if auth_token is not None else self.config.auth_token
        headers = {
            "Content-Type": _FORM,
            "User-Agent": "TwilioProxy/1.1",
            SIGNATURE_HEADER: signature(token, url, params),
        }
        return urlencode(params).encode("ascii"), headers

    async def _deliver_callback(self, url: str, params: Mapping[str, str]) -> bool:
        """Post one signed status callback, retrying; true when the receiver answered 2xx."""
        data, headers = self._signed_request(url, params, None)
        return await self._post_with_retries(url, data, headers)

    async def _post_form(
        self, url: str, params: Mapping[str, str], auth_token: str | None
    ) -> tuple[int, bytes]:
        data, headers = self._signed_request(url, params, auth_token)
        if self._session is not None:
            return await self._post_once(url, data, headers)
        # A test may post webhooks with a fake it never started.
        async with aiohttp.ClientSession() as session:
            return await post_once(session, url, data, headers)


def _country(number: str) -> str:
    """The ISO country of an E.164 ``number``, or an empty string when it cannot be told."""
    try:
        region = phonenumbers.region_code_for_number(phonenumbers.parse(number))
    except Exception:
        return ""
    return region if isinstance(region, str) and region != "ZZ" else ""


# --- command line ---------------------------------------------------------------------------------


def _parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = cli_parser(
        "tidings.testing.fake_twilio",
        "Run a fake Twilio Programmable Messaging API over HTTP (for tests and benchmarks).",
    )
    parser.add_argument("--account-sid", default=DEFAULT_ACCOUNT_SID)
    parser.add_argument("--auth-token", default=DEFAULT_AUTH_TOKEN)
    parser.add_argument("--callback-delay-ms", type=float, default=30.0)
    parser.add_argument("--latency-ms", type=float, default=0.0)
    parser.add_argument("--max-per-second", type=float, default=None)
    parser.add_argument("--duplicate-callbacks", action="store_true")
    parser.add_argument("--reverse-callbacks", action="store_true")
    parser.add_argument("--seed", type=int, default=None)
    return parser.parse_args(argv)


def main(argv: Sequence[str] | None = None) -> None:
    """Run the fake Twilio server until SIGTERM or SIGINT."""
    args = _parse_args(argv)
    config = FakeTwilioConfig(
        account_sid=args.account_sid,
        auth_token=args.auth_token,
        callback_delay_ms=args.callback_delay_ms,
        latency_ms=args.latency_ms,
        duplicate_callbacks=args.duplicate_callbacks,
        reverse_callbacks=args.reverse_callbacks,
        max_per_second=args.max_per_second,
        seed=args.seed,
    )
    run_until_signalled(FakeTwilioServer(config), args.host, args.port)


if __name__ == "__main__":
    main()
