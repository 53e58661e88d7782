"""``GrpcClient``: tidings' gRPC API (``proto/tidings/v1/messaging.proto``) over the generated
stubs, with the key sent on every call, errors raised as :class:`GrpcError` (carrying the REST
API's stable error code), batches streamed in chunks, and a change stream that reconnects and
goes on from the last change it yielded."""

from __future__ import annotations

import time
from collections.abc import Iterable, Iterator
from datetime import UTC, datetime
from typing import Any

import grpc
from google.protobuf.timestamp_pb2 import Timestamp
from grpc_status import rpc_status

from tidings.rpc.errors import error_info
from tidings.v1 import messaging_pb2 as pb
from tidings.v1 import messaging_pb2_grpc as pb_grpc

RECONNECT = frozenset({grpc.StatusCode.UNAVAILABLE})
"""Statuses after which :meth:`GrpcClient.watch` connects again (a server restarting)."""


class GrpcError(Exception):
    """A call ended with an error: ``status`` (the gRPC code), ``code`` (the REST API's stable
    error code, from the status details), ``message``, ``field`` (when one field is at fault)."""

    def __init__(self, status: grpc.StatusCode, code: str, message: str, field: str | None = None) -> None:
        self.status = status
        self.code = code
        self.message = message
        self.field = field
        where = f" (field {field})" if field else ""
        super().__init__(f"{status.name} {code}: {message}{where}")

    @classmethod
    def of(cls, error: grpc.RpcError) -> GrpcError:
        status = rpc_status.from_call(error)
        info = error_info(status) if status is not None else None
        code: grpc.StatusCode = error.code()
        details: str = error.details() or ""
        if info is None:
            return cls(code, code.name.lower(), details)
        return cls(code, info.reason, details, info.metadata.get("field"))


def _time(value: datetime | None) -> Timestamp | None:
    if value is None:
        return None
    out = Timestamp()
    out.FromDatetime(value if value.tzinfo is not None else value.replace(tzinfo=UTC))
    return out


class GrpcClient:
    """``GrpcClient("127.0.0.1:50051", key)``; ``credentials`` for TLS (``grpc.ssl_channel_credentials``)."""

    def __init__(
        self,
        target: str,
        key: str,
        *,
        credentials: grpc.ChannelCredentials | None = None,
        timeout: float | None = 30.0,
        options: list[tuple[str, Any]] | None = None,
    ) -> None:
        self.target = target
        self.timeout = timeout
        self._auth: tuple[str, str] = ("authorization", f"Bearer {key}")
        self._credentials = credentials
        self._options = options or []
        self.channel = self._connect()
        self.stub = pb_grpc.MessagingStub(self.channel)

    def _connect(self) -> grpc.Channel:
        if self._credentials is not None:
            return grpc.secure_channel(self.target, self._credentials, options=self._options)
        return grpc.insecure_channel(self.target, options=self._options)

    def close(self) -> None:
        self.channel.close()

    def __enter__(self) -> GrpcClient:
        return self

    def __exit__(self, *_exc: object) -> None:
        self.close()

    def _call(self, method: Any, request: Any, *, metadata: list[tuple[str, str]] | None = None) -> Any:
        try:
            return method(request, metadata=(self._auth, *(metadata or [])), timeout=self.timeout)
        except grpc.RpcError as exc:
            raise GrpcError.of(exc) from exc

    def send_message(
        self,
        to: str,
        body: str | None = None,
        *,
        idempotency_key: str | None = None,
        send_at: datetime | None = None,
        metadata: dict[str, Any] | None = None,
        **fields: Any,
    ) -> pb.Message:
        """Send a message; ``fields`` are the other fields of ``SendMessageRequest`` (``sender``,
        ``tags``, ``provider``, ``channel``, ``subject``, …)."""
        request = pb.SendMessageRequest(to=to, send_at=_time(send_at), **fields)
        if body is not None:
            request.body = body
        if metadata:
            request.metadata.update(metadata)
        extra = [("idempotency-key", idempotency_key)] if idempotency_key else None
        answer: pb.Message = self._call(self.stub.SendMessage, request, metadata=extra)
        return answer

    def send_batch(
        self, shared: pb.BatchShared, recipients: Iterable[pb.Recipient], *, chunk: int = 1000
    ) -> pb.Batch:
        """Send a batch: its shared part, then ``recipients`` streamed ``chunk`` at a time (an
        iterable, so a very large batch need not be held in memory)."""

        def parts() -> Iterator[pb.SendBatchRequest]:
            yield pb.SendBatchRequest(batch=shared)
            pending: list[pb.Recipient] = []
            for recipient in recipients:
                pending.append(recipient)
                if len(pending) == chunk:
                    yield pb.SendBatchRequest(recipients=pb.RecipientChunk(recipients=pending))
                    pending = []
            if pending:
                yield pb.SendBatchRequest(recipients=pb.RecipientChunk(recipients=pending))

        answer: pb.Batch = self._call(self.stub.SendBatch, parts())
        return answer

    def get_message(self, message_id: str, *, history: bool = True) -> pb.Message:
        answer: pb.Message = self._call(
            self.stub.GetMessage, pb.GetMessageRequest(id=message_id, without_history=not history)
        )
        return answer

    def was_sent(self, message_id: str) -> pb.SentAnswer:
        answer: pb.SentAnswer = self._call(self.stub.WasSent, pb.MessageRef(id=message_id))
        return answer

    def was_delivered(self, message_id: str) -> pb.DeliveredAnswer:
        answer: pb.DeliveredAnswer = self._call(self.stub.WasDelivered, pb.MessageRef(id=message_id))
        return answer

    def cancel_message(self, message_id: str) -> pb.Message:
        answer: pb.Message = self._call(self.stub.CancelMessage, pb.MessageRef(id=message_id))
        return answer

    def list_messages(
        self,
        *,
        created_after: datetime | None = None,
        created_before: datetime | None = None,
        **filters: Any,
    ) -> pb.MessagePage:
        """A page of messages; ``filters`` are ``ListMessagesRequest``'s (``q``, ``statuses``,
        ``tags``, ``to``, ``batch``, ``cursor``, ``limit``, …)."""
        request = pb.ListMessagesRequest(
            created_after=_time(created_after), created_before=_time(created_before), **filters
        )
        answer: pb.MessagePage = self._call(self.stub.ListMessages, request)
        return answer

    def watch(
        self,
        *,
        message_id: str | None = None,
        batch_id: str | None = None,
        cursor: str = "",
        reconnect_seconds: float = 1.0,
        attempts: int = 60,
    ) -> Iterator[pb.StatusChange]:
        """Status changes as they happen (of a message, a batch, or all), for as long as the
        caller iterates. When the server goes away (``UNAVAILABLE``) it connects again, up to
        ``attempts`` times in a row, and goes on after the last change it yielded: nothing
        is missed or repeated."""
        failures = 0
        while True:
            request = pb.WatchMessagesRequest(message_id=message_id, batch_id=batch_id, cursor=cursor)
            call = self.stub.WatchMessages(request, metadata=(self._auth,))
            try:
                for change in call:
                    failures = 0
                    cursor = change.cursor
                    yield change
                return
            except grpc.RpcError as exc:
                if exc.code() not in RECONNECT or failures >= attempts:
                    raise GrpcError.of(exc) from exc
                failures += 1
                time.sleep(reconnect_seconds)
            finally:
                call.cancel()
