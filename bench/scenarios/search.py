"""search: how fast ``GET /v1/messages`` answers searches over a large messages table.

``--search-messages`` (1,000,000) messages are bulk-loaded straight into the database (timed as
``load_seconds``, not part of any figure), through the search index's own triggers (SQLite) or
generated column (PostgreSQL), as tidings' insert path would write them: ``executemany`` in one
transaction on SQLite, ``COPY`` on PostgreSQL (then ``ANALYZE``, as autovacuum would soon do; SQLite
gets no statistics, as tidings never gathers them). The messages are realistic traffic, made from
a fixed seed: appointment reminders, verification codes, payment receipts, results, in English,
Swahili and French (a few emails with subjects), each with its own names, codes and references;
over 90 days; 60 % of them in 40 batches of 15,000; numbers in six countries; statuses mostly
delivered; tags per programme, ``vip`` on 1 %; a cost in the country's currency once sent. One
word, ``zanzibar``, is in 20 messages.

Then one ``tidings api`` process answers each query of :func:`queries`, one request at a time
over HTTP, ``REPEATS`` times after ``WARMUP`` unmeasured ones (a page of 50, newest first, as a
client would ask). ``queries`` gives each one's p50 and p99 in ms and the rows of its page; the
line's ``p50_ms`` and ``p99_ms`` are the slowest query's. The target: every query's p99 under
100 ms.
"""

from __future__ import annotations

import asyncio
import random
import sqlite3
import time
from collections.abc import Callable, Iterator
from datetime import datetime, timedelta
from typing import Any
from urllib.parse import urlencode

import aiohttp
import asyncpg
import orjson
from harness import BenchError, Workspace, free_port, percentile, wait_healthy
from profiling import Profiler
from sqlalchemy.dialects import sqlite as sqlite_dialect
from sqlalchemy.engine import make_url

from scenarios import Options, line, machine_load
from tidings import ids
from tidings.clock import utcnow
from tidings.store.tables import message_tags, messages

TARGET_MS = 100.0
REPEATS = 40
WARMUP = 3
CHUNK = 20_000
BATCHES = 40
BATCH_SIZE = 15_000
RARE = 20
"""How many messages mention ``zanzibar``, evenly spread, whatever the size."""

COLUMNS = (
    "id",
    "channel",
    "to",
    "body",
    "subject",
    "segments",
    "encoding",
    "status",
    "provider",
    "attempts",
    "max_attempts",
    "next_attempt_at",
    "created_at",
    "updated_at",
    "tags",
    "metadata",
    "batch_id",
    "cost_micros",
    "currency",
)

# (prefix, share, currency, price of one SMS part in millionths)
COUNTRIES = (
    ("+2547", 0.50, "KES", 800_000),
    ("+2567", 0.15, "UGX", 35_000_000),
    ("+2557", 0.15, "TZS", 25_000_000),
    ("+2348", 0.10, "NGN", 4_000_000),
    ("+1202", 0.05, "USD", 7_900),
    ("+336", 0.05, "EUR", 75_000),
)
STATUSES = (
    ("delivered", 0.85),
    ("sent", 0.05),
    ("failed", 0.04),
    ("pending", 0.03),
    ("scheduled", 0.02),
    ("cancelled", 0.01),
)
SYLLABLES = "ka ma ni to ri sa je wa li ne mu ba ko da hi zu fa ye lo pe".split()
PLACES = (
    "Kibera Mathare Kawangware Githurai Kayole Ruiru Thika Machakos Nakuru Eldoret Kisumu Mombasa "
    "Kampala Entebbe Gulu Arusha Moshi Dodoma Mwanza Lagos Ibadan Kano"
).split()
DAYS = "Monday Tuesday Wednesday Thursday Friday Saturday".split()
DAYS_SW = "Jumatatu Jumanne Jumatano Alhamisi Ijumaa Jumamosi".split()
DAYS_FR = "lundi mardi mercredi jeudi vendredi samedi".split()
# (weight, programme tag, body template, email subject or None)
TEMPLATES: tuple[tuple[float, str, str, str | None], ...] = (
    (
        0.30,
        "anc",
        "Hello {name}, your appointment at {place} clinic is on {day} at {time}. "
        "Please bring your card. Reply STOP to opt out.",
        None,
    ),
    (0.20, "otp", "Your verification code is {code}. It expires in 10 minutes. Do not share it.", None),
    (
        0.15,
        "billing",
        "Payment of {money} received for account {account}. Ref {ref}. Thank you for choosing us.",
        None,
    ),
    (
        0.12,
        "anc",
        "Habari {name}, miadi yako katika kliniki ya {place} ni {day_sw} saa {time}. Asante.",
        None,
    ),
    (
        0.08,
        "results",
        "Bonjour {name}, votre résultat est disponible à la clinique de {place} dès {day_fr}. Merci.",
        None,
    ),
    (0.07, "immunisation", "Reminder: {name}, your child's immunisation is due on {day} at {place}.", None),
    (
        0.03,
        "immunisation",
        "Reminder: {name}, your child's next immunisation is due on {day} at {time} at {place} clinic. "
        "Please bring the clinic card and arrive early; the queue is long in the morning.",
        None,
    ),
    (
        0.05,
        "billing",
        "Dear {name}, please find attached your invoice {ref} for {month}. Amount due: {money}.",
        "Your invoice {ref} from {place} Health",
    ),
)


def _names(rng: random.Random, count: int) -> list[str]:
    names: set[str] = set()
    while len(names) < count:
        names.add("".join(rng.choice(SYLLABLES) for _ in range(rng.randint(2, 3))).capitalize())
    return sorted(names)


def _pick(rng: random.Random, weighted: tuple[tuple[Any, float], ...]) -> Any:
    roll, total = rng.random(), 0.0
    for value, weight in weighted:
        total += weight
        if roll < total:
            return value
    return weighted[-1][0]


def batch_id(number: int) -> str:
    """The id of batch ``number`` (the shape of tidings' ids, made up)."""
    return f"01JBENCHBATCH{number:013d}"


def generate(count: int, seed: int = 11) -> Iterator[tuple[tuple[Any, ...], list[str]]]:
    """``count`` message rows (values in :data:`COLUMNS` order) and each one's tags, oldest first."""
    rng = random.Random(seed)
    names = _names(rng, 3000)
    # The range is cut into BATCHES stretches; each begins with a batch, 60 % of its messages.
    stride = max(1, count // BATCHES)
    batch_part = min(BATCH_SIZE, stride * 3 // 5)
    end = utcnow() - timedelta(minutes=5)
    start = end - timedelta(days=90)
    step = (end - start) / max(count, 1)
    templates = tuple((t, t[0]) for t in TEMPLATES)
    countries = tuple((c, c[1]) for c in COUNTRIES)
    for i in range(count):
        at: datetime = start + step * i
        batch_number = i // stride
        in_batch = batch_number < BATCHES and i % stride < batch_part
        _weight, programme, template, subject = _pick(rng, templates)
        prefix, _share, currency, price = _pick(rng, countries)
        values = {
            "name": rng.choice(names),
            "place": rng.choice(PLACES),
            "day": rng.choice(DAYS),
            "day_sw": rng.choice(DAYS_SW),
            "time": f"{rng.randint(7, 17)}:{rng.choice(('00', '15', '30', '45'))}",
            "code": f"{rng.randrange(1_000_000):06d}",
            "money": f"{currency} {rng.randint(50, 20_000):,}",
            "account": f"{rng.randrange(10**8):08d}",
            "ref": "".join(rng.choice("ABCDEFGHJKLMNPQRSTUVWXYZ23456789") for _ in range(10)),
            "day_fr": rng.choice(DAYS_FR),
            "month": at.strftime("%B"),
        }
        body = template.format(**values)
        if i % max(1, count // RARE) == 0:
            body += " Your parcel from Zanzibar is ready for collection."
        status = _pick(rng, STATUSES)
        segments = 1 if len(body) <= 160 else 2
        email = subject is not None
        tags = [programme]
        if rng.random() < 0.01:
            tags.append("vip")
        if in_batch:
            tags.append(f"campaign-{batch_number}")
        priced = status in ("delivered", "sent", "failed")
        ms = int(at.timestamp() * 1000)
        address = (
            f"{values['name'].lower()}{i}@example.org" if email else f"{prefix}{rng.randrange(10**8):08d}"
        )
        yield (
            (
                ids.new_id(ms),
                "email" if email else "sms",
                address,
                body,
                subject.format(**values) if subject is not None else None,
                None if email else segments,
                None if email else "GSM-7",
                status,
                "fake",
                0 if status in ("pending", "scheduled", "cancelled") else 1,
                11,
                at,
                at,
                at,
                tags,
                {},
                batch_id(batch_number) if in_batch else None,
                price * segments if priced and not email else None,
                currency if priced and not email else None,
            ),
            tags,
        )


def _chunks(count: int) -> Iterator[list[tuple[tuple[Any, ...], list[str]]]]:
    chunk: list[tuple[tuple[Any, ...], list[str]]] = []
    for item in generate(count):
        chunk.append(item)
        if len(chunk) == CHUNK:
            yield chunk
            chunk = []
    if chunk:
        yield chunk


def _sqlite_converters() -> list[Callable[[Any], Any] | None]:
    dialect = sqlite_dialect.dialect()
    return [messages.c[name].type.dialect_impl(dialect).bind_processor(dialect) for name in COLUMNS]


def _load_sqlite(path: str, count: int) -> None:
    converters = _sqlite_converters()
    columns = ", ".join(f'"{c}"' for c in COLUMNS)
    insert = f"INSERT INTO messages ({columns}) VALUES ({', '.join('?' * len(COLUMNS))})"
    insert_tags = f"INSERT INTO {message_tags.name} (message_id, tag) VALUES (?, ?)"
    conn = sqlite3.connect(path, timeout=60)
    try:
        with conn:
            for chunk in _chunks(count):
                conn.executemany(
                    insert,
                    [
                        tuple(
                            v if convert is None or v is None else convert(v)
                            for convert, v in zip(converters, row, strict=True)
                        )
                        for row, _tags in chunk
                    ],
                )
                conn.executemany(insert_tags, [(row[0], tag) for row, tags in chunk for tag in tags])
    finally:
        conn.close()


async def _load_postgres(dsn: str, count: int) -> None:
    conn = await asyncpg.connect(dsn)
    try:
        async with conn.transaction():
            tags_at, metadata_at = COLUMNS.index("tags"), COLUMNS.index("metadata")
            for chunk in _chunks(count):
                records = []
                for row, _tags in chunk:
                    values = list(row)
                    # asyncpg sends json columns as text.
                    values[tags_at] = orjson.dumps(values[tags_at]).decode()
                    values[metadata_at] = orjson.dumps(values[metadata_at]).decode()
                    records.append(tuple(values))
                await conn.copy_records_to_table("messages", records=records, columns=list(COLUMNS))
                await conn.copy_records_to_table(
                    message_tags.name,
                    records=[(row[0], tag) for row, tags in chunk for tag in tags],
                    columns=["message_id", "tag"],
                )
        await conn.execute("ANALYZE messages")
        await conn.execute(f"ANALYZE {message_tags.name}")
    finally:
        await conn.close()


async def load(database_url: str, count: int) -> None:
    url = make_url(database_url)
    if url.get_backend_name() == "sqlite":
        await asyncio.to_thread(_load_sqlite, url.database or "", count)
    else:
        await _load_postgres(url.set(drivername="postgresql").render_as_string(hide_password=False), count)


def queries(batch: str) -> dict[str, list[tuple[str, str]]]:
    """Each measured query by name: its parameters (besides ``limit``)."""
    return {
        "q_rare": [("q", "zanzibar")],
        "q_common": [("q", "appointment")],
        "q_two_words": [("q", "miadi kliniki")],
        "q_status": [("q", "payment"), ("status", "failed")],
        "q_statuses": [("q", "résultat"), ("status", "failed"), ("status", "sent")],
        "tag": [("tag", "vip")],
        "tags": [("tag", "vip"), ("tag", "results")],
        "to_prefix": [("to_prefix", "+2547")],
        "to_prefix_rare": [("to_prefix", "+3361")],
        "batch": [("batch", batch)],
        "status": [("status", "failed")],
        "cost_range": [("currency", "KES"), ("cost_min", "0.5"), ("cost_max", "1")],
        "cost_range_rare": [("currency", "EUR"), ("cost_min", "0.15")],
        "cost_range_none": [("currency", "KES"), ("cost_min", "1000")],
        "provider": [("provider", "fake")],
        "last_day": [("created_after", (utcnow() - timedelta(days=1)).isoformat() + "Z")],
    }


SECOND_PAGES = ("q_common", "q_rare", "tag", "to_prefix")
"""Queries also timed at their second page (``cursor`` from the first): ``<name>_page2``."""


async def _time(session: aiohttp.ClientSession, url: str, key: str) -> tuple[float, dict[str, Any]]:
    started = time.perf_counter()
    async with session.get(url, headers={"Authorization": f"Bearer {key}"}) as response:
        body = await response.json()
        elapsed = (time.perf_counter() - started) * 1000
        if response.status != 200:
            raise BenchError(f"GET {url} answered {response.status}: {body}")
    return elapsed, body


async def measure(base: str, key: str, batch: str) -> dict[str, dict[str, Any]]:
    results: dict[str, dict[str, Any]] = {}
    async with aiohttp.ClientSession() as session:
        asked = dict(queries(batch))
        for name in SECOND_PAGES:
            _ms, first = await _time(
                session, f"{base}/v1/messages?{urlencode([*asked[name], ('limit', '50')])}", key
            )
            if first["next_cursor"] is not None:
                asked[f"{name}_page2"] = [*asked[name], ("cursor", first["next_cursor"])]
        for name, params in asked.items():
            url = f"{base}/v1/messages?{urlencode([*params, ('limit', '50')])}"
            timings: list[float] = []
            rows = 0
            for n in range(WARMUP + REPEATS):
                elapsed, body = await _time(session, url, key)
                rows = len(body["data"])
                if n >= WARMUP:
                    timings.append(elapsed)
            results[name] = {
                "p50_ms": round(percentile(timings, 0.5) or 0, 2),
                "p99_ms": round(percentile(timings, 0.99) or 0, 2),
                "rows": rows,
            }
    return results


async def run(ws: Workspace, options: Options, profiler: Profiler) -> list[dict[str, Any]]:
    load_avg = machine_load()
    count = options.search_messages
    port = free_port()
    env = ws.service_env(api_port=port, settings=options.settings)
    ws.migrate(env)
    key = ws.create_key(env)
    started = time.perf_counter()
    await load(ws.database_url, count)
    load_seconds = time.perf_counter() - started

    ws.processes.start_tidings("api", ["api", "--port", str(port)], env)
    await wait_healthy(port, ws.processes, "api")
    profiler.attach("api")
    results = await measure(f"http://127.0.0.1:{port}", key, batch_id(BATCHES // 2))
    profiles = profiler.finish()
    ws.processes.check_alive("api")
    rss = ws.processes.peak_rss_mb("api")
    errors = len(ws.processes.error_lines("api"))
    ws.processes.stop("api")
    worst50 = max(r["p50_ms"] for r in results.values())
    worst99 = max(r["p99_ms"] for r in results.values())
    return [
        line(
            "search",
            ws.kind,
            messages=count,
            seconds=None,
            p50_ms=worst50,
            p99_ms=worst99,
            peak_rss_mb=rss,
            queries=results,
            load_seconds=round(load_seconds, 1),
            load_rows_per_s=round(count / load_seconds),
            repeats=REPEATS,
            errors_logged=errors,
            target=f"every query's p99 < {TARGET_MS:.0f} ms",
            met=worst99 < TARGET_MS,
            loadavg_1m=load_avg,
            profiles=profiles,
        )
    ]
