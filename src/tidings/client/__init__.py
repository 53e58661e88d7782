"""Typed Python clients of tidings.

- :class:`Client` and :class:`AsyncClient`: the REST API over httpx, one method per operation,
  answers parsed into the server's own models, retries that never send a message twice.
- :class:`GrpcClient`: the gRPC API (``proto/tidings/v1/messaging.proto``), including the change
  stream that reconnects and goes on where it stopped.
- :func:`verify_callback`: check the signature of a callback tidings posted to you.
"""

from tidings.api.callbacks import CallbackSettingsIn
from tidings.api.opt_outs import OptOutIn
from tidings.api.schemas import (
    AlertOut,
    AlertPage,
    BatchAccepted,
    BatchOut,
    BatchPage,
    BatchSummary,
    CallbackOut,
    CallbackPage,
    CallbackSettingsOut,
    EventOut,
    GatewayList,
    GatewayOut,
    HealthOut,
    InboundOut,
    InboundPage,
    LogEntry,
    LogPage,
    MessageIn,
    MessageOut,
    MessagePage,
    OptOutAdded,
    OptOutOut,
    OptOutPage,
    Refusal,
    StatsOut,
    TemplateIn,
    TemplateOut,
    TemplatePage,
    TemplateUpdate,
    WebhookStatsOut,
)
from tidings.client.grpc import GrpcClient, GrpcError
from tidings.client.rest import ApiError, AsyncClient, Client, RetryPolicy, SigningKey, verify_callback
from tidings.domain.batches import BatchIn, RecipientIn
from tidings.domain.content import Channel
from tidings.domain.status import Status

__all__ = [
    "AlertOut",
    "AlertPage",
    "ApiError",
    "AsyncClient",
    "BatchAccepted",
    "BatchIn",
    "BatchOut",
    "BatchPage",
    "BatchSummary",
    "CallbackOut",
    "CallbackPage",
    "CallbackSettingsIn",
    "CallbackSettingsOut",
    "Channel",
    "Client",
    "EventOut",
    "GatewayList",
    "GatewayOut",
    "GrpcClient",
    "GrpcError",
    "HealthOut",
    "InboundOut",
    "InboundPage",
    "LogEntry",
    "LogPage",
    "MessageIn",
    "MessageOut",
    "MessagePage",
    "OptOutAdded",
    "OptOutIn",
    "OptOutOut",
    "OptOutPage",
    "RecipientIn",
    "Refusal",
    "RetryPolicy",
    "SigningKey",
    "StatsOut",
    "Status",
    "TemplateIn",
    "TemplateOut",
    "TemplatePage",
    "TemplateUpdate",
    "WebhookStatsOut",
    "verify_callback",
]
