"""The webhook log and the callbacks in the dashboard, in Chromium: a webhook whose processing
failed is found among the failed entries and replayed, a callback an application refused is
retried, and the audit log says who did each."""

from __future__ import annotations

import asyncio
import re
import threading
import time
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import httpx
import orjson
import pytest
from playwright.sync_api import Dialog, Page, expect

from tests.browser.conftest import OPERATOR, Dashboard, start_dashboard
from tidings.providers.fake import SIGNATURE_HEADER, sign
from tidings.providers.fake_rules import NO_RECEIPT
from tidings.store import Store

WEBHOOK_SECRET = "a secret the fake provider signs its receipts with"


@pytest.fixture(scope="module")
def dashboard(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Dashboard]:
    """The dashboard with the fake provider under a known webhook secret (so that a test can post
    receipts as it does), and callbacks allowed to this machine (where the test's receiver is)."""
    directory = tmp_path_factory.mktemp("webhooks")
    running = start_dashboard(
        directory,
        TIDINGS_DATABASE_URL=f"sqlite:///{directory / 'tidings.db'}",
        TIDINGS_PROVIDERS__FAKE__KIND="fake",
        TIDINGS_PROVIDERS__FAKE__WEBHOOK_SECRET=WEBHOOK_SECRET,
        TIDINGS_CALLBACK_ALLOW_NETWORKS='["127.0.0.1/32"]',
    )
    try:
        yield running
    finally:
        running.served.close()


def database_url(dashboard: Dashboard) -> str:
    return f"sqlite:///{dashboard.directory / 'tidings.db'}"


def wait_until(check: Callable[[], Any], what: str, timeout: float = 20) -> Any:
    """``check()`` once it is truthy; fails after ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    while True:
        found = check()
        if found:
            return found
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.1)


def accept_dialogs(page: Page) -> None:
    def accept(dialog: Dialog) -> None:
        dialog.accept()

    page.on("dialog", accept)


def post_receipt(dashboard: Dashboard, receipt: dict[str, Any], secret: str = WEBHOOK_SECRET) -> int:
    body = orjson.dumps(receipt)
    answer = httpx.post(
        f"{dashboard.url}/webhooks/fake/fake/status",
        content=body,
        headers={"Content-Type": "application/json", SIGNATURE_HEADER: sign(secret, body)},
        timeout=10,
    )
    return answer.status_code


async def _log_failed_receipt(url: str, dashboard_url: str, receipt: dict[str, Any]) -> int:
    store = Store.connect(url)
    try:
        body = orjson.dumps(receipt)
        entry_id = await store.webhooks.record(
            provider="fake",
            kind="fake",
            event="status",
            url=f"{dashboard_url}/webhooks/fake/fake/status",
            headers={"content-type": "application/json", SIGNATURE_HEADER: sign(WEBHOOK_SECRET, body)},
            body=body,
            remote_ip="127.0.0.1",
        )
        await store.webhooks.finish(
            entry_id,
            verified=True,
            processed=False,
            response_status=503,
            error="OperationalError: database is locked",
        )
        return entry_id
    finally:
        await store.close()


def log_failed_receipt(dashboard: Dashboard, receipt: dict[str, Any]) -> int:
    """A receipt that passed its checks but whose processing failed (the database was out of
    reach): logged as the pipeline logs one, with the same two calls to the store. On a thread of
    its own: Playwright's loop runs on this one."""
    with ThreadPoolExecutor(max_workers=1) as pool:
        work = pool.submit(asyncio.run, _log_failed_receipt(database_url(dashboard), dashboard.url, receipt))
        return work.result(timeout=30)


def sent_message(dashboard: Dashboard) -> dict[str, Any]:
    """A message the fake provider took and will send no receipt for: it stays ``sent``."""
    made = dashboard.api("POST", "/v1/messages", json={"to": NO_RECEIPT, "body": "see you on Monday"})
    assert made.status_code == 202, made.text
    return wait_until(  # type: ignore[no-any-return]
        lambda: (
            (m := dashboard.api("GET", f"/v1/messages/{made.json()['id']}").json())["status"] == "sent" and m
        ),
        "the message to be sent",
    )


def test_a_failed_webhook_is_listed_replayed_and_the_audit_log_says_who(
    signed_in: Page, dashboard: Dashboard
) -> None:
    page = signed_in
    accept_dialogs(page)
    message = sent_message(dashboard)
    # A receipt the provider's adapter cannot read fails for good, whatever is replayed.
    assert post_receipt(dashboard, {"reference": message["id"], "status": "exploded"}) == 400
    failed_id = log_failed_receipt(dashboard, {"reference": message["id"], "status": "delivered"})

    page.goto("/dashboard/webhooks")
    page.get_by_label("Not processed only").check()
    page.get_by_role("button", name="Show").click()
    expect(page).to_have_url(re.compile(r"failed=1"))
    rows = page.locator("#webhook-log tbody tr")
    # Newest first, and only entries not processed.
    expect(rows.nth(0)).to_have_attribute("data-id", str(failed_id))
    expect(rows.nth(0)).to_contain_text("failed")
    expect(rows.nth(0)).to_contain_text("503")
    expect(rows.nth(0)).to_contain_text("OperationalError: database is locked")
    expect(rows.nth(1)).to_contain_text("webhook_rejected: not a fake receipt")
    expect(rows.nth(1)).to_contain_text("400")
    expect(page.locator("#webhook-log .s-processed")).to_have_count(0)

    rows.nth(0).get_by_role("button", name="Replay").click()
    expect(page).to_have_url(re.compile(rf"/dashboard/webhooks/{failed_id}\?notice=replayed$"))
    expect(page.get_by_role("status")).to_have_text("The webhook was processed again.")
    expect(page.locator("#webhook-state")).to_have_text("processed")
    expect(page.locator("#webhook-error")).to_have_text("—")
    expect(page.get_by_role("button", name="Replay")).to_have_count(0)
    page.get_by_role("link", name=message["id"]).click()
    expect(page.locator("#message-status")).to_have_text("delivered")

    page.goto("/dashboard/webhooks?failed=1")
    expect(page.locator(f'#webhook-log tr[data-id="{failed_id}"]')).to_have_count(0)

    page.goto("/dashboard/audit")
    latest = page.locator("#audit tbody tr").first
    expect(latest).to_contain_text("replay_webhook")
    expect(latest.locator("td").nth(3)).to_have_text(str(failed_id))
    expect(latest).to_contain_text(OPERATOR)
    expect(latest).to_contain_text("state: processed")


def test_replaying_an_unknown_or_refused_entry_is_an_error_page(
    signed_in: Page, dashboard: Dashboard
) -> None:
    page = signed_in
    assert post_receipt(dashboard, {"reference": "x", "status": "delivered"}, secret="not the secret") == 403
    page.goto("/dashboard/webhooks")
    refused = page.locator("#webhook-log tbody tr").first
    expect(refused).to_contain_text("refused")
    expect(refused.get_by_role("button", name="Replay")).to_have_count(0)
    refused_id = refused.get_attribute("data-id")
    token = page.locator('input[name="csrf_token"]').first.get_attribute("value")
    assert token

    for path, status, code in [
        ("/dashboard/webhooks/987654321/replay", 404, "not_found"),
        ("/dashboard/webhooks/not-a-number/replay", 404, "not_found"),
        (f"/dashboard/webhooks/{refused_id}/replay", 400, "bad_request"),
    ]:
        answer = page.request.post(path, form={"csrf_token": token}, max_redirects=0)
        assert answer.status == status, path
        assert f'data-code="{code}"' in answer.text(), path
    shown = page.goto("/dashboard/webhooks/987654321")
    assert shown is not None and shown.status == 404
    expect(page.locator("[data-code]")).to_have_attribute("data-code", "not_found")


class Receiver:
    """An application's callback endpoint on this machine: it answers ``answer`` to every post."""

    def __init__(self) -> None:
        self.answer = 410
        self.posts: list[dict[str, Any]] = []
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                length = int(self.headers.get("content-length", "0"))
                receiver.posts.append(orjson.loads(self.rfile.read(length)))
                self.send_response(receiver.answer)
                self.send_header("content-length", "0")
                self.end_headers()

            def log_message(self, format: str, *args: Any) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/tidings-events"
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()
        self.thread.join(timeout=5)


@pytest.fixture
def receiver() -> Iterator[Receiver]:
    running = Receiver()
    try:
        yield running
    finally:
        running.close()


def test_a_callback_the_application_refused_is_retried_and_delivered(
    signed_in: Page, dashboard: Dashboard, receiver: Receiver
) -> None:
    page = signed_in
    made = dashboard.api(
        "POST", "/v1/messages", json={"to": "+254712000444", "body": "hello", "callback_url": receiver.url}
    )
    assert made.status_code == 202, made.text
    message_id = made.json()["id"]
    # 410 is not an answer worth trying again: the callbacks fail at their first attempt.
    failed = wait_until(
        lambda: dashboard.api(
            "GET", "/v1/callbacks", params={"message_id": message_id, "status": "failed"}
        ).json()["data"],
        "a failed callback",
    )
    callback_id = failed[-1]["id"]

    page.goto("/dashboard/webhooks/callbacks")
    page.get_by_label("Status").select_option("failed")
    page.get_by_role("button", name="Show").click()
    row = page.locator(f'#callbacks tr[data-id="{callback_id}"]')
    expect(row).to_contain_text("failed")
    expect(row).to_contain_text("410")
    expect(row).to_contain_text(receiver.url)
    expect(row.get_by_role("link", name=message_id)).to_be_visible()

    receiver.answer = 204
    posted_before = len(receiver.posts)
    row.get_by_role("button", name="Retry").click()
    expect(page.get_by_role("status")).to_have_text("The callback was queued again.")

    def delivered() -> bool:
        page.goto("/dashboard/webhooks/callbacks?status=delivered")
        return page.locator(f'#callbacks tr[data-id="{callback_id}"]').count() == 1

    wait_until(delivered, "the retried callback to be delivered")
    expect(page.locator(f'#callbacks tr[data-id="{callback_id}"]')).to_contain_text("1 / 10")
    assert len(receiver.posts) > posted_before

    page.goto("/dashboard/audit")
    latest = page.locator("#audit tbody tr").first
    expect(latest).to_contain_text("retry_callback")
    expect(latest.locator("td").nth(3)).to_have_text(callback_id)
    expect(latest).to_contain_text(OPERATOR)


def test_no_page_or_form_of_these_answers_without_a_session(dashboard: Dashboard) -> None:
    pages = [
        "/dashboard/inbound",
        "/dashboard/opt-outs",
        "/dashboard/webhooks",
        "/dashboard/webhooks?failed=1",
        "/dashboard/webhooks/1",
        "/dashboard/webhooks/callbacks",
        "/dashboard/audit",
    ]
    for path in pages:
        page = httpx.get(dashboard.url + path, follow_redirects=False)
        assert page.status_code == 303, path
        assert page.headers["location"].startswith("/dashboard/login?next="), path
        fragment = httpx.get(
            dashboard.url + path, headers={"X-Tidings-Fragment": "1"}, follow_redirects=False
        )
        assert fragment.status_code == 401, path
    forms = [
        "/dashboard/opt-outs",
        "/dashboard/opt-outs/remove",
        "/dashboard/webhooks/1/replay",
        "/dashboard/webhooks/callbacks/01M8MXTKX4WC3JT699P79W58GS/retry",
    ]
    for path in forms:
        answer = httpx.post(dashboard.url + path, data={"address": "+254733000555"}, follow_redirects=False)
        assert answer.status_code == 401, path
        assert 'data-code="unauthorized"' in answer.text, path
    assert dashboard.api("GET", "/v1/opt-outs", params={"number": "+254733000555"}).json()["data"] == []
