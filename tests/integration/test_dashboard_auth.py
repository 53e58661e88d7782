"""Signing in to the dashboard over HTTP, on both databases: sessions, their end, throttled
guessing, cookies, CSRF on the sign-in form, the audit log, and the users command."""

from __future__ import annotations

import json
import logging
import re
from collections.abc import AsyncIterator
from datetime import timedelta
from pathlib import Path

import httpx
import pytest
from sqlalchemy import update
from typer.testing import CliRunner

from tests.conftest import make_settings
from tidings.api.app import create_app
from tidings.cli import app as cli
from tidings.clock import utcnow
from tidings.services import Service
from tidings.services.operators import FAILURES_ALLOWED, Throttle
from tidings.store import Store
from tidings.store.tables import operator_sessions

NAME = "nurse.amina"
PASSWORD = "correct horse battery staple"
TOKEN = re.compile(r'name="csrf_token" value="([^"]+)"')


@pytest.fixture
async def browser(service: Service) -> AsyncIterator[httpx.AsyncClient]:
    """A cookie-keeping client over the app, with one dashboard user (and no API key)."""
    await service.operators.create(NAME, PASSWORD)
    transport = httpx.ASGITransport(app=create_app(service), client=("203.0.113.9", 40000))
    async with httpx.AsyncClient(transport=transport, base_url="http://tidings.test") as client:
        yield client


async def sign_in(client: httpx.AsyncClient, name: str = NAME, password: str = PASSWORD) -> httpx.Response:
    form = await client.get("/dashboard/login")
    found = TOKEN.search(form.text)
    assert found, form.text
    return await client.post(
        "/dashboard/login", data={"csrf_token": found.group(1), "name": name, "password": password}
    )


def csrf_of(page: httpx.Response) -> str:
    found = TOKEN.search(page.text)
    assert found, page.text
    return found.group(1)


async def test_signing_in_opens_a_session_that_pages_accept(browser: httpx.AsyncClient) -> None:
    assert (await browser.get("/dashboard/messages")).status_code == 303
    answer = await sign_in(browser)
    assert answer.status_code == 303 and answer.headers["location"] == "/dashboard"
    cookie = answer.headers["set-cookie"]
    assert "tidings_session=" in cookie and "HttpOnly" in cookie and "SameSite=lax" in cookie
    assert "Secure" not in cookie  # plain http here; see the https test below
    page = await browser.get("/dashboard/messages")
    assert page.status_code == 200
    assert NAME in page.text
    for header in ("content-security-policy", "x-frame-options", "x-content-type-options"):
        assert header in page.headers
    assert page.headers["cache-control"] == "no-store"


async def test_behind_https_the_cookies_are_secure(store: Store, database_url: str) -> None:
    service = Service(make_settings(database_url, public_url="https://sms.example.org"), store=store)
    await service.start()
    try:
        await service.operators.create(NAME, PASSWORD)
        transport = httpx.ASGITransport(app=create_app(service))
        # A proxy that ends TLS talks plain http to tidings: public_url says what the browser sees.
        async with httpx.AsyncClient(transport=transport, base_url="http://tidings.test") as client:
            login = await client.get("/dashboard/login")
            assert "; Secure" in login.headers["set-cookie"]
        # The browser itself on https keeps Secure cookies and sends them back.
        async with httpx.AsyncClient(transport=transport, base_url="https://tidings.test") as client:
            answer = await sign_in(client)
            assert answer.status_code == 303
            assert "; Secure" in answer.headers["set-cookie"]
    finally:
        await service.close()


async def test_the_sign_in_form_needs_its_own_token(browser: httpx.AsyncClient) -> None:
    # A sign-in posted from another site (login CSRF): no token cookie, or a token that differs.
    forged = await browser.post(
        "/dashboard/login", data={"csrf_token": "x", "name": NAME, "password": PASSWORD}
    )
    assert forged.status_code == 403 and 'data-code="csrf_failed"' in forged.text
    await browser.get("/dashboard/login")
    forged = await browser.post(
        "/dashboard/login", data={"csrf_token": "x", "name": NAME, "password": PASSWORD}
    )
    assert forged.status_code == 403
    assert "tidings_session" not in browser.cookies


async def test_a_form_from_another_origin_is_refused_even_with_the_token(browser: httpx.AsyncClient) -> None:
    await sign_in(browser)
    page = await browser.get("/dashboard/messages")
    answer = await browser.post(
        "/dashboard/logout", data={"csrf_token": csrf_of(page)}, headers={"Origin": "https://evil.example"}
    )
    assert answer.status_code == 403
    assert (await browser.get("/dashboard/messages")).status_code == 200


async def test_after_signing_in_only_a_dashboard_path_is_followed(browser: httpx.AsyncClient) -> None:
    form = await browser.get("/dashboard/login", params={"next": "https://evil.example/dashboard"})
    assert 'name="next" value="/dashboard"' in form.text
    answer = await browser.post(
        "/dashboard/login",
        data={"csrf_token": csrf_of(form), "name": NAME, "password": PASSWORD, "next": "//evil.example"},
    )
    assert answer.headers["location"] == "/dashboard"


async def test_wrong_passwords_are_throttled_then_refused_unchecked(
    browser: httpx.AsyncClient, service: Service
) -> None:
    for _ in range(FAILURES_ALLOWED):
        answer = await sign_in(browser, password="wrong password here")
        assert answer.status_code == 401
        assert "wrong user name or password" in answer.text
    # Even the right password is refused now, and the page says when to come back.
    refused = await sign_in(browser)
    assert refused.status_code == 429
    assert 'data-code="rate_limited"' in refused.text
    assert int(refused.headers["retry-after"]) > 0
    assert "tidings_session" not in browser.cookies


async def test_an_unknown_name_fails_like_a_wrong_password(browser: httpx.AsyncClient) -> None:
    unknown = await sign_in(browser, name="nobody")
    wrong = await sign_in(browser, password="wrong password here")
    assert unknown.status_code == wrong.status_code == 401
    assert TOKEN.sub("", unknown.text) == TOKEN.sub("", wrong.text).replace(NAME, "nobody")


async def test_an_expired_session_sends_the_browser_back_to_sign_in(
    browser: httpx.AsyncClient, service: Service
) -> None:
    await sign_in(browser)
    async with service.store.engine.begin() as conn:
        await conn.execute(update(operator_sessions).values(expires_at=utcnow() - timedelta(seconds=1)))
    answer = await browser.get("/dashboard/messages")
    assert answer.status_code == 303
    assert answer.headers["location"] == "/dashboard/login?next=%2Fdashboard%2Fmessages"


async def test_disabling_a_user_or_changing_their_password_ends_their_sessions(
    browser: httpx.AsyncClient, service: Service
) -> None:
    await sign_in(browser)
    await service.operators.set_password(NAME, "a brand new password")
    assert (await browser.get("/dashboard/messages")).status_code == 303
    assert (await sign_in(browser, password="a brand new password")).status_code == 303
    await service.operators.set_disabled(NAME, True)
    assert (await browser.get("/dashboard/messages")).status_code == 303
    assert (await sign_in(browser, password="a brand new password")).status_code == 401
    await service.operators.set_disabled(NAME, False)
    assert (await sign_in(browser, password="a brand new password")).status_code == 303


async def test_the_audit_log_records_who_did_what_from_where(
    browser: httpx.AsyncClient, service: Service, api_key: str
) -> None:
    await sign_in(browser)
    sent = await browser.post(
        "/v1/messages",
        json={"to": "+12025550123", "body": "later", "send_at": "2099-01-01T00:00:00Z"},
        headers={"Authorization": f"Bearer {api_key}"},
    )
    message_id = sent.json()["id"]
    page = await browser.get(f"/dashboard/messages/{message_id}")
    cancelled = await browser.post(
        f"/dashboard/messages/{message_id}/cancel", data={"csrf_token": csrf_of(page)}
    )
    assert cancelled.status_code == 303
    assert cancelled.headers["location"] == f"/dashboard/messages/{message_id}?notice=cancelled"
    # Cancelling again is the API's 409, as a page.
    again = await browser.post(f"/dashboard/messages/{message_id}/cancel", data={"csrf_token": csrf_of(page)})
    assert again.status_code == 409 and 'data-code="not_cancellable"' in again.text
    entries = await service.store.operators.audit(before_id=None, limit=10)
    assert [(e["operator"], e["action"], e["target"], e["address"]) for e in entries] == [
        (NAME, "cancel_message", message_id, "203.0.113.9"),
        (NAME, "sign_in", NAME, "203.0.113.9"),
    ]


async def test_unknown_dashboard_paths_and_ids_are_pages_with_codes(browser: httpx.AsyncClient) -> None:
    await sign_in(browser)
    missing = await browser.get("/dashboard/messages/01M8MXTKX4WC3JT699P79W58GS")
    assert missing.status_code == 404 and 'data-code="not_found"' in missing.text
    nowhere = await browser.get("/dashboard/nowhere")
    assert nowhere.status_code == 404 and 'data-code="not_found"' in nowhere.text
    bad_cursor = await browser.get("/dashboard/messages", params={"cursor": "not-ours"})
    assert bad_cursor.status_code == 400 and 'data-code="bad_request"' in bad_cursor.text
    bad_date = await browser.get("/dashboard/messages", params={"since": "yesterday"})
    assert bad_date.status_code == 422 and 'data-code="invalid_input"' in bad_date.text
    oversized = await browser.post("/dashboard/logout", content=b"x" * 20_000)
    assert oversized.status_code == 403


def test_the_throttle_forgets_failures_once_the_window_passes() -> None:
    now = [0.0]
    throttle = Throttle(allowed=2, window=60, clock=lambda: now[0])
    throttle.fail("name:a")
    assert throttle.blocked_for("name:a") is None
    throttle.fail("name:a")
    assert throttle.blocked_for("name:a") == 60
    now[0] = 59.5
    assert throttle.blocked_for("name:a") == pytest.approx(0.5)
    now[0] = 60
    assert throttle.blocked_for("name:a") is None
    assert throttle.blocked_for("name:b") is None


def test_the_users_command_creates_lists_and_disables(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("TIDINGS_DATABASE_URL", f"sqlite:///{tmp_path / 'tidings.db'}")
    # The command sets up logging on the runner's stderr, which is closed once it returns: the
    # root logger's handlers and level are put back after the test, or every later test's log
    # lines go to a closed file.
    root = logging.getLogger()
    monkeypatch.setattr(root, "handlers", list(root.handlers))
    monkeypatch.setattr(root, "level", root.level)
    runner = CliRunner()
    made = runner.invoke(cli, ["users", "create", NAME, "--password-stdin"], input=PASSWORD + "\n")
    assert made.exit_code == 0, made.output
    again = runner.invoke(cli, ["users", "create", NAME, "--password-stdin"], input=PASSWORD + "\n")
    assert again.exit_code == 1 and "exists" in again.output
    short = runner.invoke(cli, ["users", "create", "other", "--password-stdin"], input="short\n")
    assert short.exit_code == 1 and "at least 10 characters" in short.output
    bad_name = runner.invoke(cli, ["users", "create", "no spaces", "--password-stdin"], input=PASSWORD + "\n")
    assert bad_name.exit_code == 1
    assert runner.invoke(cli, ["users", "disable", NAME]).exit_code == 0
    listed = runner.invoke(cli, ["users", "list", "--json"])
    assert listed.exit_code == 0
    assert [json.loads(line)["state"] for line in listed.output.splitlines()] == ["disabled"]
    # Only the hash is stored, in Argon2id's encoded form.
    assert PASSWORD not in (tmp_path / "tidings.db").read_bytes().decode("latin-1")
    assert b"$argon2id$" in (tmp_path / "tidings.db").read_bytes()
    missing = runner.invoke(cli, ["users", "disable", "nobody"])
    assert missing.exit_code == 1 and "no user named" in missing.output
