"""Signing in and out of the dashboard, in Chromium, and what is refused without a session or
without the form's CSRF token."""

from __future__ import annotations

import re

import httpx
from playwright.sync_api import Page, expect

from tests.browser.conftest import OPERATOR, Dashboard, sign_in


def test_a_page_without_a_session_sends_the_browser_to_sign_in_and_back(page: Page) -> None:
    page.goto("/dashboard/messages?status=failed")
    expect(page).to_have_url(re.compile(r"/dashboard/login\?next="))
    page.get_by_label("User name").fill(OPERATOR)
    page.get_by_label("Password").fill("a long test password")
    page.get_by_role("button", name="Sign in").click()
    expect(page).to_have_url(re.compile(r"/dashboard/messages\?status=failed$"))
    expect(page.get_by_label("Status")).to_have_value("failed")


def test_a_wrong_password_is_refused_and_says_so(page: Page) -> None:
    page.goto("/dashboard/login")
    page.get_by_label("User name").fill(OPERATOR)
    page.get_by_label("Password").fill("not the password at all")
    page.get_by_role("button", name="Sign in").click()
    expect(page.get_by_role("alert")).to_have_text("wrong user name or password")
    expect(page.get_by_role("button", name="Sign out")).to_have_count(0)


def test_the_session_cookie_is_http_only_and_same_site(page: Page) -> None:
    sign_in(page)
    cookies = {c["name"]: c for c in page.context.cookies()}
    session = cookies["tidings_session"]
    assert session["httpOnly"] is True
    assert session["sameSite"] == "Lax"
    assert session["path"] == "/dashboard"
    # Not readable by the page's script.
    assert "tidings_session" not in page.evaluate("document.cookie")


def test_signing_out_ends_the_session_on_the_server(page: Page, dashboard: Dashboard) -> None:
    sign_in(page)
    token = {c["name"]: c["value"] for c in page.context.cookies()}["tidings_session"]
    page.get_by_role("button", name="Sign out").click()
    expect(page.get_by_role("status")).to_have_text("You are signed out.")
    page.goto("/dashboard/messages")
    expect(page).to_have_url(re.compile(r"/dashboard/login"))
    # The old cookie, replayed by anyone who kept it, signs nobody in.
    again = httpx.get(
        dashboard.url + "/dashboard/messages", cookies={"tidings_session": token}, follow_redirects=False
    )
    assert again.status_code == 303
    assert again.headers["location"].startswith("/dashboard/login")


def test_no_page_or_fragment_answers_without_a_session(dashboard: Dashboard) -> None:
    paths = [
        "/dashboard/",
        "/dashboard/messages",
        "/dashboard/messages/01M8MXTKX4WC3JT699P79W58GS",
        "/dashboard/batches",
        "/dashboard/batches/01M8MXTKX4WC3JT699P79W58GS",
        "/dashboard/providers",
        "/dashboard/inbound",
        "/dashboard/opt-outs",
        "/dashboard/webhooks",
        "/dashboard/webhooks/callbacks",
        "/dashboard/webhooks/1",
        "/dashboard/audit",
    ]
    for path in paths:
        page = httpx.get(dashboard.url + path, follow_redirects=False)
        assert page.status_code == 303, path
        assert page.headers["location"].startswith("/dashboard/login?next="), path
        fragment = httpx.get(
            dashboard.url + path, headers={"X-Tidings-Fragment": "1"}, follow_redirects=False
        )
        assert fragment.status_code == 401, path
    # An API key is not a dashboard login.
    with_key = httpx.get(
        dashboard.url + "/dashboard/messages",
        headers={"Authorization": f"Bearer {dashboard.key}"},
        follow_redirects=False,
    )
    assert with_key.status_code == 303


def test_a_form_posted_without_the_csrf_token_is_refused(page: Page, dashboard: Dashboard) -> None:
    sign_in(page)
    message = dashboard.api(
        "POST",
        "/v1/messages",
        json={"to": "+12025550123", "body": "later", "send_at": "2099-01-01T00:00:00Z"},
    ).json()
    cookies = {c["name"]: c["value"] for c in page.context.cookies()}
    # The browser's own session, but a form from elsewhere: no token, then a wrong one.
    for form in ({}, {"csrf_token": "forged"}):
        answer = httpx.post(
            f"{dashboard.url}/dashboard/messages/{message['id']}/cancel",
            data=form,
            cookies=cookies,
            follow_redirects=False,
        )
        assert answer.status_code == 403
        assert 'data-code="csrf_failed"' in answer.text
    assert dashboard.api("GET", f"/v1/messages/{message['id']}").json()["status"] == "scheduled"
