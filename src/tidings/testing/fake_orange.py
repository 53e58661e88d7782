"""A fake of Orange's SMS API (OneAPI style) that speaks its real wire format over real HTTP.

It stands in for the Orange Developer "SMS Africa/Middle East" API in integration tests: an OAuth2 token
endpoint, the OneAPI outbound request resource, delivery-status polling, and the JSON notifications
Orange posts back. A few *magic numbers* (shared with :mod:`tidings.providers.fake_rules` where they
mean the same thing) force each path a message can take.

Wire format
-----------
``POST /oauth/v3/token`` with ``Authorization: Basic base64(client_id:client_secret)`` and the form body
``grant_type=client_credentials`` answers ``200 {"token_type": "Bearer", "access_token": str,
"expires_in": int}``. A token stops working ``expires_in`` seconds later (or at once after
:meth:`FakeOrangeServer.expire_tokens`). Wrong credentials answer ``401 {"error": "invalid_client",
"error_description": str}``; a grant type other than ``client_credentials`` answers
``400 {"error": "unsupported_grant_type", ...}`` (a missing one ``400 {"error": "invalid_request"}``).

``POST /smsmessaging/v1/outbound/{senderAddress}/requests``, where the path segment is the URL-encoded
``tel:+NNN`` (``tel%3A%2BNNN``; the decoded form works too), with ``Authorization: Bearer <token>``,
``Content-Type: application/json`` and the body::

    {"outboundSMSMessageRequest": {
        "address": "tel:+NNN", "senderAddress": "tel:+NNN", "senderName": str (optional),
        "outboundSMSTextMessage": {"message": str},
        "clientCorrelator": str (optional),
        "receiptRequest": {"notifyURL": str, "callbackData": str (optional)} (optional)}}

The path sender must equal ``senderAddress``. The answer is one of:

* ``201`` with ``Location: <resourceURL>`` and the request echoed back, plus ``"resourceURL":
  "<base>/smsmessaging/v1/outbound/<encoded sender>/requests/<request id>"`` inside
  ``outboundSMSMessageRequest``. A ``clientCorrelator`` already accepted for the same sender answers
  the original request again (same ``resourceURL``) without a second send: OneAPI's idempotency;
* ``400 {"requestError": {"serviceException": {"messageId": "SVC0001"|"SVC0002"|"SVC0004",
  "text": "... %1", "variables": [str]}}}`` for a malformed body, a bad field or a bad address;
* ``403 {"requestError": {"policyException": {"messageId": "POL0001", "text": ..., "variables":
  [...]}}}`` when the account may not send (for instance, no SMS bundle left): permanent;
* gateway errors ``{"code": int, "message": str, "description": str}``: ``401`` code 41 "Invalid
  credentials" (missing or unknown token), ``401`` code 42 "Expired credentials", ``429`` code 53
  "Too many requests" (over ``max_per_second`` sends in a sliding one-second window) and ``503``
  code 5 "The service is temporarily unavailable".

Magic ``address`` numbers: ``tel:+12025550101`` gets 400 SVC0004; ``tel:+12025550108`` gets 403
POL0001; ``tel:+12025550102`` always gets 503; ``tel:+12025550103`` gets 503 on the first send of an
address and message, and is accepted later; ``tel:+12025550104`` is accepted, then notified
``DeliveryImpossible``; ``tel:+12025550105`` is accepted and never notified, but polling reports
``DeliveredToTerminal``; ``tel:+12025550106`` is accepted, then notified ``DeliveryUncertain``. Any other
number is accepted, then notified ``DeliveredToTerminal`` (preceded by ``DeliveredToNetwork`` when
``intermediate_notifications`` is set).

For an accepted request with a ``receiptRequest``, the server waits ``notify_delay_ms`` before each
notification and posts (unsigned, as Orange does) ``{"deliveryInfoNotification": {"callbackData": str,
"deliveryInfo": {"address": "tel:+NNN", "deliveryStatus": str}}}`` to ``notifyURL``, retrying up to 3
times on connection errors, timeouts and 5xx answers. The config can post each notification twice or
a message's notifications in reverse order, to test receivers against both.

``GET /smsmessaging/v1/outbound/{senderAddress}/requests/{requestId}/deliveryInfos`` (Bearer) answers
``200 {"deliveryInfoList": {"deliveryInfo": [{"address", "deliveryStatus"}], "resourceURL": str}}``:
``MessageWaiting`` until the status moves on, which it does when each notification is due (even when
no ``notifyURL`` was given). An unknown request id answers 404 with a ``serviceException`` body.

:meth:`FakeOrangeServer.post_inbound` posts a mobile-originated message as Orange does:
``{"inboundSMSMessageNotification": {"inboundSMSMessage": {"senderAddress", "destinationAddress",
"message", "dateTime" (ISO-8601 UTC), "messageId"}}}``.

``GET /_stats`` returns counters, ``POST /_reset`` clears them (issued tokens stay valid), ``GET /``
is a health check.

Run it standalone with ``python -m tidings.testing.fake_orange --port 0``: it prints one line,
``listening on http://HOST:PORT``, and serves until SIGTERM or SIGINT.
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import binascii
import contextlib
import hmac
import random
import time
import uuid
from collections import deque
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any
from urllib.parse import parse_qs, quote, unquote

import orjson
from aiohttp import web

from tidings.providers.fake_rules import (
    NO_RECEIPT,
    PERMANENT_FAILURE,
    RECEIPT_FAILED,
    TEMPORARY_FAILURE,
    TEMPORARY_THEN_OK,
)
from tidings.testing.http_fake import (
    JSON,
    FakeHttpServer,
    PostPolicy,
    cli_parser,
    json_response,
    over_rate,
    run_until_signalled,
)

__all__ = [
    "DELIVERY_UNCERTAIN",
    "POLICY_ERROR",
    "FakeOrangeConfig",
    "FakeOrangeRequest",
    "FakeOrangeServer",
    "main",
]

DELIVERY_UNCERTAIN = "+12025550106"
"""Accepted, then notified ``DeliveryUncertain``."""
POLICY_ERROR = "+12025550108"
"""Refused at send with a 403 ``policyException`` (no SMS bundle left): permanent."""

NOTIFICATION_RETRIES = 3
"""How many times one notification is posted again after a failed post."""
NOTIFICATION_BACKOFF_S = 0.1
"""The pause after the first failed notification post; it doubles after each failure."""
NOTIFICATION_TIMEOUT_S = 10.0
"""The time allowed to connect, and to wait for each read, when posting one notification."""
NOTIFICATION_CONNECTION_LIMIT = 64
"""At most this many notification posts are in flight at once."""

_NOTIFICATIONS = PostPolicy(
    kind="notification",
    attempts=NOTIFICATION_RETRIES + 1,
    backoff_s=NOTIFICATION_BACKOFF_S,
    timeout_s=NOTIFICATION_TIMEOUT_S,
    connection_limit=NOTIFICATION_CONNECTION_LIMIT,
)

TOKEN_PATH = "/oauth/v3/token"
OUTBOUND_PREFIX = "/smsmessaging/v1/outbound"

MESSAGE_WAITING = "MessageWaiting"
DELIVERED_TO_NETWORK = "DeliveredToNetwork"
DELIVERED_TO_TERMINAL = "DeliveredToTerminal"
DELIVERY_IMPOSSIBLE = "DeliveryImpossible"
DELIVERY_UNCERTAIN_STATUS = "DeliveryUncertain"

_JSON_HEADERS = {"Content-Type": JSON}


@dataclass
class FakeOrangeConfig:
    """How a :class:`FakeOrangeServer` behaves."""

    client_id: str = "fake-orange-client"
    client_secret: str = "fake-orange-secret"
    token_lifetime_s: int = 3600
    """The ``expires_in`` of issued tokens; a token really stops working after it."""
    notify_delay_ms: float = 30.0
    """The pause before each delivery notification."""
    latency_ms: float = 0.0
    """A pause before each answer of the API (token, send and polling)."""
    duplicate_notifications: bool = False
    """Post each notification twice."""
    reverse_notifications: bool = False
    """Post a message's notifications in reverse order (the final status first)."""
    intermediate_notifications: bool = False
    """Also post ``DeliveredToNetwork`` before the final status."""
    max_per_second: float | None = None
    """Sends beyond this rate (sliding one-second window) get 429; ``None`` sets no limit."""
    seed: int | None = None
    """Seed for the random tokens and ids, for reproducible runs."""


@dataclass
class FakeOrangeRequest:
    """One accepted outbound SMS request."""

    id: str
    sender: str
    """The ``senderAddress``, like ``tel:+2250000``."""
    address: str
    """The destination, like ``tel:+14155550123``."""
    sender_name: str | None
    message: str
    client_correlator: str | None
    notify_url: str | None
    callback_data: str | None
    delivery_status: str
    """What ``deliveryInfos`` reports now."""
    attempt: int
    """The n-th send of this address and message (accepted or not) that created the request."""


@dataclass
class _Stats:
    requests: int = 0
    accepted: int = 0
    rejected: int = 0
    replayed: int = 0
    tokens_issued: int = 0
    notifications_sent: int = 0
    notifications_failed: int = 0
    accepted_by_correlator: dict[str, int] = field(default_factory=dict)

    def as_dict(self) -> dict[str, object]:
        return {
            "requests": self.requests,
            "accepted": self.accepted,
            "rejected": self.rejected,
            "replayed": self.replayed,
            "tokens_issued": self.tokens_issued,
            "notifications_sent": self.notifications_sent,
            "notifications_failed": self.notifications_failed,
            "duplicates": sorted(c for c, n in self.accepted_by_correlator.items() if n > 1),
        }


# --- answers --------------------------------------------------------------------------------------


def _gateway_error(status: int, code: int, message: str, description: str) -> web.Response:
    return json_response(status, {"code": code, "message": message, "description": description})


def _oauth_error(status: int, error: str, description: str) -> web.Response:
    return json_response(status, {"error": error, "error_description": description})


def _service_exception(status: int, message_id: str, text: str, variables: list[str]) -> web.Response:
    body = {
        "requestError": {"serviceException": {"messageId": message_id, "text": text, "variables": variables}}
    }
    return json_response(status, body)


_SVC0001_TEXT = "A service error occurred. Error code is %1"
_SVC0002_TEXT = "Invalid input value for message part %1"
_SVC0004_TEXT = "No valid addresses provided in message part %1"


def _bad_input(part: str) -> web.Response:
    return _service_exception(400, "SVC0002", _SVC0002_TEXT, [part])


def _invalid_credentials() -> web.Response:
    return _gateway_error(
        401,
        41,
        "Invalid credentials",
        "The requested service needs credentials, but the ones provided were invalid.",
    )


def _expired_credentials() -> web.Response:
    return _gateway_error(
        401,
        42,
        "Expired credentials",
        "The requested service needs credentials, but the ones provided have expired.",
    )


def _too_many_requests() -> web.Response:
    return _gateway_error(
        429,
        53,
        "Too many requests",
        "The application has made too many calls and has exceeded the rate limit for this service.",
    )


def _unavailable() -> web.Response:
    return _gateway_error(
        503,
        5,
        "The service is temporarily unavailable",
        "The service is temporarily unavailable, try again later.",
    )


def _no_bundle() -> web.Response:
    body = {
        "requestError": {
            "policyException": {
                "messageId": "POL0001",
                "text": "A policy error occurred. For example, rate limit error, authentication and "
                "authorization errors",
                "variables": ["No valid contract: the SMS bundle of this application is exhausted"],
            }
        }
    }
    return json_response(403, body)


def _is_tel(value: object) -> bool:
    """True for ``tel:+`` followed by 1 to 15 digits."""
    if not isinstance(value, str) or not value.startswith("tel:+"):
        return False
    digits = value[5:]
    return 0 < len(digits) <= 15 and digits.isascii() and digits.isdigit()


def _as_tel(number: str) -> str:
    return number if number.startswith("tel:") else f"tel:{number}"


def _utc_timestamp() -> str:
    return datetime.now(UTC).isoformat(timespec="seconds").replace("+00:00", "Z")


@dataclass
class _Send:
    """A send request that passed validation."""

    sender: str
    address: str
    sender_name: str | None
    message: str
    client_correlator: str | None
    notify_url: str | None
    callback_data: str | None
    echo: dict[str, Any]


def _parse_send(raw: bytes, content_type: str, path_sender: str) -> _Send | web.Response:
    """The validated send request, or the 400 answer that refuses it."""
    if content_type != JSON:
        return _service_exception(400, "SVC0001", _SVC0001_TEXT, ["Content-Type must be application/json"])
    try:
        payload = orjson.loads(raw)
    except orjson.JSONDecodeError:
        return _service_exception(400, "SVC0001", _SVC0001_TEXT, ["The request body is not valid JSON"])
    if not isinstance(payload, dict):
        return _service_exception(400, "SVC0001", _SVC0001_TEXT, ["The request body must be a JSON object"])
    inner = payload.get("outboundSMSMessageRequest")
    if not isinstance(inner, dict):
        return _bad_input("outboundSMSMessageRequest")
    address = inner.get("address")
    if address is None:
        return _bad_input("address")
    if not _is_tel(address):
        return _service_exception(400, "SVC0004", _SVC0004_TEXT, ["address"])
    assert isinstance(address, str)
    sender = inner.get("senderAddress")
    if not _is_tel(sender) or sender != path_sender:
        return _bad_input("senderAddress")
    assert isinstance(sender, str)
    sender_name = inner.get("senderName")
    if sender_name is not None and (not isinstance(sender_name, str) or not sender_name):
        return _bad_input("senderName")
    text = inner.get("outboundSMSTextMessage")
    if not isinstance(text, dict):
        return _bad_input("outboundSMSTextMessage")
    message = text.get("message")
    if not isinstance(message, str) or not message:
        return _bad_input("message")
    correlator = inner.get("clientCorrelator")
    if correlator is not None and (not isinstance(correlator, str) or not correlator):
        return _bad_input("clientCorrelator")
    notify_url: str | None = None
    callback_data: str | None = None
    receipt = inner.get("receiptRequest")
    if receipt is not None:
        if not isinstance(receipt, dict):
            return _bad_input("receiptRequest")
        url = receipt.get("notifyURL")
        if not isinstance(url, str) or not url.startswith(("http://", "https://")):
            return _bad_input("notifyURL")
        data = receipt.get("callbackData")
        if data is not None and not isinstance(data, str):
            return _bad_input("callbackData")
        notify_url, callback_data = url, data
    return _Send(
        sender=sender,
        address=address,
        sender_name=sender_name,
        message=message,
        client_correlator=correlator,
        notify_url=notify_url,
        callback_data=callback_data,
        echo=inner,
    )


def _statuses(address: str, config: FakeOrangeConfig) -> tuple[list[str], bool]:
    """The statuses an accepted message goes through, in order, and whether they are notified."""
    number = address[4:]
    if number == NO_RECEIPT:
        return [DELIVERED_TO_TERMINAL], False
    if number == RECEIPT_FAILED:
        final = DELIVERY_IMPOSSIBLE
    elif number == DELIVERY_UNCERTAIN:
        final = DELIVERY_UNCERTAIN_STATUS
    else:
        final = DELIVERED_TO_TERMINAL
    if config.intermediate_notifications:
        return [DELIVERED_TO_NETWORK, final], True
    return [final], True


class FakeOrangeServer(FakeHttpServer):
    """A fake Orange SMS API on a real socket: :meth:`start` it, send it messages, then :meth:`stop` it."""

    def __init__(self, config: FakeOrangeConfig | None = None) -> None:
        super().__init__("fake Orange server", _NOTIFICATIONS)
        self.config = config if config is not None else FakeOrangeConfig()
        self._rng = random.Random(self.config.seed)
        self._stats = _Stats()
        self.requests: dict[str, FakeOrangeRequest] = {}
        """Accepted requests by request id."""
        self.sends: list[FakeOrangeRequest] = []
        """Accepted sends in arrival order (replays excluded)."""
        self._answers: dict[str, dict[str, Any]] = {}
        """The 201 body of each accepted request, by request id."""
        self._by_correlator: dict[tuple[str, str], str] = {}
        """Request ids by (sender, clientCorrelator)."""
        self._attempts: dict[tuple[str, str], int] = {}
        """Send requests seen per (address, message)."""
        self._pinned: set[str] = set()
        """Request ids whose status was set by hand: the timeline leaves them alone."""
        self._tokens: dict[str, float] = {}
        """Issued tokens and the monotonic time they expire at."""
        self._window: deque[float] = deque()
        """The monotonic times of the sends admitted in the last second."""
        self._expected_pair = f"{self.config.client_id}:{self.config.client_secret}".encode()

    @property
    def stats(self) -> dict[str, object]:
        """The same counters as ``GET /_stats``."""
        return self._stats.as_dict()

    @property
    def tokens_issued(self) -> int:
        """How many tokens ``POST /oauth/v3/token`` handed out (since the last reset)."""
        return self._stats.tokens_issued

    def expire_tokens(self) -> None:
        """Make every token issued so far stop working now (the next API call gets 401 code 42)."""
        for token in self._tokens:
            self._tokens[token] = float("-inf")

    def set_delivery_status(self, request_id: str, status: str) -> None:
        """Change what ``deliveryInfos`` reports for a request, without any notification."""
        request = self.requests.get(request_id)
        if request is None:
            raise KeyError(request_id)
        request.delivery_status = status
        self._pinned.add(request_id)

    def _add_routes(self, router: web.UrlDispatcher) -> None:
        router.add_post(TOKEN_PATH, self._handle_token)
        router.add_post(OUTBOUND_PREFIX + "/{sender}/requests", self._handle_send)
        router.add_get(
            OUTBOUND_PREFIX + "/{sender}/requests/{request_id}/deliveryInfos", self._handle_delivery_infos
        )

    def _reset(self) -> None:
        # Notifications already scheduled still go out, but they count into the old (discarded) stats.
        # Issued tokens stay valid, so a running client does not have to log in again.
        self._stats = _Stats()
        self._rng = random.Random(self.config.seed)
        self.requests = {}
        self.sends = []
        self._answers.clear()
        self._by_correlator.clear()
        self._attempts.clear()
        self._pinned.clear()
        self._window.clear()

    async def wait_for_notifications(self, timeout: float) -> None:
        """Wait until no notification is pending; raise :class:`TimeoutError` after ``timeout`` seconds."""
        await self._wait_for_tasks(timeout)

    async def post_inbound(
        self, url: str, sender: str, destination: str, message: str, *, message_id: str | None = None
    ) -> tuple[int, bytes]:
        """Post one mobile-originated message to ``url`` as Orange does; return the answer's status and body.

        ``sender`` and ``destination`` get a ``tel:`` prefix when they lack one.
        """
        payload = {
            "inboundSMSMessageNotification": {
                "inboundSMSMessage": {
                    "senderAddress": _as_tel(sender),
                    "destinationAddress": _as_tel(destination),
                    "message": message,
                    "dateTime": _utc_timestamp(),
                    "messageId": message_id if message_id is not None else self._new_id(),
                }
            }
        }
        return await self._post_once(url, orjson.dumps(payload), _JSON_HEADERS)

    async def post_delivery(self, url: str, payload: dict[str, Any]) -> tuple[int, bytes]:
        """Post any delivery notification JSON to ``url`` once; return the answer's status and body."""
        return await self._post_once(url, orjson.dumps(payload), _JSON_HEADERS)

    # --- helpers --------------------------------------------------------------------------------

    def _new_id(self) -> str:
        return str(uuid.UUID(int=self._rng.getrandbits(128), version=4))

    def _resource_url(self, sender: str, request_id: str) -> str:
        return f"{self.url}{OUTBOUND_PREFIX}/{quote(sender, safe='')}/requests/{request_id}"

    def _check_bearer(self, authorization: str | None) -> web.Response | None:
        """The 401 answer for a missing, unknown or expired token; ``None`` when the token works."""
        if authorization is None or not authorization.startswith("Bearer "):
            return _invalid_credentials()
        expires_at = self._tokens.get(authorization[len("Bearer ") :].strip())
        if expires_at is None:
            return _invalid_credentials()
        if time.monotonic() >= expires_at:
            return _expired_credentials()
        return None

    async def _pause(self) -> None:
        latency = self.config.latency_ms
        if latency > 0:
            await asyncio.sleep(latency / 1000)

    @staticmethod
    def _path_sender(request: web.Request) -> str:
        sender = request.match_info["sender"]
        return unquote(sender) if "%" in sender else sender

    # --- handlers -------------------------------------------------------------------------------

    async def _handle_token(self, request: web.Request) -> web.Response:
        raw = await request.read()
        await self._pause()
        authorization = request.headers.get("Authorization", "")
        given = b""
        if authorization.startswith("Basic "):
            with contextlib.suppress(binascii.Error, ValueError):
                given = base64.b64decode(authorization[len("Basic ") :].strip(), validate=True)
        if not hmac.compare_digest(given, self._expected_pair):
            return _oauth_error(
                401,
                "invalid_client",
                "The requested service needs credentials, but the ones provided were invalid.",
            )
        form = parse_qs(raw.decode("utf-8", "replace"))
        grant_types = form.get("grant_type")
        if not grant_types:
            return _oauth_error(400, "invalid_request", "The grant_type parameter is missing.")
        if grant_types[0] != "client_credentials":
            return _oauth_error(
                400, "unsupported_grant_type", "The authorization grant type is not supported by this server."
            )
        token = f"{self._rng.getrandbits(192):048x}"
        lifetime = self.config.token_lifetime_s
        self._tokens[token] = time.monotonic() + lifetime
        self._stats.tokens_issued += 1
        return json_response(
            200,
            {"token_type": "Bearer", "access_token": token, "expires_in": lifetime},
            headers={"Cache-Control": "no-store", "Pragma": "no-cache"},
        )

    async def _handle_send(self, request: web.Request) -> web.Response:
        stats = self._stats
        stats.requests += 1
        raw = await request.read()
        response = self._answer_send(stats, request, raw)
        if response.status != 201:
            stats.rejected += 1
        await self._pause()
        return response

    def _answer_send(self, stats: _Stats, request: web.Request, raw: bytes) -> web.Response:
        refused = self._check_bearer(request.headers.get("Authorization"))
        if refused is not None:
            return refused
        if over_rate(self._window, self.config.max_per_second):
            return _too_many_requests()
        parsed = _parse_send(raw, request.content_type, self._path_sender(request))
        if isinstance(parsed, web.Response):
            return parsed

        if parsed.client_correlator is not None:
            original = self._by_correlator.get((parsed.sender, parsed.client_correlator))
            if original is not None:
                stats.replayed += 1
                answer = self._answers[original]
                return json_response(201, answer, headers={"Location": self._resource_url_of(answer)})

        key = (parsed.address, parsed.message)
        attempt = self._attempts.get(key, 0) + 1
        self._attempts[key] = attempt
        number = parsed.address[4:]
        if number == PERMANENT_FAILURE:
            return _service_exception(400, "SVC0004", _SVC0004_TEXT, ["address"])
        if number == POLICY_ERROR:
            return _no_bundle()
        if number == TEMPORARY_FAILURE or (number == TEMPORARY_THEN_OK and attempt <= 1):
            return _unavailable()

        request_id = self._new_id()
        resource_url = self._resource_url(parsed.sender, request_id)
        accepted = FakeOrangeRequest(
            id=request_id,
            sender=parsed.sender,
            address=parsed.address,
            sender_name=parsed.sender_name,
            message=parsed.message,
            client_correlator=parsed.client_correlator,
            notify_url=parsed.notify_url,
            callback_data=parsed.callback_data,
            delivery_status=MESSAGE_WAITING,
            attempt=attempt,
        )
        answer = {"outboundSMSMessageRequest": {**parsed.echo, "resourceURL": resource_url}}
        self.requests[request_id] = accepted
        self.sends.append(accepted)
        self._answers[request_id] = answer
        stats.accepted += 1
        if parsed.client_correlator is not None:
            self._by_correlator[(parsed.sender, parsed.client_correlator)] = request_id
            counts = stats.accepted_by_correlator
            counts[parsed.client_correlator] = counts.get(parsed.client_correlator, 0) + 1
        self._schedule_timeline(stats, accepted)
        return json_response(201, answer, headers={"Location": resource_url})

    @staticmethod
    def _resource_url_of(answer: dict[str, Any]) -> str:
        url = answer["outboundSMSMessageRequest"]["resourceURL"]
        assert isinstance(url, str)
        return url

    async def _handle_delivery_infos(self, request: web.Request) -> web.Response:
        await self._pause()
        refused = self._check_bearer(request.headers.get("Authorization"))
        if refused is not None:
            return refused
        request_id = request.match_info["request_id"]
        found = self.requests.get(request_id)
        if found is None or found.sender != self._path_sender(request):
            return _service_exception(404, "SVC0002", _SVC0002_TEXT, ["requestId"])
        body = {
            "deliveryInfoList": {
                "deliveryInfo": [{"address": found.address, "deliveryStatus": found.delivery_status}],
                "resourceURL": self._resource_url(found.sender, found.id) + "/deliveryInfos",
            }
        }
        return json_response(200, body)

    # --- notifications --------------------------------------------------------------------------

    def _schedule_timeline(self, stats: _Stats, accepted: FakeOrangeRequest) -> None:
        self._spawn(self._run_timeline(stats, accepted))

    async def _run_timeline(self, stats: _Stats, accepted: FakeOrangeRequest) -> None:
        """Move the request through its statuses, posting a notification for each when one is due."""
        config = self.config
        statuses, notified = _statuses(accepted.address, config)
        order = list(enumerate(statuses))
        if config.reverse_notifications:
            order.reverse()
        copies = 2 if config.duplicate_notifications else 1
        reached = -1
        for index, status in order:
            for _ in range(copies if notified else 1):
                if config.notify_delay_ms > 0:
                    await asyncio.sleep(config.notify_delay_ms / 1000)
                # Polling reports the furthest status reached, whatever order notifications go in.
                reached = max(reached, index)
                if accepted.id not in self._pinned:
                    accepted.delivery_status = statuses[reached]
                if notified and accepted.notify_url is not None:
                    await self._notify(stats, accepted, status)

    async def _notify(self, stats: _Stats, accepted: FakeOrangeRequest, status: str) -> None:
        assert accepted.notify_url is not None
        notification: dict[str, Any] = {
            "deliveryInfo": {"address": accepted.address, "deliveryStatus": status}
        }
        if accepted.callback_data is not None:
            notification = {"callbackData": accepted.callback_data, **notification}
        body = orjson.dumps({"deliveryInfoNotification": notification})
        if await self._post_with_retries(accepted.notify_url, body, _JSON_HEADERS):
            stats.notifications_sent += 1
        else:
            stats.notifications_failed += 1


# --- command line ---------------------------------------------------------------------------------


def _parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = cli_parser(
        "tidings.testing.fake_orange", "Run a fake of Orange's SMS API over HTTP (for tests)."
    )
    defaults = FakeOrangeConfig()
    parser.add_argument("--client-id", default=defaults.client_id)
    parser.add_argument("--client-secret", default=defaults.client_secret)
    parser.add_argument(
        "--token-lifetime", type=int, default=defaults.token_lifetime_s, help="seconds a token works"
    )
    parser.add_argument("--notify-delay-ms", type=float, default=defaults.notify_delay_ms)
    parser.add_argument("--latency-ms", type=float, default=defaults.latency_ms)
    parser.add_argument("--max-per-second", type=float, default=None)
    parser.add_argument("--seed", type=int, default=None)
    return parser.parse_args(argv)


def main(argv: Sequence[str] | None = None) -> None:
    """Run the fake Orange API until SIGTERM or SIGINT."""
    args = _parse_args(argv)
    config = FakeOrangeConfig(
        client_id=args.client_id,
        client_secret=args.client_secret,
        token_lifetime_s=args.token_lifetime,
        notify_delay_ms=args.notify_delay_ms,
        latency_ms=args.latency_ms,
        max_per_second=args.max_per_second,
        seed=args.seed,
    )
    run_until_signalled(FakeOrangeServer(config), args.host, args.port)


if __name__ == "__main__":
    main()
