"""The load generator: an HTTP or gRPC client in its own process (aiohttp or grpc.aio, on uvloop),
started by scenarios.

Four modes; each writes one JSON object to ``--out`` when it is done:

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
``grpc-messages``
    ``messages`` over gRPC: ``--concurrency`` callers make unary ``SendMessage`` calls (the same
    number and text) back to back, over ``--channels`` (1) channels to ``--target``, each its own
    HTTP/2 connection; the callers share them round-robin. One channel is how a gRPC client is
    meant to be used: HTTP/2 carries the concurrent calls side by side on one connection (where
    HTTP/1.1 needs a connection per request in flight). Same window and figures as ``messages``;
    ``statuses`` are gRPC status code names (``OK`` is an accepted message) and ``failures`` the
    calls that ended ``UNAVAILABLE``, ``DEADLINE_EXCEEDED`` or ``CANCELLED`` (the transport's
    errors, not the service's answers).
``grpc-watch``
    One ``WatchMessages`` stream of every message's changes after ``--cursor``, opened before
    anything changes; then, on the same channel, a ``SendBatch`` of ``--batch`` recipients. It
    reads until ``--changes`` changes have come (or none came for ``--stall`` seconds) and
    reports ``seconds`` from the first change received to the last, the lag of each change (the
    moment it was received less its ``occurred_at``; one clock, one machine) as percentiles, in
    all and by event, ``repeated`` cursors and ``out_of_order`` ones (the stream promises each
    change once, oldest first). The cursors received go to ``--cursors-out``, one a line, for the
    scenario to compare with the database. Then ``replay``: a second stream from the same cursor
    reads the same changes again, all stored by then, as fast as the server sends them: its
    ``replay_seconds`` (first to last) and whether it gave the same cursors in the same order.

All report the client's own CPU time (``client_cpu_s``): on a small machine the client competes
with the service for the same cores.
"""

from __future__ import annotations

import argparse
import asyncio
import hashlib
import hmac
import resource
import secrets
import sys
import time
from collections import Counter, defaultdict
from collections.abc import Callable, Coroutine, Iterator, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from itertools import pairwise
from pathlib import Path
from typing import Any

import aiohttp
import grpc
import orjson

from tidings.v1 import messaging_pb2 as pb
from tidings.v1 import messaging_pb2_grpc as pb_grpc


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


def _message(i: int) -> tuple[str, str]:
    """The ``i``-th message of a load: its number and its text (the same for REST and gRPC)."""
    return (
        f"+1202555{1000 + i % 9000}",
        f"Your verification code is {i % 1_000_000:06d}. It expires in 10 minutes.",
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
            to, body = _message(i)
            payload = orjson.dumps({"to": to, "body": body})
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


# -- gRPC ---------------------------------------------------------------------------------------

TRANSPORT_ERRORS = frozenset(
    {grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.DEADLINE_EXCEEDED, grpc.StatusCode.CANCELLED}
)
"""Call endings that are the connection's doing, counted as ``failures`` (as aiohttp's errors are)."""
BATCH_CHUNK = 1000
"""Recipients per ``SendBatch`` stream message (``GrpcClient.send_batch``'s default)."""


def _auth(key: str) -> tuple[tuple[str, str], ...]:
    return (("authorization", f"Bearer {key}"),)


async def _open_channels(target: str, count: int) -> list[grpc.aio.Channel]:
    """``count`` connected channels to ``target``, each on a TCP connection of its own: without
    a local subchannel pool, channels with the same arguments would share one connection."""
    channels = [
        grpc.aio.insecure_channel(target, options=[("grpc.use_local_subchannel_pool", 1)])
        for _ in range(count)
    ]
    try:
        for channel in channels:
            await asyncio.wait_for(channel.channel_ready(), 30)
    except BaseException:
        for channel in channels:
            await channel.close()
        raise
    return channels


async def send_messages_grpc(
    target: str, key: str, concurrency: int, seconds: float, warmup: float, channels: int
) -> dict[str, Any]:
    """See the module docstring, ``grpc-messages``."""
    auth = _auth(key)
    latencies: list[float] = []
    statuses: Counter[str] = Counter()
    failures: Counter[str] = Counter()
    total_accepted = 0
    pool = await _open_channels(target, channels)
    stubs = [pb_grpc.MessagingStub(channel) for channel in pool]
    window_start = time.perf_counter() + warmup
    window_end = window_start + seconds

    async def caller(number: int) -> None:
        nonlocal total_accepted
        stub = stubs[number % len(stubs)]
        i = number
        while (started := time.perf_counter()) < window_end:
            to, body = _message(i)
            i += concurrency
            code = grpc.StatusCode.OK
            try:
                await stub.SendMessage(pb.SendMessageRequest(to=to, body=body), metadata=auth, timeout=60)
            except grpc.aio.AioRpcError as exc:
                code = exc.code()
                if code in TRANSPORT_ERRORS:
                    failures[code.name] += 1
                    continue
            finished = time.perf_counter()
            if code is grpc.StatusCode.OK:
                total_accepted += 1
            if window_start <= finished <= window_end:
                statuses[code.name] += 1
                latencies.append(finished - started)

    cpu_before = _cpu_seconds()
    try:
        await asyncio.gather(*(caller(n) for n in range(concurrency)))
    finally:
        for channel in pool:
            await channel.close()
    return {
        "channels": channels,
        "completed": len(latencies),
        "accepted": statuses.get("OK", 0),
        "total_accepted": total_accepted,
        "statuses": dict(sorted(statuses.items())),
        "failures": dict(failures),
        "seconds": seconds,
        **_percentiles(latencies),
        "client_cpu_s": round(_cpu_seconds() - cpu_before, 2),
    }


@dataclass
class Received:
    """What one ``WatchMessages`` stream gave: each change's cursor, event, lag (seconds from its
    ``occurred_at`` to its arrival) and arrival (``perf_counter``), and how the reading ended."""

    cursors: list[int] = field(default_factory=list)
    events: list[str] = field(default_factory=list)
    lags: list[float] = field(default_factory=list)
    arrivals: list[float] = field(default_factory=list)
    ended: str = "enough"
    """``enough`` (all wanted came), ``stalled`` (none came for the stall time), ``eof`` (the
    server ended the stream) or the gRPC status code's name of an error."""

    def seconds(self) -> float | None:
        """From the first change's arrival to the last's."""
        return self.arrivals[-1] - self.arrivals[0] if len(self.arrivals) > 1 else None


async def read_changes(
    stub: pb_grpc.MessagingAsyncStub,
    auth: tuple[tuple[str, str], ...],
    cursor: str,
    wanted: int,
    stall: float,
    opened: Callable[[], Coroutine[Any, Any, Any]] | None = None,
) -> tuple[Received, Any]:
    """Follow every message's changes after ``cursor`` until ``wanted`` have come, none came for
    ``stall`` seconds, or the stream ended. ``opened``, when given, runs once the call has been
    made (what makes the changes); its result comes back beside what was received, and its
    error ends the reading at once (no change would come)."""
    received = Received()
    call = stub.WatchMessages(pb.WatchMessagesRequest(cursor=cursor), metadata=auth)
    started = asyncio.ensure_future(opened()) if opened is not None else None
    if started is not None:
        started.add_done_callback(
            lambda done: None if done.cancelled() or not done.exception() else call.cancel()
        )
    try:
        while len(received.cursors) < wanted:
            try:
                async with asyncio.timeout(stall):
                    change = await call.read()
            except TimeoutError:
                received.ended = "stalled"
                break
            if not isinstance(change, pb.StatusChange):  # grpc.aio.EOF: the server ended it
                received.ended = "eof"
                break
            received.arrivals.append(time.perf_counter())
            received.lags.append(time.time() - change.occurred_at.ToNanoseconds() / 1e9)
            received.cursors.append(int(change.cursor))
            received.events.append(change.event)
    except grpc.aio.AioRpcError as exc:
        received.ended = exc.code().name
    except asyncio.CancelledError:
        if started is None or not started.done() or started.cancelled() or started.exception() is None:
            raise
        received.ended = "batch failed"  # its error is raised below
    finally:
        call.cancel()
    return received, (await started if started is not None else None)


async def send_batch_grpc(
    stub: pb_grpc.MessagingAsyncStub, auth: tuple[tuple[str, str], ...], size: int
) -> dict[str, Any]:
    """A ``SendBatch`` of ``size`` recipients, ``BATCH_CHUNK`` to a stream message; its id, how
    many it accepted and how long the call took."""

    def parts() -> Iterator[pb.SendBatchRequest]:
        yield pb.SendBatchRequest(
            batch=pb.BatchShared(
                group_id=secrets.token_hex(8), template="Hello {{ first_name }}, it is on its way."
            )
        )
        for first in range(0, size, BATCH_CHUNK):
            chunk = [
                pb.Recipient(to=f"+1202555{1000 + i % 9000:04d}", first_name=f"Person {i}")
                for i in range(first, min(size, first + BATCH_CHUNK))
            ]
            yield pb.SendBatchRequest(recipients=pb.RecipientChunk(recipients=chunk))

    started = time.perf_counter()
    answer = await stub.SendBatch(parts(), metadata=auth, timeout=300)
    return {
        "id": answer.id,
        "accepted": answer.accepted,
        "refused": len(answer.refused),
        "seconds": round(time.perf_counter() - started, 3),
        "started": started,
    }


def _duplicates_and_disorder(cursors: list[int]) -> tuple[int, int]:
    """How many cursors came again, and how many came after a greater one."""
    repeated = len(cursors) - len(set(cursors))
    out_of_order = sum(1 for before, after in pairwise(cursors) if after <= before)
    return repeated, out_of_order


def _lag_figures(received: Received) -> dict[str, Any]:
    """The lag percentiles, in all and by event (``accepted``, ``claimed``, …)."""
    by_event: defaultdict[str, list[float]] = defaultdict(list)
    for event, lag in zip(received.events, received.lags, strict=True):
        by_event[event].append(lag)
    overall = _percentiles(received.lags)
    return {
        "lag_p50_ms": overall["p50_ms"],
        "lag_p90_ms": overall["p90_ms"],
        "lag_p99_ms": overall["p99_ms"],
        "lag_max_ms": overall["max_ms"],
        "lag_by_event": {
            event: {"changes": len(lags), **_percentiles(lags)} for event, lags in sorted(by_event.items())
        },
    }


async def watch_changes(
    target: str, key: str, cursor: str, changes: int, batch: int, stall: float, cursors_out: Path
) -> dict[str, Any]:
    """See the module docstring, ``grpc-watch``."""
    auth = _auth(key)
    (channel,) = await _open_channels(target, 1)
    stub = pb_grpc.MessagingStub(channel)
    cpu_before = _cpu_seconds()
    try:
        live, sent = await read_changes(
            stub, auth, cursor, changes, stall, opened=lambda: send_batch_grpc(stub, auth, batch)
        )
        cpu_live = _cpu_seconds() - cpu_before
        replay, _ = await read_changes(stub, auth, cursor, len(live.cursors), stall)
    finally:
        await channel.close()
    cursors_out.write_text("".join(f"{c}\n" for c in live.cursors))
    repeated, out_of_order = _duplicates_and_disorder(live.cursors)
    seconds, replay_seconds = live.seconds(), replay.seconds()
    return {
        "wanted": changes,
        "received": len(live.cursors),
        "ended": live.ended,
        "seconds": None if seconds is None else round(seconds, 3),
        "changes_per_s": round(len(live.cursors) / seconds, 1) if seconds else None,
        "first_change_after_s": round(live.arrivals[0] - sent["started"], 3) if live.arrivals else None,
        **_lag_figures(live),
        "repeated": repeated,
        "out_of_order": out_of_order,
        "batch": {k: v for k, v in sent.items() if k != "started"},
        "replay": {
            "received": len(replay.cursors),
            "ended": replay.ended,
            "seconds": None if replay_seconds is None else round(replay_seconds, 3),
            "changes_per_s": round(len(replay.cursors) / replay_seconds, 1) if replay_seconds else None,
            "same": replay.cursors == live.cursors,
        },
        "client_cpu_s": round(cpu_live, 2),
        "client_cpu_s_with_replay": round(_cpu_seconds() - cpu_before, 2),
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
    grpc_messages = modes.add_parser("grpc-messages")
    grpc_messages.add_argument("--target", required=True, help="the gRPC API's HOST:PORT")
    grpc_messages.add_argument("--key", required=True, help="an API key")
    grpc_messages.add_argument("--concurrency", type=int, default=32)
    grpc_messages.add_argument("--channels", type=int, default=1, help="channels (connections) to share")
    grpc_messages.add_argument("--seconds", type=float, default=20)
    grpc_messages.add_argument("--warmup", type=float, default=1)
    grpc_messages.add_argument("--out", type=Path, required=True)
    watch = modes.add_parser("grpc-watch")
    watch.add_argument("--target", required=True, help="the gRPC API's HOST:PORT")
    watch.add_argument("--key", required=True, help="an API key")
    watch.add_argument("--cursor", default="", help="follow the changes after this one (empty: from now)")
    watch.add_argument("--changes", type=int, default=10_000, help="changes to wait for")
    watch.add_argument("--batch", type=int, default=2500, help="recipients of the batch that makes them")
    watch.add_argument("--stall", type=float, default=60, help="give up after this long without a change")
    watch.add_argument("--cursors-out", type=Path, required=True, help="where the cursors received go")
    watch.add_argument("--out", type=Path, required=True)
    return parser.parse_args(argv)


def main(argv: Sequence[str] | None = None) -> None:
    args = _parse(argv)
    work: Coroutine[Any, Any, dict[str, Any]]
    if args.mode == "messages":
        work = post_messages(
            args.url, args.key, args.concurrency, args.seconds, args.warmup, args.scrape_every
        )
    elif args.mode == "receipts":
        work = post_receipts(args.url, args.secret, args.input, args.concurrency)
    elif args.mode == "grpc-messages":
        work = send_messages_grpc(
            args.target, args.key, args.concurrency, args.seconds, args.warmup, args.channels
        )
    else:
        work = watch_changes(
            args.target, args.key, args.cursor, args.changes, args.batch, args.stall, args.cursors_out
        )
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
