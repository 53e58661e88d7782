"""Inbound messages and the opt-out list in the dashboard, in Chromium: replies posted the way
Twilio posts them are listed, and an operator opts a number out and back in (which the API then
honours), with each change in the audit log."""

from __future__ import annotations

import re
import secrets
from collections.abc import Iterator
from datetime import date, timedelta
from urllib.parse import urlencode

import httpx
import pytest
from playwright.sync_api import Dialog, Page, expect

from tests.browser.conftest import OPERATOR, Dashboard, start_dashboard
from tidings.providers.twilio import signature
from tidings.testing.fake_twilio import DEFAULT_ACCOUNT_SID, DEFAULT_AUTH_TOKEN

OUR_NUMBER = "+12025550150"
PATIENT = "+254712345678"
NEIGHBOUR = "+254722000111"


@pytest.fixture(scope="module")
def dashboard(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Dashboard]:
    """The dashboard with the fake provider (which sends) and a Twilio provider that only
    receives: nothing is sent through it, so its API is never called."""
    running = start_dashboard(
        tmp_path_factory.mktemp("inbound"),
        TIDINGS_PROVIDERS__FAKE__KIND="fake",
        TIDINGS_PROVIDERS__TW__KIND="twilio",
        TIDINGS_PROVIDERS__TW__ACCOUNT_SID=DEFAULT_ACCOUNT_SID,
        TIDINGS_PROVIDERS__TW__AUTH_TOKEN=DEFAULT_AUTH_TOKEN,
        TIDINGS_PROVIDERS__TW__FROM=OUR_NUMBER,
        TIDINGS_PROVIDERS__TW__BASE_URL="http://127.0.0.1:9",
        TIDINGS_DEFAULT_PROVIDER="fake",
    )
    try:
        yield running
    finally:
        running.served.close()


def post_twilio_inbound(dashboard: Dashboard, sender: str, text: str) -> None:
    """An SMS to our number, posted and signed as Twilio posts it."""
    url = f"{dashboard.url}/webhooks/twilio/tw/inbound"
    sid = "SM" + secrets.token_hex(16)
    params = {
        "MessageSid": sid,
        "SmsSid": sid,
        "AccountSid": DEFAULT_ACCOUNT_SID,
        "From": sender,
        "To": OUR_NUMBER,
        "Body": text,
        "NumMedia": "0",
    }
    answer = httpx.post(
        url,
        content=urlencode(params),
        headers={
            "Content-Type": "application/x-www-form-urlencoded",
            "X-Twilio-Signature": signature(DEFAULT_AUTH_TOKEN, url, sorted(params.items())),
        },
        timeout=10,
    )
    assert answer.status_code == 200, answer.text


def accept_dialogs(page: Page) -> None:
    def accept(dialog: Dialog) -> None:
        dialog.accept()

    page.on("dialog", accept)


def test_replies_are_listed_newest_first_and_found_by_their_sender(
    signed_in: Page, dashboard: Dashboard
) -> None:
    page = signed_in
    post_twilio_inbound(dashboard, PATIENT, "Is the clinic open on Saturday?")
    post_twilio_inbound(dashboard, NEIGHBOUR, "Thank you, we will come")

    page.goto("/dashboard/inbound")
    rows = page.locator("#inbound tbody tr")
    expect(rows.nth(0)).to_contain_text("Thank you, we will come")
    expect(rows.nth(0)).to_contain_text(NEIGHBOUR)
    expect(rows.nth(1)).to_contain_text("Is the clinic open on Saturday?")
    expect(rows.nth(1)).to_contain_text(OUR_NUMBER)
    expect(rows.nth(1)).to_contain_text("tw")

    page.get_by_label("From", exact=True).fill(PATIENT)
    page.get_by_role("button", name="Search").click()
    expect(page).to_have_url(re.compile(r"from=%2B254712345678"))
    expect(rows).to_have_count(1)
    expect(rows.first).to_contain_text("Is the clinic open on Saturday?")

    # By the day it was received: that day finds it, a day that ended before it does not.
    received = rows.first.locator("td").first.inner_text()
    today = date.fromisoformat(received.split()[0])
    page.get_by_label("Received from").fill(today.isoformat())
    page.get_by_role("button", name="Search").click()
    expect(rows).to_have_count(1)
    page.get_by_label("Received from").fill("")
    page.get_by_label("Received until").fill((today - timedelta(days=1)).isoformat())
    page.get_by_role("button", name="Search").click()
    expect(page.get_by_text("No inbound message matches.")).to_be_visible()


def test_an_operator_opts_a_number_out_and_back_in_and_the_api_follows(
    signed_in: Page, dashboard: Dashboard
) -> None:
    page = signed_in
    accept_dialogs(page)
    number = "+254733000222"
    assert dashboard.api("POST", "/v1/messages", json={"to": number, "body": "before"}).status_code == 202

    page.goto("/dashboard/opt-outs")
    page.get_by_label("Number or email address").first.fill(number)
    page.get_by_label("Note").fill("asked on paper at the clinic")
    page.get_by_role("button", name="Opt out").click()
    expect(page.get_by_role("status")).to_have_text("The address was opted out.")
    row = page.locator("#opt-outs tbody tr", has_text=number)
    expect(row).to_have_count(1)
    expect(row).to_contain_text("asked on paper at the clinic")
    expect(row).to_contain_text("dashboard")

    refused = dashboard.api("POST", "/v1/messages", json={"to": number, "body": "after"})
    assert refused.status_code == 422
    assert refused.json()["error"]["code"] == "recipient_opted_out"
    listed = dashboard.api("GET", "/v1/opt-outs", params={"number": number}).json()["data"]
    assert [(o["number"], o["scope"], o["source"]) for o in listed] == [(number, "*", "dashboard")]

    row.get_by_role("button", name="Remove").click()
    expect(page.get_by_role("status")).to_have_text("The address was opted back in.")
    expect(page.locator("#opt-outs tbody tr", has_text=number)).to_have_count(0)
    assert dashboard.api("GET", "/v1/opt-outs", params={"number": number}).json()["data"] == []
    assert dashboard.api("POST", "/v1/messages", json={"to": number, "body": "again"}).status_code == 202

    page.goto("/dashboard/audit")
    entries = page.locator("#audit tbody tr")
    expect(entries.nth(0)).to_contain_text("opt_in")
    expect(entries.nth(0)).to_contain_text(number)
    expect(entries.nth(0)).to_contain_text(OPERATOR)
    expect(entries.nth(1)).to_contain_text("opt_out")
    expect(entries.nth(1)).to_contain_text("asked on paper at the clinic")


def test_an_invalid_number_is_refused_with_the_apis_error_and_nothing_is_added(
    signed_in: Page, dashboard: Dashboard
) -> None:
    page = signed_in
    page.goto("/dashboard/opt-outs")
    page.get_by_label("Number or email address").first.fill("12ab")
    with page.expect_response(re.compile(r"/dashboard/opt-outs$")) as answer:
        page.get_by_role("button", name="Opt out").click()
    assert answer.value.status == 422
    expect(page.locator("[data-code]")).to_have_attribute("data-code", "invalid_phone_number")
    page.goto("/dashboard/opt-outs")
    expect(page.locator("#opt-outs tbody tr", has_text="12ab")).to_have_count(0)


def test_removing_an_address_that_is_not_on_the_list_is_a_not_found_page(
    signed_in: Page, dashboard: Dashboard
) -> None:
    page = signed_in
    number = "+254733000333"
    assert dashboard.api("POST", "/v1/opt-outs", json={"number": number}).status_code == 201
    page.goto("/dashboard/opt-outs")
    row = page.locator("#opt-outs tbody tr", has_text=number)
    expect(row).to_have_count(1)
    # Someone else opts it back in meanwhile: this page's button is stale.
    assert dashboard.api("DELETE", f"/v1/opt-outs/{number}").status_code == 204
    accept_dialogs(page)
    with page.expect_response(re.compile(r"/dashboard/opt-outs/remove$")) as answer:
        row.get_by_role("button", name="Remove").click()
    assert answer.value.status == 404
    expect(page.locator("[data-code]")).to_have_attribute("data-code", "not_found")


def test_an_opt_out_posted_without_the_forms_token_is_refused(signed_in: Page, dashboard: Dashboard) -> None:
    cookies = {c["name"]: c["value"] for c in signed_in.context.cookies()}
    number = "+254733000444"
    for form in ({"address": number}, {"address": number, "csrf_token": "forged"}):
        answer = httpx.post(
            f"{dashboard.url}/dashboard/opt-outs", data=form, cookies=cookies, follow_redirects=False
        )
        assert answer.status_code == 403
        assert 'data-code="csrf_failed"' in answer.text
    assert dashboard.api("GET", "/v1/opt-outs", params={"number": number}).json()["data"] == []
