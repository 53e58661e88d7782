"""The overview in Chromium: messages sent through the API with the fake provider (delivered,
refused, reported undelivered, never confirmed, cancelled) show up in the figures, the per-provider
table and the chart's data points; the range can be switched; a bad range is a 4xx page; the queue
panel refreshes itself."""

from __future__ import annotations

import re
import time
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from typing import Any

import httpx
import pytest
from playwright.sync_api import Page, expect

from tests.browser.conftest import Dashboard, start_dashboard
from tidings.domain.costs import format_micros, to_micros
from tidings.providers.fake_rules import NO_RECEIPT, PERMANENT_FAILURE, RECEIPT_FAILED

PRICE = "0.05"
CONFIG = f"""
[providers.fake]
kind = "fake"
receipt_delay_ms = 50
currency = "USD"
prices = {{ "*" = "{PRICE}" }}
"""
FINAL = {"delivered", "failed", "sent", "cancelled"}


@pytest.fixture(scope="module")
def dashboard(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Dashboard]:
    """This module's own server, whose fake provider has a price, so that costs show."""
    directory = tmp_path_factory.mktemp("overview")
    config = directory / "tidings.toml"
    config.write_text(CONFIG)
    running = start_dashboard(directory, TIDINGS_CONFIG=str(config))
    try:
        yield running
    finally:
        running.served.close()


def send(dashboard: Dashboard, to: str, **extra: Any) -> str:
    answer = dashboard.api("POST", "/v1/messages", json={"to": to, "body": "Your visit is due.", **extra})
    assert answer.status_code == 202, answer.text
    message_id: str = answer.json()["id"]
    return message_id


def wait_for(dashboard: Dashboard, message_id: str, status: str, timeout: float = 20) -> None:
    deadline = time.monotonic() + timeout
    while True:
        found = dashboard.api("GET", f"/v1/messages/{message_id}").json()["status"]
        if found == status:
            return
        assert time.monotonic() < deadline, f"{message_id} is {found}, not {status}, after {timeout} s"
        time.sleep(0.1)


@pytest.fixture(scope="module")
def outcomes(dashboard: Dashboard) -> dict[str, str]:
    """Messages that each end differently, once every one has got there: id → final status."""
    wanted = {
        send(dashboard, "+254712000001"): "delivered",
        send(dashboard, "+254712000002"): "delivered",
        send(dashboard, "+254712000003"): "delivered",
        send(dashboard, PERMANENT_FAILURE): "failed",
        send(dashboard, RECEIPT_FAILED): "failed",
        send(dashboard, NO_RECEIPT): "sent",
    }
    later = send(dashboard, "+254712000004", send_at=(datetime.now(UTC) + timedelta(days=1)).isoformat())
    assert dashboard.api("POST", f"/v1/messages/{later}/cancel").status_code == 200
    wanted[later] = "cancelled"
    for message_id, status in wanted.items():
        wait_for(dashboard, message_id, status)
    return wanted


@dataclass
class Expected:
    """What the overview should show for a range, worked out from the API's list of messages."""

    statuses: Counter[str]
    cost: Decimal

    @property
    def total(self) -> int:
        return sum(self.statuses.values())


def expected(dashboard: Dashboard, page: Page) -> Expected:
    """The messages accepted in the range the page says it shows (``#range``'s data attributes)."""
    since = datetime.fromisoformat(page.locator("#range").get_attribute("data-since") or "")
    until = datetime.fromisoformat(page.locator("#range").get_attribute("data-until") or "")
    listed = dashboard.api("GET", "/v1/messages", params={"limit": 500}).json()
    assert listed["next_cursor"] is None
    inside = [
        m
        for m in listed["data"]
        if since <= datetime.fromisoformat(m["created_at"]).replace(tzinfo=None) < until
    ]
    cost = sum((Decimal(m["cost"]) for m in inside if m["cost"] is not None), Decimal(0))
    return Expected(Counter(m["status"] for m in inside), cost)


def usd(amount: Decimal) -> str:
    return f"{format_micros(to_micros(amount))} USD"


def figure(page: Page, name: str) -> str:
    return page.locator(f'#totals [data-figure="{name}"] .figure').inner_text()


def points(page: Page, series: str) -> list[tuple[str, int]]:
    """The chart's data points of one series: (bucket, value)."""
    circles = page.locator(f'#chart svg circle[data-series="{series}"]')
    return [
        (c.get_attribute("data-bucket") or "", int(c.get_attribute("data-value") or ""))
        for c in circles.all()
    ]


def check_figures(page: Page, want: Expected) -> None:
    counts = want.statuses
    attempted = want.total - counts["cancelled"]
    expect(page.locator('#totals [data-figure="accepted"] .figure')).to_have_text(str(want.total))
    assert figure(page, "delivered") == str(counts["delivered"])
    assert figure(page, "failed") == str(counts["failed"])
    assert figure(page, "sent") == str(counts["sent"])
    assert figure(page, "cancelled") == str(counts["cancelled"])
    assert figure(page, "not_final") == str(attempted - counts["delivered"] - counts["failed"])
    if attempted:
        assert figure(page, "delivery_rate") == f"{counts['delivered'] / attempted * 100:.1f} %"
        assert figure(page, "failure_rate") == f"{counts['failed'] / attempted * 100:.1f} %"
    # The chart's points add up to the same counts, one point per bucket and series.
    for series in ("delivered", "failed", "sent"):
        assert sum(value for _, value in points(page, series)) == counts[series], series
    if want.total:
        expect(page.locator("#costs")).to_contain_text(usd(want.cost))
    else:
        expect(page.locator("#chart svg")).to_contain_text("No messages in this range")


def test_the_overview_shows_what_was_sent_in_figures_a_table_and_a_chart(
    signed_in: Page, dashboard: Dashboard, outcomes: dict[str, str]
) -> None:
    page = signed_in
    page.goto("/dashboard/?range=24h")
    expect(page.get_by_role("link", name="Last 24 hours")).to_have_attribute("aria-current", "true")
    want = expected(dashboard, page)
    # Everything this module sent is in the last 24 hours.
    assert want.statuses >= Counter(outcomes.values())
    check_figures(page, want)

    # Per hour: a point for every hour of the range, in order; the messages in the last hours.
    delivered = points(page, "delivered")
    assert len(delivered) in (24, 25)
    buckets = [bucket for bucket, _ in delivered]
    assert buckets == sorted(buckets) and all(re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:00", b) for b in buckets)
    assert [value for _, value in delivered][:-2] == [0] * (len(delivered) - 2)
    # Each point says what it is as a tooltip.
    bucket, value = max(delivered, key=lambda point: point[1])
    tooltip = page.locator(f'#chart circle[data-series="delivered"][data-bucket="{bucket}"] title')
    assert tooltip.text_content() == f"delivered, {bucket}: {value}"

    # The fake provider's row.
    row = page.locator('#providers tr[data-provider="fake"]')
    expect(row.locator('[data-col="total"]')).to_have_text(str(want.total))
    expect(row.locator('[data-col="delivered"]')).to_have_text(str(want.statuses["delivered"]))
    expect(row.locator('[data-col="failed"]')).to_have_text(str(want.statuses["failed"]))
    expect(row.locator('[data-col="cost"]')).to_have_text(usd(want.cost))
    # Charged: the three delivered, the one reported undelivered and the one never confirmed.
    assert want.cost >= 5 * Decimal(PRICE)

    expect(page.locator("#alerts")).to_have_text("No open alert.")


def test_the_range_can_be_switched_by_link_and_by_chosen_days(
    signed_in: Page, dashboard: Dashboard, outcomes: dict[str, str]
) -> None:
    page = signed_in
    page.goto("/dashboard/")
    expect(page.get_by_role("link", name="Today")).to_have_attribute("aria-current", "true")
    check_figures(page, expected(dashboard, page))

    page.get_by_role("link", name="Last 7 days").click()
    expect(page).to_have_url(re.compile(r"/dashboard/\?range=7d$"))
    expect(page.locator("#range")).to_contain_text("Last 7 days")
    expect(page.get_by_role("heading", name="Per day")).to_be_visible()
    week = points(page, "failed")
    assert len(week) == 8
    assert all(re.fullmatch(r"\d{4}-\d\d-\d\d", bucket) for bucket, _ in week)
    check_figures(page, expected(dashboard, page))

    page.get_by_role("link", name="Last 30 days").click()
    expect(page).to_have_url(re.compile(r"range=30d$"))
    assert len(points(page, "delivered")) == 31
    check_figures(page, expected(dashboard, page))

    # Whole days picked by hand: yesterday and today, per hour.
    today = datetime.now(UTC).date()
    page.get_by_label("From").fill((today - timedelta(days=1)).isoformat())
    page.get_by_label("To").fill(today.isoformat())
    page.get_by_role("button", name="Show these days").click()
    expect(page).to_have_url(re.compile(r"range=custom&since=\d{4}-\d\d-\d\d&until=\d{4}-\d\d-\d\d$"))
    expect(page.locator("#range")).to_contain_text("Chosen days")
    expect(page.get_by_label("From")).to_have_value((today - timedelta(days=1)).isoformat())
    assert len(points(page, "sent")) == 48
    check_figures(page, expected(dashboard, page))

    # Days with no message: an empty chart that says so.
    page.get_by_label("From").fill("2020-01-01")
    page.get_by_label("To").fill("2020-01-02")
    page.get_by_role("button", name="Show these days").click()
    expect(page.locator("#range")).to_contain_text("2020-01-01 00:00:00")
    check_figures(page, expected(dashboard, page))
    assert points(page, "delivered") == []


BAD_RANGES = [
    ("range=custom&since=2026-13-01", "since must be a date"),
    ("range=custom&since=2026-11-30&until=yesterday", "until must be a date"),
    ("range=custom&since=2026-11-30&until=2026-11-01", "until must be after since"),
    ("range=custom&since=2020-01-01&until=2020-12-31", "longer than 93 days"),
    ("range=custom&since=2020-01-01&until=9999-12-31", "until is too far"),
    ("range=custom", "since is required"),
    ("range=fortnight", "range must be one of"),
]


def test_a_bad_range_is_an_error_page_with_its_code(signed_in: Page) -> None:
    page = signed_in
    for query, says in BAD_RANGES:
        answer = page.goto(f"/dashboard/?{query}")
        assert answer is not None and answer.status == 422, query
        error = page.locator("section.error")
        expect(error).to_have_attribute("data-code", "invalid_input")
        expect(error.get_by_role("heading")).to_contain_text(says)


def queued(page: Page, status: str) -> int:
    return int(page.locator(f'#queue [data-queue="{status}"] .figure').inner_text())


def test_the_queue_panel_refreshes_itself_and_its_fragment_is_only_the_panel(
    signed_in: Page, dashboard: Dashboard
) -> None:
    page = signed_in
    page.goto("/dashboard/")
    expect(page.locator("#queue")).to_have_attribute("data-refresh", "5")
    before = queued(page, "scheduled")
    page.evaluate("window.notReloaded = true")

    later = send(dashboard, "+254712000099", send_at=(datetime.now(UTC) + timedelta(days=1)).isoformat())
    try:
        # Within two refreshes, without a reload of the page.
        expect(page.locator('#queue [data-queue="scheduled"] .figure')).to_have_text(
            str(before + 1), timeout=12_000
        )
        assert page.evaluate("window.notReloaded") is True
        assert page.locator("#queue").count() == 1

        # What the script asks for: the panel alone, and only for a signed-in operator.
        cookies = {c["name"]: c["value"] for c in page.context.cookies()}
        fragment = httpx.get(
            dashboard.url + "/dashboard/?range=7d",
            headers={"X-Tidings-Fragment": "1"},
            cookies={"tidings_session": cookies["tidings_session"]},
        )
        assert fragment.status_code == 200
        assert fragment.text.lstrip().startswith('<section class="panel queue" id="queue"')
        assert "<svg" not in fragment.text and "<html" not in fragment.text
        assert f'data-queue="scheduled"><div class="figure">{before + 1}<' in fragment.text
        refused = httpx.get(dashboard.url + "/dashboard/", headers={"X-Tidings-Fragment": "1"})
        assert refused.status_code == 401
    finally:
        dashboard.api("POST", f"/v1/messages/{later}/cancel")
