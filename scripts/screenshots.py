"""Take the README's screenshots of the dashboard: ``make screenshots``.

Starts ``tidings serve`` in a temporary directory with the fake provider and two Android gateway
phones, fills it over the REST API and the gateway protocol with a small clinic's day (reminders
delivered, a few failed, some scheduled, a batch, replies, an opt-out), signs in with the
distribution's Chromium through Playwright and saves one PNG per page in docs/screenshots/.
"""

from __future__ import annotations

import os
import re
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import httpx
from playwright.sync_api import sync_playwright

ROOT = Path(__file__).resolve().parent.parent
OUT = ROOT / "docs" / "screenshots"
USER, PASSWORD = "amina", "screenshots password"
CONFIG = """
default_provider = "fake"
[providers.fake]
kind = "fake"
receipt_delay_ms = 200
currency = "KES"
[providers.fake.prices]
"+254" = "0.80"
"+1" = "1.05"
[providers.clinic-phone]
kind = "gateway"
username = "clinic"
password = "clinic-password"
[providers.district-phone]
kind = "gateway"
username = "district"
password = "district-password"
"""
REMINDERS = [
    "Reminder: your child's measles vaccination is tomorrow at 9:00 at Kibera clinic.",
    "Your antenatal visit is on Thursday. Reply STOP to stop these messages.",
    "Results are ready: please visit the clinic with your card.",
    "Reminder: refill your prescription before Friday.",
]


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def wait_healthy(url: str, process: subprocess.Popen[str]) -> None:
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        if process.poll() is not None:
            sys.exit(f"tidings serve exited with {process.returncode}")
        try:
            if httpx.get(url + "/healthz", timeout=2).status_code == 200:
                return
        except httpx.TransportError:
            pass
        time.sleep(0.1)
    sys.exit("tidings serve did not become healthy within 60 s")


def fill(url: str, key: str) -> None:
    api = httpx.Client(base_url=url, headers={"Authorization": f"Bearer {key}"}, timeout=30)
    for i in range(36):
        to = f"+2547{i % 7}{i:07d}" if i % 5 else f"+1202555{i:04d}"
        api.post("/v1/messages", json={"to": to, "body": REMINDERS[i % 4], "tags": ["reminders"]})
    for to in ("+12025550101", "+12025550104", "+12025550104", "+12025550102"):
        api.post("/v1/messages", json={"to": to, "body": REMINDERS[2], "tags": ["results"]})
    for i in range(3):
        api.post(
            "/v1/messages",
            json={"to": f"+25471100{i:04d}", "body": REMINDERS[0], "send_at": "2099-01-05T06:00:00Z"},
        )
    recipients = [{"to": f"+25472200{i:04d}", "context": {"name": f"Parent {i}"}} for i in range(40)]
    recipients += [{"to": "+12025550101", "context": {"name": "Unknown"}}]
    api.post(
        "/v1/batches",
        json={
            "group_id": "measles-week-48",
            "template": "Hello {{ name }}, measles vaccination day is Saturday at the clinic.",
            "tags": ["campaign"],
            "recipients": recipients,
        },
    )
    api.post("/v1/opt-outs", json={"number": "+254733000111", "note": "asked at the front desk"})
    phone = httpx.Client(base_url=url, auth=("clinic", "clinic-password"), timeout=30)
    phone.post(
        "/api/sms",
        json={
            "messages": [
                {"id": "r1", "from": "+254712000001", "content": "Thank you, we will come"},
                {"id": "r2", "from": "+254712000002", "content": "STOP"},
            ]
        },
    )
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        waiting = api.get("/v1/messages", params={"status": ["pending", "sending"]}).json()["data"]
        if not [m for m in waiting if m["provider"] == "fake"]:
            break
        time.sleep(0.5)


def shoot(url: str) -> None:
    OUT.mkdir(parents=True, exist_ok=True)
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(
            executable_path="/usr/bin/chromium",
            args=["--no-sandbox", "--disable-gpu", "--disable-background-networking", "--no-first-run"],
        )
        page = browser.new_page(base_url=url, viewport={"width": 1280, "height": 800})
        page.goto("/dashboard/login")
        page.screenshot(path=str(OUT / "login.png"))
        page.get_by_label("User name").fill(USER)
        page.get_by_label("Password").fill(PASSWORD)
        page.get_by_role("button", name="Sign in").click()
        page.wait_for_url(re.compile(r"/dashboard/?$"))
        shots: list[tuple[str, str]] = [
            ("overview", "/dashboard/"),
            ("messages", "/dashboard/messages"),
            ("batches", "/dashboard/batches"),
            ("providers", "/dashboard/providers"),
            ("inbound", "/dashboard/inbound"),
            ("opt-outs", "/dashboard/opt-outs"),
            ("webhooks", "/dashboard/webhooks"),
        ]
        for name, path in shots:
            page.goto(path)
            page.screenshot(path=str(OUT / f"{name}.png"), full_page=True)
        page.goto("/dashboard/messages?status=failed")
        page.locator("#messages tbody tr a").first.click()
        page.screenshot(path=str(OUT / "message.png"), full_page=True)
        page.goto("/dashboard/batches")
        page.locator("#batches tbody tr a").first.click()
        page.screenshot(path=str(OUT / "batch.png"), full_page=True)
        page.goto("/dashboard/audit")
        page.screenshot(path=str(OUT / "audit.png"), full_page=True)
        browser.close()


def main() -> None:
    tidings = str(Path(sys.executable).with_name("tidings"))
    with tempfile.TemporaryDirectory() as directory:
        (Path(directory) / "tidings.toml").write_text(CONFIG)
        env: dict[str, Any] = {k: v for k, v in os.environ.items() if not k.startswith("TIDINGS_")}
        port = free_port()
        env.update(TIDINGS_CONFIG=str(Path(directory) / "tidings.toml"), TIDINGS_PORT=str(port))
        subprocess.run(
            [tidings, "users", "create", USER, "--password-stdin"],
            input=PASSWORD + "\n",
            text=True,
            cwd=directory,
            env=env,
            check=True,
            capture_output=True,
        )
        process = subprocess.Popen(
            [tidings, "serve"],
            cwd=directory,
            env=env,
            stdout=subprocess.PIPE,
            stderr=subprocess.DEVNULL,
            text=True,
        )
        try:
            assert process.stdout is not None
            key = next(line.strip() for line in process.stdout if line.strip().startswith("tdg_"))
            url = f"http://127.0.0.1:{port}"
            wait_healthy(url, process)
            fill(url, key)
            shoot(url)
        finally:
            process.terminate()
            process.wait(timeout=30)
    print(f"screenshots in {OUT.relative_to(ROOT)}")  # noqa: T201


if __name__ == "__main__":
    main()
