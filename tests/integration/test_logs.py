"""Logs an operator's tools can read: JSON lines, an access line per request with its request id,
and the request id on every line the request causes."""

from __future__ import annotations

import logging

import httpx
import orjson
import pytest

from tidings.logs import JsonFormatter, KeyValueFormatter


async def test_every_request_gets_an_id_on_its_answer_and_its_log_lines(
    api: httpx.AsyncClient, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO)
    mine = await api.get("/v1/messages", headers={"X-Request-Id": "client-req.42"})
    assert mine.headers["x-request-id"] == "client-req.42"
    made = await api.get("/v1/messages", headers={"X-Request-Id": "bad id\twith spaces"})
    assert made.headers["x-request-id"] != "bad id\twith spaces" and len(made.headers["x-request-id"]) == 26
    # A refused webhook logs a warning inside its request: it carries the request's id.
    refused = await api.post(
        "/webhooks/fake/fake/status",
        content=b"{}",
        headers={"Content-Type": "application/json", "X-Request-Id": "r-9"},
    )
    assert refused.status_code == 403
    access = [r for r in caplog.records if r.name == "tidings.access"]
    assert [(r.path, r.status, r.request_id) for r in access] == [  # type: ignore[attr-defined]
        ("/v1/messages", 200, "client-req.42"),
        ("/v1/messages", 200, made.headers["x-request-id"]),
        ("/webhooks/fake/fake/status", 403, "r-9"),
    ]
    [warning] = [r for r in caplog.records if r.levelno == logging.WARNING and "refused" in r.getMessage()]
    assert warning.request_id == "r-9"  # type: ignore[attr-defined]


def test_json_lines_carry_the_message_its_fields_and_any_traceback() -> None:
    logger = logging.getLogger("tidings.test")
    record = logger.makeRecord(
        "tidings.test",
        logging.ERROR,
        __file__,
        1,
        "message %s failed",
        ("01ABC",),
        None,
        extra={"action": "fail", "message_id": "01ABC"},
    )
    try:
        raise ValueError("boom")
    except ValueError:
        import sys

        record.exc_info = sys.exc_info()
    line = JsonFormatter().format(record)
    entry = orjson.loads(line)
    assert entry["message"] == "message 01ABC failed" and entry["level"] == "ERROR"
    assert entry["action"] == "fail" and entry["message_id"] == "01ABC"
    assert "ValueError: boom" in entry["exception"] and "\n" not in line
    text = KeyValueFormatter("%(levelname)s %(message)s").format(record)
    assert text.startswith("ERROR message 01ABC failed") and "message_id=01ABC" in text
