"""``GET /metrics`` with tidings in several processes: ``tidings api`` and ``tidings worker``
sharing one ``metrics_dir``, as an operator runs them on one machine (SQLite, the in-process fake).

The API process accepts the message and the worker process sends it (and takes its receipt, the
fake's in-process webhook): only the worker counts it sent and delivered, so the API's ``/metrics``
shows those only by summing the worker's counts from the shared directory.
"""

from __future__ import annotations

import asyncio
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from prometheus_client.parser import text_string_to_metric_families

from tests.e2e.test_multiprocess import Processes, clean_env, free_port, healthy, tidings_command

pytestmark = [pytest.mark.slow]

ORDINARY = "+12025550123"
BY = (("channel", "sms"), ("provider", "fake"))


@pytest.fixture
def processes(tmp_path: Path) -> Iterator[Processes]:
    procs = Processes(tmp_path)
    try:
        yield procs
    finally:
        procs.close()


def counters(text: str) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    return {
        (s.name, tuple(sorted(s.labels.items()))): s.value
        for family in text_string_to_metric_families(text)
        for s in family.samples
    }


async def test_the_apis_metrics_count_what_the_worker_process_did(
    tmp_path: Path, processes: Processes
) -> None:
    metrics_dir = tmp_path / "metrics"
    port = free_port()
    env = clean_env(
        TIDINGS_DATABASE_URL=f"sqlite:///{tmp_path / 'tidings.db'}",
        TIDINGS_METRICS_DIR=str(metrics_dir),
        TIDINGS_PORT=str(port),
        TIDINGS_POLL_INTERVAL="0.05",
        TIDINGS_PROVIDERS__FAKE__KIND="fake",
        TIDINGS_PROVIDERS__FAKE__RECEIPT_DELAY_MS="10",
        # One process each: the test reads each process's own files.
        TIDINGS_WORKERS="1",
    )
    for args in (["migrate"], ["keys", "create", "prometheus"]):
        # In a thread: the test's event loop is not held up while the command runs.
        done = await asyncio.to_thread(
            subprocess.run,
            [*tidings_command(), *args],
            cwd=tmp_path,
            env=env,
            capture_output=True,
            text=True,
            timeout=60,
        )
        assert done.returncode == 0, done.stderr
    key = done.stdout.strip().splitlines()[-1]

    api = processes.start("api", ["api"], env)
    worker = processes.start("worker", ["worker"], env)
    url = f"http://127.0.0.1:{port}"
    await healthy(url, processes)
    async with httpx.AsyncClient(base_url=url, headers={"Authorization": f"Bearer {key}"}) as client:
        sent = await client.post("/v1/messages", json={"to": ORDINARY, "body": "hello"})
        assert sent.status_code == 202, sent.text

        deadline = time.monotonic() + 30
        while True:
            scraped = await client.get("/metrics")
            assert scraped.status_code == 200, scraped.text
            found = counters(scraped.text)
            if found.get(("tidings_messages_delivered_total", BY)) == 1:
                break
            if time.monotonic() > deadline:
                pytest.fail(
                    f"the API's /metrics never showed the delivery:\n{scraped.text}\n{processes.tails()}"
                )
            await asyncio.sleep(0.1)

    assert found["tidings_messages_accepted_total", BY] == 1
    assert found["tidings_messages_sent_total", BY] == 1
    assert found["tidings_send_seconds_count", (("provider", "fake"),)] == 1
    # Each process keeps its own files there; the sent count is the worker's alone.
    written = {path.name for path in metrics_dir.iterdir()}
    assert {f"counter_{api.pid}.db", f"counter_{worker.pid}.db"} <= written
    assert await processes.stop(worker) == 0
    assert await processes.stop(api) == 0
