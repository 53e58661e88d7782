"""A fake SMS provider that speaks real HTTP, for integration tests and benchmarks.

The server behaves like a small SMS provider: it accepts or refuses messages according to the rules in
:mod:`tidings.providers.fake_rules` (magic numbers and random failure rates), and later posts a
delivery receipt back to the caller's ``receipt_url``. It keeps per-request work small so that a
benchmark can push 100,000 messages through it.

Wire format
-----------
``POST /v1/messages`` with ``Authorization: Bearer <token>`` (checked only when a token is configured)
and a JSON body ``{"to": "+E164", "from": str|null, "body": str, "reference": str,
"receipt_url": str|null}``. The answer is one of:

* ``201 {"id": "FK<32 hex>", "status": "accepted", "to": ..., "reference": ...}``;
* ``400 {"error": {"code": "invalid_number", "message": ...}}`` (permanent refusal);
* ``429 {"error": {"code": "throttled", "message": ...}}`` with ``Retry-After: 1`` (temporary refusal);
* ``401 {"error": {"code": "unauthorized", ...}}`` or ``400 {"error": {"code": "bad_request", ...}}``.

The n-th ``POST`` for a ``reference`` is attempt n. For accepted messages that should get a receipt, the
server waits ``receipt_delay_ms`` then posts ``{"id", "reference", "status": "delivered"|"failed",
"error_code", "error_message", "timestamp"}`` to ``receipt_url``, signed with
``X-Fake-Signature: sha256=<hex HMAC-SHA256(secret, body)>`` when a webhook secret is configured (see
:func:`sign`). A receipt is retried up to 5 times on connection errors, timeouts and 5xx answers.

``GET /_stats`` returns counters, ``POST /_reset`` clears them, ``GET /`` is a health check.

Run it standalone with ``python -m tidings.testing.fake_server --port 0``: it prints one line,
``listening on http://HOST:PORT``, and serves until SIGTERM or SIGINT.
"""

from __future__ import annotations

import argparse
import asyncio
import hashlib
import hmac
import random
import uuid
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

import orjson
from aiohttp import web

from tidings.providers.fake_rules import ERROR_CODES, FakeBehaviour, Outcome, decide
from tidings.testing.http_fake import (
    JSON,
    FakeHttpServer,
    PostPolicy,
    cli_parser,
    json_response,
    run_until_signalled,
)

__all__ = ["FakeProviderServer", "FakeServerConfig", "main", "sign"]

RECEIPT_ATTEMPTS = 5
"""How many times one receipt is posted before the server gives up."""
RECEIPT_BACKOFF_S = 0.2
"""The pause after the first failed receipt post; it doubles after each failure."""
RECEIPT_TIMEOUT_S = 10.0
"""The time allowed to connect, and to wait for each read, when posting one receipt."""
RECEIPT_CONNECTION_LIMIT = 64
"""At most this many receipt posts are in flight at once."""
SIGNATURE_HEADER = "X-Fake-Signature"

_RECEIPTS = PostPolicy(
    kind="receipt",
    attempts=RECEIPT_ATTEMPTS,
    backoff_s=RECEIPT_BACKOFF_S,
    timeout_s=RECEIPT_TIMEOUT_S,
    connection_limit=RECEIPT_CONNECTION_LIMIT,
)
_ACCEPTED = frozenset({Outcome.DELIVERED, Outcome.RECEIPT_FAILED, Outcome.NO_RECEIPT})


def sign(secret: str, body: bytes) -> str:
    """The ``X-Fake-Signature`` header value for a receipt ``body`` signed with ``secret``."""
    digest = hmac.new(secret.encode("utf-8"), body, hashlib.sha256).hexdigest()
    return f"sha256={digest}"


@dataclass
class FakeServerConfig:
    """How a :class:`FakeProviderServer` behaves."""

    token: str | None = None
    """The bearer token callers must send; ``None`` accepts any caller."""
    webhook_secret: str | None = None
    """The secret receipts are signed with; ``None`` sends them unsigned."""
    latency_ms: float = 0.0
    """A pause before each answer to ``POST /v1/messages``."""
    receipt_delay_ms: float = 50.0
    """The pause between accepting a message and posting its receipt."""
    behaviour: FakeBehaviour = field(default_factory=FakeBehaviour)
    """Random failure rates for numbers that are not magic."""
    seed: int | None = None
    """Seed for the random draws, for reproducible runs."""


@dataclass
class _Stats:
    requests: int = 0
    accepted: int = 0
    rejected: int = 0
    receipts_sent: int = 0
    receipts_failed: int = 0
    attempts: dict[str, int] = field(default_factory=dict)
    """Send requests seen per reference (accepted or not)."""
    accepted_by_reference: dict[str, int] = field(default_factory=dict)

    def as_dict(self) -> dict[str, object]:
        return {
            "requests": self.requests,
            "accepted": self.accepted,
            "rejected": self.rejected,
            "references": len(self.accepted_by_reference),
            "duplicates": sorted(ref for ref, n in self.accepted_by_reference.items() if n > 1),
            "receipts_sent": self.receipts_sent,
            "receipts_failed": self.receipts_failed,
        }


def _error_body(code: str, message: str) -> bytes:
    return orjson.dumps({"error": {"code": code, "message": message}})


def _error(status: int, code: str, message: str) -> web.Response:
    return web.Response(status=status, body=_error_body(code, message), content_type=JSON)


_PERMANENT_BODY = _error_body(*ERROR_CODES[Outcome.PERMANENT])
_TEMPORARY_BODY = _error_body(*ERROR_CODES[Outcome.TEMPORARY])


def _optional_str(payload: dict[str, Any], key: str) -> bool:
    value = payload.get(key)
    return value is None or isinstance(value, str)


def _utc_timestamp() -> str:
    return datetime.now(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


class FakeProviderServer(FakeHttpServer):
    """A fake SMS provider on a real socket: :meth:`start` it, send it messages, then :meth:`stop` it."""

    def __init__(self, config: FakeServerConfig | None = None) -> None:
        super().__init__("fake provider server", _RECEIPTS)
        self.config = config if config is not None else FakeServerConfig()
        self._rng = random.Random(self.config.seed)
        self._stats = _Stats()
        self._expected_auth = (
            f"Bearer {self.config.token}".encode() if self.config.token is not None else None
        )

    @property
    def stats(self) -> dict[str, object]:
        """The same counters as ``GET /_stats``."""
        return self._stats.as_dict()

    def _add_routes(self, router: web.UrlDispatcher) -> None:
        router.add_post("/v1/messages", self._handle_send)

    def _reset(self) -> None:
        # Receipts already scheduled still go out, but they count into the old (discarded) stats.
        self._stats = _Stats()
        self._rng = random.Random(self.config.seed)

    async def wait_for_receipts(self, timeout: float) -> None:
        """Wait until no receipt is pending; raise :class:`TimeoutError` after ``timeout`` seconds."""
        await self._wait_for_tasks(timeout)

    # --- handlers -------------------------------------------------------------------------------

    async def _handle_send(self, request: web.Request) -> web.Response:
        stats = self._stats
        stats.requests += 1
        response, receipt = self._answer_send(
            stats, await request.read(), request.headers.get("Authorization")
        )
        if response.status != 201:
            stats.rejected += 1
        latency = self.config.latency_ms
        if latency > 0:
            await asyncio.sleep(latency / 1000)
        if receipt is not None:
            self._schedule_receipt(stats, *receipt)
        return response

    def _answer_send(
        self, stats: _Stats, raw: bytes, authorization: str | None
    ) -> tuple[web.Response, tuple[str, str, str, Outcome] | None]:
        """The answer to one send request and, when one is due, the receipt to post."""
        if self._expected_auth is not None:
            given = (authorization or "").encode("utf-8", "surrogateescape")
            if not hmac.compare_digest(given, self._expected_auth):
                return _error(401, "unauthorized", "Missing or wrong bearer token."), None
        try:
            payload = orjson.loads(raw)
        except orjson.JSONDecodeError:
            return _error(400, "bad_request", "The request body is not valid JSON."), None
        if not isinstance(payload, dict):
            return _error(400, "bad_request", "The request body must be a JSON object."), None
        to, body, reference = payload.get("to"), payload.get("body"), payload.get("reference")
        if not isinstance(to, str) or not to:
            return _error(400, "bad_request", "'to' must be a non-empty string."), None
        if not isinstance(body, str):
            return _error(400, "bad_request", "'body' must be a string."), None
        if not isinstance(reference, str) or not reference:
            return _error(400, "bad_request", "'reference' must be a non-empty string."), None
        if not _optional_str(payload, "from"):
            return _error(400, "bad_request", "'from' must be a string or null."), None
        receipt_url = payload.get("receipt_url")
        if receipt_url is not None and (
            not isinstance(receipt_url, str) or not receipt_url.startswith(("http://", "https://"))
        ):
            return _error(400, "bad_request", "'receipt_url' must be an http(s) URL or null."), None

        attempt = stats.attempts.get(reference, 0) + 1
        stats.attempts[reference] = attempt
        outcome = decide(to, attempt, self.config.behaviour, self._rng)
        if outcome is Outcome.PERMANENT:
            return web.Response(status=400, body=_PERMANENT_BODY, content_type=JSON), None
        if outcome is Outcome.TEMPORARY:
            return (
                web.Response(
                    status=429, body=_TEMPORARY_BODY, content_type=JSON, headers={"Retry-After": "1"}
                ),
                None,
            )

        stats.accepted += 1
        stats.accepted_by_reference[reference] = stats.accepted_by_reference.get(reference, 0) + 1
        provider_id = "FK" + uuid.uuid4().hex
        response = json_response(
            201, {"id": provider_id, "status": "accepted", "to": to, "reference": reference}
        )
        if receipt_url is None or outcome is Outcome.NO_RECEIPT:
            return response, None
        return response, (receipt_url, provider_id, reference, outcome)

    # --- receipts -------------------------------------------------------------------------------

    def _schedule_receipt(
        self, stats: _Stats, url: str, provider_id: str, reference: str, outcome: Outcome
    ) -> None:
        self._spawn(self._send_receipt(stats, url, provider_id, reference, outcome))

    async def _send_receipt(
        self, stats: _Stats, url: str, provider_id: str, reference: str, outcome: Outcome
    ) -> None:
        delay = self.config.receipt_delay_ms
        if delay > 0:
            await asyncio.sleep(delay / 1000)
        if outcome is Outcome.RECEIPT_FAILED:
            status = "failed"
            error_code, error_message = ERROR_CODES[Outcome.RECEIPT_FAILED]
        else:
            status, error_code, error_message = "delivered", None, None
        body = orjson.dumps(
            {
                "id": provider_id,
                "reference": reference,
                "status": status,
                "error_code": error_code,
                "error_message": error_message,
                "timestamp": _utc_timestamp(),
            }
        )
        headers = {"Content-Type": JSON}
        if self.config.webhook_secret is not None:
            headers[SIGNATURE_HEADER] = sign(self.config.webhook_secret, body)
        if await self._post_with_retries(url, body, headers):
            stats.receipts_sent += 1
        else:
            stats.receipts_failed += 1


# --- command line ---------------------------------------------------------------------------------


def _parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = cli_parser(
        "tidings.testing.fake_server", "Run a fake SMS provider over HTTP (for tests and benchmarks)."
    )
    parser.add_argument("--token", default=None, help="bearer token callers must send")
    parser.add_argument("--webhook-secret", default=None, help="secret that signs receipts")
    parser.add_argument("--latency-ms", type=float, default=0.0)
    parser.add_argument("--receipt-delay-ms", type=float, default=50.0)
    parser.add_argument("--temporary-failure-rate", type=float, default=0.0)
    parser.add_argument("--permanent-failure-rate", type=float, default=0.0)
    parser.add_argument("--undelivered-rate", type=float, default=0.0)
    parser.add_argument("--seed", type=int, default=None)
    return parser.parse_args(argv)


def main(argv: Sequence[str] | None = None) -> None:
    """Run the fake provider until SIGTERM or SIGINT."""
    args = _parse_args(argv)
    config = FakeServerConfig(
        token=args.token,
        webhook_secret=args.webhook_secret,
        latency_ms=args.latency_ms,
        receipt_delay_ms=args.receipt_delay_ms,
        behaviour=FakeBehaviour(
            temporary_failure_rate=args.temporary_failure_rate,
            permanent_failure_rate=args.permanent_failure_rate,
            undelivered_rate=args.undelivered_rate,
        ),
        seed=args.seed,
    )
    run_until_signalled(FakeProviderServer(config), args.host, args.port)


if __name__ == "__main__":
    main()
