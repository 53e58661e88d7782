"""Statistics over stored messages and webhooks: exact figures on both databases, checked against
a plain Python computation of the same definitions, and bad ranges and keys refused by name."""

from __future__ import annotations

import asyncio
import json
import math
import os
import subprocess
import sys
from collections.abc import Sequence
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from sqlalchemy import delete, insert

from tidings import ids
from tidings.domain.costs import format_micros
from tidings.services import Service
from tidings.store import Store
from tidings.store.tables import message_tags, messages, webhook_log

DAY = datetime(2025, 3, 10)
NUMBERS = {"KE": "+254712345678", "CI": "+2250701020304", "US": "+14155550123", "RU": "+79161234567"}


def message(
    *,
    at: datetime,
    status: str = "delivered",
    provider: str = "tw",
    to: str = NUMBERS["KE"],
    channel: str = "sms",
    to_sent: float | None = None,
    to_delivered: float | None = None,
    segments: int | None = 1,
    cost: int | None = None,
    currency: str | None = None,
    error_code: str | None = None,
    batch: str | None = None,
    tags: Sequence[str] = (),
) -> dict[str, Any]:
    return {
        "id": ids.new_id(),
        "channel": channel,
        "to": to,
        "body": "hello",
        "segments": segments if channel == "sms" else None,
        "status": status,
        "provider": provider,
        "max_attempts": 3,
        "next_attempt_at": at,
        "created_at": at,
        "updated_at": at,
        "sent_at": at + timedelta(seconds=to_sent) if to_sent is not None else None,
        "delivered_at": at + timedelta(seconds=to_delivered) if to_delivered is not None else None,
        "cost_micros": cost,
        "currency": currency,
        "error_code": error_code,
        "batch_id": batch,
        "tags": list(tags),
        "metadata": {},
    }


async def store_messages(store: Store, rows: Sequence[dict[str, Any]]) -> None:
    async with store.engine.begin() as conn:
        if rows:
            await conn.execute(insert(messages), list(rows))
        tagged = [{"message_id": r["id"], "tag": t} for r in rows for t in r["tags"]]
        if tagged:
            await conn.execute(insert(message_tags), tagged)


def nearest_rank(values: list[float], p: int) -> float | None:
    if not values:
        return None
    return round(sorted(values)[math.ceil(p * len(values) / 100) - 1], 3)


COUNTRY_OF = {v: k for k, v in NUMBERS.items()}


def key_of(row: dict[str, Any], name: str) -> list[str | None]:
    """The group values a row falls in for one key (several for tags)."""
    if name == "day":
        return [row["created_at"].strftime("%Y-%m-%d")]
    if name == "hour":
        return [row["created_at"].strftime("%Y-%m-%dT%H:00")]
    if name == "tag":
        return list(row["tags"]) or [None]
    if name == "batch":
        return [row["batch_id"]]
    if name == "country":
        return [COUNTRY_OF[row["to"]] if row["channel"] == "sms" else None]
    return [row[name]]


def expected(
    rows: Sequence[dict[str, Any]], by: Sequence[str]
) -> dict[tuple[str | None, ...], dict[str, Any]]:
    """The figures per group, computed plainly from the rows."""
    members: dict[tuple[str | None, ...], list[dict[str, Any]]] = {}
    for row in rows:
        combos: list[tuple[str | None, ...]] = [()]
        for name in by:
            combos = [(*c, v) for c in combos for v in key_of(row, name)]
        for combo in combos:
            members.setdefault(combo, []).append(row)
    out = {}
    for combo, group in members.items():
        count = {s: sum(1 for r in group if r["status"] == s) for s in {r["status"] for r in group}}
        attempted = len(group) - count.get("cancelled", 0)
        costs: dict[str, int] = {}
        for r in group:
            if r["cost_micros"] is not None:
                costs[r["currency"]] = costs.get(r["currency"], 0) + r["cost_micros"]
        sent = [(r["sent_at"] - r["created_at"]).total_seconds() for r in group if r["sent_at"]]
        delivered = [
            (r["delivered_at"] - r["created_at"]).total_seconds() for r in group if r["delivered_at"]
        ]
        out[combo] = {
            "total": len(group),
            "counts": dict(sorted(count.items())),
            "pending": attempted - count.get("delivered", 0) - count.get("failed", 0),
            "delivery_rate": round(count.get("delivered", 0) / attempted, 6) if attempted else None,
            "failure_rate": round(count.get("failed", 0) / attempted, 6) if attempted else None,
            "segments": sum(r["segments"] or 0 for r in group),
            "cost": {c: format_micros(m) for c, m in sorted(costs.items())},
            "seconds_to_sent": {"p50": nearest_rank(sent, 50), "p95": nearest_rank(sent, 95)},
            "seconds_to_delivered": {"p50": nearest_rank(delivered, 50), "p95": nearest_rank(delivered, 95)},
        }
    return out


FIGURES = ("total", "counts", "pending", "delivery_rate", "failure_rate", "segments", "cost")


def got(answer: dict[str, Any], by: Sequence[str]) -> dict[tuple[str | None, ...], dict[str, Any]]:
    return {
        tuple(g["key"][k] for k in by): {
            k: g[k] for k in (*FIGURES, "seconds_to_sent", "seconds_to_delivered")
        }
        for g in answer["groups"]
    }


def seed_rows() -> list[dict[str, Any]]:
    rows = []
    for i in range(8):
        rows.append(
            message(
                at=DAY + timedelta(hours=1, minutes=i),
                to_sent=1 + i * 0.25,
                to_delivered=10 + i,
                cost=50_000,
                currency="USD",
                tags=["reminders", "clinic-1"] if i % 2 else ["reminders"],
                batch="B1" if i < 4 else None,
            )
        )
    rows.append(
        message(
            at=DAY + timedelta(hours=2),
            status="failed",
            error_code="30003",
            to_sent=2,
            cost=50_000,
            currency="USD",
        )
    )
    rows.append(message(at=DAY + timedelta(hours=2, minutes=5), status="pending"))
    for i in range(3):
        rows.append(
            message(
                at=DAY + timedelta(hours=5),
                provider="orange",
                to=NUMBERS["CI"],
                to_sent=3,
                to_delivered=20 + i,
                cost=10_000 + i,
                currency="XOF",
                segments=2,
            )
        )
    rows += [
        message(at=DAY + timedelta(hours=6), provider="orange", to=NUMBERS["CI"], status="cancelled")
    ] * 1
    rows.append(
        message(
            at=DAY + timedelta(hours=7),
            provider="smtp",
            channel="email",
            to="ada@example.org",
            status="sent",
            to_sent=0.5,
        )
    )
    for i in range(4):
        rows.append(
            message(
                at=DAY + timedelta(days=1, hours=i),
                to=NUMBERS["US"],
                to_sent=1,
                to_delivered=4 + i,
                cost=7_900,
                currency="USD",
            )
        )
    # Outside the range asked for: never counted.
    rows.append(message(at=DAY - timedelta(seconds=1)))
    rows.append(message(at=DAY + timedelta(days=2)))
    return rows


@pytest.fixture
async def seeded(store: Store) -> list[dict[str, Any]]:
    rows = seed_rows()
    await store_messages(store, rows)
    return [r for r in rows if DAY <= r["created_at"] < DAY + timedelta(days=2)]


RANGE = {"since": "2025-03-10T00:00:00Z", "until": "2025-03-12T00:00:00Z"}


async def stats(client: httpx.AsyncClient, **params: Any) -> dict[str, Any]:
    response = await client.get("/v1/stats", params={**RANGE, **params})
    assert response.status_code == 200, response.text
    body: dict[str, Any] = response.json()
    return body


async def test_totals_follow_the_definitions(client: httpx.AsyncClient, seeded: list[dict[str, Any]]) -> None:
    answer = await stats(client)
    [(_, want)] = expected(seeded, []).items()
    assert {k: answer["totals"][k] for k in want} == want
    # The seed's own figures, spelled out once: 19 accepted, 1 cancelled, 15 delivered, 1 failed.
    assert (answer["totals"]["total"], answer["totals"]["delivered"], answer["totals"]["failed"]) == (
        19,
        15,
        1,
    )
    assert answer["totals"]["pending"] == 2
    assert answer["totals"]["delivery_rate"] == round(15 / 18, 6)
    assert answer["totals"]["cost"] == {"USD": "0.4816", "XOF": "0.030003"}
    assert answer["groups"] == []


@pytest.mark.parametrize(
    "by",
    [
        ["provider"],
        ["day"],
        ["hour"],
        ["channel", "status"],
        ["error_code"],
        ["tag"],
        ["batch"],
        ["country"],
        ["day", "provider", "country"],
    ],
)
async def test_every_grouping_matches_a_plain_computation(
    client: httpx.AsyncClient, seeded: list[dict[str, Any]], by: list[str]
) -> None:
    answer = await stats(client, by=",".join(by))
    assert answer["by"] == by
    assert got(answer, by) == expected(seeded, by)


@pytest.mark.parametrize("by", [[], ["hour", "provider"], ["tag"]])
async def test_without_times_the_counts_and_costs_are_the_same_and_no_percentile_is_given(
    service: Service, seeded: list[dict[str, Any]], by: list[str]
) -> None:
    """What the dashboard's overview asks for: the same figures, less the times it does not show."""
    since, until = DAY, DAY + timedelta(days=2)
    timed = await service.stats.messages(since=since, until=until, by=by)
    untimed = await service.stats.messages(since=since, until=until, by=by, times=False)
    no_times = {"p50": None, "p95": None}
    for full, short in zip(
        [timed["totals"], *timed["groups"]], [untimed["totals"], *untimed["groups"]], strict=True
    ):
        assert {k: short[k] for k in FIGURES} == {k: full[k] for k in FIGURES}
        assert short["seconds_to_sent"] == short["seconds_to_delivered"] == no_times
    assert len(untimed["groups"]) == len(timed["groups"])
    assert timed["totals"]["seconds_to_delivered"] != no_times


async def test_country_is_read_from_the_calling_code(
    client: httpx.AsyncClient, seeded: list[dict[str, Any]]
) -> None:
    answer = await stats(client, by="country")
    keys = sorted((g["key"]["country"] or "", g["key"]["calling_code"] or "") for g in answer["groups"])
    assert keys == [("", ""), ("CI", "+225"), ("KE", "+254"), ("US", "+1")]


async def test_filters_narrow_what_is_counted(
    client: httpx.AsyncClient, seeded: list[dict[str, Any]]
) -> None:
    orange = await stats(client, provider="orange")
    assert orange["totals"]["total"] == 4 and orange["totals"]["cancelled"] == 1
    email = await stats(client, channel="email")
    assert email["totals"]["counts"] == {"sent": 1}
    batch = await stats(client, batch="B1")
    assert batch["totals"]["total"] == 4


@pytest.mark.parametrize(
    ("params", "field"),
    [
        ({"until": "2025-03-12T00:00:00Z"}, "since"),
        ({"since": "2025-03-12T00:00:00Z", "until": "2025-03-10T00:00:00Z"}, "until"),
        ({"since": "2025-03-10T00:00:00Z", "until": "2025-03-10T00:00:00Z"}, "until"),
        ({"since": "2020-01-01T00:00:00Z", "until": "2025-03-12T00:00:00Z"}, "since"),
        ({**RANGE, "by": "weekday"}, "by"),
        ({**RANGE, "by": "day,hour"}, "by"),
        ({**RANGE, "by": "provider;drop table messages"}, "by"),
        ({**RANGE, "channel": "fax"}, "channel"),
        ({"since": "yesterday"}, "since"),
    ],
)
async def test_bad_ranges_and_keys_are_422_naming_the_field(
    client: httpx.AsyncClient, params: dict[str, str], field: str
) -> None:
    response = await client.get("/v1/stats", params=params)
    assert response.status_code == 422, response.text
    assert response.json()["error"]["field"] == field


def _row_strategy() -> st.SearchStrategy[dict[str, Any]]:
    def build(
        minute: int,
        status: str,
        provider: str,
        country: str,
        sent: int | None,
        late: int | None,
        cost: int | None,
        tags: list[str],
    ) -> dict[str, Any]:
        delivered = sent + late if sent is not None and late is not None and status == "delivered" else None
        return message(
            at=DAY + timedelta(minutes=minute),
            status=status,
            provider=provider,
            to=NUMBERS[country],
            to_sent=sent / 4 if sent is not None else None,
            to_delivered=delivered / 4 if delivered is not None else None,
            cost=cost,
            currency="USD" if cost is not None else None,
            tags=tags,
        )

    return st.builds(
        build,
        st.integers(0, 2 * 24 * 60 - 1),
        st.sampled_from(["pending", "sent", "delivered", "failed", "cancelled"]),
        st.sampled_from(["tw", "orange"]),
        st.sampled_from(sorted(NUMBERS)),
        st.none() | st.integers(0, 400),
        st.none() | st.integers(0, 4000),
        st.none() | st.integers(0, 10**9),
        st.lists(st.sampled_from(["a", "b", "c"]), unique=True, max_size=2),
    )


@settings(max_examples=15, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(
    rows=st.lists(_row_strategy(), max_size=40),
    by=st.lists(st.sampled_from(["day", "provider", "status", "tag", "country"]), unique=True, max_size=2),
)
async def test_any_messages_any_grouping_agree_with_the_plain_computation(
    client: httpx.AsyncClient, store: Store, rows: list[dict[str, Any]], by: list[str]
) -> None:
    async with store.engine.begin() as conn:
        await conn.execute(delete(message_tags))
        await conn.execute(delete(messages))
    await store_messages(store, rows)
    answer = await stats(client, by=",".join(by))
    assert got(answer, by) == (expected(rows, by) if by else {})
    if rows:
        [(_, want)] = expected(rows, []).items()
        assert {k: answer["totals"][k] for k in want} == want


async def test_webhook_figures_per_provider_and_event(client: httpx.AsyncClient, store: Store) -> None:
    def entry(
        provider: str,
        event: str,
        *,
        processed: bool,
        verified: bool | None,
        status: int | None,
        ms: float | None,
    ) -> dict[str, Any]:
        return {
            "received_at": DAY + timedelta(hours=1),
            "provider": provider,
            "kind": provider,
            "event": event,
            "url": "http://tidings.test/webhooks",
            "headers": {},
            "body": b"",
            "verified": verified,
            "processed": processed,
            "response_status": status,
            "duration_ms": ms,
        }

    rows = [
        entry("orange", "delivery", processed=True, verified=True, status=200, ms=float(i + 1))
        for i in range(20)
    ]
    rows += [
        entry("orange", "delivery", processed=False, verified=False, status=401, ms=None),
        entry("orange", "delivery", processed=False, verified=True, status=500, ms=40.0),
        entry("orange", "delivery", processed=False, verified=True, status=None, ms=None),
        entry("tw", "status", processed=True, verified=True, status=200, ms=2.0),
    ]
    async with store.engine.begin() as conn:
        await conn.execute(insert(webhook_log), rows)
    response = await client.get("/v1/stats/webhooks", params=RANGE)
    assert response.status_code == 200, response.text
    orange, twilio = response.json()["data"]
    assert orange == {
        "provider": "orange",
        "event": "delivery",
        "received": 23,
        "processed": 20,
        "rejected": 1,
        "failed": 1,
        "unfinished": 1,
        "mean_ms": round((210 + 40) / 21, 3),
        "p95_ms": 20.0,
    }
    assert (twilio["provider"], twilio["received"], twilio["mean_ms"], twilio["p95_ms"]) == (
        "tw",
        1,
        2.0,
        2.0,
    )


async def tidings_stats(
    directory: Path, database_url: str, *options: str
) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("TIDINGS_")}
    env["TIDINGS_DATABASE_URL"] = database_url
    return await asyncio.to_thread(
        subprocess.run,
        [sys.executable, "-m", "tidings", "stats", *options],
        cwd=directory,
        env=env,
        stdin=subprocess.DEVNULL,
        capture_output=True,
        text=True,
        timeout=60,
    )


async def test_the_cli_prints_the_same_figures_as_the_api(
    client: httpx.AsyncClient, seeded: list[dict[str, Any]], database_url: str, tmp_path: Path
) -> None:
    window = ["--since", RANGE["since"], "--until", RANGE["until"], "--by", "provider"]
    done = await tidings_stats(tmp_path, database_url, *window, "--json")
    assert done.returncode == 0, done.stderr
    lines = [json.loads(line) for line in done.stdout.splitlines()]
    answer = await stats(client, by="provider")
    assert lines[0] == {"group": "all", **answer["totals"]}
    assert [line["provider"] for line in lines[1:]] == [g["key"]["provider"] for g in answer["groups"]]
    for line, group in zip(lines[1:], answer["groups"], strict=True):
        assert {k: line[k] for k in FIGURES} == {k: group[k] for k in FIGURES}
    table = await tidings_stats(tmp_path, database_url, *window)
    assert table.returncode == 0, table.stderr
    header, *rows = table.stdout.splitlines()[1:]
    assert header.split()[:4] == ["GROUP", "PROVIDER", "TOTAL", "DELIVERED"]
    assert [row.split()[:3] for row in rows] == [
        ["all", "19", "15"],
        ["orange", "4", "3"],
        ["smtp", "1", "0"],
        ["tw", "14", "12"],
    ]


async def test_the_cli_refuses_a_bad_grouping_or_time_with_exit_code_2(
    database_url: str, tmp_path: Path
) -> None:
    bad_key = await tidings_stats(tmp_path, database_url, "--by", "weekday")
    assert bad_key.returncode == 2 and "cannot group by 'weekday'" in bad_key.stderr
    bad_time = await tidings_stats(tmp_path, database_url, "--since", "yesterday")
    assert bad_time.returncode == 2 and "neither a time" in bad_time.stderr
