"""``GET /v1/alerts``: open and resolved alerts, newest first, with filters and a cursor."""

from __future__ import annotations

from datetime import timedelta
from typing import Any

import httpx
import pytest

from tidings.clock import to_api, utcnow
from tidings.services import Service


async def raise_alert(service: Service, rule: str, subject: str = "") -> dict[str, Any]:
    alert = await service.store.alerts.raise_alert(
        rule=rule,
        subject=subject,
        value=1.0,
        threshold=0.5,
        detail={"why": "a test"},
        message=f"{rule} about {subject or 'everything'}",
        now=utcnow(),
    )
    assert alert is not None
    return alert


async def listed(client: httpx.AsyncClient, **params: Any) -> list[tuple[str, str]]:
    answer = await client.get("/v1/alerts", params=params)
    assert answer.status_code == 200, answer.text
    return [(a["rule"], a["status"]) for a in answer.json()["data"]]


async def test_alerts_are_listed_newest_first_with_their_fields(
    client: httpx.AsyncClient, service: Service
) -> None:
    pending = await raise_alert(service, "pending")
    silent = await raise_alert(service, "gateway_silent", "phone")
    resolved = await service.store.alerts.resolve(pending["id"], now=utcnow(), value=0.2)
    assert resolved is not None

    answer = await client.get("/v1/alerts")

    assert answer.status_code == 200, answer.text
    first, second = answer.json()["data"]
    assert answer.json()["next_cursor"] is None
    assert first == {
        "id": silent["id"],
        "rule": "gateway_silent",
        "subject": "phone",
        "status": "open",
        "value": 1.0,
        "threshold": 0.5,
        "message": "gateway_silent about phone",
        "detail": {"why": "a test"},
        "raised_at": to_api(silent["raised_at"]),
        "resolved_at": None,
        "last_checked_at": to_api(silent["last_checked_at"]),
    }
    assert (second["id"], second["status"], second["value"]) == (pending["id"], "resolved", 0.2)
    assert second["resolved_at"] == to_api(resolved["resolved_at"])


async def test_alerts_filtered_by_status_rule_and_time(client: httpx.AsyncClient, service: Service) -> None:
    old = await raise_alert(service, "pending")
    assert await service.store.alerts.resolve(old["id"], now=utcnow() - timedelta(days=2)) is not None
    recent = await raise_alert(service, "pending")
    assert await service.store.alerts.resolve(recent["id"], now=utcnow()) is not None
    await raise_alert(service, "pending")
    await raise_alert(service, "failover", "twilio")

    assert await listed(client, status="open") == [("failover", "open"), ("pending", "open")]
    assert await listed(client, status="resolved") == [("pending", "resolved"), ("pending", "resolved")]
    assert await listed(client, rule="pending") == [
        ("pending", "open"),
        ("pending", "resolved"),
        ("pending", "resolved"),
    ]
    yesterday = (utcnow() - timedelta(days=1)).isoformat() + "Z"
    assert await listed(client, since=yesterday, rule="pending") == [
        ("pending", "open"),
        ("pending", "resolved"),
    ]
    assert await listed(client, since=yesterday, status="resolved") == [("pending", "resolved")]


async def test_alerts_come_a_page_at_a_time(client: httpx.AsyncClient, service: Service) -> None:
    made = [await raise_alert(service, "batch_stalled", f"batch-{n}") for n in range(5)]

    seen: list[str] = []
    cursor = None
    while True:
        params: dict[str, Any] = {"limit": 2, **({"cursor": cursor} if cursor else {})}
        page = (await client.get("/v1/alerts", params=params)).json()
        seen += [a["subject"] for a in page["data"]]
        cursor = page["next_cursor"]
        if cursor is None:
            break

    assert seen == [a["subject"] for a in reversed(made)]


@pytest.mark.parametrize(
    ("params", "status", "field"),
    [
        ({"status": "closed"}, 422, "status"),
        ({"rule": "delivery"}, 422, "rule"),
        ({"since": "2025"}, 422, "since"),
        ({"since": "yesterday"}, 422, "since"),
        ({"limit": "0"}, 422, "limit"),
        ({"limit": "501"}, 422, "limit"),
        ({"cursor": "not-one-of-ours"}, 400, "cursor"),
    ],
)
async def test_a_wrong_parameter_is_refused_naming_it(
    client: httpx.AsyncClient, params: dict[str, str], status: int, field: str
) -> None:
    answer = await client.get("/v1/alerts", params=params)

    assert answer.status_code == status, answer.text
    assert answer.json()["error"]["field"] == field


async def test_alerts_need_the_read_scope(client: httpx.AsyncClient, service: Service) -> None:
    _key, sender = await service.store.keys.create("sender", scopes=frozenset({"send"}))
    _key, reader = await service.store.keys.create("reader", scopes=frozenset({"read"}))

    refused = await client.get("/v1/alerts", headers={"Authorization": f"Bearer {sender}"})
    allowed = await client.get("/v1/alerts", headers={"Authorization": f"Bearer {reader}"})

    assert refused.status_code == 403 and refused.json()["error"]["code"] == "insufficient_scope"
    assert allowed.status_code == 200
