"""The Gateways & providers page in Chromium, against a server with two Android gateways (one
phone polls, the other went silent, both played over real HTTP as the medic-gateway app does)
and the fake provider, which fails some messages and passes one on to a gateway."""

from __future__ import annotations

import re
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest
from playwright.sync_api import Page, expect

from tests.browser.conftest import Dashboard, sign_in, start_dashboard

BOUNCE = "+12025550101"
"""The fake provider refuses it for good."""
THROTTLED = "+12025550102"
"""The fake provider refuses it for now at every attempt: after two, it moves on in its route."""
CONFIG = """
retry_base_seconds = 0.05
poll_interval = 0.2
failover_after = 2

[routes]
"+12025550102" = ["fake", "clinic_b"]

[providers.fake]
kind = "fake"
latency_ms = 0
receipt_delay_ms = 10

[providers.clinic_a]
kind = "gateway"
username = "clinic-a"
password = "password-a"

[providers.clinic_b]
kind = "gateway"
username = "clinic-b"
password = "password-b"
silent_after_seconds = 1
"""


@dataclass
class Scene:
    """What the module's server went through before its page is looked at."""

    dashboard: Dashboard
    handed_to_b: str
    waiting_for_a: str
    failed_over: str


def poll(dashboard: Dashboard, username: str, password: str) -> list[dict[str, Any]]:
    """One poll of the medic-gateway app: nothing to report; the messages it is handed."""
    answer = httpx.post(f"{dashboard.url}/api/sms", json={}, auth=(username, password), timeout=10)
    assert answer.status_code == 200, answer.text
    handed: list[dict[str, Any]] = answer.json()["messages"]
    return handed


def send(dashboard: Dashboard, to: str, **fields: Any) -> str:
    answer = dashboard.api("POST", "/v1/messages", json={"to": to, "body": "Visit on Friday", **fields})
    assert answer.status_code == 202, answer.text
    return str(answer.json()["id"])


def until(what: str, check: Callable[[], Any], timeout: float = 30) -> Any:
    deadline = time.monotonic() + timeout
    while not (found := check()):
        assert time.monotonic() < deadline, f"{what} within {timeout} s"
        time.sleep(0.1)
    return found


@pytest.fixture(scope="module")
def scene(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Scene]:
    directory: Path = tmp_path_factory.mktemp("providers")
    (directory / "tidings.toml").write_text(CONFIG)
    running = start_dashboard(directory, TIDINGS_CONFIG=str(directory / "tidings.toml"))
    try:
        # clinic_b polls once and is handed a message it never reports on, then falls silent.
        handed_to_b = send(running, "+254712345601", provider="clinic_b")
        assert [m["id"] for m in poll(running, "clinic-b", "password-b")] == [handed_to_b]
        # Through fake: one delivered, one refused for good, one passed on to clinic_b.
        delivered = send(running, "+254712345602")
        bounced = send(running, BOUNCE)
        failed_over = send(running, THROTTLED)

        def status(message_id: str) -> dict[str, Any]:
            found: dict[str, Any] = running.api("GET", f"/v1/messages/{message_id}").json()
            return found

        until("delivered", lambda: status(delivered)["status"] == "delivered")
        until("bounced", lambda: status(bounced)["status"] == "failed")
        until("failed over", lambda: status(failed_over)["provider"] == "clinic_b")
        # clinic_a polls, and a message for it waits for its next poll.
        assert poll(running, "clinic-a", "password-a") == []
        waiting_for_a = send(running, "+254712345603", provider="clinic_a")
        until(
            "clinic_b silent",
            lambda: (
                {g["name"]: g["silent"] for g in running.api("GET", "/v1/gateways").json()["data"]}
                == {"clinic_a": False, "clinic_b": True}
            ),
        )
        yield Scene(running, handed_to_b, waiting_for_a, failed_over)
    finally:
        running.served.close()


@pytest.fixture(scope="module")
def dashboard(scene: Scene) -> Dashboard:
    """The module's own server (the ``page`` fixture opens its pages)."""
    return scene.dashboard


def test_each_gateway_shows_its_last_poll_and_whether_it_went_silent(page: Page, scene: Scene) -> None:
    sign_in(page)
    page.get_by_role("link", name="Gateways & providers").click()
    expect(page).to_have_url(f"{scene.dashboard.url}/dashboard/providers")
    a = page.locator('#gateways tr[data-gateway="clinic_a"]')
    expect(a.locator(".state")).to_contain_text("polling")
    expect(a.locator(".ago")).to_have_text(re.compile(r"^\d+ (s|min) ago$"))
    expect(a.locator(".waiting")).to_have_text("1")
    expect(a.locator(".unacknowledged")).to_have_text("0")
    b = page.locator('#gateways tr[data-gateway="clinic_b"]')
    expect(b.locator(".state")).to_contain_text("silent")
    expect(b.locator(".state")).to_contain_text("silent after 1 s")
    expect(b.locator(".ago")).to_have_text(re.compile(r"^\d+ (s|min) ago$"))
    # The message it was handed and never reported on, and the one passed on to it since.
    expect(b.locator(".unacknowledged")).to_have_text("1")
    expect(b.locator(".waiting")).to_have_text("1")


def test_each_provider_shows_its_error_rate_failovers_and_oldest_waiting_message(
    page: Page, scene: Scene
) -> None:
    sign_in(page)
    page.goto("/dashboard/providers")
    expect(page.locator("#window")).to_contain_text("Over the last 60 minutes")
    fake = page.locator('#providers tr[data-provider="fake"]')
    expect(fake.locator("td").nth(1)).to_have_text("fake")
    # Of the two messages still fake's, one failed; the third was passed on to clinic_b.
    expect(fake.locator(".attempted")).to_have_text("2")
    expect(fake.locator(".failed")).to_have_text("1")
    expect(fake.locator(".failure-rate")).to_have_text("50.0 %")
    expect(fake.locator(".failovers")).to_have_text("1")
    expect(fake.locator(".oldest")).to_have_text("none")
    b = page.locator('#providers tr[data-provider="clinic_b"]')
    expect(b.locator("td").nth(1)).to_have_text("gateway")
    expect(b.locator(".failovers")).to_have_text("0")
    expect(b.locator(".oldest")).to_contain_text("due")
    a = page.locator('#providers tr[data-provider="clinic_a"]')
    expect(a.locator(".oldest")).to_contain_text("ago")


def test_the_page_needs_a_session(scene: Scene) -> None:
    url = scene.dashboard.url + "/dashboard/providers"
    answer = httpx.get(url, follow_redirects=False)
    assert answer.status_code == 303 and answer.headers["location"].startswith("/dashboard/login")
    assert httpx.get(url, headers={"X-Tidings-Fragment": "1"}, follow_redirects=False).status_code == 401
