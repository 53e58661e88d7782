"""The ``tidings.v1.Messaging`` service: each call checks the key in ``authorization`` (the
REST API's key check and scopes), turns its request into what the REST API would have been given,
and calls the same service functions; its answer is made from the REST API's JSON of the result."""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable
from functools import wraps
from typing import Any, TypeVar

import grpc
from google.protobuf.timestamp_pb2 import Timestamp

from tidings.api.common import id_cursor
from tidings.api.schemas import MessageIn, batch_json, message_json
from tidings.domain.batches import BatchIn
from tidings.errors import InvalidInput, TooManyRecipients, ValidationFailed
from tidings.rpc import convert
from tidings.rpc.errors import as_error, to_status
from tidings.services import Service
from tidings.services.accepting import MAX_IDEMPOTENCY_KEY
from tidings.services.batches import fingerprint
from tidings.services.changes import Scope, read_cursor
from tidings.services.keys import KeyChecker, in_scope
from tidings.services.messages import PAGE_DEFAULT, PAGE_MAX, message_filter, was_delivered, was_sent
from tidings.store.keys import ApiKey
from tidings.v1 import messaging_pb2 as pb
from tidings.v1 import messaging_pb2_grpc as pb_grpc

Request = TypeVar("Request")
Answer = TypeVar("Answer")
Context = grpc.aio.ServicerContext[Any, Any]


def metadata(context: Context, name: str) -> str | None:
    for key, value in context.invocation_metadata() or ():
        if key == name:
            return value if isinstance(value, str) else value.decode("latin-1")
    return None


async def fail(context: Context, exc: BaseException) -> None:
    """End the call with the error contract's status for ``exc`` (this raises)."""
    await context.abort_with_status(to_status(as_error(exc)))


def unary(
    scope: str,
) -> Callable[
    [Callable[[Any, Request, Context, ApiKey], Awaitable[Answer]]],
    Callable[[Any, Request, Context], Awaitable[Answer]],
]:
    """A unary call that needs a key with ``scope``; any error ends it with its status."""

    def wrap(
        method: Callable[[Any, Request, Context, ApiKey], Awaitable[Answer]],
    ) -> Callable[[Any, Request, Context], Awaitable[Answer]]:
        @wraps(method)
        async def handler(self: MessagingService, request: Request, context: Context) -> Answer:
            try:
                key = await self.key(context, scope)
                return await method(self, request, context, key)
            except Exception as exc:
                await fail(context, exc)
                raise  # abort_with_status raised already; this is for the type checker

        return handler

    return wrap


def _time(message: Any, name: str) -> Timestamp | None:
    return getattr(message, name) if message.HasField(name) else None


class MessagingService(pb_grpc.MessagingServicer):
    def __init__(self, service: Service, keys: KeyChecker) -> None:
        self.service = service
        self.keys = keys

    async def key(self, context: Context, scope: str) -> ApiKey:
        return in_scope(await self.keys.check(metadata(context, "authorization")), scope)

    @unary("send")
    async def SendMessage(self, request: pb.SendMessageRequest, context: Context, key: ApiKey) -> pb.Message:
        idempotency_key = metadata(context, "idempotency-key")
        if idempotency_key is not None and len(idempotency_key) > MAX_IDEMPOTENCY_KEY:
            raise ValidationFailed(
                f"idempotency-key: at most {MAX_IDEMPOTENCY_KEY} characters", field="idempotency-key"
            )
        payload = MessageIn.model_validate(convert.send_request(request))
        row, _created = await self.service.accepting.accept(
            payload.request(), key=key, idempotency_key=idempotency_key
        )
        return convert.message(message_json(row))

    async def SendBatch(
        self, request_iterator: AsyncIterator[pb.SendBatchRequest], context: Context
    ) -> pb.Batch:
        try:
            key = await self.key(context, "send")
            decoded: dict[str, Any] | None = None
            recipients: list[dict[str, Any]] = []
            most = self.service.settings.max_batch_recipients
            async for part in request_iterator:
                if part.HasField("batch"):
                    if decoded is not None:
                        raise InvalidInput("a batch's shared part comes once, first", field="batch")
                    decoded = convert.batch_shared(part.batch)
                elif part.HasField("recipients"):
                    if decoded is None:
                        raise InvalidInput(
                            "send the batch's shared part before its recipients", field="batch"
                        )
                    recipients.extend(convert.recipient(r) for r in part.recipients.recipients)
                    if len(recipients) > most:
                        raise TooManyRecipients(
                            f"a batch has at most {most} recipients (max_batch_recipients)",
                            field="recipients",
                        )
            if decoded is None:
                raise InvalidInput("the stream ended without a batch", field="batch")
            decoded["recipients"] = recipients
            spec = BatchIn.model_validate(decoded)
            row, created = await self.service.batches.submit(spec, key=key, request_hash=fingerprint(decoded))
            return convert.batch(batch_json(row), existing=not created)
        except Exception as exc:
            await fail(context, exc)
            raise

    @unary("read")
    async def GetMessage(self, request: pb.GetMessageRequest, context: Context, key: ApiKey) -> pb.Message:
        row, history = await self.service.messages.get(request.id, with_history=not request.without_history)
        return convert.message(message_json(row, history if not request.without_history else None))

    @unary("read")
    async def WasSent(self, request: pb.MessageRef, context: Context, key: ApiKey) -> pb.SentAnswer:
        row, _ = await self.service.messages.get(request.id, with_history=False)
        answer = was_sent(row)
        out = pb.SentAnswer(
            id=row["id"],
            sent=answer.yes,
            final=answer.final,
            status=convert.status_number(row["status"]),
            provider=row["provider"] or "",
        )
        if answer.reason is not None:
            out.reason = answer.reason
        if answer.error_code is not None:
            out.error_code = answer.error_code
        if (sent_at := convert.timestamp(row.get("sent_at"))) is not None:
            out.sent_at.CopyFrom(sent_at)
        return out

    @unary("read")
    async def WasDelivered(self, request: pb.MessageRef, context: Context, key: ApiKey) -> pb.DeliveredAnswer:
        row, _ = await self.service.messages.get(request.id, with_history=False)
        answer = was_delivered(row)
        out = pb.DeliveredAnswer(
            id=row["id"],
            delivered=answer.yes,
            final=answer.final,
            status=convert.status_number(row["status"]),
            to=row["to"],
            provider=row["provider"] or "",
        )
        if answer.reason is not None:
            out.reason = answer.reason
        if answer.error_code is not None:
            out.error_code = answer.error_code
        if row.get("failure_reason"):
            out.failure_reason = row["failure_reason"]
        if (delivered_at := convert.timestamp(row.get("delivered_at"))) is not None:
            out.delivered_at.CopyFrom(delivered_at)
        return out

    @unary("send")
    async def CancelMessage(self, request: pb.MessageRef, context: Context, key: ApiKey) -> pb.Message:
        return convert.message(message_json(await self.service.messages.cancel(request.id)))

    @unary("read")
    async def ListMessages(
        self, request: pb.ListMessagesRequest, context: Context, key: ApiKey
    ) -> pb.MessagePage:
        limit = request.limit or PAGE_DEFAULT
        if not 1 <= limit <= PAGE_MAX:
            raise ValidationFailed(f"limit: from 1 to {PAGE_MAX}", field="limit")
        text = convert.given(
            request,
            "q",
            "to",
            "to_prefix",
            "provider",
            "channel",
            "batch",
            "currency",
            "cost_min",
            "cost_max",
        )
        after, before = _time(request, "created_after"), _time(request, "created_before")
        filters = message_filter(
            region=self.service.settings.default_region,
            statuses=[convert.status_of(s, "statuses") for s in request.statuses],
            tags=list(request.tags),
            created_after=after.ToDatetime() if after is not None else None,
            created_before=before.ToDatetime() if before is not None else None,
            **text,
        )
        cursor = id_cursor(request.cursor) if request.HasField("cursor") else None
        page, next_cursor = await self.service.messages.list(filters, cursor=cursor, limit=limit)
        return pb.MessagePage(
            messages=[convert.message(message_json(r)) for r in page], next_cursor=next_cursor or ""
        )

    async def WatchMessages(
        self, request: pb.WatchMessagesRequest, context: Context
    ) -> AsyncIterator[pb.StatusChange]:
        try:
            await self.key(context, "read")
            scope = Scope(
                message_id=request.message_id if request.HasField("message_id") else None,
                batch_id=request.batch_id if request.HasField("batch_id") else None,
            )
            feed = self.service.changes
            cursor = await feed.start(scope, read_cursor(request.cursor))
        except Exception as exc:
            await fail(context, exc)
            raise
        try:
            async for rows in feed.follow(scope, cursor):
                for row in rows:
                    yield convert.change(row)
        except Exception as exc:
            await fail(context, exc)
            raise
