"""The Batches pages in Chromium: the list with each batch's progress, a batch's progress, rates
and failures by error, its progress refreshing itself, and cancelling what of it still waits."""

from __future__ import annotations

import re
import sqlite3
import time
import uuid
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx
from playwright.sync_api import Page, expect

from tests.browser.conftest import OPERATOR, Dashboard, sign_in

BOUNCE = "+12025550101"
"""The fake provider refuses it for good (``invalid_number``)."""
UNDELIVERABLE = "+12025550104"
"""The fake provider accepts it, then a receipt says ``failed`` (``undeliverable``)."""


def later(seconds: float) -> str:
    return (datetime.now(UTC) + timedelta(seconds=seconds)).isoformat()


def submit(dashboard: Dashboard, recipients: list[dict[str, Any]], **shared: Any) -> dict[str, Any]:
    body = {"group_id": f"test-{uuid.uuid4()}", "template": "Hello {{ first_name }}", **shared}
    answer = dashboard.api("POST", "/v1/batches", json={**body, "recipients": recipients})
    assert answer.status_code == 202, answer.text
    batch: dict[str, Any] = answer.json()
    return batch


def wait_for_progress(dashboard: Dashboard, batch_id: str, final: int, timeout: float = 30) -> dict[str, Any]:
    """The batch once ``final`` of its messages are final (through the API)."""
    deadline = time.monotonic() + timeout
    while True:
        batch: dict[str, Any] = dashboard.api("GET", f"/v1/batches/{batch_id}").json()
        if batch["progress"]["final"] >= final:
            return batch
        assert time.monotonic() < deadline, f"batch {batch_id} did not reach {final} final: {batch}"
        time.sleep(0.1)


def mixed_batch(dashboard: Dashboard, tag: str) -> dict[str, Any]:
    """Eight messages: three delivered, two refused by the provider, one failed by a receipt, two
    scheduled for tomorrow; and one recipient refused at acceptance. Returned once six are final."""
    recipients = [
        *({"to": f"+25471234560{i}", "first_name": f"P{i}"} for i in range(3)),
        {"to": BOUNCE, "first_name": "B1"},
        {"to": BOUNCE, "first_name": "B2"},
        {"to": UNDELIVERABLE, "first_name": "U"},
        {"to": "+254712345610", "first_name": "Later1", "send_at": later(86_400)},
        {"to": "+254712345611", "first_name": "Later2", "send_at": later(86_400)},
        {"to": "12", "first_name": "Nobody"},
    ]
    batch = submit(dashboard, recipients, tags=[tag])
    assert batch["accepted"] == 8
    return wait_for_progress(dashboard, batch["id"], 6)


def test_the_list_shows_each_batch_with_its_progress_and_filters_by_tag(
    page: Page, dashboard: Dashboard
) -> None:
    tag = f"clinic-{uuid.uuid4().hex[:8]}"
    mixed = mixed_batch(dashboard, tag)
    other = submit(dashboard, [{"to": "+254712345620", "first_name": "X"}], tags=["elsewhere"])
    sign_in(page)
    page.goto("/dashboard/batches")
    expect(page.get_by_role("link", name="Batches")).to_have_attribute("aria-current", "page")
    rows = page.locator("#batches tbody tr")
    # Newest first.
    expect(rows.first).to_have_attribute("data-id", other["id"])
    row = page.locator(f'#batches tr[data-id="{mixed["id"]}"]')
    bar = row.locator("progress")
    expect(bar).to_have_attribute("max", "8")
    expect(bar).to_have_attribute("value", "6")
    expect(row).to_contain_text("1 refused")
    expect(row.locator(".counts")).to_contain_text("delivered 3")
    expect(row.locator(".counts")).to_contain_text("failed 3")
    expect(row.locator(".counts")).to_contain_text("scheduled 2")
    expect(row).to_contain_text("50.0 %")  # delivered, and failed, of the six that ended

    page.get_by_label("Tag").fill(tag)
    page.get_by_role("button", name="Filter").click()
    expect(page).to_have_url(re.compile(rf"tag={tag}"))
    expect(rows).to_have_count(1)
    expect(rows.first).to_have_attribute("data-id", mixed["id"])

    page.get_by_label("Tag").fill("no-batch-has-this-tag")
    page.get_by_role("button", name="Filter").click()
    expect(page.get_by_text("No batch matches.")).to_be_visible()


def test_a_batch_page_shows_progress_rates_failures_by_error_and_its_messages(
    page: Page, dashboard: Dashboard
) -> None:
    batch = mixed_batch(dashboard, "reminders")
    sign_in(page)
    page.goto("/dashboard/batches")
    page.locator(f'#batches tr[data-id="{batch["id"]}"] a').first.click()
    expect(page).to_have_url(re.compile(rf"/dashboard/batches/{batch['id']}$"))
    expect(page.get_by_role("heading", level=1)).to_contain_text(batch["group_id"])
    bar = page.locator("#batch-progress")
    expect(bar).to_have_attribute("value", "6")
    expect(bar).to_have_attribute("max", "8")
    expect(page.locator("#delivery-rate")).to_have_text("50.0 %")
    expect(page.locator("#failure-rate")).to_have_text("50.0 %")
    expect(page.locator('#batch-counts tr[data-status="scheduled"] td.num')).to_have_text("2")
    # Failures by error code, the commonest first.
    failures = page.locator("#batch-failures tbody tr")
    expect(failures).to_have_count(2)
    expect(failures.nth(0)).to_have_attribute("data-code", "invalid_number")
    expect(failures.nth(0).locator("td.num")).to_have_text("2")
    expect(failures.nth(1)).to_have_attribute("data-code", "undeliverable")
    expect(failures.nth(1).locator("td.num")).to_have_text("1")
    # What the messages share, and who was refused at acceptance.
    expect(page.locator("pre.template")).to_have_text("Hello {{ first_name }}")
    expect(page.locator("#batch-refused")).to_contain_text("invalid_phone_number")
    # Its messages, in the messages list.
    page.locator("#batch-messages").click()
    expect(page).to_have_url(re.compile(rf"/dashboard/messages\?batch={batch['id']}$"))
    expect(page.locator("#messages tbody tr")).to_have_count(8)


def test_the_progress_of_an_unfinished_batch_refreshes_itself_until_it_is_finished(
    page: Page, dashboard: Dashboard
) -> None:
    batch = submit(dashboard, [{"to": "+254712345630", "first_name": "Soon"}], send_at=later(6))
    sign_in(page)
    page.goto(f"/dashboard/batches/{batch['id']}")
    panel = page.locator("#progress")
    expect(panel).to_have_attribute("data-refresh", re.compile(r"^\d+$"))
    expect(page.locator("#batch-progress")).to_have_attribute("value", "0")
    # Sent when its time comes and delivered: the panel shows it without reloading the page, and
    # stops asking once the batch is finished.
    expect(page.locator("#batch-progress")).to_have_attribute("value", "1", timeout=30_000)
    expect(page.locator("#delivery-rate")).to_have_text("100.0 %")
    expect(panel).not_to_have_attribute("data-refresh", re.compile(".*"))
    expect(panel).to_contain_text("finished")


def test_cancelling_a_batch_stops_what_waits_and_is_in_the_audit_log(
    page: Page, dashboard: Dashboard
) -> None:
    batch = mixed_batch(dashboard, "to-cancel")
    sign_in(page)
    page.goto(f"/dashboard/batches/{batch['id']}")
    stale = page.context.new_page()
    stale.goto(f"/dashboard/batches/{batch['id']}")

    asked: list[str] = []

    def accept(dialog: Any) -> None:
        asked.append(dialog.message)
        dialog.accept()

    page.once("dialog", accept)
    page.get_by_role("button", name="Cancel batch").click()
    expect(page.get_by_role("status")).to_have_text("The batch's waiting messages were cancelled.")
    assert asked == ["Cancel the 2 messages of this batch that have not been sent yet?"]
    expect(page.locator("#batch-progress")).to_have_attribute("value", "8")
    expect(page.locator('#batch-counts tr[data-status="cancelled"] td.num')).to_have_text("2")
    expect(page.get_by_role("button", name="Cancel batch")).to_have_count(0)
    after = dashboard.api("GET", f"/v1/batches/{batch['id']}").json()
    assert after["counts"].get("scheduled", 0) == 0 and after["counts"]["cancelled"] == 2
    assert after["cancelled_at"] is not None

    with sqlite3.connect(dashboard.directory / "tidings.db") as db:
        entries = db.execute(
            "SELECT operator, action, detail FROM audit_log WHERE target = ?", (batch["id"],)
        ).fetchall()
    assert len(entries) == 1
    operator, action, detail = entries[0]
    assert (operator, action) == (OPERATOR, "cancel_batch")
    assert '"cancelled": 2' in detail

    # A second cancel, from a page opened before the first: nothing is left to cancel.
    stale.once("dialog", lambda dialog: dialog.accept())
    stale.get_by_role("button", name="Cancel batch").click()
    expect(stale.locator(".error")).to_have_attribute("data-code", "not_cancellable")
    stale.close()


def test_an_unknown_batch_or_a_bad_filter_is_a_clear_error_page(page: Page) -> None:
    sign_in(page)
    for path, status, code in (
        ("/dashboard/batches/01M8MXTKX4WC3JT699P79W58GS", 404, "not_found"),
        ("/dashboard/batches/not-an-id", 404, "not_found"),
        ("/dashboard/batches?since=yesterday", 422, "invalid_input"),
        ("/dashboard/batches?cursor=nonsense", 400, "bad_request"),
    ):
        answer = page.goto(path)
        assert answer is not None and answer.status == status, path
        expect(page.locator(".error")).to_have_attribute("data-code", code)


def test_the_batch_pages_need_a_session_and_cancel_needs_the_form_token(
    page: Page, dashboard: Dashboard
) -> None:
    batch = submit(dashboard, [{"to": "+254712345640", "first_name": "Later", "send_at": later(86_400)}])
    for path in ("/dashboard/batches", f"/dashboard/batches/{batch['id']}"):
        answer = httpx.get(dashboard.url + path, follow_redirects=False)
        assert answer.status_code == 303 and answer.headers["location"].startswith("/dashboard/login"), path
        fragment = httpx.get(
            dashboard.url + path, headers={"X-Tidings-Fragment": "1"}, follow_redirects=False
        )
        assert fragment.status_code == 401, path
    sign_in(page)
    cookies = {c["name"]: c["value"] for c in page.context.cookies()}
    for form in ({}, {"csrf_token": "forged"}):
        answer = httpx.post(
            f"{dashboard.url}/dashboard/batches/{batch['id']}/cancel",
            data=form,
            cookies=cookies,
            follow_redirects=False,
        )
        assert answer.status_code == 403
        assert 'data-code="csrf_failed"' in answer.text
    assert dashboard.api("GET", f"/v1/batches/{batch['id']}").json()["counts"] == {"scheduled": 1}
