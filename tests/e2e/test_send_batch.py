"""``tidings send-batch`` over real processes: a CSV or JSON-lines file sent to a running ``tidings
serve`` (or written to the database directly), its summary, its refusals by line, its re-runs.

The server is the one ``test_serve`` starts (SQLite in a temporary directory, the in-process fake
provider); every address is 127.0.0.1.
"""

from __future__ import annotations

import csv
import http.server
import json
import queue
import re
import signal
import subprocess
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import msgpack
import pytest

from tests.e2e.test_serve import auth
from tests.processes import Served, clean_env, free_port, run_cli, tidings_command
from tidings.providers.fake_rules import NO_RECEIPT, PERMANENT_FAILURE, RECEIPT_FAILED

TEMPLATE = "Hello {{ first_name }}, your visit at {{ clinic }} is on {{ day }}."
SUMMARY = re.compile(r"^batch (\S+)  group (\S+)$", re.MULTILINE)


def number(i: int) -> str:
    """A valid US number that is none of the fake provider's magic ones (which end 0101 to 0105)."""
    return f"+1202555{2000 + i % 8000:04d}"


@dataclass
class Server:
    served: Served
    key: str

    @property
    def url(self) -> str:
        return self.served.base_url

    def remote(self) -> list[str]:
        return ["--url", self.url, "--key", self.key]

    def get(self, path: str, **params: Any) -> Any:
        response = httpx.get(self.url + path, params=params, headers=auth(self.key), timeout=30)
        assert response.status_code == 200, response.text
        return response.json()

    def messages(self, batch_id: str) -> list[dict[str, Any]]:
        """Every message of the batch, page by page (``GET /v1/messages?batch=ID``)."""
        found: list[dict[str, Any]] = []
        cursor: str | None = None
        while True:
            params: dict[str, Any] = {"batch": batch_id, "limit": 500}
            if cursor is not None:
                params["cursor"] = cursor
            page = self.get("/v1/messages", **params)
            found += page["data"]
            cursor = page["next_cursor"]
            if cursor is None:
                return found


def start_server(directory: Path, env: dict[str, str] | None = None) -> Server:
    served = Served(directory, ["serve"], env if env is not None else clean_env(), free_port())
    try:
        key = served.wait_for_key()
        served.wait_healthy()
    except BaseException:
        served.close()
        raise
    return Server(served, key)


@pytest.fixture
def server(tmp_path: Path) -> Iterator[Server]:
    """``tidings serve`` on a fresh SQLite file, and the first key it printed."""
    running = start_server(tmp_path)
    try:
        yield running
    finally:
        running.served.close()


def write_csv(path: Path, rows: list[list[str]]) -> Path:
    with path.open("w", newline="", encoding="utf-8") as handle:
        csv.writer(handle).writerows(rows)
    return path


def send_batch(
    directory: Path, *args: str, env: dict[str, str] | None = None
) -> subprocess.CompletedProcess[str]:
    return run_cli(directory, "send-batch", *args, env=env)


def summary(done: subprocess.CompletedProcess[str]) -> tuple[str, str]:
    """The batch id and group id a summary names."""
    return summary_of(done.stdout, done.stderr)


def summary_of(stdout: str, stderr: str = "") -> tuple[str, str]:
    found = SUMMARY.search(stdout)
    assert found, stdout + stderr
    return found.group(1), found.group(2)


def wait_until_final(server: Server, batch_id: str, timeout: float) -> dict[str, Any]:
    deadline = time.monotonic() + timeout
    while True:
        batch: dict[str, Any] = server.get(f"/v1/batches/{batch_id}")
        if batch["progress"]["final"] == batch["accepted"]:
            return batch
        if time.monotonic() > deadline:
            pytest.fail(f"batch not final after {timeout}s: {batch['counts']}")
        time.sleep(0.1)


class Started:
    """``tidings send-batch`` running in the background; its standard error read line by line."""

    def __init__(self, directory: Path, *args: str) -> None:
        self.process = subprocess.Popen(
            [*tidings_command(), "send-batch", *args],
            cwd=directory,
            env=clean_env(),
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        self.errors: queue.Queue[str | None] = queue.Queue()
        threading.Thread(target=self._read, daemon=True).start()

    def _read(self) -> None:
        assert self.process.stderr is not None
        for line in self.process.stderr:
            self.errors.put(line)
        self.errors.put(None)

    def wait_for(self, text: str, timeout: float = 60) -> None:
        deadline = time.monotonic() + timeout
        while True:
            try:
                line = self.errors.get(timeout=max(0.01, deadline - time.monotonic()))
            except queue.Empty:
                pytest.fail(f"send-batch did not print {text!r} within {timeout}s")
            if line is None:
                pytest.fail(f"send-batch exited ({self.process.wait()}) without printing {text!r}")
            if text in line:
                return

    def __enter__(self) -> Started:
        return self

    def __exit__(self, *exc: object) -> None:
        if self.process.poll() is None:
            self.process.kill()
        self.process.wait()
        for pipe in (self.process.stdout, self.process.stderr):
            if pipe is not None:
                pipe.close()


CLINIC_ROWS = [
    ["to", "first_name", "clinic", "tags"],
    ["+12025550123", "Amina", "Kibera Health Centre", "patient-1; vip"],
    ["+12025550124", "Otieno", "", ""],
    ["+1 202 555 0125", "Wanjiru", "Mathare Clinic", ""],
]
CLINIC_BODIES = {
    "+12025550123": "Hello Amina, your visit at Kibera Health Centre is on Friday.",
    "+12025550124": "Hello Otieno, your visit at Main Clinic is on Friday.",
    "+12025550125": "Hello Wanjiru, your visit at Mathare Clinic is on Friday.",
}
CLINIC_OPTIONS = ["--template", TEMPLATE, "--context", "day=Friday", "--context", "clinic=Main Clinic"]


# -- through a running tidings ---------------------------------------------------------------------


@pytest.mark.slow
def test_a_csv_file_becomes_one_message_a_row_rendered_from_the_template(
    tmp_path: Path, server: Server
) -> None:
    file = write_csv(tmp_path / "visits.csv", CLINIC_ROWS)
    done = send_batch(tmp_path, str(file), *CLINIC_OPTIONS, "--tag", "reminders", *server.remote())

    assert done.returncode == 0, done.stderr
    batch_id, group_id = summary(done)
    assert group_id.startswith("file-")
    assert "accepted 3 of 3 recipients" in done.stdout
    assert "refused" not in done.stdout
    assert "uploading 3 recipients" in done.stderr
    assert "Traceback" not in done.stderr

    sent = {m["to"]: m for m in server.messages(batch_id)}
    assert {to: m["body"] for to, m in sent.items()} == CLINIC_BODIES
    # The tags column, split on ";", adds to the batch's --tag.
    assert set(sent["+12025550123"]["tags"]) == {"reminders", "patient-1", "vip"}
    assert sent["+12025550124"]["tags"] == ["reminders"]
    assert server.get(f"/v1/batches/{batch_id}")["group_id"] == group_id


@pytest.mark.slow
def test_json_lines_are_recipients_in_the_apis_shape(tmp_path: Path, server: Server) -> None:
    file = tmp_path / "people.jsonl"
    lines = [
        {"to": "+12025550131", "first_name": "Amina", "context": {"clinic": "Kibera"}, "tags": ["a"]},
        {"to": "+12025550132", "first_name": "Otieno", "metadata": {"ref": "r-2"}},
    ]
    file.write_text("\n".join(json.dumps(line) for line in lines[:1]) + "\n\n" + json.dumps(lines[1]) + "\n")

    done = send_batch(tmp_path, str(file), *CLINIC_OPTIONS, "--json", *server.remote())

    assert done.returncode == 0, done.stderr
    result = json.loads(done.stdout)
    assert (result["total"], result["accepted"], result["refused"], result["repeat"]) == (2, 2, [], False)
    sent = {m["to"]: m for m in server.messages(result["id"])}
    assert sent["+12025550131"]["body"] == "Hello Amina, your visit at Kibera is on Friday."
    assert sent["+12025550131"]["tags"] == ["a"]
    assert sent["+12025550132"]["body"] == "Hello Otieno, your visit at Main Clinic is on Friday."
    assert sent["+12025550132"]["metadata"] == {"ref": "r-2"}


class Capture(http.server.BaseHTTPRequestHandler):
    """Records one request's headers and body; answers like tidings accepting a batch."""

    seen: queue.Queue[tuple[dict[str, str], bytes]] = queue.Queue()

    def do_POST(self) -> None:
        body = self.rfile.read(int(self.headers["Content-Length"]))
        self.seen.put((dict(self.headers.items()), body))
        answer = json.dumps(
            {"id": "b1", "group_id": "g", "channel": "sms", "total": 1, "accepted": 1, "refused": []}
        ).encode()
        self.send_response(202)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(answer)))
        self.end_headers()
        self.wfile.write(answer)

    def log_message(self, format: str, *args: Any) -> None:
        pass


@pytest.mark.slow
def test_msgpack_sends_the_same_batch_in_messagepack(tmp_path: Path, server: Server) -> None:
    file = write_csv(tmp_path / "visits.csv", CLINIC_ROWS)

    packed = send_batch(tmp_path, str(file), *CLINIC_OPTIONS, "--msgpack", *server.remote())
    assert packed.returncode == 0, packed.stderr
    batch_id, _group = summary(packed)
    assert {m["to"]: m["body"] for m in server.messages(batch_id)} == CLINIC_BODIES
    # The same command in JSON is the same batch: the encoding is not part of it.
    plain = send_batch(tmp_path, str(file), *CLINIC_OPTIONS, *server.remote())
    assert plain.returncode == 0, plain.stderr
    assert "already accepted earlier; nothing sent twice" in plain.stdout
    assert summary(plain)[0] == batch_id

    # On the wire: a MessagePack body of the stated length, equal to the JSON one.
    stub = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Capture)
    thread = threading.Thread(target=stub.serve_forever, daemon=True)
    thread.start()
    try:
        stub_url = f"http://127.0.0.1:{stub.server_address[1]}"
        bodies = {}
        for flags in (["--msgpack"], []):
            done = send_batch(tmp_path, str(file), *CLINIC_OPTIONS, *flags, "--url", stub_url, "--key", "k")
            assert done.returncode == 0, done.stderr
            headers, body = Capture.seen.get(timeout=10)
            assert headers["Authorization"] == "Bearer k"
            bodies[headers["Content-Type"]] = body
    finally:
        stub.shutdown()
        stub.server_close()
    assert msgpack.unpackb(bodies["application/msgpack"]) == json.loads(bodies["application/json"])
    assert len(json.loads(bodies["application/json"])["recipients"]) == 3


@pytest.mark.slow
def test_refused_recipients_are_shown_with_the_line_of_the_file(tmp_path: Path, server: Server) -> None:
    file = tmp_path / "mixed.csv"
    rows = ["to,first_name,clinic,day"]
    rows.append("+12025550141,Amina,Kibera,Friday")  # line 2
    rows.append("")  # line 3: skipped
    rows.append('not-a-number,"Otieno\nthe second",Kibera,Friday')  # lines 4-5
    rows.append("+12025550142,,Kibera,Friday")  # line 6: no first_name: the template cannot render
    rows += [f"12345{i},Bad,Kibera,Friday" for i in range(22)]  # lines 7-28
    file.write_text("\n".join(rows) + "\n")

    done = send_batch(tmp_path, str(file), "--template", TEMPLATE, *server.remote())

    assert done.returncode == 0, done.stderr
    assert "accepted 1 of 25 recipients" in done.stdout
    assert "refused 24:" in done.stdout
    table = done.stdout.splitlines()
    row_of = {line.split()[0]: line.split() for line in table if re.match(r"^\d+\s+\d+\s", line)}
    assert row_of["1"][:4] == ["1", "4", "not-a-number", "invalid_phone_number"]
    assert row_of["2"][:4] == ["2", "6", "+12025550142", "render_failed"]
    assert row_of["3"][:4] == ["3", "7", "123450", "invalid_phone_number"]
    assert len(row_of) == 20
    assert "and 4 more" in done.stdout

    # With --json, every refusal, with its line.
    again = send_batch(tmp_path, str(file), "--template", TEMPLATE, "--json", *server.remote())
    assert again.returncode == 0, again.stderr
    result = json.loads(again.stdout)
    assert result["repeat"] is True
    assert [(r["index"], r["line"]) for r in result["refused"][:3]] == [(1, 4), (2, 6), (3, 7)]
    assert result["refused"][-1]["line"] == 28 and len(result["refused"]) == 24

    # When every recipient is refused, the batch is: exit 1, with tidings' code and message.
    bad = write_csv(tmp_path / "bad.csv", [["to", "first_name"], ["nope", "A"], ["+12025550143", ""]])
    refused = send_batch(tmp_path, str(bad), "--template", "Hi {{ first_name }}", *server.remote())
    assert refused.returncode == 1
    error = refused.stderr.strip().splitlines()[-1]
    assert error.startswith("tidings: batch not accepted: batch_refused: "), refused.stderr
    assert "recipient 0 (line 2): invalid_phone_number" in error
    assert "recipient 1 (line 3): render_failed" in error
    assert refused.stdout == ""


@pytest.mark.slow
def test_a_rerun_of_the_same_file_sends_nothing_twice(tmp_path: Path, server: Server) -> None:
    file = write_csv(tmp_path / "visits.csv", CLINIC_ROWS)
    command = [str(file), *CLINIC_OPTIONS, *server.remote()]
    first = send_batch(tmp_path, *command)
    assert first.returncode == 0, first.stderr
    batch_id, group_id = summary(first)
    assert "already accepted" not in first.stdout

    again = send_batch(tmp_path, *command)
    assert again.returncode == 0, again.stderr
    assert "already accepted earlier; nothing sent twice" in again.stdout
    assert summary(again) == (batch_id, group_id)
    assert len(server.messages(batch_id)) == 3
    assert len(server.get("/v1/batches")["data"]) == 1

    # Another template for the same file is another batch: refused, with what to do.
    changed = send_batch(tmp_path, str(file), "--template", "Hi {{ first_name }}", *server.remote())
    assert changed.returncode == 1
    assert "idempotency_conflict" in changed.stderr and "--group-id" in changed.stderr
    # Under its own group id it is sent.
    other = send_batch(
        tmp_path, str(file), "--template", "Hi {{ first_name }}", "--group-id", "second", *server.remote()
    )
    assert other.returncode == 0, other.stderr
    second_id, second_group = summary(other)
    assert second_group == "second" and second_id != batch_id
    assert sorted(m["body"] for m in server.messages(second_id)) == ["Hi Amina", "Hi Otieno", "Hi Wanjiru"]
    assert len(server.messages(batch_id)) == 3


@pytest.mark.slow
def test_an_upload_killed_at_any_point_then_run_again_stores_every_message_once(
    tmp_path: Path, server: Server
) -> None:
    count = 20_000
    rows = [["to", "first_name", "clinic"]] + [[number(i), f"Person {i}", "Kibera"] for i in range(count)]
    file = write_csv(tmp_path / "large.csv", rows)
    command = [str(file), "--template", "Hello {{ first_name }} at {{ clinic }}", *server.remote()]

    with Started(tmp_path, *command) as started:
        started.wait_for("uploading")
        started.process.send_signal(signal.SIGKILL)
        started.process.wait(timeout=10)

    done = send_batch(tmp_path, *command, "--json")
    assert done.returncode == 0, done.stderr
    result = json.loads(done.stdout)
    assert (result["total"], result["accepted"], result["refused"]) == (count, count, [])
    assert len(server.get("/v1/batches")["data"]) == 1
    sent = server.messages(result["id"])
    assert len(sent) == count
    assert len({m["id"] for m in sent}) == count
    assert {m["body"] for m in sent[:3]} <= {f"Hello Person {i} at Kibera" for i in range(count)}


@pytest.mark.slow
def test_follow_shows_the_delivery_until_every_message_is_final(tmp_path: Path, server: Server) -> None:
    rows = [["to", "first_name"], [number(1), "A"], [number(2), "B"], [PERMANENT_FAILURE, "C"]]
    rows.append([RECEIPT_FAILED, "D"])
    file = write_csv(tmp_path / "follow.csv", rows)

    done = send_batch(tmp_path, str(file), "--template", "Hi {{ first_name }}", "--follow", *server.remote())

    assert done.returncode == 0, done.stderr
    assert "all 4 messages are final: delivered 2, failed 2" in done.stdout
    batch_id, _group = summary(done)
    batch = server.get(f"/v1/batches/{batch_id}")
    assert batch["counts"] == {"delivered": 2, "failed": 2}

    # Following again (a repeat) ends at once, and --json gives the counts.
    again = send_batch(
        tmp_path, str(file), "--template", "Hi {{ first_name }}", "--follow", "--json", *server.remote()
    )
    assert again.returncode == 0, again.stderr
    result = json.loads(again.stdout)
    assert (result["repeat"], result["follow"], result["counts"]) == (True, "complete", batch["counts"])
    assert result["progress"]["final"] == result["progress"]["total"] == 4


@pytest.mark.slow
def test_ctrl_c_stops_following_not_the_batch(tmp_path: Path, server: Server) -> None:
    file = write_csv(tmp_path / "stuck.csv", [["to"], [NO_RECEIPT], [number(3)]])
    with Started(tmp_path, str(file), "--template", "Hi", "--follow", *server.remote()) as started:
        started.wait_for("Ctrl-C stops following")
        started.process.send_signal(signal.SIGINT)
        assert started.process.wait(timeout=30) == 0
        assert started.process.stdout is not None
        printed = started.process.stdout.read()
    assert "stopped following (Ctrl-C); the batch goes on" in printed
    batch_id, _group = summary_of(printed)
    # The batch goes on: one message is delivered, the other stays sent (no receipt ever comes).
    deadline = time.monotonic() + 20
    while True:
        counts = server.get(f"/v1/batches/{batch_id}")["counts"]
        if counts == {"delivered": 1, "sent": 1}:
            break
        if time.monotonic() > deadline:
            pytest.fail(f"the batch did not go on: {counts}")
        time.sleep(0.1)


# -- straight into the database ------------------------------------------------------------------


@pytest.mark.slow
def test_without_url_the_batch_is_written_to_the_database_for_the_worker(tmp_path: Path) -> None:
    database = tmp_path / "direct.db"
    env = clean_env(TIDINGS_DATABASE_URL=f"sqlite:///{database}")
    file = write_csv(tmp_path / "visits.csv", CLINIC_ROWS)
    # The client's key in the environment is not a setting: it must not stop the command.
    with_key = {**env, "TIDINGS_API_KEY": "tdg_not_used_without_url"}

    done = send_batch(tmp_path, str(file), *CLINIC_OPTIONS, env=with_key)
    assert done.returncode == 0, done.stderr
    batch_id, _group = summary(done)
    assert "accepted 3 of 3 recipients" in done.stdout
    again = send_batch(tmp_path, str(file), *CLINIC_OPTIONS, env=with_key)
    assert again.returncode == 0, again.stderr
    assert "already accepted earlier; nothing sent twice" in again.stdout
    assert summary(again)[0] == batch_id

    # A tidings on that database has the messages, and sends them.
    server = start_server(tmp_path, env)
    try:
        assert {m["to"]: m["body"] for m in server.messages(batch_id)} == CLINIC_BODIES
        assert wait_until_final(server, batch_id, timeout=20)["counts"] == {"delivered": 3}

        # --follow reads the database while that tidings delivers.
        followed = send_batch(
            tmp_path,
            str(file),
            *["--template", "Bye {{ first_name }}", "--group-id", "bye", "--follow", "--json"],
            env=env,
        )
        assert followed.returncode == 0, followed.stderr
        result = json.loads(followed.stdout)
        assert (result["follow"], result["counts"], result["accepted"]) == ("complete", {"delivered": 3}, 3)
        assert result["id"] != batch_id
    finally:
        server.served.close()


# -- mistakes --------------------------------------------------------------------------------------


@pytest.mark.slow
def test_usage_errors_are_one_line_and_exit_code_2(tmp_path: Path) -> None:
    good = write_csv(tmp_path / "good.csv", [["to", "name"], ["+12025550123", "A"]])
    no_to = write_csv(tmp_path / "no-to.csv", [["phone", "name"], ["+12025550123", "A"]])
    empty_to = write_csv(tmp_path / "empty-to.csv", [["to", "name"], ["+12025550123", "A"], ["", "B"]])
    wide = tmp_path / "wide.csv"
    wide.write_text("to,name\n+12025550123,A,extra\n")
    bad_json = tmp_path / "bad.jsonl"
    bad_json.write_text('{"to": "+12025550123"}\n{"to": \n')
    unknown_field = tmp_path / "unknown.jsonl"
    unknown_field.write_text('{"to": "+12025550123", "frist_name": "A"}\n')
    text = tmp_path / "people.txt"
    text.write_text("to\n+12025550123\n")
    blank = tmp_path / "blank.csv"
    blank.write_text("to,name\n\n")
    template = ["--template", "Hi"]
    url = ["--url", f"http://127.0.0.1:{free_port()}"]
    cases: dict[str, tuple[list[str], str]] = {
        "missing file": ([str(tmp_path / "nope.csv"), *template], "no such file"),
        "no to column": ([str(no_to), *template], "has no `to` column"),
        "empty to": ([str(empty_to), *template], "empty-to.csv, line 3: the `to` cell is empty"),
        "more cells": ([str(wide), *template], "wide.csv, line 2: 3 cells"),
        "bad json": ([str(bad_json), *template], "bad.jsonl, line 2: not valid JSON"),
        "unknown field": ([str(unknown_field), *template], "unknown.jsonl, line 1: frist_name"),
        "no recipients": ([str(blank), *template], "has no recipients"),
        "unknown format": ([str(text), *template], "--format"),
        "two templates": ([str(good), *template, "--template-id", "t1"], "only one of"),
        "no template": ([str(good)], "--template-file"),
        "template file": ([str(good), "--template-file", str(tmp_path / "none.j2")], "none.j2"),
        "bad context": ([str(good), *template, "--context", "oops"], "KEY=VALUE"),
        "bad send_at": ([str(good), *template, "--send-at", "tomorrow"], "--send-at"),
        "url without key": ([str(good), *template, *url], "--key"),
        "not a url": ([str(good), *template, "--url", "localhost", "--key", "k"], "--url"),
    }
    for name, (args, says) in cases.items():
        done = send_batch(tmp_path, *args)
        assert done.returncode == 2, (name, done.returncode, done.stderr)
        lines = done.stderr.strip().splitlines()
        assert len(lines) == 1, (name, done.stderr)
        assert lines[0].startswith("tidings: ") and says in lines[0], (name, lines[0])
        assert done.stdout == "", name
    # Nothing was made: no database for the file that could not be read.
    assert not (tmp_path / "tidings.db").exists()
    # --format reads a file whatever its name.
    named = send_batch(tmp_path, str(text), *template, "--format", "csv", *url, "--key", "k")
    assert named.returncode == 1, named.stderr


def test_a_tidings_out_of_reach_is_exit_code_1_saying_a_rerun_is_safe(tmp_path: Path) -> None:
    file = write_csv(tmp_path / "one.csv", [["to"], ["+12025550123"]])
    url = f"http://127.0.0.1:{free_port()}"
    done = send_batch(tmp_path, str(file), "--template", "Hi", "--url", url, "--key", "k")
    assert done.returncode == 1
    message = done.stderr.strip().splitlines()[-1]
    assert f"could not reach {url}" in message
    assert "re-run the same command: nothing is sent twice" in message
    assert "Traceback" not in done.stderr


@pytest.mark.slow
def test_a_wrong_key_is_exit_code_1_with_tidings_answer(tmp_path: Path, server: Server) -> None:
    file = write_csv(tmp_path / "one.csv", [["to"], ["+12025550123"]])
    env = clean_env(TIDINGS_API_KEY="tdg_wrong")
    done = send_batch(tmp_path, str(file), "--template", "Hi", "--url", server.url, "--json", env=env)
    assert done.returncode == 1
    assert json.loads(done.stdout)["error"]["code"] == "unauthorized"
    assert "unauthorized" in done.stderr and "TIDINGS_API_KEY" in done.stderr
    # The key from the environment is used.
    right = send_batch(
        tmp_path,
        str(file),
        "--template",
        "Hi",
        "--url",
        server.url,
        env=clean_env(TIDINGS_API_KEY=server.key),
    )
    assert right.returncode == 0, right.stderr


@pytest.mark.slow
def test_a_file_larger_than_the_server_takes_is_exit_code_1_saying_so(tmp_path: Path) -> None:
    server = start_server(tmp_path, clean_env(TIDINGS_MAX_BATCH_BYTES="1024"))
    try:
        rows = [["to", "first_name"]] + [[number(i), f"Person {i}"] for i in range(200)]
        file = write_csv(tmp_path / "large.csv", rows)
        done = send_batch(tmp_path, str(file), "--template", "Hi {{ first_name }}", *server.remote())
        assert done.returncode == 1
        error = done.stderr.strip().splitlines()[-1]
        assert error.startswith("tidings: batch not accepted: payload_too_large: "), done.stderr
        assert "max_batch_bytes" in error
        assert server.get("/v1/batches")["data"] == []
    finally:
        server.served.close()
