"""The load generator: an HTTP client in its own process (aiohttp on uvloop), started by scenarios.

Two modes; each writes one JSON object to ``--out`` when it is done:

``messages``
    ``--concurrency`` clients (one keep-alive connection each) ``POST /v1/messages`` back to back
    for ``--warmup`` seconds (not counted) and then ``--seconds`` seconds. Requests that complete
    within the measured window count: ``completed``, ``accepted`` (202), ``statuses`` and the
    latency percentiles of those requests. ``total_accepted`` counts every 202, warm-up included.
    With ``--scrape-every S``, one more client (a connection of its own) also ``GET /metrics`` once
    every ``S`` seconds through the measured window, as Prometheus would: ``scrapes`` and their
    ``scrape_p50_ms``, ``scrape_max_ms`` and ``scrape_bytes`` (the last answer's size).
``receipts``
    Reads ``MESSAGE_ID PROVIDER_ID`` lines from ``--input``, signs one ``delivered`` receipt per
    line as the fake provider server does (``X-Fake-Signature``) and posts them all to ``--url``
    over ``--concurrency`` connections. The bodies are built before the clock starts. ``seconds``
    runs from the first post to the last answer.

Both report the client's own CPU time (``client_cpu_s``): on a small machine the client competes
with the service for the same cores.
"""

from __future__ import annotations

import argparse
import asyncio
import hashlib
import hmac
import resource
import sys
import time
from collections import Counter
from collections.abc import Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import aiohttp
import orjson


def _percentiles(latencies: list[float]) -> dict[str, float | None]:
    ordered = sorted(latencies)

    def at(q: float) -> float | None:
        if not ordered:
            return None
        rank = max(1, min(len(ordered), round(q * len(ordered) + 0.5)))
        return round(ordered[rank - 1] * 1000, 2)

    return {"p50_ms": at(0.50), "p90_ms": at(0.90), "p99_ms": at(0.99), "max_ms": at(1.0)}


def _cpu_seconds() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return round(usage.ru_utime + usage.ru_stime, 2)


def _session(concurrency: int) -> aiohttp.ClientSession:
    return aiohttp.ClientSession(
        connector=aiohttp.TCPConnector(limit=concurrency, force_close=False),
        cookie_jar=aiohttp.DummyCookieJar(),
        timeout=aiohttp.ClientTimeout(total=60),
    )


async def post_messages(
    url: str, key: str, concurrency: int, seconds: float, warmup: float, scrape_every: float | None = None
) -> dict[str, Any]:
    """See the module docstring, ``messages``."""
    endpoint = url.rstrip("/") + "/v1/messages"
    headers = {"Authorization": f"Bearer {key}", "Content-Type": "application/json"}
    latencies: list[float] = []
    statuses: Counter[int] = Counter()
    failures: Counter[str] = Counter()
    total_accepted = 0
    window_start = time.perf_counter() + warmup
    window_end = window_start + seconds

    async def client(number: int, session: aiohttp.ClientSession) -> None:
        nonlocal total_accepted
        i = number
        while (started := time.perf_counter()) < window_end:
            payload = orjson.dumps(
                {
                    "to": f"+1202555{1000 + i % 9000}",
                    "body": f"Your verification code is {i % 1_000_000:06d}. It expires in 10 minutes.",
                }
            )
            i += concurrency
            try:
                async with session.post(endpoint, data=payload, headers=headers) as response:
                    await response.read()
                    status = response.status
            except (aiohttp.ClientError, TimeoutError) as exc:
                failures[type(exc).__name__] += 1
                continue
            finished = time.perf_counter()
            if status == 202:
                total_accepted += 1
            if window_start <= finished <= window_end:
                statuses[status] += 1
                latencies.append(finished - started)

    scrapes: list[float] = []
    scraped: dict[str, Any] = {"bytes": None, "statuses": Counter()}

    async def scraper(every: float) -> None:
        """``GET /metrics`` every ``every`` seconds of the measured window, on a schedule (a slow
        answer does not push the next scrape later)."""
        endpoint = url.rstrip("/") + "/metrics"
        due = window_start
        async with _session(1) as session:
            while (now := time.perf_counter()) < window_end:
                if now < due:
                    await asyncio.sleep(due - now)
                    continue
                due += every
                try:
                    async with session.get(endpoint, headers={"Authorization": f"Bearer {key}"}) as response:
                        body = await response.read()
                        scraped["statuses"][response.status] += 1
                except (aiohttp.ClientError, TimeoutError) as exc:
                    failures[f"scrape {type(exc).__name__}"] += 1
                    continue
                scrapes.append(time.perf_counter() - now)
                scraped["bytes"] = len(body)

    cpu_before = _cpu_seconds()
    async with _session(concurrency) as session:
        clients = [client(n, session) for n in range(concurrency)]
        if scrape_every:
            clients.append(scraper(scrape_every))
        await asyncio.gather(*clients)
    scrape_times = _percentiles(scrapes)
    return {
        "scrapes": len(scrapes),
        "scrape_statuses": {str(k): v for k, v in sorted(scraped["statuses"].items())},
        "scrape_p50_ms": scrape_times["p50_ms"],
        "scrape_max_ms": scrape_times["max_ms"],
        "scrape_bytes": scraped["bytes"],
        "completed": len(latencies),
        "accepted": statuses.get(202, 0),
        "total_accepted": total_accepted,
        "statuses": {str(k): v for k, v in sorted(statuses.items())},
        "failures": dict(failures),
        "seconds": seconds,
        **_percentiles(latencies),
        "client_cpu_s": round(_cpu_seconds() - cpu_before, 2),
    }


def receipt(secret: str, message_id: str, provider_id: str) -> tuple[bytes, dict[str, str]]:
    """One signed ``delivered`` receipt, byte for byte as the fake provider server posts it."""
    timestamp = datetime.now(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")
    body = orjson.dumps(
        {
            "id": provider_id,
            "reference": message_id,
            "status": "delivered",
            "error_code": None,
            "error_message": None,
            "timestamp": timestamp,
        }
    )
    signature = "sha256=" + hmac.new(secret.encode(), body, hashlib.sha256).hexdigest()
    return body, {"Content-Type": "application/json", "X-Fake-Signature": signature}


async def post_receipts(url: str, secret: str, pairs_file: Path, concurrency: int) -> dict[str, Any]:
    """See the module docstring, ``receipts``."""
    pairs = [line.split() for line in pairs_file.read_text().splitlines() if line]
    prepared = [receipt(secret, message_id, provider_id) for message_id, provider_id in pairs]
    latencies: list[float] = []
    statuses: Counter[int] = Counter()
    failures: Counter[str] = Counter()
    queue = iter(prepared)

    async def client(session: aiohttp.ClientSession) -> None:
        for body, headers in queue:
            started = time.perf_counter()
            try:
                async with session.post(url, data=body, headers=headers) as response:
                    await response.read()
                    statuses[response.status] += 1
            except (aiohttp.ClientError, TimeoutError) as exc:
                failures[type(exc).__name__] += 1
                continue
            latencies.append(time.perf_counter() - started)

    cpu_before = _cpu_seconds()
    async with _session(concurrency) as session:
        began = time.perf_counter()
        await asyncio.gather(*(client(session) for _ in range(concurrency)))
        took = time.perf_counter() - began
    return {
        "posted": len(prepared),
        "ok": sum(n for status, n in statuses.items() if 200 <= status < 300),
        "statuses": {str(k): v for k, v in sorted(statuses.items())},
        "failures": dict(failures),
        "seconds": round(took, 3),
        **_percentiles(latencies),
        "client_cpu_s": round(_cpu_seconds() - cpu_before, 2),
    }


def _parse(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    modes = parser.add_subparsers(dest="mode", required=True)
    messages = modes.add_parser("messages")
    messages.add_argument("--url", required=True, help="the API's base URL")
    messages.add_argument("--key", required=True, help="an API key")
    messages.add_argument("--concurrency", type=int, default=64)
    messages.add_argument("--seconds", type=float, default=20)
    messages.add_argument("--warmup", type=float, default=1)
    messages.add_argument("--scrape-every", type=float, help="also GET /metrics every this many seconds")
    messages.add_argument("--out", type=Path, required=True)
    receipts = modes.add_parser("receipts")
    receipts.add_argument("--url", required=True, help="the webhook URL")
    receipts.add_argument("--secret", required=True, help="the fake provider's webhook secret")
    receipts.add_argument("--input", type=Path, required=True, help="MESSAGE_ID PROVIDER_ID lines")
    receipts.add_argument("--concurrency", type=int, default=32)
    receipts.add_argument("--out", type=Path, required=True)
    return parser.parse_args(argv)


def main(argv: Sequence[str] | None = None) -> None:
    args = _parse(argv)
    if args.mode == "messages":
        work = post_messages(
            args.url, args.key, args.concurrency, args.seconds, args.warmup, args.scrape_every
        )
    else:
        work = post_receipts(args.url, args.secret, args.input, args.concurrency)
    try:
        import uvloop
    except ImportError:  # uvloop comes with uvicorn[standard], a tidings dependency
        result = asyncio.run(work)
    else:
        result = uvloop.run(work)
    args.out.write_bytes(orjson.dumps(result))
    sys.stdout.write(f"{orjson.dumps(result).decode()}\n")


if __name__ == "__main__":
    main()
