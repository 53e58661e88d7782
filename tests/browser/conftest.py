"""The dashboard in a real browser: the distribution's Chromium (``/usr/bin/chromium``, which
``make test`` installs when it runs as root), driven by Playwright, against ``tidings serve``
running as its own process. Under ``CI=true`` a missing browser fails the tests; elsewhere it
skips them."""

from __future__ import annotations

import os
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest
from playwright.sync_api import Browser, ConsoleMessage, Page, expect, sync_playwright

from tests.processes import Served, clean_env, free_port, run_cli

CHROMIUM = Path("/usr/bin/chromium")
# As root and with no network: no sandbox, and nothing that reaches out at start.
CHROMIUM_ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-dev-shm-usage",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--disable-quic",
    "--no-first-run",
]
OPERATOR = "ops@clinic"
PASSWORD = "a long test password"


@dataclass
class Dashboard:
    """A running ``tidings serve`` with one dashboard user, and an API key to make data with."""

    served: Served
    key: str
    directory: Path

    @property
    def url(self) -> str:
        return self.served.base_url

    def api(self, method: str, path: str, **kwargs: object) -> httpx.Response:
        return httpx.request(
            method,
            self.url + path,
            headers={"Authorization": f"Bearer {self.key}"},
            timeout=10,
            **kwargs,  # type: ignore[arg-type]
        )


@pytest.fixture(scope="module")
def browser() -> Iterator[Browser]:
    """Chromium for one module's tests. Not for the whole session: Playwright's sync API runs an
    event loop on the main thread while it is open, and the other tests' ``asyncio.run`` would
    find it running."""
    if not CHROMIUM.exists():
        reason = f"the dashboard's browser tests need Chromium at {CHROMIUM} (apt-get install chromium)"
        if os.environ.get("CI") == "true":
            pytest.fail(reason)
        pytest.skip(reason)
    with sync_playwright() as playwright:
        launched = playwright.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_ARGS)
        try:
            yield launched
        finally:
            launched.close()


def start_dashboard(directory: Path, **settings: str) -> Dashboard:
    """``tidings serve`` in ``directory`` with a dashboard user (:data:`OPERATOR`)."""
    env = clean_env(**settings)
    made = run_cli(directory, "users", "create", OPERATOR, "--password-stdin", env=env, input=PASSWORD + "\n")
    assert made.returncode == 0, made.stderr
    served = Served(directory, ["serve"], env, free_port())
    key = served.wait_for_key()
    served.wait_healthy()
    return Dashboard(served, key, directory)


@pytest.fixture(scope="module")
def dashboard(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Dashboard]:
    """One server for a module's tests (each test gets its own browser context, so its own
    cookies)."""
    running = start_dashboard(tmp_path_factory.mktemp("dashboard"))
    try:
        yield running
    finally:
        running.served.close()


@pytest.fixture
def page(browser: Browser, dashboard: Dashboard) -> Iterator[Page]:
    context = browser.new_context(base_url=dashboard.url)
    context.set_default_timeout(15_000)
    opened = context.new_page()
    errors: list[str] = []
    opened.on("pageerror", lambda exc: errors.append(str(exc)))

    def console(message: ConsoleMessage) -> None:
        # A refused page (401, 403…) is logged as a failed load: some tests ask for those.
        if message.type == "error" and not message.text.startswith("Failed to load resource"):
            errors.append(message.text)

    opened.on("console", console)
    try:
        yield opened
    finally:
        context.close()
    # No script error, and nothing refused by the content security policy, on any page visited.
    assert errors == []


def sign_in(page: Page, name: str = OPERATOR, password: str = PASSWORD) -> None:
    page.goto("/dashboard/login")
    page.get_by_label("User name").fill(name)
    page.get_by_label("Password").fill(password)
    page.get_by_role("button", name="Sign in").click()
    expect(page.get_by_role("button", name="Sign out")).to_be_visible()


@pytest.fixture
def signed_in(page: Page) -> Page:
    """A page whose context has signed in as :data:`OPERATOR`."""
    sign_in(page)
    return page
