"""A fake Mailchimp Transactional (Mandrill) API that speaks Mandrill's wire format over real HTTP.

It lets the Mandrill adapter (and the tests) exercise every path an email can take without an
account: the API key, Mandrill's error JSON, rejected and invalid recipients, and signed, batched
webhook events (bounces, spam complaints, opens, clicks…) posted back to a webhook URL.

Wire format
-----------
``POST /api/1.0/messages/send`` (``/api/1.0/messages/send.json`` too; the ``/api/1.0`` prefix is
optional) with a JSON body ``{"key": API key, "message": {...}}``: ``html``, ``text``,
``subject``, ``from_email``, ``from_name``, ``to`` (``[{"email", "name", "type"}]``),
``headers``, ``attachments`` (``[{"type", "name", "content"}]``, content in base64), ``tags``,
``subaccount`` and ``metadata``. The answer is one of:

* ``200`` and one result per recipient: ``{"email", "status", "reject_reason", "queued_reason",
  "_id"}``, ``status`` one of ``sent``, ``queued``, ``scheduled``, ``rejected`` and ``invalid``,
  ``_id`` 32 hex digits;
* a Mandrill error ``{"status": "error", "code", "name", "message"}`` with HTTP 500 (as Mandrill
  does, whatever the cause): ``Invalid_Key`` (code -1; a missing or wrong key), ``ValidationError``
  (code -2; a body that is not a JSON object, no ``message``, no ``to``, a ``from_email`` or an
  attachment that cannot be read, a tag starting with ``_``), ``Unknown_Subaccount`` (code 12;
  when ``subaccounts`` is set and does not hold it), ``GeneralError`` (code -1; a magic address);
* ``429`` with ``Retry-After: 1`` and an error named ``Too_Many_Requests`` (over
  ``max_per_second``, or a magic address): Mandrill's documentation names no body for it, so this
  one is the fake's own.

Magic addresses, by their local part (the part before ``@``), any domain:

==============  =================================================================================
``bounce``      ``sent``, then a ``hard_bounce`` event (``bad_mailbox``, a 550 ``diag``)
``reject``      ``rejected`` with ``reject_reason`` ``hard-bounce``, then a ``reject`` event
``invalid``     ``invalid`` (as is any address without one ``@``), no event
``soft``        ``sent``, then ``soft_bounce`` (``mailbox_full``) and ``send`` events
``defer``       ``sent``, then ``deferral`` and ``send`` events
``spam``        ``sent``, then ``send`` and ``spam`` events
``unsub``       ``sent``, then ``send`` and ``unsub`` events
``open``        ``sent``, then ``send``, ``open`` and ``click`` events
``queued``      ``queued`` (``queued_reason`` ``attachments``), then a ``send`` event
``scheduled``   ``scheduled``, then a ``send`` event
``silent``      ``sent``, and no event at all
``unavailable`` always 500 ``GeneralError``
``retry``       500 ``GeneralError`` on the first send of a (recipient, subject) pair, then as usual
``ratelimit``   always 429 ``Too_Many_Requests`` with ``Retry-After: 1``
==============  =================================================================================

Any other address is ``sent``, then gets a ``send`` event. The n-th send of a (recipient, subject)
pair that gets past the key, validation and the rate limit is attempt n.

Events go to ``webhook_url`` when one is set (:attr:`FakeMandrillConfig.webhook_url`, which may be
set after the server started): each event of a message ``event_delay_ms`` after the one before
(the first that long after the answer), gathered for ``batch_ms`` into one post, as Mandrill
batches them. A post is a form with one field, ``mandrill_events`` (the JSON array), and the header
``X-Mandrill-Signature``: :func:`signature` over the URL and that field, with the webhook key. A
post is retried up to 3 times (4 posts) on connection errors, timeouts and 5xx answers. Every
event is also kept in :attr:`FakeMandrillServer.events`, posted or not.

:meth:`FakeMandrillServer.post_events` posts a signed batch of any events to any URL, once, to test
the receiving side (a wrong key forges the signature); :meth:`FakeMandrillServer.event` builds an
event about a message, as the fake would post it.

``GET /_stats`` returns counters, ``POST /_reset`` clears them (and the stored messages and
events), ``GET /`` is a health check.

Run it standalone with ``python -m tidings.testing.fake_mandrill --port 0``: it prints one line,
``listening on http://HOST:PORT``, and serves until SIGTERM or SIGINT.
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import binascii
import collections
import contextlib
import hashlib
import hmac
import random
import time
import uuid
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import urlencode

import aiohttp
import orjson
from aiohttp import web

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
    "DEFAULT_API_KEY",
    "DEFAULT_WEBHOOK_KEY",
    "FakeMandrillConfig",
    "FakeMandrillMessage",
    "FakeMandrillServer",
    "main",
    "signature",
]

SIGNATURE_HEADER = "X-Mandrill-Signature"
EVENTS_FIELD = "mandrill_events"
DEFAULT_API_KEY = "fake-mandrill-api-key"
DEFAULT_WEBHOOK_KEY = "fake-mandrill-webhook-key"

WEBHOOK_ATTEMPTS = 4
"""How many times one batch of events is posted (the first post and 3 retries) before giving up."""
WEBHOOK_BACKOFF_S = 0.1
"""The pause after the first failed post; it doubles after each failure."""
WEBHOOK_TIMEOUT_S = 10.0
"""The time allowed to connect, and to wait for each read, when posting one batch."""
WEBHOOK_CONNECTION_LIMIT = 16
MAX_BATCH = 1000
"""The most events in one post, as Mandrill."""

_WEBHOOKS = PostPolicy(
    kind="webhook batch",
    attempts=WEBHOOK_ATTEMPTS,
    backoff_s=WEBHOOK_BACKOFF_S,
    timeout_s=WEBHOOK_TIMEOUT_S,
    connection_limit=WEBHOOK_CONNECTION_LIMIT,
)
_FORM = "application/x-www-form-urlencoded"

_STEPS: dict[str, tuple[str, ...]] = {
    "bounce": ("hard_bounce",),
    "reject": ("reject",),
    "invalid": (),
    "soft": ("soft_bounce", "send"),
    "defer": ("deferral", "send"),
    "spam": ("send", "spam"),
    "unsub": ("send", "unsub"),
    "open": ("send", "open", "click"),
    "silent": (),
}
"""The events that follow an answer, by the magic local part; any other address gets ``send``."""

_STATES = {
    "send": "sent",
    "deferral": "deferred",
    "soft_bounce": "soft-bounced",
    "hard_bounce": "bounced",
    "reject": "rejected",
    "spam": "sent",
    "unsub": "sent",
    "open": "sent",
    "click": "sent",
}
"""The message's ``state`` once an event happened."""

CLICKED_URL = "https://clinic.example/appointments?utm_source=mandrill"
"""The link an ``open@`` message's ``click`` event reports."""


def signature(webhook_key: str, url: str, params: Mapping[str, str]) -> str:
    """The ``X-Mandrill-Signature`` of a post to ``url`` (exactly as registered) with ``params``.

    Base64 of HMAC-SHA1, keyed with the webhook key, over the URL followed by every field's name
    and value, sorted by name.
    """
    payload = url + "".join(name + params[name] for name in sorted(params))
    mac = hmac.new(webhook_key.encode("utf-8"), payload.encode("utf-8"), hashlib.sha1)
    return base64.b64encode(mac.digest()).decode("ascii")


@dataclass
class FakeMandrillConfig:
    """How a :class:`FakeMandrillServer` behaves."""

    api_key: str = DEFAULT_API_KEY
    """The key callers put in the body."""
    webhook_key: str = DEFAULT_WEBHOOK_KEY
    """The key that signs the webhook posts."""
    webhook_url: str | None = None
    """Where events are posted; ``None``: they are only kept."""
    event_delay_ms: float = 30.0
    """The pause before each event of a message."""
    batch_ms: float = 20.0
    """How long events are gathered into one post."""
    latency_ms: float = 0.0
    """A pause before each answer to a send."""
    max_per_second: float | None = None
    """Sends beyond this many in the last second get a 429; ``None``: no limit."""
    subaccounts: frozenset[str] | None = None
    """The subaccounts that exist; ``None``: any."""
    seed: int | None = None
    """Seed for the message ids, for reproducible runs; ``None`` draws random ones."""


@dataclass
class FakeMandrillMessage:
    """One recipient of an accepted send, as the fake stores it."""

    id: str
    email: str
    status: str
    """What the answer said: ``sent``, ``queued``, ``scheduled``, ``rejected`` or ``invalid``."""
    message: dict[str, Any]
    """The ``message`` object of the request, as it arrived."""
    attempt: int
    created_at: float
    reject_reason: str | None = None
    state: str = "sent"
    """Mandrill's ``state`` for the message, following its events."""

    @property
    def metadata(self) -> dict[str, Any]:
        found = self.message.get("metadata")
        return found if isinstance(found, dict) else {}


@dataclass
class _Stats:
    requests: int = 0
    errors: int = 0
    sent: int = 0
    rejected: int = 0
    events: int = 0
    batches_posted: int = 0
    batches_failed: int = 0
    attempts: dict[str, int] = field(default_factory=dict)
    sent_by_key: dict[str, int] = field(default_factory=dict)

    def as_dict(self) -> dict[str, object]:
        return {
            "requests": self.requests,
            "errors": self.errors,
            "sent": self.sent,
            "rejected": self.rejected,
            "events": self.events,
            "batches_posted": self.batches_posted,
            "batches_failed": self.batches_failed,
            "duplicates": sorted(key for key, n in self.sent_by_key.items() if n > 1),
        }


class _Refused(Exception):
    def __init__(self, status: int, code: int, name: str, message: str) -> None:
        super().__init__(message)
        self.response = _mandrill_error(status, code, name, message)


def _mandrill_error(status: int, code: int, name: str, message: str) -> web.Response:
    headers = {"Retry-After": "1"} if status == 429 else None
    payload = {"status": "error", "code": code, "name": name, "message": message}
    return json_response(status, payload, headers)


def _validation(message: str) -> _Refused:
    return _Refused(500, -2, "ValidationError", f"Validation error: {message}")


def _local_part(email: str) -> str:
    return email.rpartition("@")[0].lower()


def _is_address(email: str) -> bool:
    local, at, domain = email.partition("@")
    return bool(at and local and domain and "@" not in domain and "." in domain and " " not in email)


def _check_message(message: object) -> dict[str, Any]:
    """The ``message`` of a send, or the ``ValidationError`` Mandrill answers for it."""
    if not isinstance(message, dict):
        raise _validation("{'message': 'Please enter an array'}")
    to = message.get("to")
    if not isinstance(to, list) or not to:
        raise _validation("{'message': {'to': 'Please enter an array'}}")
    for recipient in to:
        if not isinstance(recipient, dict) or not isinstance(recipient.get("email"), str):
            raise _validation("{'message': {'to': {'email': 'Please enter a string'}}}")
    from_email = message.get("from_email")
    if from_email is not None and (not isinstance(from_email, str) or not _is_address(from_email)):
        raise _validation("{'message': {'from_email': 'An email address must contain a single @'}}")
    attachments = message.get("attachments", [])
    if not isinstance(attachments, list):
        raise _validation("{'message': {'attachments': 'Please enter an array'}}")
    for attachment in attachments:
        content = attachment.get("content") if isinstance(attachment, dict) else None
        if not isinstance(content, str):
            raise _validation("{'message': {'attachments': {'content': 'Please enter a string'}}}")
        try:
            base64.b64decode(content, validate=True)
        except (binascii.Error, ValueError) as exc:
            raise _validation("{'message': {'attachments': {'content': 'not valid base64'}}}") from exc
    tags = message.get("tags", [])
    if not isinstance(tags, list) or any(not isinstance(t, str) or t.startswith("_") for t in tags):
        raise _validation("{'message': {'tags': 'tags may not start with an underscore'}}")
    return message


class FakeMandrillServer(FakeHttpServer):
    """A fake Mandrill on a real socket: :meth:`start` it, send it messages, then :meth:`stop` it."""

    def __init__(self, config: FakeMandrillConfig | None = None) -> None:
        super().__init__("fake Mandrill server", _WEBHOOKS)
        self.config = config if config is not None else FakeMandrillConfig()
        self.requests: list[dict[str, Any]] = []
        """Every send's JSON body that could be read, in arrival order (the key included)."""
        self.messages: dict[str, FakeMandrillMessage] = {}
        """Every recipient answered with an id, by that id."""
        self.sends: list[FakeMandrillMessage] = []
        """The same, in arrival order."""
        self.events: list[dict[str, Any]] = []
        """Every event the fake made, in the order they happened."""
        self.batches: list[list[dict[str, Any]]] = []
        """Every batch of events posted to the webhook URL and answered 2xx."""
        self._rng = random.Random(self.config.seed)
        self._stats = _Stats()
        self._recent_sends: collections.deque[float] = collections.deque()
        self._pending: list[dict[str, Any]] = []
        self._flushing = False
        self._stopping = asyncio.Event()

    @property
    def stats(self) -> dict[str, object]:
        """The same counters as ``GET /_stats``."""
        return self._stats.as_dict()

    def _add_routes(self, router: web.UrlDispatcher) -> None:
        for prefix in ("/api/1.0", ""):
            for suffix in ("", ".json"):
                router.add_post(f"{prefix}/messages/send{suffix}", self._handle_send)

    def _reset(self) -> None:
        self._stats = _Stats()
        self.requests = []
        self.messages = {}
        self.sends = []
        self.events = []
        self.batches = []
        self._pending = []
        self._recent_sends.clear()
        self._rng = random.Random(self.config.seed)

    async def start(self, host: str = "127.0.0.1", port: int = 0) -> str:
        """Listen on ``host``:``port`` (0 picks a free port) and return the base URL."""
        if self._runner is None:
            self._stopping = asyncio.Event()
            self._flushing = False
        return await super().start(host, port)

    async def stop(self) -> None:
        """Stop listening, cut short the delayed answers, cancel pending events and posts."""
        self._stopping.set()
        await super().stop()

    async def wait_for_events(self, timeout: float) -> None:
        """Wait until no event is still to come or to be posted; :class:`TimeoutError` after
        ``timeout`` seconds."""
        await self._wait_for_tasks(timeout)

    def event(self, message: FakeMandrillMessage, name: str, **extra: Any) -> dict[str, Any]:
        """The event ``name`` about ``message`` as Mandrill posts it (``extra`` added at the top)."""
        now = time.time()
        body = message.message
        msg: dict[str, Any] = {
            "ts": int(message.created_at),
            "_id": message.id,
            "_version": uuid.uuid4().hex[:22],
            "state": _STATES.get(name, message.state),
            "subject": body.get("subject"),
            "email": message.email,
            "sender": body.get("from_email"),
            "tags": list(body.get("tags") or []),
            "metadata": dict(message.metadata),
            "opens": [],
            "clicks": [],
            "smtp_events": [],
            "resends": [],
        }
        if body.get("subaccount"):
            msg["subaccount"] = body["subaccount"]
        event: dict[str, Any] = {"event": name, "_id": message.id, "ts": int(now), "msg": msg}
        if name in ("send", "deferral"):
            msg["smtp_events"] = [
                {
                    "ts": int(now),
                    "type": "sent" if name == "send" else "deferred",
                    "diag": "250 2.0.0 OK" if name == "send" else "451 4.3.5 Temporarily unavailable",
                    "source_ip": "198.2.128.1",
                    "destination_ip": "192.0.2.25",
                    "size": len(str(body.get("html") or body.get("text") or "")),
                }
            ]
        elif name == "hard_bounce":
            msg["bounce_description"] = "bad_mailbox"
            msg["bgtools_code"] = 10
            msg["diag"] = "smtp;550 5.1.1 The email account that you tried to reach does not exist."
        elif name == "soft_bounce":
            msg["bounce_description"] = "mailbox_full"
            msg["bgtools_code"] = 22
            msg["diag"] = "smtp;552 5.2.2 Over quota"
        elif name in ("open", "click"):
            event.update({"ip": "203.0.113.7", "user_agent": "Mozilla/5.0", "location": None})
            if name == "click":
                event["url"] = CLICKED_URL
                msg["clicks"] = [{"ts": int(now), "url": CLICKED_URL}]
            msg["opens"] = [{"ts": int(now)}]
        event.update(extra)
        return event

    async def post_events(
        self, url: str, events: Sequence[Mapping[str, Any]], *, webhook_key: str | None = None
    ) -> tuple[int, bytes]:
        """Post ``events`` to ``url`` once, signed as Mandrill does; return (status, response body).

        ``webhook_key`` signs it instead of the configured key (to test a wrong signature).
        """
        data, headers = self._signed_request(url, events, webhook_key)
        if self._session is not None:
            return await self._post_once(url, data, headers)
        # A test may post events with a fake it never started.
        async with aiohttp.ClientSession() as session:
            return await post_once(session, url, data, headers)

    # --- the API --------------------------------------------------------------------------------

    async def _handle_send(self, request: web.Request) -> web.Response:
        stats = self._stats
        stats.requests += 1
        try:
            response, accepted = self._answer_send(stats, await request.read())
        except _Refused as refused:
            stats.errors += 1
            response, accepted = refused.response, []
        await self._pause(self.config.latency_ms / 1000)
        for message in accepted:
            self._schedule_events(message)
        return response

    def _answer_send(self, stats: _Stats, raw: bytes) -> tuple[web.Response, list[FakeMandrillMessage]]:
        try:
            payload = orjson.loads(raw)
        except orjson.JSONDecodeError as exc:
            raise _validation("You must specify a key value") from exc
        if not isinstance(payload, dict):
            raise _validation("You must specify a key value")
        self.requests.append(payload)
        key = payload.get("key")
        if not isinstance(key, str) or not hmac.compare_digest(
            key.encode("utf-8", "surrogateescape"), self.config.api_key.encode()
        ):
            raise _Refused(500, -1, "Invalid_Key", "Invalid API key")
        message = _check_message(payload.get("message"))
        subaccount = message.get("subaccount")
        known = self.config.subaccounts
        if subaccount is not None and known is not None and subaccount not in known:
            raise _Refused(500, 12, "Unknown_Subaccount", f"No subaccount exists with the id '{subaccount}'")
        if over_rate(self._recent_sends, self.config.max_per_second):
            raise _Refused(429, -1, "Too_Many_Requests", "Too many requests")

        recipients = [str(r["email"]) for r in message["to"]]
        subject = str(message.get("subject") or "")
        attempts = {}
        for email in recipients:
            pair = f"{email.lower()}|{subject}"
            attempts[email] = stats.attempts[pair] = stats.attempts.get(pair, 0) + 1
        for email in recipients:
            local = _local_part(email)
            if local == "unavailable" or (local == "retry" and attempts[email] <= 1):
                raise _Refused(500, -1, "GeneralError", "An unexpected error occurred processing the request")
            if local == "ratelimit":
                raise _Refused(429, -1, "Too_Many_Requests", "Too many requests")

        results: list[dict[str, Any]] = []
        accepted: list[FakeMandrillMessage] = []
        for email in recipients:
            local = _local_part(email)
            status, reject_reason, queued_reason = "sent", None, None
            if local == "invalid" or not _is_address(email):
                status = "invalid"
            elif local == "reject":
                status, reject_reason = "rejected", "hard-bounce"
            elif local == "queued":
                status, queued_reason = "queued", "attachments"
            elif local == "scheduled":
                status = "scheduled"
            stored = FakeMandrillMessage(
                id=self._new_id(),
                email=email,
                status=status,
                message=message,
                attempt=attempts[email],
                created_at=time.time(),
                reject_reason=reject_reason,
                state={"rejected": "rejected", "invalid": "invalid"}.get(status, "sent"),
            )
            self.messages[stored.id] = stored
            self.sends.append(stored)
            if status in ("rejected", "invalid"):
                stats.rejected += 1
            else:
                stats.sent += 1
                pair = f"{email.lower()}|{subject}"
                stats.sent_by_key[pair] = stats.sent_by_key.get(pair, 0) + 1
            accepted.append(stored)
            results.append(
                {
                    "email": email,
                    "status": status,
                    "reject_reason": reject_reason,
                    "queued_reason": queued_reason,
                    "_id": stored.id,
                }
            )
        return json_response(200, results), accepted

    # --- events ---------------------------------------------------------------------------------

    def _new_id(self) -> str:
        if self.config.seed is None:
            return uuid.uuid4().hex
        return f"{self._rng.getrandbits(128):032x}"

    async def _pause(self, seconds: float) -> None:
        """Sleep, but wake up as soon as the server stops."""
        if seconds <= 0 or self._stopping.is_set():
            return
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._stopping.wait(), seconds)

    def _schedule_events(self, message: FakeMandrillMessage) -> None:
        steps = _STEPS.get(_local_part(message.email), ("send",))
        if message.status == "invalid":
            steps = ()
        if steps and not self._stopping.is_set():
            self._spawn(self._run_events(message, steps))

    async def _run_events(self, message: FakeMandrillMessage, steps: Sequence[str]) -> None:
        for name in steps:
            await asyncio.sleep(self.config.event_delay_ms / 1000)
            event = self.event(message, name)
            message.state = _STATES.get(name, message.state)
            self.events.append(event)
            self._stats.events += 1
            if self.config.webhook_url is not None:
                self._pending.append(event)
                if not self._flushing:
                    self._flushing = True
                    self._spawn(self._flush())

    async def _flush(self) -> None:
        """Post the pending events in batches, one post at a time, so that they arrive in order."""
        try:
            while self._pending:
                await asyncio.sleep(self.config.batch_ms / 1000)
                batch, self._pending = self._pending[:MAX_BATCH], self._pending[MAX_BATCH:]
                url = self.config.webhook_url
                if url is None:
                    continue
                data, headers = self._signed_request(url, batch, None)
                stats = self._stats
                if await self._post_with_retries(url, data, headers):
                    stats.batches_posted += 1
                    self.batches.append(batch)
                else:
                    stats.batches_failed += 1
        finally:
            self._flushing = False

    def _signed_request(
        self, url: str, events: Sequence[Mapping[str, Any]], webhook_key: str | None
    ) -> tuple[bytes, dict[str, str]]:
        key = webhook_key if webhook_key is not None else self.config.webhook_key
        params = {EVENTS_FIELD: orjson.dumps(list(events)).decode("utf-8")}
        headers = {
            "Content-Type": _FORM,
            "User-Agent": "Mandrill-Webhook/1.0",
            SIGNATURE_HEADER: signature(key, url, params),
        }
        return urlencode(params).encode("ascii"), headers


# --- command line ---------------------------------------------------------------------------------


def _parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = cli_parser(
        "tidings.testing.fake_mandrill",
        "Run a fake Mailchimp Transactional (Mandrill) API over HTTP (for tests and benchmarks).",
    )
    parser.add_argument("--api-key", default=DEFAULT_API_KEY)
    parser.add_argument("--webhook-key", default=DEFAULT_WEBHOOK_KEY)
    parser.add_argument("--webhook-url", default=None, help="where to post events (default: nowhere)")
    parser.add_argument("--event-delay-ms", type=float, default=30.0)
    parser.add_argument("--batch-ms", type=float, default=20.0)
    parser.add_argument("--latency-ms", type=float, default=0.0)
    parser.add_argument("--max-per-second", type=float, default=None)
    parser.add_argument("--seed", type=int, default=None)
    return parser.parse_args(argv)


def main(argv: Sequence[str] | None = None) -> None:
    """Run the fake Mandrill server until SIGTERM or SIGINT."""
    args = _parse_args(argv)
    config = FakeMandrillConfig(
        api_key=args.api_key,
        webhook_key=args.webhook_key,
        webhook_url=args.webhook_url,
        event_delay_ms=args.event_delay_ms,
        batch_ms=args.batch_ms,
        latency_ms=args.latency_ms,
        max_per_second=args.max_per_second,
        seed=args.seed,
    )
    run_until_signalled(FakeMandrillServer(config), args.host, args.port)


if __name__ == "__main__":
    main()
