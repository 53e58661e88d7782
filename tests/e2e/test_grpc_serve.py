"""The gRPC API of real ``tidings serve`` and ``tidings grpc`` processes: a change stream that goes
on across a server restart without missing or repeating a change, the gRPC-only command, and a
busy gRPC port."""

from __future__ import annotations

import threading
import time
from pathlib import Path
from typing import Any

import grpc
import httpx
from grpc_health.v1 import health_pb2, health_pb2_grpc

from tests.processes import Served, clean_env, free_port, run_cli
from tidings.v1 import messaging_pb2 as pb
from tidings.v1 import messaging_pb2_grpc as pb_grpc


class Watcher:
    """WatchMessages on a thread, keeping every change until the stream ends (a restart ends it)."""

    def __init__(self, address: str, key: str, cursor: str) -> None:
        self.channel = grpc.insecure_channel(address)
        self.call = pb_grpc.MessagingStub(self.channel).WatchMessages(
            pb.WatchMessagesRequest(cursor=cursor), metadata=[("authorization", f"Bearer {key}")], timeout=120
        )
        self.changes: list[pb.StatusChange] = []
        self.ended: grpc.StatusCode | None = None
        self.thread = threading.Thread(target=self._read, daemon=True)
        self.thread.start()

    def _read(self) -> None:
        try:
            for change in self.call:
                self.changes.append(change)
        except grpc.RpcError as exc:
            self.ended = exc.code()

    def stop(self) -> None:
        self.call.cancel()
        self.thread.join(timeout=10)
        self.channel.close()


def wait_grpc(address: str, served: Served) -> None:
    """Until the gRPC API answers (``tidings serve`` may start it after its HTTP processes)."""
    with grpc.insecure_channel(address) as channel:
        try:
            grpc.channel_ready_future(channel).result(timeout=30)
        except grpc.FutureTimeoutError:
            raise AssertionError(f"gRPC not ready within 30 s:\n{served.stderr()}") from None


def stub(address: str) -> pb_grpc.MessagingStub:
    return pb_grpc.MessagingStub(grpc.insecure_channel(address))


def all_final(base_url: str, key: str, ids: list[str]) -> bool:
    for message_id in ids:
        answer = httpx.get(f"{base_url}/v1/messages/{message_id}", headers={"Authorization": f"Bearer {key}"})
        if answer.json()["status"] not in ("delivered", "failed", "cancelled"):
            return False
    return True


def changed_events(base_url: str, key: str, ids: list[str]) -> set[str]:
    found: set[str] = set()
    for message_id in ids:
        answer = httpx.get(f"{base_url}/v1/messages/{message_id}", headers={"Authorization": f"Bearer {key}"})
        found |= {str(e["id"]) for e in answer.json()["events"] if e["changed"]}
    return found


def test_the_change_stream_goes_on_across_a_restart_without_gaps_or_repeats(tmp_path: Path) -> None:
    grpc_port, http_port = free_port(), free_port()
    address = f"127.0.0.1:{grpc_port}"
    env = clean_env(TIDINGS_GRPC_PORT=str(grpc_port), TIDINGS_PROVIDERS__FAKE__RECEIPT_DELAY_MS="300")
    env["TIDINGS_PROVIDERS__FAKE__KIND"] = "fake"
    first = Served(tmp_path, ["serve"], env, http_port)
    try:
        key = first.wait_for_key()
        first.wait_healthy()
        wait_grpc(address, first)
        metadata: Any = [("authorization", f"Bearer {key}")]
        # Every change from before the first message on (the cursor of an empty store is 0).
        watcher = Watcher(address, key, cursor="0")
        ids = [
            stub(address)
            .SendMessage(pb.SendMessageRequest(to=f"+1202555{i:04d}", body=f"n{i}"), metadata=metadata)
            .id
            for i in range(30)
        ]
        deadline = time.monotonic() + 20
        while len(watcher.changes) < 40:
            assert time.monotonic() < deadline, f"only {len(watcher.changes)} changes"
            time.sleep(0.02)
        # Stopped while receipts are still on their way.
        code, _ = first.terminate()
        assert code == 0
        watcher.thread.join(timeout=10)
        assert watcher.ended == grpc.StatusCode.UNAVAILABLE
    finally:
        first.close()
    before = list(watcher.changes)

    second = Served(tmp_path, ["serve"], env, http_port)
    try:
        second.wait_healthy()
        wait_grpc(address, second)
        resumed = Watcher(address, key, cursor=before[-1].cursor)
        deadline = time.monotonic() + 30
        while not all_final(second.base_url, key, ids):
            assert time.monotonic() < deadline, "messages not final"
            time.sleep(0.1)
        expected = changed_events(second.base_url, key, ids)
        while len(before) + len(resumed.changes) < len(expected):
            assert time.monotonic() < deadline, (
                f"{len(before) + len(resumed.changes)} of {len(expected)} changes"
            )
            time.sleep(0.02)
        time.sleep(0.5)  # anything more would be a repeat: give it the time to show up
        resumed.stop()
    finally:
        second.close()
    cursors = [c.cursor for c in before + resumed.changes]
    assert len(cursors) == len(set(cursors)), "a change came twice"
    assert set(cursors) == expected, "changes missing or foreign"
    assert [int(c) for c in cursors] == sorted(int(c) for c in cursors)


def test_tidings_grpc_serves_grpc_alone_and_stops_cleanly(tmp_path: Path) -> None:
    grpc_port = free_port()
    env = clean_env(TIDINGS_GRPC_PORT=str(grpc_port))
    made = run_cli(tmp_path, "keys", "create", "grpc-only", env=env)
    key = made.stdout.strip().splitlines()[-1]
    served = Served(tmp_path, ["grpc"], env, None)
    try:
        channel = grpc.insecure_channel(f"127.0.0.1:{grpc_port}")
        health = health_pb2_grpc.HealthStub(channel)
        deadline = time.monotonic() + 30
        while True:
            try:
                answer = health.Check(
                    health_pb2.HealthCheckRequest(service="tidings.v1.Messaging"), timeout=2
                )
                break
            except grpc.RpcError:
                assert served.process.poll() is None, served.stderr()
                assert time.monotonic() < deadline, served.stderr()
                time.sleep(0.1)
        assert answer.status == health_pb2.HealthCheckResponse.SERVING
        sent = pb_grpc.MessagingStub(channel).SendMessage(
            pb.SendMessageRequest(to="+12025550123", body="queued for a worker elsewhere"),
            metadata=[("authorization", f"Bearer {key}")],
        )
        # No worker runs here: the message waits for one.
        assert sent.status == pb.STATUS_PENDING
        code, took = served.terminate()
        assert code == 0 and took < 10
        channel.close()
    finally:
        served.close()


def test_a_busy_grpc_port_stops_serve_naming_the_setting(tmp_path: Path) -> None:
    import socket

    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        done = run_cli(
            tmp_path, "serve", "--port", str(free_port()), env=clean_env(TIDINGS_GRPC_PORT=str(port))
        )
    assert done.returncode == 2, done.stderr
    assert "grpc_port" in done.stderr


def test_grpc_port_zero_turns_the_grpc_api_off(tmp_path: Path) -> None:
    done = run_cli(tmp_path, "grpc", env=clean_env(TIDINGS_GRPC_PORT="0"))
    assert done.returncode == 2 and "turned off" in done.stderr
