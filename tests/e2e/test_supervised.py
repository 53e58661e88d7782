"""``tidings serve`` and ``tidings api`` on several processes: what the supervisor starts, a child
killed and started again, SIGTERM draining them all, and SQLite shared by them under load."""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import socket
import time
from pathlib import Path

import httpx
import pytest

from tests.processes import KEY_LINE, Served, clean_env, free_port, run_cli
from tidings.supervisor import children_of


def wait_children(pid: int, count: int, timeout: float = 30) -> dict[int, str]:
    deadline = time.monotonic() + timeout
    while len(found := children_of(pid)) != count:
        assert time.monotonic() < deadline, f"children of {pid}: {found}"
        time.sleep(0.05)
    return found


async def post_many(url: str, key: str, count: int, clients: int = 32) -> list[int]:
    """``count`` single messages from ``clients`` concurrent clients; the status of each answer."""
    statuses: list[int] = []
    numbers = iter(range(count))

    async def client(http: httpx.AsyncClient) -> None:
        for n in numbers:
            answer = await http.post(
                "/v1/messages", json={"to": f"+1415555{n % 10_000:04d}", "body": f"m{n}"}
            )
            statuses.append(answer.status_code)

    async with httpx.AsyncClient(
        base_url=url, headers={"Authorization": f"Bearer {key}"}, timeout=30
    ) as http:
        await asyncio.gather(*(client(http) for _ in range(clients)))
    return statuses


def since() -> str:
    """A day ago: the statistics' range (every message of a test is newer)."""
    from datetime import UTC, datetime, timedelta

    return (datetime.now(UTC) - timedelta(days=1)).isoformat()


def counts(url: str, key: str) -> dict[str, int]:
    answer = httpx.get(
        f"{url}/v1/stats",
        params={"since": since()},
        headers={"Authorization": f"Bearer {key}"},
    )
    assert answer.status_code == 200, answer.text
    totals = answer.json()["totals"]
    return {"total": totals["total"], "delivered": totals["delivered"], "pending": totals["pending"]}


def test_serve_runs_an_http_process_per_worker_and_a_worker_and_restarts_a_dead_one(tmp_path: Path) -> None:
    served = Served(tmp_path, ["serve"], clean_env(TIDINGS_WORKERS="2"), free_port())
    try:
        key = served.wait_for_key()
        served.wait_healthy()
        children = wait_children(served.process.pid, 3)
        assert sorted(" api " in c for c in children.values()) == [False, True, True]
        assert sum(" worker " in c for c in children.values()) == 1

        # Hundreds of messages at once over the shared SQLite file: every one accepted, none
        # refused with a 5xx (no "database is locked" reaches a client), every one delivered.
        statuses = asyncio.run(post_many(served.base_url, key, 600))
        assert sorted(set(statuses)) == [202], {s: statuses.count(s) for s in set(statuses)}
        deadline = time.monotonic() + 60
        while (found := counts(served.base_url, key))["delivered"] < 600:
            assert time.monotonic() < deadline, found
            time.sleep(0.1)
        assert found == {"total": 600, "delivered": 600, "pending": 0}

        # A child killed is started again, and the service answers meanwhile.
        victim = next(pid for pid, command in children.items() if " api " in command)
        os.kill(victim, signal.SIGKILL)
        deadline = time.monotonic() + 30
        while victim in (now := children_of(served.process.pid)) or len(now) != 3:
            assert time.monotonic() < deadline, now
            assert httpx.get(served.base_url + "/healthz").status_code == 200
            time.sleep(0.05)
        assert "exited with code -9" in served.stderr()

        code, took = served.terminate(timeout=40)
        assert code == 0 and took < 35
        assert all(not Path(f"/proc/{pid}").exists() for pid in now)
        # The first key was printed once, by the supervisor.
        assert sum(bool(KEY_LINE.match(line)) for line in served.lines) == 1
    finally:
        served.close()


@pytest.mark.parametrize(("command", "workers", "expected"), [("serve", "1", 0), ("api", "2", 2)])
def test_one_process_when_asked_and_api_without_a_worker(
    tmp_path: Path, command: str, workers: str, expected: int
) -> None:
    served = Served(tmp_path, [command], clean_env(TIDINGS_WORKERS=workers), free_port())
    try:
        served.wait_healthy()
        children = wait_children(served.process.pid, expected)
        assert not any(" worker " in c for c in children.values())
        code, _took = served.terminate(timeout=40)
        assert code == 0
    finally:
        served.close()


def test_the_http_processes_wake_the_worker_process(tmp_path: Path) -> None:
    # The worker would otherwise look for new messages only every 30 s.
    env = clean_env(TIDINGS_WORKERS="2", TIDINGS_POLL_INTERVAL="30")
    served = Served(tmp_path, ["serve"], env, free_port())
    try:
        key = served.wait_for_key()
        served.wait_healthy()
        wait_children(served.process.pid, 3)
        time.sleep(1.0)  # the worker has polled once and is idle
        headers = {"Authorization": f"Bearer {key}"}
        for n in range(3):
            sent = httpx.post(
                served.base_url + "/v1/messages",
                json={"to": f"+141555501{n:02d}", "body": "now"},
                headers=headers,
            ).json()
            deadline = time.monotonic() + 5
            while (
                status := httpx.get(f"{served.base_url}/v1/messages/{sent['id']}", headers=headers).json()[
                    "status"
                ]
            ) != "delivered":
                assert time.monotonic() < deadline, f"still {status} after 5 s: the worker was not woken"
                time.sleep(0.05)
            time.sleep(0.5)
    finally:
        served.close()


def owner_of_connection(server_port: int, client_port: int, pids: list[int]) -> int | None:
    """Which of ``pids`` holds the accepted end of the TCP connection from ``client_port``."""
    inode = None
    for line in Path("/proc/net/tcp").read_text().splitlines()[1:]:
        fields = line.split()
        local, remote = fields[1], fields[2]
        if int(local.split(":")[1], 16) == server_port and int(remote.split(":")[1], 16) == client_port:
            inode = fields[9]
    for pid in pids:
        for fd in Path(f"/proc/{pid}/fd").iterdir():
            with contextlib.suppress(OSError):
                if os.readlink(fd) == f"socket:[{inode}]":
                    return pid
    return None


def test_connections_are_spread_over_the_http_processes(tmp_path: Path) -> None:
    """Each HTTP process accepts on a socket of its own, so the kernel spreads connections over
    them: with one socket shared, the first process to wake took every waiting connection and
    the other idled. Also: a second group cannot take the same port."""
    port = free_port()
    served = Served(tmp_path, ["api"], clean_env(TIDINGS_WORKERS="2"), port)
    connections: list[socket.socket] = []
    try:
        served.wait_healthy()
        pids = list(wait_children(served.process.pid, 2))
        owners: dict[int, int] = {}
        # Connections that arrive together, as a load generator's or a proxy's pool does.
        connections += [socket.create_connection(("127.0.0.1", port), timeout=10) for _ in range(40)]
        for sock in connections:
            sock.sendall(b"GET /healthz HTTP/1.1\r\nHost: t\r\n\r\n")
            assert sock.recv(100).startswith(b"HTTP/1.1 200")
            owner = owner_of_connection(port, sock.getsockname()[1], pids)
            assert owner is not None
            owners[owner] = owners.get(owner, 0) + 1
        assert sorted(owners) == sorted(pids), owners
        assert min(owners.values()) >= 5, owners

        second = run_cli(tmp_path, "api", "--port", str(port), env=clean_env(TIDINGS_WORKERS="2"))
        assert second.returncode == 2, second.stderr
        assert "cannot listen" in second.stderr
    finally:
        for sock in connections:
            sock.close()
        served.close()
