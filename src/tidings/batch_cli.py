"""``tidings send-batch FILE``: send a CSV or JSON-lines file of recipients as one batch.

The batch goes to a running tidings (``--url`` and ``--key``: ``POST /v1/batches``) or, without
``--url``, straight into the configured database through the same batch service the API uses.

Sending twice is safe. The batch's ``group_id`` is its idempotency key, and by default it is a hash
of the file; the request body depends only on the file and the options (nothing in it changes
from one run to the next). So after an interruption, a lost connection or a lost answer, running
the same command again either stores the batch (if the first run never got that far) or gets the
first result back (if it did): no recipient gets a message twice.
"""

from __future__ import annotations

import asyncio
import csv
import enum
import hashlib
import re
import signal
import sys
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any, TypeVar

import aiohttp
import msgpack
import orjson
import typer
from pydantic import ValidationError
from rich.console import Console
from rich.markup import escape
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    TaskID,
    TextColumn,
    TimeElapsedColumn,
)
from rich.table import Table
from yarl import URL

from tidings.api.schemas import batch_json
from tidings.domain.batches import FINAL, BatchIn, RecipientIn
from tidings.errors import TidingsError

if TYPE_CHECKING:
    from tidings.services import Service

T = TypeVar("T")

API_KEY_VARIABLE = "TIDINGS_API_KEY"
CHUNK_BYTES = 64 * 1024
"""The request body is sent in pieces of this size; the upload bar moves once per piece."""
POLL_SECONDS = 0.5
"""How often ``--follow`` asks for the batch's progress."""
FOLLOW_GIVE_UP_SECONDS = 30.0
"""``--follow`` stops after this long without an answer (the batch goes on regardless)."""
REFUSALS_SHOWN = 20
ANSWER_TIMEOUT_SECONDS = 900.0
"""How long to wait for tidings to answer once the body is sent (it stores the whole batch first)."""
RERUN = "re-run the same command: nothing is sent twice"
STOPPED_BY_USER = "stopped following (Ctrl-C)"

# Columns of a CSV file that are fields of a recipient, not template values.
TO, FIRST_NAME, LAST_NAME, TAGS = "to", "first_name", "last_name", "tags"
FIELD_COLUMNS = (TO, FIRST_NAME, LAST_NAME, TAGS)

OPTION_OF_FIELD = {
    "group_id": "--group-id",
    "template": "--template",
    "template_id": "--template-id",
    "context": "--context",
    "sender": "--sender",
    "provider": "--provider",
    "send_at": "--send-at",
    "tags": "--tag",
}


class FileFormat(enum.StrEnum):
    CSV = "csv"
    JSONL = "jsonl"


SUFFIXES = {".csv": FileFormat.CSV, ".jsonl": FileFormat.JSONL, ".ndjson": FileFormat.JSONL}


class UsageError(Exception):
    """The command line or the file is wrong: nothing was sent (exit code 2)."""

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message


class Refused(Exception):
    """tidings did not accept the batch, or could not be reached (exit code 1)."""

    def __init__(
        self, code: str, message: str, field: str | None = None, *, status: int | None = None
    ) -> None:
        super().__init__(message)
        self.code = code
        self.message = message
        self.field = field
        self.status = status
        """The HTTP status of tidings' answer (``None``: no answer, or written directly)."""

    def to_dict(self) -> dict[str, Any]:
        error: dict[str, Any] = {"code": self.code, "message": self.message}
        if self.field is not None:
            error["field"] = self.field
        return {"error": error}


class Unreachable(Refused):
    """tidings could not be reached, or the connection broke before it answered."""

    def __init__(self, url: str, exc: BaseException) -> None:
        reason = str(exc).strip() or type(exc).__name__
        super().__init__("unreachable", f"could not reach {url}: {reason}; {RERUN}")


# -- reading the file ----------------------------------------------------------------------------


@dataclass
class Recipients:
    """The file's recipients in the API's shape, with the line each one starts on."""

    path: Path
    items: list[dict[str, Any]]
    lines: list[int]
    digest: str
    """SHA-256 of the file's bytes: the default group id is made from it."""


def file_format(path: Path, given: FileFormat | None) -> FileFormat:
    if given is not None:
        return given
    found = SUFFIXES.get(path.suffix.lower())
    if found is None:
        raise UsageError(
            f"cannot tell the format of {path} from its name: pass --format csv or --format jsonl"
        )
    return found


def file_digest(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        while block := handle.read(1 << 20):
            digest.update(block)
    return digest.hexdigest()


def read_recipients(path: Path, fmt: FileFormat) -> Recipients:
    """Every recipient of the file, each checked as the API would check it; :class:`UsageError`
    naming the line when one cannot be sent at all."""
    if not path.exists():
        raise UsageError(f"no such file: {path}")
    if not path.is_file():
        raise UsageError(f"not a file: {path}")
    try:
        digest = file_digest(path)
        items, lines = _read_csv(path) if fmt is FileFormat.CSV else _read_jsonl(path)
    except OSError as exc:
        raise UsageError(f"cannot read {path}: {exc.strerror or exc}") from exc
    except UnicodeDecodeError as exc:
        raise UsageError(f"{path} is not UTF-8 text ({exc.reason} at byte {exc.start})") from exc
    if not items:
        raise UsageError(f"{path} has no recipients")
    return Recipients(path=path, items=items, lines=lines, digest=digest)


def _checked(recipient: dict[str, Any], path: Path, line: int) -> dict[str, Any]:
    """``recipient`` as read, once :class:`RecipientIn` takes it (the model is not kept: the body
    sent is what the file says)."""
    try:
        RecipientIn.model_validate(recipient)
    except ValidationError as exc:
        raise UsageError(f"{path}, line {line}: {_first_error(exc)}") from exc
    return recipient


def _first_error(exc: ValidationError) -> str:
    error = exc.errors(include_url=False)[0]
    where = ".".join(str(part) for part in error["loc"])
    return f"{where}: {error['msg']}" if where else str(error["msg"])


def _csv_columns(path: Path, header: list[str]) -> list[str]:
    """The header's column names, trimmed; the four recipient fields in lower case."""
    names = [name.strip() for name in header]
    names = [name.lower() if name.lower() in FIELD_COLUMNS else name for name in names]
    seen: set[str] = set()
    for name in names:
        if name and name in seen:
            raise UsageError(f"{path}: the column {name!r} appears twice in the header")
        seen.add(name)
    if TO not in seen:
        shown = ",".join(names)[:200]
        raise UsageError(f"{path} has no `to` column: its first line must name the columns (it is: {shown})")
    return names


def _read_csv(path: Path) -> tuple[list[dict[str, Any]], list[int]]:
    items: list[dict[str, Any]] = []
    lines: list[int] = []
    with path.open(encoding="utf-8-sig", newline="") as handle:
        reader = csv.reader(handle)
        try:
            header = next(reader, None)
            if header is None:
                raise UsageError(f"{path} is empty: its first line must name the columns, one of them `to`")
            names = _csv_columns(path, header)
            ended = reader.line_num
            for row in reader:
                line, ended = ended + 1, reader.line_num
                if not any(cell.strip() for cell in row):
                    continue
                items.append(_checked(_csv_recipient(path, line, names, row), path, line))
                lines.append(line)
        except csv.Error as exc:
            raise UsageError(f"{path}, line {reader.line_num}: not valid CSV: {exc}") from exc
    return items, lines


def _csv_recipient(path: Path, line: int, names: list[str], row: list[str]) -> dict[str, Any]:
    if len(row) > len(names):
        raise UsageError(f"{path}, line {line}: {len(row)} cells, but the header names {len(names)} columns")
    recipient: dict[str, Any] = {}
    context: dict[str, str] = {}
    for position, (name, cell) in enumerate(zip(names, row, strict=False), 1):
        value = cell.strip()
        if not value:
            continue
        if not name:
            raise UsageError(f"{path}, line {line}: a value in column {position}, which has no name")
        if name == TAGS:
            tags = [tag.strip() for tag in value.split(";") if tag.strip()]
            if tags:
                recipient[TAGS] = tags
        elif name in (TO, FIRST_NAME, LAST_NAME):
            recipient[name] = value
        else:
            context[name] = value
    if TO not in recipient:
        raise UsageError(f"{path}, line {line}: the `to` cell is empty")
    if context:
        recipient["context"] = context
    return recipient


def _read_jsonl(path: Path) -> tuple[list[dict[str, Any]], list[int]]:
    items: list[dict[str, Any]] = []
    lines: list[int] = []
    with path.open("rb") as handle:
        for line, raw in enumerate(handle, 1):
            text = raw.removeprefix(b"\xef\xbb\xbf") if line == 1 else raw
            if not text.strip():
                continue
            try:
                recipient = orjson.loads(text)
            except orjson.JSONDecodeError as exc:
                raise UsageError(f"{path}, line {line}: not valid JSON: {exc}") from exc
            if not isinstance(recipient, dict):
                raise UsageError(
                    f'{path}, line {line}: a recipient is an object, like {{"to": "+254712345678"}}'
                )
            items.append(_checked(recipient, path, line))
            lines.append(line)
    return items, lines


# -- the request ---------------------------------------------------------------------------------


@dataclass
class Options:
    """The command line, checked."""

    template: str | None
    template_id: str | None
    group_id: str | None
    tags: list[str]
    context: dict[str, str]
    sender: str | None
    provider: str | None
    send_at: str | None


def parse_context(pairs: list[str]) -> dict[str, str]:
    context: dict[str, str] = {}
    for pair in pairs:
        name, equals, value = pair.partition("=")
        if not equals or not name.strip():
            raise UsageError(f"--context {pair!r}: write it as KEY=VALUE")
        context[name.strip()] = value
    return context


def pick_template(template: str | None, template_file: Path | None, template_id: str | None) -> str | None:
    """The template text (``None`` with ``--template-id``); exactly one of the three is given."""
    given = [
        name
        for name, value in (
            ("--template", template),
            ("--template-file", template_file),
            ("--template-id", template_id),
        )
        if value is not None
    ]
    if not given:
        raise UsageError(
            "give the message's template: --template TEXT, --template-file PATH or --template-id ID"
        )
    if len(given) > 1:
        raise UsageError(
            f"give only one of --template, --template-file and --template-id, not {' and '.join(given)}"
        )
    if template_file is None:
        return template
    try:
        return template_file.read_text(encoding="utf-8-sig")
    except OSError as exc:
        raise UsageError(f"cannot read the template file {template_file}: {exc.strerror or exc}") from exc
    except UnicodeDecodeError as exc:
        raise UsageError(f"the template file {template_file} is not UTF-8 text") from exc


def default_group_id(recipients: Recipients) -> str:
    return f"file-{recipients.digest[:40]}"


def build_body(options: Options, recipients: Recipients) -> dict[str, Any]:
    """The batch as sent: only the file and the options are in it, so the same command sends the
    same body every time (which is what makes a re-run a repeat rather than a second batch)."""
    body: dict[str, Any] = {"group_id": options.group_id or default_group_id(recipients)}
    if options.template is not None:
        body["template"] = options.template
    if options.template_id is not None:
        body["template_id"] = options.template_id
    if options.context:
        body["context"] = options.context
    for name, value in (
        ("sender", options.sender),
        ("provider", options.provider),
        ("send_at", options.send_at),
    ):
        if value is not None:
            body[name] = value
    if options.tags:
        body["tags"] = options.tags
    # The shared part is checked here, with one recipient (each was checked as it was read).
    try:
        BatchIn.model_validate({**body, "recipients": recipients.items[:1]})
    except ValidationError as exc:
        error = exc.errors(include_url=False)[0]
        field = str(error["loc"][0]) if error["loc"] else ""
        raise UsageError(f"{OPTION_OF_FIELD.get(field, field)}: {error['msg']}") from exc
    body["recipients"] = recipients.items
    return body


def encode(body: dict[str, Any], *, as_msgpack: bool) -> tuple[bytes, str]:
    """The request body and its content type."""
    try:
        if as_msgpack:
            packed = msgpack.packb(body, use_bin_type=True)
            assert isinstance(packed, bytes)
            return packed, "application/msgpack"
        return orjson.dumps(body), "application/json"
    except (TypeError, ValueError, OverflowError) as exc:
        raise UsageError(f"the batch cannot be encoded: {exc}") from exc


def check_url(url: str) -> str:
    """The base URL without a trailing slash; :class:`UsageError` when it is not one."""
    try:
        parsed = URL(url)
    except ValueError as exc:
        raise UsageError(f"--url {url!r} is not a URL: {exc}") from exc
    if parsed.scheme not in ("http", "https") or not parsed.host:
        raise UsageError(f"--url {url!r}: give the address of a tidings, like http://127.0.0.1:8000")
    return url.rstrip("/")


# -- what is shown -------------------------------------------------------------------------------


class Display:
    """Bars and notes on standard error (the result goes to standard output)."""

    def __init__(self, *, bars: bool) -> None:
        self.console = Console(stderr=True, highlight=False)
        self.bars = bars

    def note(self, text: str) -> None:
        self.console.print(escape(text), soft_wrap=True)

    @contextmanager
    def upload(self, size: int, count: int) -> Iterator[Uploading]:
        """A bar over the body's bytes as they are sent, then one while tidings stores the batch."""
        progress = Progress(
            TextColumn("{task.description}"),
            BarColumn(),
            TextColumn("{task.fields[detail]}"),
            TimeElapsedColumn(),
            console=self.console,
            disable=not self.bars,
        )
        with progress:
            uploading = Uploading(progress, size, count)
            yield uploading
            uploading.answered()

    @contextmanager
    def storing(self, count: int) -> Iterator[None]:
        progress = Progress(
            TextColumn("{task.description}"),
            BarColumn(),
            TimeElapsedColumn(),
            console=self.console,
            disable=not self.bars,
            transient=True,
        )
        with progress:
            progress.add_task(f"storing {count:,} messages", total=None)
            yield

    @contextmanager
    def delivery(self, total: int) -> Iterator[Callable[[dict[str, Any]], None]]:
        """A bar over the batch's messages that are final; call the result with each answer."""
        progress = Progress(
            TextColumn("{task.description}"),
            BarColumn(),
            MofNCompleteColumn(),
            TextColumn("{task.fields[counts]}"),
            TimeElapsedColumn(),
            console=self.console,
            disable=not self.bars,
        )
        with progress:
            task: TaskID = progress.add_task("final", total=total, counts="")

            def update(answer: dict[str, Any]) -> None:
                progress.update(
                    task, completed=answer["progress"]["final"], counts=describe(answer["counts"])
                )

            yield update


class Uploading:
    """The upload's bars: bytes sent, then tidings storing the batch until it answers."""

    def __init__(self, progress: Progress, size: int, count: int) -> None:
        self.progress = progress
        self.size = size
        self.count = count
        self.done = 0
        self.task = progress.add_task("uploading", total=size, detail=self._detail())
        self.storing: TaskID | None = None

    def _detail(self) -> str:
        return f"{size_text(self.done)} of {size_text(self.size)}"

    def sent(self, size: int) -> None:
        self.done += size
        self.progress.update(self.task, completed=self.done, detail=self._detail())

    def all_sent(self) -> None:
        self.storing = self.progress.add_task(
            "tidings is storing them", total=None, detail=f"{self.count:,} recipients"
        )

    def answered(self) -> None:
        if self.storing is not None:
            self.progress.update(self.storing, total=1, completed=1)


def describe(counts: dict[str, int]) -> str:
    """``delivered 3, failed 1``: the final statuses first, then the others."""
    order = [s.value for s in FINAL] + sorted(s for s in counts if s not in {f.value for f in FINAL})
    return ", ".join(f"{status} {counts[status]:,}" for status in order if counts.get(status))


def size_text(size: int) -> str:
    if size < 1000:
        return f"{size:,} bytes"
    if size < 1_000_000:
        return f"{size / 1000:.1f} kB"
    return f"{size / 1_000_000:.1f} MB"


# -- sending through a running tidings -----------------------------------------------------------


@dataclass
class Outcome:
    answer: dict[str, Any]
    """The batch's answer (the 202, or the 200 of a repeat)."""
    repeat: bool
    followed: dict[str, Any] | None = None
    """The last ``GET /v1/batches/{id}`` answer, with ``--follow``."""
    complete: bool = False
    """Every accepted message reached a final status while it was followed."""
    stopped: str | None = None
    """Why following stopped early (Ctrl-C, or tidings out of reach)."""


def _error_of(status: int, raw: bytes) -> Refused:
    try:
        error = orjson.loads(raw)["error"]
        return Refused(str(error["code"]), str(error["message"]), error.get("field"), status=status)
    except (orjson.JSONDecodeError, KeyError, TypeError):
        text = raw.decode("utf-8", "replace").strip().replace("\n", " ")[:200]
        return Refused(f"http_{status}", f"HTTP {status}: {text or 'no explanation'}", status=status)


async def _chunks(payload: bytes, uploading: Uploading) -> AsyncIterator[bytes]:
    view = memoryview(payload)
    for start in range(0, len(payload), CHUNK_BYTES):
        piece = view[start : start + CHUNK_BYTES]
        yield bytes(piece)
        uploading.sent(len(piece))  # resumed: aiohttp has written the piece
    uploading.all_sent()


async def send_remote(
    url: str,
    key: str,
    payload: bytes,
    content_type: str,
    *,
    count: int,
    group_id: str,
    follow: bool,
    display: Display,
) -> Outcome:
    """``POST /v1/batches`` with the body streamed in pieces, then, with ``follow``, its progress
    until every accepted message is final."""
    headers = {"Authorization": f"Bearer {key}", "Accept": "application/json"}
    timeout = aiohttp.ClientTimeout(total=None, sock_connect=30, sock_read=ANSWER_TIMEOUT_SECONDS)
    async with aiohttp.ClientSession(timeout=timeout) as session:
        display.note(
            f"uploading {count:,} recipients ({size_text(len(payload))}) to {url} as group {group_id}"
        )
        try:
            with display.upload(len(payload), count) as uploading:
                response = await session.post(
                    f"{url}/v1/batches",
                    data=_chunks(payload, uploading),
                    headers={**headers, "Content-Type": content_type, "Content-Length": str(len(payload))},
                )
                async with response:
                    raw = await response.read()
        except aiohttp.InvalidURL as exc:
            raise UsageError(f"--url {url!r} is not a URL: {exc}") from exc
        except (aiohttp.ClientError, OSError, TimeoutError) as exc:
            raise Unreachable(url, exc) from exc
        if response.status not in (200, 201, 202):
            raise _error_of(response.status, raw)
        answer: dict[str, Any] = orjson.loads(raw)
        outcome = Outcome(answer=answer, repeat=response.status == 200)
        if follow:

            async def fetch() -> dict[str, Any]:
                try:
                    async with session.get(
                        f"{url}/v1/batches/{answer['id']}", headers=headers, timeout=aiohttp.ClientTimeout(30)
                    ) as got:
                        body = await got.read()
                except (aiohttp.ClientError, OSError, TimeoutError) as exc:
                    raise Unreachable(url, exc) from exc
                if got.status in (429, 502, 503, 504):  # tidings is busy or restarting: ask again
                    raise Unreachable(url, _error_of(got.status, body))
                if got.status != 200:
                    raise _error_of(got.status, body)
                found: dict[str, Any] = orjson.loads(body)
                return found

            await follow_batch(outcome, fetch, display)
    return outcome


# -- following -----------------------------------------------------------------------------------


async def _unless(stop: asyncio.Event, work: Awaitable[T]) -> tuple[bool, T | None]:
    """Await ``work`` unless ``stop`` is set first (then ``work`` is cancelled)."""
    task = asyncio.ensure_future(work)
    stopping = asyncio.ensure_future(stop.wait())
    await asyncio.wait({task, stopping}, return_when=asyncio.FIRST_COMPLETED)
    stopping.cancel()
    if task.done():
        return True, task.result()
    task.cancel()
    await asyncio.gather(task, return_exceptions=True)
    return False, None


@contextmanager
def _ctrl_c_sets(stop: asyncio.Event) -> Iterator[None]:
    """While inside, Ctrl-C sets ``stop`` instead of interrupting the command."""
    loop = asyncio.get_running_loop()
    previous = signal.getsignal(signal.SIGINT)
    try:
        loop.add_signal_handler(signal.SIGINT, stop.set)
    except (NotImplementedError, RuntimeError, ValueError):  # pragma: no cover - not on this platform
        yield
        return
    try:
        yield
    finally:
        loop.remove_signal_handler(signal.SIGINT)
        signal.signal(signal.SIGINT, previous)


async def follow_batch(
    outcome: Outcome, fetch: Callable[[], Awaitable[dict[str, Any]]], display: Display
) -> None:
    """Ask for the batch's progress every :data:`POLL_SECONDS` until every accepted message is
    final, Ctrl-C, or tidings stays out of reach for :data:`FOLLOW_GIVE_UP_SECONDS`; ``outcome``
    gets the last answer, and why following stopped when it stopped early."""
    stop = asyncio.Event()
    with _ctrl_c_sets(stop):
        display.note(f"following batch {outcome.answer['id']}: Ctrl-C stops following, not the batch")
        with display.delivery(int(outcome.answer["accepted"])) as update:
            outcome.stopped = await _poll(outcome, fetch, update, stop)


async def _poll(
    outcome: Outcome,
    fetch: Callable[[], Awaitable[dict[str, Any]]],
    update: Callable[[dict[str, Any]], None],
    stop: asyncio.Event,
) -> str | None:
    """Why following stopped early, or ``None`` once every accepted message is final."""
    total = int(outcome.answer["accepted"])
    last_answer = time.monotonic()
    while True:
        try:
            answered, found = await _unless(stop, fetch())
        except Unreachable as exc:
            if time.monotonic() - last_answer > FOLLOW_GIVE_UP_SECONDS:
                return exc.message.replace(RERUN, "re-run the same command to follow it again")
            answered, found = True, None
        except Refused as exc:
            return f"stopped following: {exc.code}: {exc.message}"
        if not answered:
            return STOPPED_BY_USER
        if found is not None:
            last_answer = time.monotonic()
            outcome.followed = found
            update(found)
            if found["progress"]["final"] >= total:
                outcome.complete = True
                return None
        waited, _ = await _unless(stop, asyncio.sleep(POLL_SECONDS))
        if not waited:
            return STOPPED_BY_USER


# -- writing to the database directly ------------------------------------------------------------


def send_direct(body: dict[str, Any], *, follow: bool, display: Display) -> Outcome:
    """Store the batch through the service (no key: as ``tidings send`` without ``--key``)."""
    from tidings import cli  # here: tidings.cli imports this module

    settings = cli._settings()
    try:
        spec = BatchIn.model_validate(body)
    except ValidationError as exc:
        raise UsageError(_first_error(exc)) from exc
    del body

    async def action(service: Service) -> Outcome:
        display.note(
            f"storing {len(spec.recipients):,} recipients in {cli._database_url_shown} "
            f"as group {spec.group_id}"
        )
        try:
            with display.storing(len(spec.recipients)):
                row, created = await service.batches.submit(spec)
        except TidingsError as exc:
            raise Refused(exc.code, exc.message, exc.field) from exc
        outcome = Outcome(answer=batch_json(row), repeat=not created)
        if follow:
            display.note("following: a worker (tidings serve or tidings worker) sends the messages")

            async def fetch() -> dict[str, Any]:
                return batch_json(await service.batches.get(outcome.answer["id"]))

            await follow_batch(outcome, fetch, display)
        return outcome

    return cli._run(cli._with_service(settings, action))


# -- the summary ---------------------------------------------------------------------------------


def refusals(answer: dict[str, Any], recipients: Recipients) -> list[dict[str, Any]]:
    """The refused recipients with the line of the file each came from and its ``to``."""
    out = []
    for refusal in answer.get("refused", []):
        index = int(refusal["index"])
        known = 0 <= index < len(recipients.items)
        out.append(
            {
                "index": index,
                "line": recipients.lines[index] if known else None,
                "to": recipients.items[index].get("to") if known else None,
                "code": refusal.get("code"),
                "message": refusal.get("message"),
                "field": refusal.get("field"),
            }
        )
    return out


def print_json(outcome: Outcome, recipients: Recipients) -> None:
    result = {**outcome.answer, "refused": refusals(outcome.answer, recipients), "repeat": outcome.repeat}
    if outcome.followed is not None:
        result["counts"] = outcome.followed["counts"]
        result["progress"] = outcome.followed["progress"]
    if outcome.followed is not None or outcome.stopped is not None:
        result["follow"] = "complete" if outcome.complete else "stopped"
    typer.echo(orjson.dumps(result).decode())


def print_summary(outcome: Outcome, recipients: Recipients) -> None:
    console = Console(highlight=False, soft_wrap=False)
    if not console.is_terminal:
        console.width = max(console.width, 160)
    answer = outcome.answer
    if outcome.repeat:
        console.print("already accepted earlier; nothing sent twice")
    console.print(f"batch {answer['id']}  group {escape(answer['group_id'])}")
    console.print(f"accepted {answer['accepted']:,} of {answer['total']:,} recipients")
    refused = refusals(answer, recipients)
    if refused:
        console.print(f"refused {len(refused):,}:")
        table = Table(box=None, pad_edge=False, show_edge=False, header_style="bold")
        for column in ("index", "line", "to", "code"):
            table.add_column(column.upper(), no_wrap=True)
        table.add_column("MESSAGE", overflow="fold")
        for row in refused[:REFUSALS_SHOWN]:
            table.add_row(
                *(
                    escape("" if row[c] is None else str(row[c]))
                    for c in ("index", "line", "to", "code", "message")
                )
            )
        console.print(table)
        if len(refused) > REFUSALS_SHOWN:
            console.print(f"and {len(refused) - REFUSALS_SHOWN:,} more")
    if outcome.followed is not None:
        progress = outcome.followed["progress"]
        counts = describe(outcome.followed["counts"])
        if outcome.complete:
            console.print(f"all {progress['total']:,} messages are final: {counts}")
        else:
            console.print(f"{progress['final']:,} of {progress['total']:,} messages final so far: {counts}")
    if outcome.stopped is not None:
        console.print(escape(f"{outcome.stopped}; the batch goes on"))


def explain(exc: Refused, recipients: Recipients | None, group_id: str | None) -> str:
    """tidings' message, with the file's line after each recipient it names, and what to do."""
    message = exc.message
    if exc.code == "batch_refused" and recipients is not None:
        lines = recipients.lines

        def with_line(found: re.Match[str]) -> str:
            index = int(found.group(1))
            return f"{found.group(0)} (line {lines[index]})" if index < len(lines) else found.group(0)

        message = re.sub(r"\brecipient (\d+)(?=:)", with_line, message)
    if exc.code == "idempotency_conflict" and group_id is None:
        message += (
            " (this file was sent before with other options; to send it again as a new batch, "
            "pass --group-id)"
        )
    elif exc.code == "unauthorized":
        message += f" (check --key or {API_KEY_VARIABLE})"
    elif exc.code == "payload_too_large":
        message += " (split the file, or raise the server's max_batch_bytes)"
    elif exc.status is not None and (exc.status == 429 or exc.status >= 500):
        message += f"; {RERUN}"
    return message


# -- the command ---------------------------------------------------------------------------------


def send_batch(
    file: Annotated[
        Path,
        typer.Argument(
            help="Recipients: a CSV file with a `to` column (first_name, last_name and tags are "
            "their fields, every other column a template value), or JSON lines, one recipient "
            "object a line.",
            show_default=False,
        ),
    ],
    template: Annotated[str | None, typer.Option(help="The message template (Jinja2).")] = None,
    template_file: Annotated[Path | None, typer.Option(help="Read the template from this file.")] = None,
    template_id: Annotated[str | None, typer.Option(help="A stored template's id.")] = None,
    group_id: Annotated[
        str | None,
        typer.Option(help="The batch's idempotency key (default: from a hash of the file)."),
    ] = None,
    tag: Annotated[
        list[str] | None, typer.Option("--tag", help="A tag on every message (repeat it).")
    ] = None,
    context: Annotated[
        list[str] | None,
        typer.Option(
            "--context", metavar="KEY=VALUE", help="A template value every message shares (repeat it)."
        ),
    ] = None,
    sender: Annotated[str | None, typer.Option(help="Sender id or number.")] = None,
    provider: Annotated[str | None, typer.Option(help="Provider name (default: routing).")] = None,
    send_at: Annotated[str | None, typer.Option(help="Send later (ISO 8601; no offset means UTC).")] = None,
    url: Annotated[
        str | None,
        typer.Option(
            help="Send through the tidings at this address (default: into the configured database)."
        ),
    ] = None,
    key: Annotated[
        str | None,
        typer.Option(envvar=API_KEY_VARIABLE, show_default=False, help="The API key, with --url."),
    ] = None,
    as_msgpack: Annotated[bool, typer.Option("--msgpack", help="Send MessagePack instead of JSON.")] = False,
    follow: Annotated[
        bool, typer.Option("--follow", help="Show the delivery until every message is final (Ctrl-C stops).")
    ] = False,
    file_format_option: Annotated[
        FileFormat | None,
        typer.Option("--format", help="The file's format (default: from its extension)."),
    ] = None,
    json_output: Annotated[
        bool, typer.Option("--json", help="Print the result as JSON, with no bars.")
    ] = False,
) -> None:
    """Send every recipient of a CSV or JSON-lines file one message, rendered from a template, as
    one batch; running the same command again sends nothing twice."""
    display = Display(bars=not json_output)
    recipients: Recipients | None = None
    try:
        text = pick_template(template, template_file, template_id)
        options = Options(
            template=text if template_id is None else None,
            template_id=template_id,
            group_id=group_id,
            tags=list(tag or []),
            context=parse_context(list(context or [])),
            sender=sender,
            provider=provider,
            send_at=send_at,
        )
        base_url = check_url(url) if url is not None else None
        if base_url is not None and not key:
            raise UsageError(f"--url needs an API key: pass --key or set {API_KEY_VARIABLE}")
        recipients = read_recipients(file, file_format(file, file_format_option))
        body = build_body(options, recipients)
        if base_url is not None:
            assert key is not None
            payload, content_type = encode(body, as_msgpack=as_msgpack)
            del body
            outcome = asyncio.run(
                send_remote(
                    base_url,
                    key,
                    payload,
                    content_type,
                    count=len(recipients.items),
                    group_id=options.group_id or default_group_id(recipients),
                    follow=follow,
                    display=display,
                )
            )
        else:
            outcome = send_direct(body, follow=follow, display=display)
    except UsageError as exc:
        typer.echo(f"tidings: {exc.message}", err=True)
        raise typer.Exit(2) from exc
    except Refused as exc:
        if json_output:
            typer.echo(orjson.dumps(exc.to_dict()).decode())
        if isinstance(exc, Unreachable):  # the batch may or may not have been stored: a re-run says
            typer.echo(f"tidings: {exc.message}", err=True)
        else:
            typer.echo(
                f"tidings: batch not accepted: {exc.code}: {explain(exc, recipients, group_id)}", err=True
            )
        raise typer.Exit(1) from exc
    except KeyboardInterrupt as exc:
        typer.echo(f"tidings: interrupted; {RERUN}", err=True)
        raise typer.Exit(130) from exc
    if json_output:
        print_json(outcome, recipients)
    else:
        print_summary(outcome, recipients)
    sys.stdout.flush()
    if outcome.stopped is not None and outcome.stopped != STOPPED_BY_USER:
        raise typer.Exit(1)
