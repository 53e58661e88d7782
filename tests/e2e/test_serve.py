"""The new user's path over real processes and sockets: ``tidings serve``, the CLI, a bad config.

Every process runs in a temporary directory with no ``TIDINGS_*`` variables, so the defaults
(SQLite in ``./tidings.db``, the in-process fake provider) are what is tested.
"""

from __future__ import annotations

import json
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.processes import Served, clean_env, free_port, run_cli, tidings_command
from tidings.testing.fake_twilio import DEFAULT_ACCOUNT_SID, DEFAULT_AUTH_TOKEN

ORDINARY = "+12025550123"


@pytest.fixture
def launch() -> Iterator[Any]:
    """Start ``tidings serve`` / ``tidings api`` processes; all are killed at teardown."""
    started: list[Served] = []

    def start(directory: Path, command: str = "serve", env: dict[str, str] | None = None) -> Served:
        served = Served(directory, [command], env if env is not None else clean_env(), free_port())
        started.append(served)
        return served

    try:
        yield start
    finally:
        for served in started:
            served.close()


def auth(key: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {key}"}


def wait_for_status(base_url: str, key: str, message_id: str, status: str, timeout: float) -> dict[str, Any]:
    deadline = time.monotonic() + timeout
    while True:
        response = httpx.get(f"{base_url}/v1/messages/{message_id}", headers=auth(key), timeout=5)
        assert response.status_code == 200, response.text
        body: dict[str, Any] = response.json()
        if body["status"] == status:
            return body
        if time.monotonic() > deadline:
            pytest.fail(f"message is {body['status']!r} after {timeout}s, not {status!r}: {body}")
        time.sleep(0.05)


# -- tidings serve ---------------------------------------------------------------------------------


def test_first_serve_prints_a_key_and_delivers_a_message(tmp_path: Path, launch: Any) -> None:
    served = launch(tmp_path)
    key = served.wait_for_key()
    assert key.startswith("tdg_") and len(key) > 30
    served.wait_healthy()
    assert (tmp_path / "tidings.db").exists()

    response = httpx.post(
        served.base_url + "/v1/messages",
        json={"to": ORDINARY, "body": "hello from the new-user test"},
        headers=auth(key),
        timeout=5,
    )
    sent = time.monotonic()
    assert response.status_code == 202, response.text
    message = response.json()
    assert message["status"] in ("pending", "sending", "sent", "delivered")
    assert message["to"] == ORDINARY

    delivered = wait_for_status(served.base_url, key, message["id"], "delivered", timeout=2)
    assert time.monotonic() - sent < 2.5
    assert delivered["attempts"] == 1
    assert delivered["sent_at"] is not None and delivered["delivered_at"] is not None
    assert [e["type"] for e in delivered["events"]] == ["accepted", "claimed", "send_accepted", "report"]

    # Without the key there is nothing to see.
    anonymous = httpx.get(f"{served.base_url}/v1/messages/{message['id']}", timeout=5)
    assert anonymous.status_code == 401
    served.terminate()

    # Not on a terminal, the log is JSON lines: the worker's start, and an access line per request.
    entries = [json.loads(line) for line in served.stderr().splitlines() if line.startswith("{")]
    assert any(e["message"] == "worker started" for e in entries)
    posted = [e for e in entries if e.get("action") == "request" and e["method"] == "POST"]
    assert [(e["path"], e["status"]) for e in posted] == [("/v1/messages", 202)]
    assert posted[0]["request_id"] == response.headers["x-request-id"]


def test_restart_prints_no_new_key_and_keeps_the_old_one(tmp_path: Path, launch: Any) -> None:
    first = launch(tmp_path)
    key = first.wait_for_key()
    first.wait_healthy()
    posted = httpx.post(
        first.base_url + "/v1/messages", json={"to": ORDINARY, "body": "before"}, headers=auth(key), timeout=5
    )
    assert posted.status_code == 202, posted.text
    wait_for_status(first.base_url, key, posted.json()["id"], "delivered", timeout=2)
    first.terminate()

    second = launch(tmp_path)
    second.wait_healthy()
    again = wait_for_status(second.base_url, key, posted.json()["id"], "delivered", timeout=1)
    assert again["id"] == posted.json()["id"]
    second.terminate()
    printed = "".join(second.lines)
    assert "tdg_" not in printed, printed
    assert "Created the first API key" not in printed


def test_sigterm_stops_serve_promptly_with_exit_code_0(tmp_path: Path, launch: Any) -> None:
    served = launch(tmp_path)
    served.wait_for_key()
    served.wait_healthy()
    code, took = served.terminate()
    assert took < 5, f"took {took:.1f}s to stop"
    assert code == 0, f"exit code {code} after SIGTERM; stderr:\n{served.stderr()[-3000:]}"


# -- the CLI ---------------------------------------------------------------------------------------


def test_keys_create_list_revoke(tmp_path: Path, launch: Any) -> None:
    created = run_cli(tmp_path, "keys", "create", "ops")
    assert created.returncode == 0, created.stderr
    lines = created.stdout.strip().splitlines()
    secret = lines[-1].strip()
    assert secret.startswith("tdg_") and len(secret) > 30, created.stdout
    assert "'ops'" in lines[0]

    listed = run_cli(tmp_path, "keys", "list")
    assert listed.returncode == 0, listed.stderr
    assert secret not in listed.stdout
    ops = [line for line in listed.stdout.splitlines() if " ops " in line]
    assert len(ops) == 1, listed.stdout
    assert secret[:10] in ops[0]
    assert ops[0].rstrip().endswith("active")

    # A running API takes the key, until it is revoked.
    api = launch(tmp_path, "api", clean_env(TIDINGS_API_KEY_CACHE_SECONDS="0"))
    api.wait_healthy()
    url = api.base_url + "/v1/messages"
    assert httpx.get(url, headers=auth(secret), timeout=5).status_code == 200

    revoked = run_cli(tmp_path, "keys", "revoke", "ops")
    assert revoked.returncode == 0, revoked.stderr
    assert "revoked API key 'ops'" in revoked.stdout

    listed = run_cli(tmp_path, "keys", "list")
    ops = [line for line in listed.stdout.splitlines() if " ops " in line]
    assert len(ops) == 1 and " revoked " in ops[0], listed.stdout
    assert secret not in listed.stdout

    refused = httpx.get(url, headers=auth(secret), timeout=5)
    assert refused.status_code == 401, refused.text
    assert refused.json()["error"]["code"] == "unauthorized"

    unknown = run_cli(tmp_path, "keys", "revoke", "no-such-key")
    assert unknown.returncode == 1
    assert "no-such-key" in unknown.stderr


def test_send_then_status(tmp_path: Path) -> None:
    sent = run_cli(tmp_path, "send", ORDINARY, "hi")
    assert sent.returncode == 0, sent.stderr
    message = json.loads(sent.stdout)
    assert message["status"] == "pending"
    assert message["to"] == ORDINARY
    assert message["body"] == "hi"
    assert message["provider"] == "fake"
    assert message["segments"] == 1

    shown = run_cli(tmp_path, "status", message["id"])
    assert shown.returncode == 0, shown.stderr
    status = json.loads(shown.stdout)
    assert status["id"] == message["id"]
    assert status["status"] == "pending"
    assert [(e["type"], e["status"]) for e in status["events"]] == [("accepted", "pending")]

    missing = run_cli(tmp_path, "status", "01ARZ3NDEKTSV4RRFFQ69G5FAV")
    assert missing.returncode == 1
    assert "no message" in missing.stderr

    invalid = run_cli(tmp_path, "send", "not a number", "hi")
    assert invalid.returncode != 0
    assert invalid.stdout == ""


def test_bad_provider_kind_stops_serve_naming_the_setting(tmp_path: Path) -> None:
    config = tmp_path / "bad.toml"
    config.write_text('[providers.x]\nkind = "nope"\n', encoding="utf-8")
    env = clean_env(TIDINGS_CONFIG=str(config))
    port = free_port()
    started = time.monotonic()
    done = subprocess.run(
        [*tidings_command(), "serve", "--port", str(port)],
        cwd=tmp_path,
        env=env,
        stdin=subprocess.DEVNULL,
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert done.returncode != 0
    assert "providers.x.kind" in done.stderr, done.stderr
    assert "nope" in done.stderr
    assert "Traceback" not in done.stderr, done.stderr
    assert time.monotonic() - started < 15
    # It never got as far as listening or printing a key.
    assert "tdg_" not in done.stdout


def test_serve_on_another_port_tells_providers_that_port(tmp_path: Path, launch: Any) -> None:
    # Without public_url, the receipt URL a provider is given must use the port tidings listens
    # on (--port), or Twilio posts its signed callbacks to the wrong place and nothing is delivered.
    fake_port = free_port()
    command = [sys.executable, "-m", "tidings.testing.fake_twilio", "--port", str(fake_port)]
    fake = subprocess.Popen(
        [*command, "--callback-delay-ms", "10"], stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True
    )
    try:
        assert fake.stdout is not None and fake.stdout.readline().startswith("listening on")
        config = tmp_path / "tidings.toml"
        config.write_text(
            'default_provider = "tw"\n[providers.tw]\nkind = "twilio"\n'
            f'account_sid = "{DEFAULT_ACCOUNT_SID}"\nauth_token = "{DEFAULT_AUTH_TOKEN}"\n'
            f'from = "+15005550006"\nbase_url = "http://127.0.0.1:{fake_port}"\n'
        )
        served = launch(tmp_path, env=clean_env(TIDINGS_CONFIG=str(config)))
        key = served.wait_for_key()
        served.wait_healthy()
        sent = httpx.post(
            served.base_url + "/v1/messages",
            json={"to": ORDINARY, "body": "hello"},
            headers=auth(key),
            timeout=10,
        ).json()
        delivered = wait_for_status(served.base_url, key, sent["id"], "delivered", timeout=20)
        assert delivered["provider_status"] == "delivered"
    finally:
        fake.terminate()
        fake.wait(timeout=10)
        if fake.stdout is not None:
            fake.stdout.close()


def test_send_goes_through_the_apis_path_with_a_key_and_an_idempotency_key(tmp_path: Path) -> None:
    created = run_cli(tmp_path, "keys", "create", "clinic-app")
    assert created.returncode == 0, created.stderr
    first = run_cli(tmp_path, "send", ORDINARY, "hi", "--key", "clinic-app", "--idempotency-key", "r-1")
    assert first.returncode == 0, first.stderr
    again = run_cli(tmp_path, "send", ORDINARY, "hi", "--key", "clinic-app", "--idempotency-key", "r-1")
    assert json.loads(again.stdout)["id"] == json.loads(first.stdout)["id"]  # not queued twice
    other = run_cli(tmp_path, "send", ORDINARY, "changed", "--key", "clinic-app", "--idempotency-key", "r-1")
    assert other.returncode == 1 and "Idempotency-Key" in other.stderr
    # A callback URL needs a key (whose secret signs the callbacks), and may not point inside.
    unsigned = run_cli(tmp_path, "send", ORDINARY, "hi", "--callback-url", "https://app.example.org/h")
    assert unsigned.returncode == 2 and "--key" in unsigned.stderr
    inside = run_cli(
        tmp_path, "send", ORDINARY, "hi", "--key", "clinic-app", "--callback-url", "http://10.0.0.1/h"
    )
    assert inside.returncode == 1 and "callback" in inside.stderr
    unknown = run_cli(tmp_path, "send", ORDINARY, "hi", "--key", "nobody")
    assert unknown.returncode == 1 and "nobody" in unknown.stderr


def test_start_up_failures_are_one_line_naming_the_cause_and_nothing_starts(tmp_path: Path) -> None:
    busy = socket.socket()
    busy.bind(("127.0.0.1", 0))
    busy.listen(1)
    try:
        port = busy.getsockname()[1]
        cases = {
            "port busy": (["serve", "--port", str(port)], {}, "cannot listen on 127.0.0.1"),
            "database refused": (
                ["serve", "--port", str(free_port())],
                {"TIDINGS_DATABASE_URL": "postgresql://postgres:pw@127.0.0.1:1/tidings"},
                "cannot use the database postgresql://postgres:***@127.0.0.1:1/tidings (database_url)",
            ),
            "no such role": (
                ["worker"],
                {"TIDINGS_DATABASE_URL": "postgresql://no_such_role@127.0.0.1:5432/postgres"},
                "no_such_role",
            ),
            "folder typo": (
                ["serve", "--port", str(free_port())],
                {"TIDINGS_DATABASE_URL": f"sqlite:///{tmp_path}/no-such-folder/tidings.db"},
                "no-such-folder does not exist",
            ),
        }
        for name, (args, env, says) in cases.items():
            done = run_cli(tmp_path, *args, env=clean_env(**env))
            assert done.returncode == 2, (name, done.stderr)
            lines = done.stderr.strip().splitlines()
            assert len(lines) == 1, (name, done.stderr)
            assert says in lines[0], (name, lines[0])
            assert "pw" not in lines[0]
            assert "worker started" not in done.stderr
        # Nothing was made: no database beside the busy port, no folder for the typo.
        assert not (tmp_path / "tidings.db").exists()
        assert not (tmp_path / "no-such-folder").exists()
    finally:
        busy.close()


def test_config_check_lists_every_problem_with_its_source_or_what_is_configured(tmp_path: Path) -> None:
    config = tmp_path / "tidings.toml"
    config.write_text('max_atempts = 3\n[providers.tw]\nkind = "twilio"\nauth_tokn = "x"\n')
    env = clean_env(TIDINGS_CONFIG=str(config), TIDINGS_PORT="99999")
    bad = run_cli(tmp_path, "config", "check", env=env)
    assert bad.returncode == 2
    lines = bad.stderr.splitlines()
    assert "setting port (from TIDINGS_PORT): Input should be less than or equal to 65535" in bad.stderr
    assert any("max_atempts (in " in line and "did you mean max_attempts?" in line for line in lines)
    # Provider tables are checked only once the top-level settings are right.
    config.write_text('[providers.tw]\nkind = "twilio"\nauth_tokn = "x"\n')
    bad = run_cli(tmp_path, "config", "check", env=clean_env(TIDINGS_CONFIG=str(config)))
    assert bad.returncode == 2
    assert "providers.tw.auth_tokn (in " in bad.stderr and "did you mean auth_token?" in bad.stderr
    assert "providers.tw.account_sid: missing: set it (or TIDINGS_PROVIDERS__TW__ACCOUNT_SID)" in bad.stderr
    assert "default_provider: 'fake' is not a configured provider" in bad.stderr
    # Fixed, with the secret from the environment: all is well, and nothing was created.
    config.write_text(
        '[providers.tw]\nkind = "twilio"\nfrom = "+15005550006"\n'
        'account_sid = "AC00000000000000000000000000000001"\n'
    )
    good = run_cli(
        tmp_path,
        "config",
        "check",
        env=clean_env(
            TIDINGS_CONFIG=str(config),
            TIDINGS_DEFAULT_PROVIDER="tw",
            TIDINGS_PROVIDERS__TW__AUTH_TOKEN="s3cret",
        ),
    )
    assert good.returncode == 0, good.stderr
    assert "provider tw: twilio (default)" in good.stdout and "configuration OK" in good.stdout
    assert "alert rules, checked every 60 s: delivery_rate, failure_rate, pending," in good.stdout
    assert "s3cret" not in good.stdout + good.stderr
    assert not (tmp_path / "tidings.db").exists()
