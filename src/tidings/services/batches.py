"""Batches: one request, many recipients (seed 004), for every transport.

Each recipient becomes an ordinary message through the acceptor's checks and the one insert path
(opt-outs, routes, segments, events, callbacks), its body rendered once from the batch's template.
A batch is written in one transaction: its row (which claims the group id) and all its messages,
or nothing. Recipients are prepared in a thread a chunk at a time, the next chunk while the last
one is written, so that a 100,000-recipient batch never holds all its rows in memory.
"""

from __future__ import annotations

import asyncio
import logging
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncConnection

from tidings import ids, metrics
from tidings.clock import utc_field, utcnow
from tidings.config import Settings
from tidings.domain.addresses import normalize_email, normalize_sender
from tidings.domain.batches import BatchIn, RecipientIn
from tidings.domain.content import Attachment, Channel
from tidings.domain.email_render import html_to_pdf, render_email
from tidings.domain.messages import NewMessage
from tidings.domain.phone import normalize_e164
from tidings.domain.status import CANCELLABLE
from tidings.errors import (
    BatchRefused,
    IdempotencyConflict,
    InvalidInput,
    NotCancellable,
    NotFound,
    TooManyRecipients,
    printable,
)
from tidings.services.accepting import Acceptor, canonical_hash, check_metadata, check_tags, decode_attachment
from tidings.services.templates import BatchTemplates, TemplateService
from tidings.services.unsubscribe import UnsubscribeLinks, UnsubscribeService
from tidings.store import Store, batches
from tidings.store import messages as message_rows
from tidings.store.batches import BatchFilter
from tidings.store.keys import ApiKey
from tidings.worker.wakeup import Waker

log = logging.getLogger(__name__)

MAX_REFUSALS_SHOWN = 5
"""Refusals quoted in the message of a batch refused whole (all of them are in its answer's log)."""


def batch_filter(
    *, tag: str | None = None, created_after: datetime | None = None, created_before: datetime | None = None
) -> BatchFilter:
    """The batches a client asked for, each value checked (:class:`InvalidInput` naming the
    parameter at fault)."""
    return BatchFilter(
        tag=printable(tag, "tag"),
        created_after=utc_field(created_after, "created_after"),
        created_before=utc_field(created_before, "created_before"),
    )


def fingerprint(body: Any) -> str:
    """A hash of a batch as decoded from its request (JSON or MessagePack give the same), whatever
    the order of its keys: what a repeated ``group_id`` is checked against."""
    try:
        return canonical_hash(body)
    except TypeError as exc:
        raise InvalidInput("a batch holds only JSON values (text, numbers, lists, maps)") from exc


@dataclass(frozen=True)
class Plan:
    """What every message of one batch shares, checked once."""

    batch_id: str
    templates: BatchTemplates
    tags: list[str]
    send_at: datetime | None
    callback_url: str | None
    test: bool
    now: datetime
    sender: str | None = None
    reply_to: str | None = None
    unsubscribe: UnsubscribeLinks | None = None


class BatchService:
    def __init__(
        self,
        settings: Settings,
        acceptor: Acceptor,
        templates: TemplateService,
        store: Store,
        waker: Waker,
        unsubscribe: UnsubscribeService,
    ) -> None:
        self.unsubscribe = unsubscribe
        self.settings = settings
        self.acceptor = acceptor
        self.templates = templates
        self.store = store
        self.waker = waker

    async def submit(
        self, spec: BatchIn, *, key: ApiKey | None = None, request_hash: str | None = None
    ) -> tuple[dict[str, Any], bool]:
        """Accept a batch sent with ``key``; returns the batch's row (its answer) and whether it is
        new (``False``: the same batch sent before under this ``group_id``).

        Raises :class:`InvalidTemplate` (the template does not compile), :class:`BatchRefused`
        (no recipient could be accepted), :class:`IdempotencyConflict` (another batch under this
        ``group_id``), :class:`TooManyRecipients`, or :class:`InvalidInput` naming a shared field;
        in every case nothing is written. A recipient that cannot be accepted is listed in the
        answer's ``refused`` with the error a single send would get.
        """
        if len(spec.recipients) > self.settings.max_batch_recipients:
            raise TooManyRecipients(
                f"the batch has {len(spec.recipients)} recipients; "
                f"the limit is {self.settings.max_batch_recipients}",
                field="recipients",
            )
        templates = await self.templates.for_batch(spec)
        template_id, template_version = templates.template_id, templates.template_version
        owner = key.id if key else ""
        request_hash = request_hash or fingerprint(spec.model_dump(mode="json", by_alias=True))
        earlier = await self.store.batches.by_group(owner, spec.group_id)
        if earlier is not None:
            return self._repeat(earlier, request_hash), False
        email = spec.channel is Channel.EMAIL
        tags = self.acceptor.check_shared(
            sender=None if email else spec.sender,
            provider=spec.provider,
            tags=spec.tags,
            metadata=spec.metadata,
            callback_url=spec.callback_url,
            channel=spec.channel,
        )
        if email:
            sender = spec.from_ or spec.sender
            sender = normalize_sender(sender, "from") if sender else None
            reply_to = normalize_sender(spec.reply_to, "reply_to") if spec.reply_to else None
        else:
            stray = next((n for n in ("from_", "reply_to") if getattr(spec, n)), None)
            if stray is not None:
                raise InvalidInput(f"{stray.rstrip('_')} is for email batches", field=stray.rstrip("_"))
            sender, reply_to = spec.sender, None
        now = utcnow()
        plan = Plan(
            batch_id=ids.new_id(),
            templates=templates,
            tags=tags,
            sender=sender,
            reply_to=reply_to,
            unsubscribe=await self.unsubscribe.links() if email else None,
            send_at=utc_field(spec.send_at, "send_at"),
            callback_url=spec.callback_url or (key.callback_url if key else None),
            test=key.test if key else False,
            now=now,
        )
        row: dict[str, Any] = {
            "id": plan.batch_id,
            "owner": owner,
            "group_id": spec.group_id,
            "request_hash": request_hash,
            "channel": spec.channel.value,
            "template_id": template_id,
            "template_version": template_version,
            "shared": _shared(spec, templates.sources),
            "tags": tags,
            "total": len(spec.recipients),
            "accepted": 0,
            "refused": [],
            "created_at": now,
            "cancelled_at": None,
        }
        try:
            async with self.store.transaction() as conn:
                await batches.claim(conn, row)
                log.info(
                    "batch %s: storing %d recipients",
                    plan.batch_id,
                    row["total"],
                    extra={"action": "batch", "batch_id": plan.batch_id, "group_id": spec.group_id},
                )
                stored, refused = await self._write(conn, spec, plan)
                accepted = stored.total()
                if accepted == 0:
                    raise _refused_whole(refused)
                await batches.settle(conn, plan.batch_id, accepted=accepted, refused=refused)
        except IntegrityError:
            # Another request with this group id won the race: answer as a repeat of it.
            earlier = await self.store.batches.by_group(owner, spec.group_id)
            if earlier is None:
                raise
            return self._repeat(earlier, request_hash), False
        metrics.accepted_counts(stored)
        self.waker.notify()
        row.update(accepted=accepted, refused=refused)
        log.info(
            "batch %s accepted: %d of %d recipients",
            plan.batch_id,
            accepted,
            row["total"],
            extra={"action": "batch", "batch_id": plan.batch_id, "group_id": spec.group_id},
        )
        return row, True

    @staticmethod
    def _repeat(earlier: dict[str, Any], request_hash: str) -> dict[str, Any]:
        if earlier["request_hash"] != request_hash:
            raise IdempotencyConflict(
                f"group_id {earlier['group_id']!r} was used for a different batch", field="group_id"
            )
        return earlier

    async def _write(
        self, conn: AsyncConnection, spec: BatchIn, plan: Plan
    ) -> tuple[Counter[tuple[str, str]], list[dict[str, Any]]]:
        """Prepare the recipients a chunk at a time in a thread, writing each chunk while the next
        one is prepared; returns how many were stored, by provider and channel, and the refusals."""
        parts = batches.chunks(spec.recipients)
        refused: list[dict[str, Any]] = []
        stored: Counter[tuple[str, str]] = Counter()
        start = 0
        ready = asyncio.ensure_future(asyncio.to_thread(self._prepare, parts[0], 0, spec, plan))
        try:
            for number, part in enumerate(parts):
                items, indexes, refusals = await ready
                if number + 1 < len(parts):
                    following = start + len(part)
                    ready = asyncio.ensure_future(
                        asyncio.to_thread(self._prepare, parts[number + 1], following, spec, plan)
                    )
                refused.extend(refusals)
                if items:
                    results = await message_rows.insert_many(conn, items)
                    for index, (message, _new), result in zip(indexes, items, results, strict=True):
                        if result is None:
                            stored[message["provider"], message["channel"]] += 1
                        else:
                            refused.append(_refusal(index, result))
                start += len(part)
        finally:
            if not ready.done():
                ready.cancel()
                await asyncio.gather(ready, return_exceptions=True)
        refused.sort(key=lambda r: int(r["index"]))
        return stored, refused

    def _prepare(
        self, part: Sequence[RecipientIn], start: int, spec: BatchIn, plan: Plan
    ) -> tuple[list[tuple[dict[str, Any], NewMessage]], list[int], list[dict[str, Any]]]:
        """The rows of ``part`` (recipients from index ``start``) with their indexes, and the
        refusals among them."""
        region = self.settings.default_region
        items: list[tuple[dict[str, Any], NewMessage]] = []
        indexes: list[int] = []
        refused: list[dict[str, Any]] = []
        email = spec.channel is Channel.EMAIL
        for index, recipient in enumerate(part, start):
            try:
                if email:
                    new = self._email(recipient, spec, plan)
                    items.append(self._with_links(new, plan))
                    indexes.append(index)
                    continue
                number = normalize_e164(recipient.to, region)
                assert plan.templates.body is not None
                body = plan.templates.body.render(_context(spec, recipient, number))
                new = self.acceptor.compose(number, body, sender=spec.sender, **_own(recipient, spec, plan))
            except InvalidInput as exc:
                refused.append(_refusal(index, exc))
                continue
            items.append((message_rows.new_row(new, plan.now), new))
            indexes.append(index)
        return items, indexes, refused

    def _email(self, recipient: RecipientIn, spec: BatchIn, plan: Plan) -> NewMessage:
        """One recipient's email, rendered: :class:`InvalidInput` when it cannot be."""
        address = normalize_email(recipient.to)
        context = _context(spec, recipient, address)
        templates = plan.templates
        assert templates.subject is not None and templates.inner is not None
        subject, html, text = render_email(templates.subject, templates.inner, templates.outer, context)
        files = [decode_attachment(f, i) for i, f in enumerate(recipient.attachments)]
        if templates.pdf is not None:
            pdf = html_to_pdf(templates.pdf.render(context))
            files.append(Attachment(filename=spec.pdf_filename, content_type="application/pdf", data=pdf))
        content = self.acceptor.email_content(
            subject=subject, html=html, text=text, reply_to=plan.reply_to, headers={}, attachments=files
        )
        return self.acceptor.compose_email(
            address, content, sender=plan.sender, **_own(recipient, spec, plan)
        )

    @staticmethod
    def _with_links(new: NewMessage, plan: Plan) -> tuple[dict[str, Any], NewMessage]:
        """The row of a batch's email, with its one-click unsubscribe headers (they name the
        message's id, known only now)."""
        row = message_rows.new_row(new, plan.now)
        if plan.unsubscribe is not None:
            row["headers"] = {**(row["headers"] or {}), **plan.unsubscribe.headers(row["id"])}
        return row, new

    # -- reading ---------------------------------------------------------------------------------

    async def get(self, batch_id: str) -> dict[str, Any]:
        """The batch with its progress: counts by status, final / total, rates, segments, activity."""
        row = await self.store.batches.get(batch_id) if ids.is_id(batch_id) else None
        if row is None:
            raise NotFound(f"no batch {batch_id}")
        row.update(await self.store.batches.progress(batch_id))
        return row

    async def with_progress(
        self, rows: Sequence[dict[str, Any]], *, most_messages: int
    ) -> list[dict[str, Any]]:
        """``rows`` (batches as :meth:`list` gives them) with their progress as :meth:`get` gives
        it, for each batch, in the order of ``rows``, whose messages fit in what is left of
        ``most_messages``; a batch that does not is left without (no ``counts``), so that a page of
        batches reads a bounded number of messages whatever the batches' sizes."""
        counted: list[str] = []
        left = most_messages
        for row in rows:
            if row["accepted"] <= left:
                counted.append(row["id"])
                left -= row["accepted"]
        found = await self.store.batches.progress_of(counted)
        return [{**row, **found[row["id"]]} if row["id"] in found else dict(row) for row in rows]

    async def failures(self, batch_id: str, *, limit: int = 20) -> list[dict[str, Any]]:
        """The batch's failed messages by error code and failure reason, the commonest first (at
        most ``limit`` groups): ``error_code``, ``failure_reason``, ``count`` and an ``example``
        of their error messages."""
        if not ids.is_id(batch_id):
            raise NotFound(f"no batch {batch_id}")
        return await self.store.batches.failures(batch_id, limit=limit)

    async def list(
        self, filters: BatchFilter, *, cursor: str | None = None, limit: int = 50
    ) -> tuple[list[dict[str, Any]], str | None]:
        rows = await self.store.batches.search(filters, after_id=cursor, limit=limit + 1)
        page = rows[:limit]
        return page, (page[-1]["id"] if len(rows) > limit else None)

    async def cancel(self, batch_id: str, *, reason: str = "batch cancelled by the client") -> dict[str, Any]:
        """Cancel every message of the batch still ``scheduled`` or ``pending``; returns the batch
        with ``cancelled`` (how many). :class:`NotCancellable` when none is left to cancel."""
        row = await self.get(batch_id)
        waiting = sum(row["counts"].get(s.value, 0) for s in CANCELLABLE)
        if waiting == 0:
            raise NotCancellable(f"batch {batch_id} has no message left to cancel")
        now = utcnow()
        async with self.store.transaction() as conn:
            wanted = await batches.message_ids(conn, batch_id)
            done: list[str] = []
            for part in batches.chunks(wanted):
                done += await message_rows.cancel(conn, ids=part, source="api", reason=reason, now=now)
            await batches.mark_cancelled(conn, batch_id, now)
        log.info(
            "batch %s cancelled: %d messages",
            batch_id,
            len(done),
            extra={"action": "batch", "batch_id": batch_id},
        )
        fresh = await self.get(batch_id)
        fresh["cancelled"] = len(done)
        return fresh


def _context(spec: BatchIn, recipient: RecipientIn, to: str) -> dict[str, Any]:
    """What a recipient's templates see: the batch's context, the recipient's over it, its
    address (normalised) and names."""
    context = {**spec.context, **recipient.context} if recipient.context else dict(spec.context)
    context["to"] = to
    if recipient.first_name is not None:
        context["first_name"] = recipient.first_name
    if recipient.last_name is not None:
        context["last_name"] = recipient.last_name
    return context


def _own(recipient: RecipientIn, spec: BatchIn, plan: Plan) -> dict[str, Any]:
    """A recipient's message fields beyond its address and content: the batch's, with the
    recipient's tags added and its metadata and time over the batch's; checked."""
    tags = check_tags([*plan.tags, *recipient.tags]) if recipient.tags else plan.tags
    metadata = spec.metadata
    if recipient.metadata:
        metadata = {**spec.metadata, **recipient.metadata}
        check_metadata(metadata)
    send_at = utc_field(recipient.send_at, "send_at") if recipient.send_at is not None else plan.send_at
    return {
        "provider": spec.provider,
        "test": plan.test,
        "ordered": spec.ordered,
        "send_at": send_at,
        "tags": tags,
        "metadata": metadata,
        "callback_url": plan.callback_url,
        "batch_id": plan.batch_id,
        "template_id": plan.templates.template_id,
        "template_version": plan.templates.template_version,
    }


def _refusal(index: int, exc: InvalidInput) -> dict[str, Any]:
    return {"index": index, "code": exc.code, "message": exc.message, "field": exc.field}


def _refused_whole(refused: list[dict[str, Any]]) -> BatchRefused:
    shown = "; ".join(
        f"recipient {r['index']}: {r['code']} ({r['message']})" for r in refused[:MAX_REFUSALS_SHOWN]
    )
    more = f"; and {len(refused) - MAX_REFUSALS_SHOWN} more" if len(refused) > MAX_REFUSALS_SHOWN else ""
    return BatchRefused(f"no recipient could be accepted: {shown}{more}", field="recipients")


def _shared(spec: BatchIn, sources: dict[str, str]) -> dict[str, Any]:
    """The batch's shared part as kept with it (and shown by ``GET /v1/batches/{id}``)."""
    shared = spec.model_dump(
        mode="json", by_alias=True, exclude={"recipients", "group_id", "channel"}, exclude_none=True
    )
    shared.update(sources)
    return shared
