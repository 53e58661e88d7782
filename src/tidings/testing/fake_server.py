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
import contextlib
import hashlib
import hmac
import logging
import random
import signal
import sys
import uuid
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

import aiohttp
import orjson
from aiohttp import web

from tidings.providers.fake_rules import ERROR_CODES, FakeBehaviour, Outcome, decide

__all__ = ["FakeProviderServer", "FakeServerConfig", "main", "sign"]

logger = logging.getLogger(__name__)

RECEIPT_ATTEMPTS = 5
"""How many times one receipt is posted before the server gives up."""
RECEIPT_BACKOFF_S = 0.2
"""The pause after the first failed receipt post; it doubles after each failure."""
RECEIPT_TIMEOUT_S = 10.0
"""The time allowed to connect, and to wait for each read, when posting one receipt."""
RECEIPT_CONNECTION_LIMIT = 64
"""At most this many receipt posts are in flight at once."""
SIGNATURE_HEADER = "X-Fake-Signature"

_JSON = "application/json"
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


def _json_response(status: int, payload: object, headers: dict[str, str] | None = None) -> web.Response:
    return web.Response(status=status, body=orjson.dumps(payload), content_type=_JSON, headers=headers)


def _error_body(code: str, message: str) -> bytes:
    return orjson.dumps({"error": {"code": code, "message": message}})


def _error(status: int, code: str, message: str) -> web.Response:
    return web.Response(status=status, body=_error_body(code, message), content_type=_JSON)


_PERMANENT_BODY = _error_body(*ERROR_CODES[Outcome.PERMANENT])
_TEMPORARY_BODY = _error_body(*ERROR_CODES[Outcome.TEMPORARY])


def _optional_str(payload: dict[str, Any], key: str) -> bool:
    value = payload.get(key)
    return value is None or isinstance(value, str)


def _utc_timestamp() -> str:
    return datetime.now(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


class FakeProviderServer:
    """A fake SMS provider on a real socket: :meth:`start` it, send it messages, then :meth:`stop` it."""

    def __init__(self, config: FakeServerConfig | None = None) -> None:
        self.config = config if config is not None else FakeServerConfig()
        self._rng = random.Random(self.config.seed)
        self._stats = _Stats()
        self._expected_auth = (
            f"Bearer {self.config.token}".encode() if self.config.token is not None else None
        )
        self._tasks: set[asyncio.Task[None]] = set()
        self._runner: web.AppRunner | None = None
        self._session: aiohttp.ClientSession | None = None
        self._url: str | None = None

    @property
    def url(self) -> str:
        """The base URL, like ``http://127.0.0.1:54321``; only known once started."""
        if self._url is None:
            raise RuntimeError("the fake provider server is not started")
        return self._url

    @property
    def stats(self) -> dict[str, object]:
        """The same counters as ``GET /_stats``."""
        return self._stats.as_dict()

    def _build_app(self) -> web.Application:
        app = web.Application()
        app.router.add_post("/v1/messages", self._handle_send)
        app.router.add_get("/_stats", self._handle_stats)
        app.router.add_post("/_reset", self._handle_reset)
        app.router.add_get("/", self._handle_health)
        return app

    async def start(self, host: str = "127.0.0.1", port: int = 0) -> str:
        """Listen on ``host``:``port`` (0 picks a free port) and return the base URL."""
        if self._runner is not None:
            raise RuntimeError("the fake provider server is already started")
        self._session = aiohttp.ClientSession(
            connector=aiohttp.TCPConnector(limit=RECEIPT_CONNECTION_LIMIT),
            cookie_jar=aiohttp.DummyCookieJar(),
            # Socket-level limits only: a "total" timeout would also count the wait for a pooled
            # connection, and time out (then duplicate) receipts queued behind the connection limit.
            timeout=aiohttp.ClientTimeout(
                total=None, sock_connect=RECEIPT_TIMEOUT_S, sock_read=RECEIPT_TIMEOUT_S
            ),
        )
        runner = web.AppRunner(self._build_app(), access_log=None)
        await runner.setup()
        try:
            site = web.TCPSite(runner, host, port)
            await site.start()
        except BaseException:
            await runner.cleanup()
            await self._session.close()
            self._session = None
            raise
        self._runner = runner
        bound_port = runner.addresses[0][1]
        shown_host = f"[{host}]" if ":" in host else host
        self._url = f"http://{shown_host}:{bound_port}"
        logger.info("fake provider listening on %s", self._url)
        return self._url

    async def stop(self) -> None:
        """Stop listening, cancel the receipts still pending and close the client session."""
        runner, self._runner = self._runner, None
        if runner is not None:
            await runner.cleanup()
        tasks = list(self._tasks)
        for task in tasks:
            task.cancel()
        if tasks:
            await asyncio.gather(*tasks, return_exceptions=True)
        self._tasks.clear()
        session, self._session = self._session, None
        if session is not None:
            await session.close()
        self._url = None

    async def wait_for_receipts(self, timeout: float) -> None:
        """Wait until no receipt is pending; raise :class:`TimeoutError` after ``timeout`` seconds."""
        async with asyncio.timeout(timeout):
            while pending := {task for task in self._tasks if not task.done()}:
                await asyncio.wait(pending)

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
            return web.Response(status=400, body=_PERMANENT_BODY, content_type=_JSON), None
        if outcome is Outcome.TEMPORARY:
            return (
                web.Response(
                    status=429, body=_TEMPORARY_BODY, content_type=_JSON, headers={"Retry-After": "1"}
                ),
                None,
            )

        stats.accepted += 1
        stats.accepted_by_reference[reference] = stats.accepted_by_reference.get(reference, 0) + 1
        provider_id = "FK" + uuid.uuid4().hex
        response = _json_response(
            201, {"id": provider_id, "status": "accepted", "to": to, "reference": reference}
        )
        if receipt_url is None or outcome is Outcome.NO_RECEIPT:
            return response, None
        return response, (receipt_url, provider_id, reference, outcome)

    async def _handle_stats(self, request: web.Request) -> web.Response:
        return _json_response(200, self._stats.as_dict())

    async def _handle_reset(self, request: web.Request) -> web.Response:
        # Receipts already scheduled still go out, but they count into the old (discarded) stats.
        self._stats = _Stats()
        self._rng = random.Random(self.config.seed)
        return web.Response(status=204)

    async def _handle_health(self, request: web.Request) -> web.Response:
        return _json_response(200, {"status": "ok"})

    # --- receipts -------------------------------------------------------------------------------

    def _schedule_receipt(
        self, stats: _Stats, url: str, provider_id: str, reference: str, outcome: Outcome
    ) -> None:
        task = asyncio.create_task(self._send_receipt(stats, url, provider_id, reference, outcome))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

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
        headers = {"Content-Type": _JSON}
        if self.config.webhook_secret is not None:
            headers[SIGNATURE_HEADER] = sign(self.config.webhook_secret, body)
        if await self._post_receipt(url, body, headers):
            stats.receipts_sent += 1
        else:
            stats.receipts_failed += 1

    async def _post_receipt(self, url: str, body: bytes, headers: dict[str, str]) -> bool:
        """Post one receipt, retrying; true when the receiver answered 2xx."""
        session = self._session
        if session is None:
            return False
        backoff = RECEIPT_BACKOFF_S
        for attempt in range(1, RECEIPT_ATTEMPTS + 1):
            try:
                async with session.post(url, data=body, headers=headers) as response:
                    answer = response.status
            except (aiohttp.ClientError, TimeoutError) as exc:
                logger.debug("receipt to %s, attempt %d: %r", url, attempt, exc)
            else:
                if answer < 500:
                    if not 200 <= answer < 300:
                        logger.debug("receipt to %s refused with %d", url, answer)
                    return 200 <= answer < 300
                logger.debug("receipt to %s, attempt %d: HTTP %d", url, attempt, answer)
            if attempt < RECEIPT_ATTEMPTS:
                await asyncio.sleep(backoff)
                backoff *= 2
        logger.debug("gave up posting a receipt to %s", url)
        return False


# --- command line ---------------------------------------------------------------------------------


def _parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="python -m tidings.testing.fake_server",
        description="Run a fake SMS provider over HTTP (for tests and benchmarks).",
    )
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=0, help="0 picks a free port")
    parser.add_argument("--token", default=None, help="bearer token callers must send")
    parser.add_argument("--webhook-secret", default=None, help="secret that signs receipts")
    parser.add_argument("--latency-ms", type=float, default=0.0)
    parser.add_argument("--receipt-delay-ms", type=float, default=50.0)
    parser.add_argument("--temporary-failure-rate", type=float, default=0.0)
    parser.add_argument("--permanent-failure-rate", type=float, default=0.0)
    parser.add_argument("--undelivered-rate", type=float, default=0.0)
    parser.add_argument("--seed", type=int, default=None)
    return parser.parse_args(argv)


async def _serve(args: argparse.Namespace) -> None:
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
    server = FakeProviderServer(config)
    stopping = asyncio.Event()
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGTERM, signal.SIGINT):
        with contextlib.suppress(NotImplementedError):  # not available on Windows
            loop.add_signal_handler(signum, stopping.set)
    url = await server.start(args.host, args.port)
    try:
        sys.stdout.write(f"listening on {url}\n")
        sys.stdout.flush()
        await stopping.wait()
    finally:
        await server.stop()


def main(argv: Sequence[str] | None = None) -> None:
    """Run the fake provider until SIGTERM or SIGINT."""
    args = _parse_args(argv)
    logging.basicConfig(level=logging.WARNING, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    try:
        import uvloop
    except ImportError:
        asyncio.run(_serve(args))
    else:
        uvloop.run(_serve(args))


if __name__ == "__main__":
    main()
