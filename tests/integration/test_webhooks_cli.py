"""``tidings webhooks list``, run as an operator runs it, over a webhook log with processed, refused
and failed requests from two providers."""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from tests.integration.conftest import ORANGE_SENDER, OUR_NUMBER, every_provider
from tests.live import Live, live_service
from tidings.testing.fake_orange import FakeOrangeServer
from tidings.testing.fake_twilio import DEFAULT_ACCOUNT_SID, FakeTwilioServer

PERSON = "+254712345678"
HEADER = ["ID", "PROVIDER", "EVENT", "HTTP", "STATE", "ERROR"]


@pytest.fixture
async def live(database_url: str, twilio: FakeTwilioServer, orange: FakeOrangeServer) -> AsyncIterator[Live]:
    async with live_service(database_url, worker=False, providers=every_provider(twilio, orange)) as live:
        yield live


async def webhooks_list(directory: Path, database_url: str, *options: str) -> list[list[str]]:
    """``python -m tidings webhooks list`` with ``options``: its table, one list of columns a line
    (the header first); fails the test unless it exits 0."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("TIDINGS_")}
    env["TIDINGS_DATABASE_URL"] = database_url
    done = await asyncio.to_thread(
        subprocess.run,
        [sys.executable, "-m", "tidings", "webhooks", "list", *options],
        cwd=directory,
        env=env,
        stdin=subprocess.DEVNULL,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 0, done.stderr
    return [line.split(maxsplit=5) for line in done.stdout.splitlines()]


async def test_webhooks_list_shows_the_log_newest_first_and_filters_failed_and_by_provider(
    live: Live, twilio: FakeTwilioServer, orange: FakeOrangeServer, database_url: str, tmp_path: Path
) -> None:
    twilio_inbound = f"{live.url}/webhooks/twilio/tw/inbound"
    twilio_status = f"{live.url}/webhooks/twilio/tw/status"
    status, _ = await twilio.post_inbound(twilio_inbound, PERSON, OUR_NUMBER, "hello")
    assert status == 200
    status, _ = await twilio.post_status(
        twilio_status,
        {"MessageSid": "SM" + "f" * 32, "MessageStatus": "delivered", "AccountSid": DEFAULT_ACCOUNT_SID},
        auth_token="someone-elses-token",
    )
    assert status == 403
    # Signed, so it passes the checks, but a status callback without a status cannot be read.
    status, _ = await twilio.post_status(
        twilio_status, {"MessageSid": "SM" + "f" * 32, "AccountSid": DEFAULT_ACCOUNT_SID}
    )
    assert status == 400
    status, _ = await orange.post_inbound(
        f"{live.url}/webhooks/orange/orange/inbound", PERSON, ORANGE_SENDER, "bonjour"
    )
    assert status == 200

    everything, failed, from_orange = await asyncio.gather(
        webhooks_list(tmp_path, database_url),
        webhooks_list(tmp_path, database_url, "--failed"),
        webhooks_list(tmp_path, database_url, "--provider", "orange"),
    )

    assert everything[0] == HEADER
    rows = everything[1:]
    assert [row[1:5] for row in rows] == [
        ["orange", "inbound", "200", "processed"],
        ["tw", "status", "400", "failed"],
        ["tw", "status", "403", "refused"],
        ["tw", "inbound", "200", "processed"],
    ]
    ids = [int(row[0]) for row in rows]
    assert ids == sorted(ids, reverse=True) and len(set(ids)) == 4
    assert [len(row) for row in rows] == [5, 6, 6, 5]  # only the two not processed have an error
    assert rows[1][5] == "webhook_rejected: a status callback needs MessageSid and MessageStatus"
    assert rows[2][5].startswith("invalid_signature: ")

    assert failed == [HEADER, rows[1], rows[2]]
    assert from_orange == [HEADER, rows[0]]
