"""What storing messages costs, at one schema revision: ``insert_many`` (the one insert path)
timed on a fresh database, for comparing a change to what every accepted message pays.

    .venv/bin/python bench/insert_cost.py [--revision 0010] [--messages 20000] [--database both]

Two shapes, each in transactions of its own as the service writes them: chunks of 100 messages
(group commit under load, and batches: COPY on PostgreSQL, ``executemany`` on SQLite) and chunks
of 1 (a lone request: SQLAlchemy's insert). SQLite runs with ``synchronous=NORMAL`` and
PostgreSQL with ``synchronous_commit=off``, so that the disk's flush does not hide the statements'
own cost. Prints one JSON line per database and shape.
Not a scenario of ``run.py``: it starts no service, and takes a minute.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import random
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from harness import POSTGRES_ADMIN_URL, _admin
from sqlalchemy import text
from sqlalchemy.engine import make_url

from tidings.clock import utcnow
from tidings.domain.messages import NewMessage
from tidings.store import Store
from tidings.store.messages import insert_many, new_row
from tidings.store.migrate import upgrade

WORDS = (
    "your appointment at the clinic is tomorrow morning please bring card code verification "
    "reminder payment received balance thank you habari miadi yako kesho asubuhi tafadhali "
    "rendez-vous demain matin merci résultat disponible"
).split()


def _message(rng: random.Random, i: int) -> NewMessage:
    text = " ".join(rng.choice(WORDS) for _ in range(rng.randint(8, 24))) + f" {i:06d}"
    return NewMessage.sms(
        to=f"+2547{rng.randint(10_000_000, 99_999_999)}",
        text=text,
        provider="fake",
        max_attempts=11,
        tags=["bench"],
    )


async def _measure(url: str, revision: str, count: int, chunk: int) -> dict[str, Any]:
    store = Store.connect(url, sqlite_synchronous="NORMAL")
    await upgrade(store.engine, revision)
    rng = random.Random(7)
    items = [_message(rng, i) for i in range(count)]
    timings: list[float] = []
    try:
        for start in range(0, count, chunk):
            now = utcnow()
            batch = [(new_row(new, now), new) for new in items[start : start + chunk]]
            began = time.perf_counter()
            async with store.engine.begin() as conn:
                if store.is_postgres:
                    await conn.execute(text("SET LOCAL synchronous_commit = off"))
                await insert_many(conn, batch)
            timings.append(time.perf_counter() - began)
    finally:
        await store.close()
    total = sum(timings)
    return {
        "revision": revision,
        "messages": count,
        "chunk": chunk,
        "seconds": round(total, 3),
        "us_per_message": round(total / count * 1e6, 1),
        "median_chunk_ms": round(statistics.median(timings) * 1000, 3),
    }


async def _postgres(revision: str, count: int, chunk: int) -> dict[str, Any]:
    name = f"tidings_insert_cost_{random.randrange(1 << 32):08x}"
    await _admin(f'CREATE DATABASE "{name}"')
    try:
        url = make_url(POSTGRES_ADMIN_URL).set(database=name).render_as_string(hide_password=False)
        return await _measure(url, revision, count, chunk)
    finally:
        await _admin(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


async def main() -> None:
    parser = argparse.ArgumentParser(prog="python bench/insert_cost.py", description=__doc__)
    parser.add_argument("--revision", default="head")
    parser.add_argument("--messages", type=int, default=20_000)
    parser.add_argument("--database", choices=["sqlite", "postgres", "both"], default="both")
    args = parser.parse_args()
    kinds = ["sqlite", "postgres"] if args.database == "both" else [args.database]
    for kind in kinds:
        for chunk, count in ((100, args.messages), (1, args.messages // 10)):
            if kind == "sqlite":
                with tempfile.TemporaryDirectory() as folder:
                    result = await _measure(
                        f"sqlite:///{Path(folder) / 'cost.db'}", args.revision, count, chunk
                    )
            else:
                result = await _postgres(args.revision, count, chunk)
            print(json.dumps({"database": kind, **result}), flush=True)


if __name__ == "__main__":
    sys.exit(asyncio.run(main()))
