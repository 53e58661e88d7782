"""The messages pages in Chromium: search, a message's timeline, cancelling a waiting one."""

from __future__ import annotations

import re
import time
from typing import Any

from playwright.sync_api import Page, expect

from tests.browser.conftest import OPERATOR, Dashboard
from tidings.providers.fake_rules import RECEIPT_FAILED


def send(dashboard: Dashboard, **payload: Any) -> dict[str, Any]:
    answer = dashboard.api("POST", "/v1/messages", json=payload)
    assert answer.status_code == 202, answer.text
    body: dict[str, Any] = answer.json()
    return body


def wait_status(dashboard: Dashboard, message_id: str, status: str, timeout: float = 20) -> None:
    deadline = time.monotonic() + timeout
    while (found := dashboard.api("GET", f"/v1/messages/{message_id}").json()["status"]) != status:
        assert time.monotonic() < deadline, f"{message_id} is {found}, not {status}"
        time.sleep(0.05)


def test_search_finds_messages_by_text_and_status(signed_in: Page, dashboard: Dashboard) -> None:
    wanted = send(dashboard, to="+12025550123", body="Clinic reminder: vaccination on Tuesday")
    other = send(dashboard, to="+12025550124", body="Your parcel has arrived")
    failed = send(dashboard, to=RECEIPT_FAILED, body="Clinic reminder for a number that fails")
    wait_status(dashboard, wanted["id"], "delivered")
    wait_status(dashboard, failed["id"], "failed")

    page = signed_in
    page.goto("/dashboard/messages")
    page.get_by_label("Text").fill("clinic reminder")
    page.get_by_role("button", name="Search").click()
    rows = page.locator("#messages tbody tr")
    expect(rows).to_have_count(2)
    expect(page.locator(f'tr[data-id="{wanted["id"]}"]')).to_be_visible()
    expect(page.locator(f'tr[data-id="{other["id"]}"]')).to_have_count(0)

    page.get_by_label("Status").select_option("failed")
    page.get_by_role("button", name="Search").click()
    expect(rows).to_have_count(1)
    expect(rows.first).to_have_attribute("data-id", failed["id"])
    expect(rows.first.locator(".status")).to_have_text("failed")
    # The filters are in the address: the search can be bookmarked and shared.
    expect(page).to_have_url(re.compile(r"q=clinic\+reminder.*status=failed"))


def test_a_bad_filter_shows_the_error_and_its_code(signed_in: Page) -> None:
    answer = signed_in.goto("/dashboard/messages?to=not-a-number")
    assert answer is not None and answer.status == 422
    expect(signed_in.locator("[data-code]")).to_have_attribute("data-code", "invalid_phone_number")


def test_a_message_opens_as_its_timeline(signed_in: Page, dashboard: Dashboard) -> None:
    message = send(dashboard, to=RECEIPT_FAILED, body="timeline please")
    wait_status(dashboard, message["id"], "failed")
    page = signed_in
    page.goto("/dashboard/messages?q=timeline")
    page.locator(f'tr[data-id="{message["id"]}"] a').click()
    expect(page).to_have_url(re.compile(f"/dashboard/messages/{message['id']}$"))
    expect(page.locator("#message-status")).to_have_text("failed")
    steps = page.locator("#timeline > li")
    titles = [t.strip() for t in steps.locator("strong").all_inner_texts()]
    # Accepted, handed to the provider, then the receipt that failed it, in that order, and the
    # webhook that brought the receipt.
    assert titles[0] == "accepted", titles
    assert titles.index("sent: the provider accepted it") < titles.index("receipt"), titles
    assert "webhook from fake (status)" in titles
    receipt = steps.filter(has=page.locator("strong", has_text="receipt"))
    expect(receipt.locator(".status")).to_have_text("failed")
    expect(receipt).to_contain_text("undeliverable")
    # A final message has nothing to cancel.
    expect(page.get_by_role("button", name="Cancel message")).to_have_count(0)


def test_cancelling_a_waiting_message_from_the_dashboard(signed_in: Page, dashboard: Dashboard) -> None:
    message = send(dashboard, to="+12025550125", body="for next year", send_at="2099-01-01T08:00:00Z")
    page = signed_in
    page.goto(f"/dashboard/messages/{message['id']}")
    expect(page.locator("#message-status")).to_have_text("scheduled")
    page.once("dialog", lambda dialog: dialog.accept())
    page.get_by_role("button", name="Cancel message").click()
    expect(page.get_by_role("status")).to_have_text("Cancelled.")
    expect(page.locator("#message-status")).to_have_text("cancelled")
    assert dashboard.api("GET", f"/v1/messages/{message['id']}").json()["status"] == "cancelled"
    expect(page.locator("#timeline")).to_contain_text(f"cancelled from the dashboard by {OPERATOR}")


def test_declining_the_confirmation_cancels_nothing(signed_in: Page, dashboard: Dashboard) -> None:
    message = send(dashboard, to="+12025550126", body="keep me", send_at="2099-01-01T08:00:00Z")
    page = signed_in
    page.goto(f"/dashboard/messages/{message['id']}")
    page.once("dialog", lambda dialog: dialog.dismiss())
    page.get_by_role("button", name="Cancel message").click()
    expect(page.locator("#message-status")).to_have_text("scheduled")
    assert dashboard.api("GET", f"/v1/messages/{message['id']}").json()["status"] == "scheduled"
