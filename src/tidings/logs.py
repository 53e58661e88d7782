"""Log set-up: one line per record, JSON for the machines that collect logs (the default when
standard error is not a terminal), ``key=value`` text for a person at a terminal.

Every record carries the fields given as ``extra`` (``action``, ``message_id``, ``provider``…), and
while an HTTP request is being answered, its ``request_id``.
"""

from __future__ import annotations

import contextvars
import logging
import sys
from datetime import UTC, datetime
from typing import Any, Literal

import orjson

_STANDARD = set(logging.LogRecord("", 0, "", 0, "", None, None).__dict__) | {
    "message",
    "asctime",
    "color_message",
}

request_id: contextvars.ContextVar[str | None] = contextvars.ContextVar("request_id", default=None)
"""The id of the HTTP request being answered (``X-Request-Id``), on every log line it causes."""

Format = Literal["auto", "json", "text"]


def _extras(record: logging.LogRecord) -> dict[str, Any]:
    return {k: v for k, v in record.__dict__.items() if k not in _STANDARD and not k.startswith("_")}


_make_record = logging.getLogRecordFactory()


def _record_with_request_id(*args: Any, **kwargs: Any) -> logging.LogRecord:
    # Taken when the record is made, inside the request, whenever and wherever it is written.
    record = _make_record(*args, **kwargs)
    current = request_id.get()
    if current is not None and not hasattr(record, "request_id"):
        record.request_id = current
    return record


logging.setLogRecordFactory(_record_with_request_id)


class KeyValueFormatter(logging.Formatter):
    """``time LEVEL logger: message key=value …``"""

    def format(self, record: logging.LogRecord) -> str:
        line = super().format(record)
        extras = _extras(record)
        if extras:
            line += " " + " ".join(f"{k}={v}" for k, v in extras.items())
        return line


class JsonFormatter(logging.Formatter):
    """One JSON object per line: ``time`` (UTC, ISO 8601), ``level``, ``logger``, ``message``, the
    extra fields, and ``exception`` with the traceback when there is one."""

    def format(self, record: logging.LogRecord) -> str:
        entry: dict[str, Any] = {
            "time": datetime.fromtimestamp(record.created, UTC).isoformat(timespec="milliseconds"),
            "level": record.levelname,
            "logger": record.name,
            "message": record.getMessage(),
        }
        entry.update(_extras(record))
        if record.exc_info:
            entry["exception"] = self.formatException(record.exc_info)
        return orjson.dumps(entry, default=str).decode()


def configure(level: str = "INFO", format: Format = "auto") -> None:
    handler = logging.StreamHandler(sys.stderr)
    as_json = format == "json" or (format == "auto" and not sys.stderr.isatty())
    handler.setFormatter(
        JsonFormatter() if as_json else KeyValueFormatter("%(asctime)s %(levelname)s %(name)s: %(message)s")
    )
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level)
    # tidings writes its own access log (with the request id); uvicorn's would repeat it.
    logging.getLogger("uvicorn.access").setLevel(logging.WARNING)
    logging.getLogger("alembic").setLevel(logging.WARNING)
