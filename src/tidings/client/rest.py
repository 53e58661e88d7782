"""The REST clients: :class:`Client` (blocking) and :class:`AsyncClient` (asyncio), over httpx.

Each operation of the API is described once here: its :class:`Operation` (the OpenAPI
``operationId``, method, path, request and response models, query parameters, and whether it may
be retried) and one function that turns a method's arguments into a :class:`Call`. Both clients
are made from those functions; they differ only in how a call is carried out, so a new endpoint
is added in one place and cannot behave differently in the two.

Answers are parsed into the models the server answers with (``tidings.api.schemas``), and request
bodies are the server's own input models, so a client and the server cannot disagree on a field.

Retries: a call is tried again after a connection error, a ``5xx`` answer, or a ``429`` whose
``Retry-After`` is short enough, with exponential back-off and a cap on attempts. A call that
creates something is retried only when repeating it cannot create it twice: a message carries an
``Idempotency-Key`` (made up when the caller gives none) that every attempt repeats, and a batch
its ``group_id``. An operation that repeating could do twice (a new template version, a new
signing secret) is retried only when tidings cannot have acted on it: the connection was never
made, or the key was rate limited.
"""

from __future__ import annotations

import asyncio
import email.utils
import functools
import random
import time
import uuid
from collections.abc import Callable, Coroutine, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, date, datetime
from enum import Enum
from types import TracebackType
from typing import Any, Concatenate, Generic, ParamSpec, Self, TypedDict, TypeVar
from urllib.parse import quote

import httpx
import orjson
from pydantic import BaseModel, ValidationError
from typing_extensions import Unpack

from tidings.api.callbacks import CallbackSettingsIn
from tidings.api.opt_outs import OptOutIn
from tidings.api.schemas import (
    AlertPage,
    AlertStatus,
    BatchAccepted,
    BatchOut,
    BatchPage,
    CallbackOut,
    CallbackPage,
    CallbackSettingsOut,
    CallbackStatus,
    ErrorOut,
    GatewayList,
    HealthOut,
    InboundPage,
    LogPage,
    MessageIn,
    MessageOut,
    MessagePage,
    OptOutAdded,
    OptOutPage,
    StatsOut,
    TemplateIn,
    TemplateOut,
    TemplatePage,
    TemplateUpdate,
    WebhookStatsOut,
)
from tidings.config import RuleName
from tidings.domain.batches import BatchIn
from tidings.domain.content import Channel
from tidings.domain.status import Status
from tidings.signatures import DEFAULT_TOLERANCE_SECONDS, HEADER, KEY_HEADER, sign, verify_signature
from tidings.store.log import Kind

T = TypeVar("T")
M = TypeVar("M", bound=BaseModel)
P = ParamSpec("P")

USER_AGENT = "tidings-client"
RETRIED_STATUSES = frozenset({500, 502, 503, 504})
"""Server errors worth another attempt (not 501 or 505: those will not change)."""
IDEMPOTENCY_HEADER = "Idempotency-Key"
REQUEST_ID_HEADER = "X-Request-Id"


class ApiError(Exception):
    """tidings answered with an error: ``status`` (HTTP), ``code`` (stable, what a program tests:
    ``invalid_phone_number``, ``unauthorized``, ``not_found``…), ``message`` (for people),
    ``field`` (the request field at fault, when there is one), ``retry_after`` (seconds to wait,
    when the answer said) and ``request_id`` (to find the request in tidings' logs).

    An answer that is not tidings' error contract (a proxy's error page, say) has the code
    ``http_error`` and the start of its text as its message."""

    def __init__(
        self,
        status: int,
        code: str,
        message: str,
        *,
        field: str | None = None,
        retry_after: float | None = None,
        request_id: str | None = None,
    ) -> None:
        self.status = status
        self.code = code
        self.message = message
        self.field = field
        self.retry_after = retry_after
        self.request_id = request_id
        where = f" (field {field})" if field else ""
        super().__init__(f"{status} {code}: {message}{where}")

    @classmethod
    def from_response(cls, response: httpx.Response) -> ApiError:
        """The error an answer carries."""
        try:
            detail = ErrorOut.model_validate_json(response.content).error
            code, message, field_name = detail.code, detail.message, detail.field
        except ValidationError:
            text = response.text.strip()[:200]
            code, message, field_name = "http_error", text or response.reason_phrase, None
        return cls(
            response.status_code,
            code,
            message,
            field=field_name,
            retry_after=retry_after(response),
            request_id=response.headers.get(REQUEST_ID_HEADER),
        )


def retry_after(response: httpx.Response) -> float | None:
    """The answer's ``Retry-After`` in seconds (it may be seconds or an HTTP date), if it has one."""
    value = response.headers.get("Retry-After")
    if value is None:
        return None
    value = value.strip()
    if value.isdigit():
        return float(value)
    try:
        moment = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=UTC)
    return max(0.0, (moment - datetime.now(UTC)).total_seconds())


def verify_callback(
    body: bytes, header: str | None, secret: str, tolerance: float = DEFAULT_TOLERANCE_SECONDS
) -> bool:
    """Whether a callback tidings posted is genuine: ``header`` (its ``Tidings-Signature``) signs
    ``body`` (the raw request body, before any JSON parsing) with ``secret`` (the key's signing
    secret: :meth:`Client.get_callback_settings`), at a time within ``tolerance`` seconds of now,
    so a recorded callback cannot be replayed later. During a secret rotation the header carries
    a signature per secret, and either secret verifies."""
    return verify_signature(body, header, secret, tolerance=tolerance)


@dataclass(frozen=True)
class SigningKey:
    """An API key's id and its signing secret (the one its callbacks are signed with), to send
    batches signed instead of with a bearer key: for a system that should hold only that secret."""

    key_id: str
    secret: str


# --- What each operation is ---------------------------------------------------------------------


class MessageQuery(TypedDict, total=False):
    """The filters of ``GET /v1/messages``: every one given must hold."""

    q: str
    status: Sequence[Status | str]
    to: str
    to_prefix: str
    tag: Sequence[str]
    provider: str
    channel: Channel | str
    batch: str
    created_after: datetime | str
    created_before: datetime | str
    currency: str
    cost_min: str
    cost_max: str
    cursor: str
    limit: int


class BatchQuery(TypedDict, total=False):
    """The filters of ``GET /v1/batches``."""

    tag: str
    created_after: datetime | str
    created_before: datetime | str
    cursor: str
    limit: int


class PageQuery(TypedDict, total=False):
    """A page of a list without filters."""

    cursor: str
    limit: int


class TemplateQuery(TypedDict, total=False):
    """Which version of a template."""

    version: int


class InboundQuery(TypedDict, total=False):
    """The filters of ``GET /v1/inbound`` (``sender`` is the API's ``from``, a Python keyword)."""

    sender: str
    to: str
    since: datetime | str
    until: datetime | str
    cursor: str
    limit: int


class OptOutQuery(TypedDict, total=False):
    """The filters of ``GET /v1/opt-outs``."""

    number: str
    cursor: str
    limit: int


class OptOutScope(TypedDict, total=False):
    """Which opt-out of an address: for one sender, or (without it) for all."""

    sender: str


class LogQuery(TypedDict, total=False):
    """The filters of ``GET /v1/log``."""

    kind: Kind
    number: str
    message_id: str
    since: datetime | str
    until: datetime | str
    cursor: str
    limit: int


class CallbackQuery(TypedDict, total=False):
    """The filters of ``GET /v1/callbacks``."""

    status: CallbackStatus
    message_id: str
    cursor: str
    limit: int


class StatsQuery(TypedDict, total=False):
    """The range and grouping of ``GET /v1/stats`` (``since`` is required)."""

    since: datetime | str
    until: datetime | str
    by: Sequence[str]
    provider: str
    channel: Channel | str
    batch: str


class RangeQuery(TypedDict, total=False):
    """A time range (``since`` is required)."""

    since: datetime | str
    until: datetime | str


class AlertQuery(TypedDict, total=False):
    """The filters of ``GET /v1/alerts``."""

    status: AlertStatus
    rule: RuleName
    since: datetime | str
    cursor: str
    limit: int


@dataclass(frozen=True)
class Operation(Generic[T]):
    """One operation of the REST API, as the client calls it.

    ``answer`` is the model of its success body (``type(None)`` for a ``204``); ``body`` the
    model of its request body; ``query`` the keyword arguments it takes as query parameters,
    with ``renamed`` mapping an argument to its parameter name where they differ. ``idempotent``:
    doing it twice does no more than doing it once, so any failure may be retried; ``creates``:
    the request carries an ``Idempotency-Key``; ``signable``: it may be signed instead of carrying
    a bearer key; ``also_answers``: error statuses whose body is still ``answer`` (health's 503).
    """

    id: str
    method: str
    path: str
    answer: type[T]
    body: type[BaseModel] | None = None
    query: type | None = None
    renamed: Mapping[str, str] = field(default_factory=dict)
    idempotent: bool = False
    creates: bool = False
    signable: bool = False
    also_answers: frozenset[int] = frozenset()

    def call(
        self,
        *,
        path: Mapping[str, str] | None = None,
        query: Mapping[str, Any] | None = None,
        body: BaseModel | None = None,
        idempotency_key: str | None = None,
    ) -> Call[T]:
        """A call of this operation; ``TypeError`` for a query argument it does not take."""
        given = dict(query or {})
        allowed = _keys(self.query)
        unknown = sorted(set(given) - allowed)
        if unknown:
            raise TypeError(
                f"{self.id} takes no {', '.join(unknown)} (it takes {', '.join(sorted(allowed))})"
            )
        filled = self.path.format_map({k: quote(v, safe="") for k, v in (path or {}).items()})
        params = [
            (self.renamed.get(name, name), _text(item))
            for name, value in given.items()
            if value is not None
            for item in (value if isinstance(value, list | tuple | set | frozenset) else [value])
        ]
        content = None
        if body is not None:
            content = orjson.dumps(body.model_dump(mode="json", by_alias=True, exclude_unset=True))
        if self.creates and idempotency_key is None:
            idempotency_key = uuid.uuid4().hex
        return Call(self, filled, params, content, idempotency_key)


def _keys(query: type | None) -> frozenset[str]:
    if query is None:
        return frozenset()
    # A TypedDict's keys (these attributes are not on `type` for mypy).
    required: frozenset[str] = getattr(query, "__required_keys__", frozenset())
    optional: frozenset[str] = getattr(query, "__optional_keys__", frozenset())
    return frozenset(required) | frozenset(optional)


def _text(value: Any) -> str:
    """A query parameter's value as the API reads it."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, Enum):
        return str(value.value)
    if isinstance(value, datetime | date):
        return value.isoformat()
    return str(value)


@dataclass(frozen=True)
class Call(Generic[T]):
    """One request to make, however many attempts it takes: every attempt sends the same body and
    the same ``Idempotency-Key``."""

    operation: Operation[T]
    path: str
    params: list[tuple[str, str]]
    content: bytes | None
    idempotency_key: str | None
    request_id: str = field(default_factory=lambda: uuid.uuid4().hex)
    """Sent as ``X-Request-Id`` on every attempt, so tidings' logs show the attempts as one request."""


NONE = type(None)

GET_HEALTH = Operation(
    "getHealth", "GET", "/healthz", HealthOut, idempotent=True, also_answers=frozenset({503})
)
SEND_MESSAGE = Operation(
    "sendMessage", "POST", "/v1/messages", MessageOut, body=MessageIn, idempotent=True, creates=True
)
LIST_MESSAGES = Operation(
    "listMessages", "GET", "/v1/messages", MessagePage, query=MessageQuery, idempotent=True
)
GET_MESSAGE = Operation("getMessage", "GET", "/v1/messages/{message_id}", MessageOut, idempotent=True)
CANCEL_MESSAGE = Operation("cancelMessage", "POST", "/v1/messages/{message_id}/cancel", MessageOut)
SEND_BATCH = Operation(
    # Idempotent through its group_id: the same batch again answers the first result.
    "sendBatch",
    "POST",
    "/v1/batches",
    BatchAccepted,
    body=BatchIn,
    idempotent=True,
    signable=True,
)
LIST_BATCHES = Operation("listBatches", "GET", "/v1/batches", BatchPage, query=BatchQuery, idempotent=True)
GET_BATCH = Operation("getBatch", "GET", "/v1/batches/{batch_id}", BatchOut, idempotent=True)
CANCEL_BATCH = Operation("cancelBatch", "POST", "/v1/batches/{batch_id}/cancel", BatchOut)
CREATE_TEMPLATE = Operation("createTemplate", "POST", "/v1/templates", TemplateOut, body=TemplateIn)
LIST_TEMPLATES = Operation(
    "listTemplates", "GET", "/v1/templates", TemplatePage, query=PageQuery, idempotent=True
)
GET_TEMPLATE = Operation(
    "getTemplate", "GET", "/v1/templates/{template_id}", TemplateOut, query=TemplateQuery, idempotent=True
)
UPDATE_TEMPLATE = Operation(
    "updateTemplate", "PUT", "/v1/templates/{template_id}", TemplateOut, body=TemplateUpdate
)
DELETE_TEMPLATE = Operation("deleteTemplate", "DELETE", "/v1/templates/{template_id}", NONE)
LIST_GATEWAYS = Operation("listGateways", "GET", "/v1/gateways", GatewayList, idempotent=True)
LIST_INBOUND = Operation(
    "listInbound",
    "GET",
    "/v1/inbound",
    InboundPage,
    query=InboundQuery,
    renamed={"sender": "from"},
    idempotent=True,
)
LIST_OPT_OUTS = Operation(
    "listOptOuts", "GET", "/v1/opt-outs", OptOutPage, query=OptOutQuery, idempotent=True
)
ADD_OPT_OUT = Operation("addOptOut", "POST", "/v1/opt-outs", OptOutAdded, body=OptOutIn, idempotent=True)
REMOVE_OPT_OUT = Operation("removeOptOut", "DELETE", "/v1/opt-outs/{number}", NONE, query=OptOutScope)
LIST_LOG = Operation("listLog", "GET", "/v1/log", LogPage, query=LogQuery, idempotent=True)
LIST_CALLBACKS = Operation(
    "listCallbacks", "GET", "/v1/callbacks", CallbackPage, query=CallbackQuery, idempotent=True
)
RETRY_CALLBACK = Operation("retryCallback", "POST", "/v1/callbacks/{callback_id}/retry", CallbackOut)
GET_CALLBACK_SETTINGS = Operation(
    "getCallbackSettings", "GET", "/v1/callback-settings", CallbackSettingsOut, idempotent=True
)
SET_CALLBACK_SETTINGS = Operation(
    "setCallbackSettings",
    "PUT",
    "/v1/callback-settings",
    CallbackSettingsOut,
    body=CallbackSettingsIn,
    idempotent=True,
)
ROTATE_CALLBACK_SECRET = Operation(
    "rotateCallbackSecret", "POST", "/v1/callback-settings/rotate-secret", CallbackSettingsOut
)
GET_STATS = Operation("getStats", "GET", "/v1/stats", StatsOut, query=StatsQuery, idempotent=True)
GET_WEBHOOK_STATS = Operation(
    "getWebhookStats", "GET", "/v1/stats/webhooks", WebhookStatsOut, query=RangeQuery, idempotent=True
)
LIST_ALERTS = Operation("listAlerts", "GET", "/v1/alerts", AlertPage, query=AlertQuery, idempotent=True)

OPERATIONS: dict[str, Operation[Any]] = {
    op.id: op
    for op in (
        GET_HEALTH,
        SEND_MESSAGE,
        LIST_MESSAGES,
        GET_MESSAGE,
        CANCEL_MESSAGE,
        SEND_BATCH,
        LIST_BATCHES,
        GET_BATCH,
        CANCEL_BATCH,
        CREATE_TEMPLATE,
        LIST_TEMPLATES,
        GET_TEMPLATE,
        UPDATE_TEMPLATE,
        DELETE_TEMPLATE,
        LIST_GATEWAYS,
        LIST_INBOUND,
        LIST_OPT_OUTS,
        ADD_OPT_OUT,
        REMOVE_OPT_OUT,
        LIST_LOG,
        LIST_CALLBACKS,
        RETRY_CALLBACK,
        GET_CALLBACK_SETTINGS,
        SET_CALLBACK_SETTINGS,
        ROTATE_CALLBACK_SECRET,
        GET_STATS,
        GET_WEBHOOK_STATS,
        LIST_ALERTS,
    )
}
"""Every operation the clients call, by ``operationId``."""


def _model(model: type[M], given: M | None, fields: Mapping[str, Any]) -> M:
    """``given``, or a ``model`` built from keyword arguments (checked as the server checks them:
    a misspelt field is a ``pydantic.ValidationError`` before anything is sent)."""
    if given is not None:
        if fields:
            raise TypeError(f"give a {model.__name__} or its fields as keywords, not both")
        if not isinstance(given, model):
            raise TypeError(f"expected a {model.__name__}, got {type(given).__name__}")
        return given
    return model.model_validate(dict(fields))


def _uses(operation: Operation[Any]) -> Callable[[Callable[P, Call[T]]], Callable[P, Call[T]]]:
    """Marks a request builder with the operation it calls (the clients' methods keep the mark:
    a test matches them against the OpenAPI document)."""

    def mark(build: Callable[P, Call[T]]) -> Callable[P, Call[T]]:
        setattr(build, "operation", operation)  # noqa: B010 (a function attribute mypy does not know)
        return build

    return mark


class Requests:
    """The request of each client method, built from its arguments: the one place an endpoint is
    described. :class:`Client` and :class:`AsyncClient` carry these calls out."""

    @staticmethod
    @_uses(GET_HEALTH)
    def get_health() -> Call[HealthOut]:
        """Whether tidings and its database answer: ``status`` ``ok``, or ``unavailable`` (a 503,
        returned rather than raised, and not retried: it is the answer asked for)."""
        return GET_HEALTH.call()

    @staticmethod
    @_uses(SEND_MESSAGE)
    def send_message(
        message: MessageIn | None = None, /, *, idempotency_key: str | None = None, **fields: Any
    ) -> Call[MessageOut]:
        """Send a message: a :class:`MessageIn`, or its fields as keywords (``to=``, ``body=``,
        ``sender=``, ``send_at=``, ``tags=``, ``metadata=``, ``callback_url=``…; email:
        ``channel="email"``, ``subject=``, ``html=``…). Returns the stored message.

        Every attempt carries ``idempotency_key`` (a new random one when not given), so a retried
        send never makes two messages; give your own to make a send safe across processes too."""
        return SEND_MESSAGE.call(body=_model(MessageIn, message, fields), idempotency_key=idempotency_key)

    @staticmethod
    @_uses(LIST_MESSAGES)
    def list_messages(**query: Unpack[MessageQuery]) -> Call[MessagePage]:
        """A page of messages, newest first, matching every filter given (``status`` and ``tag``
        take lists); pass ``next_cursor`` back as ``cursor`` for the next page."""
        return LIST_MESSAGES.call(query=query)

    @staticmethod
    @_uses(GET_MESSAGE)
    def get_message(message_id: str) -> Call[MessageOut]:
        """A message with its status, provider status, error, cost, timestamps and history
        (``events``)."""
        return GET_MESSAGE.call(path={"message_id": message_id})

    @staticmethod
    @_uses(CANCEL_MESSAGE)
    def cancel_message(message_id: str) -> Call[MessageOut]:
        """Cancel a message still ``scheduled`` or ``pending`` (``not_cancellable`` once it is
        being sent)."""
        return CANCEL_MESSAGE.call(path={"message_id": message_id})

    @staticmethod
    @_uses(SEND_BATCH)
    def send_batch(batch: BatchIn | None = None, /, **fields: Any) -> Call[BatchAccepted]:
        """Send one batch: a :class:`BatchIn`, or its fields as keywords (``template=``,
        ``recipients=[{"to": …, "first_name": …}]``, ``context=``, ``sender=``…; ``from_`` for
        ``from``). ``group_id`` is the batch's idempotency key: a new random one when the
        keywords do not give it. Every attempt sends the same body, so a retried batch is stored
        once. A client made with a :class:`SigningKey` signs it (anew on each attempt)."""
        if batch is None and "group_id" not in fields:
            fields = {**fields, "group_id": uuid.uuid4().hex}
        return SEND_BATCH.call(body=_model(BatchIn, batch, fields))

    @staticmethod
    @_uses(LIST_BATCHES)
    def list_batches(**query: Unpack[BatchQuery]) -> Call[BatchPage]:
        """A page of batches, newest first."""
        return LIST_BATCHES.call(query=query)

    @staticmethod
    @_uses(GET_BATCH)
    def get_batch(batch_id: str) -> Call[BatchOut]:
        """A batch and how it is getting on (``counts``, ``progress``, ``cost``); its messages:
        ``list_messages(batch=batch_id)``."""
        return GET_BATCH.call(path={"batch_id": batch_id})

    @staticmethod
    @_uses(CANCEL_BATCH)
    def cancel_batch(batch_id: str) -> Call[BatchOut]:
        """Cancel every message of the batch not yet handed over (``cancelled`` says how many)."""
        return CANCEL_BATCH.call(path={"batch_id": batch_id})

    @staticmethod
    @_uses(CREATE_TEMPLATE)
    def create_template(template: TemplateIn | None = None, /, **fields: Any) -> Call[TemplateOut]:
        """Store a template at version 1: a :class:`TemplateIn`, or ``name=``, ``body=`` (email:
        ``channel="email"``, ``subject=``, ``outer=``, ``inner=``)."""
        return CREATE_TEMPLATE.call(body=_model(TemplateIn, template, fields))

    @staticmethod
    @_uses(LIST_TEMPLATES)
    def list_templates(**query: Unpack[PageQuery]) -> Call[TemplatePage]:
        """A page of templates at their latest version, newest first."""
        return LIST_TEMPLATES.call(query=query)

    @staticmethod
    @_uses(GET_TEMPLATE)
    def get_template(template_id: str, **query: Unpack[TemplateQuery]) -> Call[TemplateOut]:
        """A template at its latest version, or at ``version``."""
        return GET_TEMPLATE.call(path={"template_id": template_id}, query=query)

    @staticmethod
    @_uses(UPDATE_TEMPLATE)
    def update_template(
        template_id: str, update: TemplateUpdate | None = None, /, **fields: Any
    ) -> Call[TemplateOut]:
        """Store the template's next version: a :class:`TemplateUpdate`, or its fields."""
        return UPDATE_TEMPLATE.call(
            path={"template_id": template_id}, body=_model(TemplateUpdate, update, fields)
        )

    @staticmethod
    @_uses(DELETE_TEMPLATE)
    def delete_template(template_id: str) -> Call[None]:
        """Delete a template (messages rendered from it keep naming its version)."""
        return DELETE_TEMPLATE.call(path={"template_id": template_id})

    @staticmethod
    @_uses(LIST_GATEWAYS)
    def list_gateways() -> Call[GatewayList]:
        """Each Android gateway: its last poll, counts, and whether it went silent."""
        return LIST_GATEWAYS.call()

    @staticmethod
    @_uses(LIST_INBOUND)
    def list_inbound(**query: Unpack[InboundQuery]) -> Call[InboundPage]:
        """A page of SMS people sent to our numbers, newest first (``sender``: the API's
        ``from`` filter)."""
        return LIST_INBOUND.call(query=query)

    @staticmethod
    @_uses(LIST_OPT_OUTS)
    def list_opt_outs(**query: Unpack[OptOutQuery]) -> Call[OptOutPage]:
        """A page of the addresses that opted out, newest first."""
        return LIST_OPT_OUTS.call(query=query)

    @staticmethod
    @_uses(ADD_OPT_OUT)
    def add_opt_out(opt_out: OptOutIn | None = None, /, **fields: Any) -> Call[OptOutAdded]:
        """Opt a number (``number=``) or an email address (``email=``) out, for every sender or
        one (``sender=``), with a ``note=``; ``created`` is false when it already was."""
        return ADD_OPT_OUT.call(body=_model(OptOutIn, opt_out, fields))

    @staticmethod
    @_uses(REMOVE_OPT_OUT)
    def remove_opt_out(address: str, **query: Unpack[OptOutScope]) -> Call[None]:
        """Opt a number or an email address back in (``not_found`` when it was not out)."""
        return REMOVE_OPT_OUT.call(path={"number": address}, query=query)

    @staticmethod
    @_uses(LIST_LOG)
    def list_log(**query: Unpack[LogQuery]) -> Call[LogPage]:
        """A page of the message log, newest first: send attempts, receipts and inbound SMS."""
        return LIST_LOG.call(query=query)

    @staticmethod
    @_uses(LIST_CALLBACKS)
    def list_callbacks(**query: Unpack[CallbackQuery]) -> Call[CallbackPage]:
        """A page of callbacks, newest first: what was posted where, and whether it arrived."""
        return LIST_CALLBACKS.call(query=query)

    @staticmethod
    @_uses(RETRY_CALLBACK)
    def retry_callback(callback_id: str) -> Call[CallbackOut]:
        """Queue a failed callback again, with fresh attempts."""
        return RETRY_CALLBACK.call(path={"callback_id": callback_id})

    @staticmethod
    @_uses(GET_CALLBACK_SETTINGS)
    def get_callback_settings() -> Call[CallbackSettingsOut]:
        """This key's default callback URL and the secret its callbacks are signed with."""
        return GET_CALLBACK_SETTINGS.call()

    @staticmethod
    @_uses(SET_CALLBACK_SETTINGS)
    def set_callback_settings(url: str | None) -> Call[CallbackSettingsOut]:
        """Set this key's default callback URL (``None`` clears it)."""
        return SET_CALLBACK_SETTINGS.call(body=CallbackSettingsIn(url=url))

    @staticmethod
    @_uses(ROTATE_CALLBACK_SECRET)
    def rotate_callback_secret() -> Call[CallbackSettingsOut]:
        """A new signing secret; the old one signs beside it until ``previous_secret_until``."""
        return ROTATE_CALLBACK_SECRET.call()

    @staticmethod
    @_uses(GET_STATS)
    def get_stats(**query: Unpack[StatsQuery]) -> Call[StatsOut]:
        """Counts, rates, segments, cost and time to sent and delivered of the messages accepted
        in ``[since, until)``, in total and per group of the ``by`` keys."""
        return GET_STATS.call(query=query)

    @staticmethod
    @_uses(GET_WEBHOOK_STATS)
    def get_webhook_stats(**query: Unpack[RangeQuery]) -> Call[WebhookStatsOut]:
        """Webhook processing per provider and event in ``[since, until)``."""
        return GET_WEBHOOK_STATS.call(query=query)

    @staticmethod
    @_uses(LIST_ALERTS)
    def list_alerts(**query: Unpack[AlertQuery]) -> Call[AlertPage]:
        """A page of alerts, newest first, open and resolved."""
        return LIST_ALERTS.call(query=query)


# --- Carrying a call out: attempts, back-off, answers --------------------------------------------


NOT_SENT = (httpx.ConnectError, httpx.ConnectTimeout, httpx.PoolTimeout)
"""Transport errors that mean the request never reached tidings."""


@dataclass(frozen=True)
class RetryPolicy:
    """How often and how patiently a call is tried: up to ``retries`` more attempts, the n-th after
    about ``backoff * 2 ** (n - 1)`` seconds (at most ``max_backoff``, with jitter), or after the
    answer's ``Retry-After`` when it is longer; a ``Retry-After`` over ``max_retry_after`` is not
    waited for (the error is raised at once)."""

    retries: int = 3
    backoff: float = 0.5
    max_backoff: float = 10.0
    max_retry_after: float = 60.0

    def __post_init__(self) -> None:
        if self.retries < 0 or self.backoff < 0 or self.max_backoff < 0 or self.max_retry_after < 0:
            raise ValueError("retries, backoff, max_backoff and max_retry_after must not be negative")

    def delay(self, retry: int, asked: float | None) -> float:
        """Seconds to wait before retry number ``retry`` (from 1)."""
        wait = min(self.max_backoff, self.backoff * 2.0 ** (retry - 1)) * random.uniform(0.5, 1.0)
        return max(wait, asked or 0.0)


class _Attempts(Generic[T]):
    """One call's attempts: the request of each, and whether (and when) to try again. No I/O, so
    the blocking and the asyncio client share every rule."""

    def __init__(self, call: Call[T], policy: RetryPolicy, signing: SigningKey | None) -> None:
        self.call = call
        self.policy = policy
        self.signing = signing if call.operation.signable else None
        self.made = 0
        self.signed_at = 0

    def request(self, http: httpx.Client | httpx.AsyncClient) -> httpx.Request:
        """The next attempt's request."""
        self.made += 1
        op, call = self.call.operation, self.call
        headers = {REQUEST_ID_HEADER: call.request_id}
        if call.content is not None:
            headers["Content-Type"] = "application/json"
        if call.idempotency_key is not None:
            headers[IDEMPOTENCY_HEADER] = call.idempotency_key
        request = http.build_request(
            op.method, call.path, params=tuple(call.params), content=call.content, headers=headers
        )
        if self.signing is not None:
            # tidings accepts a signature once, and the same second and body sign alike: each
            # attempt is signed at a later second than the last (within the tolerance of minutes).
            self.signed_at = max(int(time.time()), self.signed_at + 1)
            request.headers.pop("Authorization", None)
            request.headers[KEY_HEADER] = self.signing.key_id
            request.headers[HEADER] = sign(call.content or b"", self.signing.secret, timestamp=self.signed_at)
        return request

    def after_failure(self, error: httpx.TransportError) -> float:
        """Seconds to wait before trying again after ``error``; raises it when the call may not be
        retried or the attempts are used up."""
        may = self.call.operation.idempotent or isinstance(error, NOT_SENT)
        if not may or self.made > self.policy.retries:
            raise error
        return self.policy.delay(self.made, None)

    def after_answer(self, response: httpx.Response) -> float | None:
        """Seconds to wait before trying again after ``response``, or ``None`` when it is the
        answer to return (or to raise: :meth:`result`)."""
        status = response.status_code
        if status < 400 or status in self.call.operation.also_answers or self.made > self.policy.retries:
            return None
        asked = retry_after(response)
        if status == 429:
            # Rate limited before anything was done: safe to repeat, if the wait is reasonable.
            retry = asked is not None
        else:
            retry = status in RETRIED_STATUSES and self.call.operation.idempotent
        if not retry or (asked is not None and asked > self.policy.max_retry_after):
            return None
        return self.policy.delay(self.made, asked)

    def result(self, response: httpx.Response) -> T:
        """The parsed answer; :class:`ApiError` for an error."""
        op = self.call.operation
        if response.status_code >= 400 and response.status_code not in op.also_answers:
            raise ApiError.from_response(response)
        if op.answer is NONE:
            return None  # type: ignore[return-value]  # T is None for these operations
        if not issubclass(op.answer, BaseModel):
            raise TypeError(f"{op.id}: cannot read an answer as {op.answer!r}")
        try:
            parsed: T = op.answer.model_validate_json(response.content)
        except ValidationError:
            if response.status_code >= 400:
                raise ApiError.from_response(response) from None
            raise
        return parsed


class _Base:
    """What both clients hold: where tidings is, the key, and how to retry."""

    def __init__(
        self,
        base_url: str,
        api_key: str | None,
        *,
        timeout: float,
        retries: int,
        backoff: float,
        max_backoff: float,
        max_retry_after: float,
        signing_key: SigningKey | None,
        headers: Mapping[str, str] | None,
    ) -> None:
        self.base_url = base_url.rstrip("/")
        self.policy = RetryPolicy(retries, backoff, max_backoff, max_retry_after)
        self.signing_key = signing_key
        self.timeout = httpx.Timeout(timeout)
        self.headers = {"User-Agent": USER_AGENT, "Accept": "application/json", **(headers or {})}
        if api_key is not None:
            self.headers["Authorization"] = f"Bearer {api_key}"


def _blocking(build: Callable[P, Call[T]]) -> Callable[Concatenate[Client, P], T]:
    @functools.wraps(build)
    def method(self: Client, /, *args: P.args, **kwargs: P.kwargs) -> T:
        return self.run(build(*args, **kwargs))

    return method


def _awaitable(build: Callable[P, Call[T]]) -> Callable[Concatenate[AsyncClient, P], Coroutine[Any, Any, T]]:
    @functools.wraps(build)
    async def method(self: AsyncClient, /, *args: P.args, **kwargs: P.kwargs) -> T:
        return await self.run(build(*args, **kwargs))

    return method


class Client(_Base):
    """A blocking client of tidings' REST API::

        with Client("https://tidings.example.org", "tdg_…") as tidings:
            message = tidings.send_message(to="+254712345678", body="Your visit is tomorrow.")
            print(tidings.get_message(message.id).status)

    ``timeout``: seconds for each attempt's connect, read and write; ``retries``, ``backoff``,
    ``max_backoff``, ``max_retry_after``: see :class:`RetryPolicy`. ``signing_key`` signs batches
    instead of sending the bearer key; ``transport``: an httpx transport (an in-process app, a
    proxy). An error answer raises :class:`ApiError`; no answer at all, after the retries,
    raises the ``httpx.TransportError``.
    """

    def __init__(
        self,
        base_url: str,
        api_key: str | None = None,
        *,
        timeout: float = 10.0,
        retries: int = 3,
        backoff: float = 0.5,
        max_backoff: float = 10.0,
        max_retry_after: float = 60.0,
        signing_key: SigningKey | None = None,
        headers: Mapping[str, str] | None = None,
        transport: httpx.BaseTransport | None = None,
    ) -> None:
        super().__init__(
            base_url,
            api_key,
            timeout=timeout,
            retries=retries,
            backoff=backoff,
            max_backoff=max_backoff,
            max_retry_after=max_retry_after,
            signing_key=signing_key,
            headers=headers,
        )
        self.http = httpx.Client(
            base_url=self.base_url, headers=self.headers, timeout=self.timeout, transport=transport
        )

    def run(self, call: Call[T]) -> T:
        """Carry ``call`` out, retrying as the policy allows."""
        attempts = _Attempts(call, self.policy, self.signing_key)
        while True:
            request = attempts.request(self.http)
            try:
                response = self.http.send(request)
            except httpx.TransportError as error:
                wait = attempts.after_failure(error)
            else:
                answered = attempts.after_answer(response)
                if answered is None:
                    return attempts.result(response)
                wait = answered
            time.sleep(wait)

    def close(self) -> None:
        self.http.close()

    def __enter__(self) -> Self:
        return self

    def __exit__(
        self, kind: type[BaseException] | None, error: BaseException | None, trace: TracebackType | None
    ) -> None:
        self.close()

    get_health = _blocking(Requests.get_health)
    send_message = _blocking(Requests.send_message)
    list_messages = _blocking(Requests.list_messages)
    get_message = _blocking(Requests.get_message)
    cancel_message = _blocking(Requests.cancel_message)
    send_batch = _blocking(Requests.send_batch)
    list_batches = _blocking(Requests.list_batches)
    get_batch = _blocking(Requests.get_batch)
    cancel_batch = _blocking(Requests.cancel_batch)
    create_template = _blocking(Requests.create_template)
    list_templates = _blocking(Requests.list_templates)
    get_template = _blocking(Requests.get_template)
    update_template = _blocking(Requests.update_template)
    delete_template = _blocking(Requests.delete_template)
    list_gateways = _blocking(Requests.list_gateways)
    list_inbound = _blocking(Requests.list_inbound)
    list_opt_outs = _blocking(Requests.list_opt_outs)
    add_opt_out = _blocking(Requests.add_opt_out)
    remove_opt_out = _blocking(Requests.remove_opt_out)
    list_log = _blocking(Requests.list_log)
    list_callbacks = _blocking(Requests.list_callbacks)
    retry_callback = _blocking(Requests.retry_callback)
    get_callback_settings = _blocking(Requests.get_callback_settings)
    set_callback_settings = _blocking(Requests.set_callback_settings)
    rotate_callback_secret = _blocking(Requests.rotate_callback_secret)
    get_stats = _blocking(Requests.get_stats)
    get_webhook_stats = _blocking(Requests.get_webhook_stats)
    list_alerts = _blocking(Requests.list_alerts)


class AsyncClient(_Base):
    """The asyncio twin of :class:`Client`, with the same methods and options, awaited::

    async with AsyncClient("https://tidings.example.org", "tdg_…") as tidings:
        message = await tidings.send_message(to="+254712345678", body="Your visit is tomorrow.")
    """

    def __init__(
        self,
        base_url: str,
        api_key: str | None = None,
        *,
        timeout: float = 10.0,
        retries: int = 3,
        backoff: float = 0.5,
        max_backoff: float = 10.0,
        max_retry_after: float = 60.0,
        signing_key: SigningKey | None = None,
        headers: Mapping[str, str] | None = None,
        transport: httpx.AsyncBaseTransport | None = None,
    ) -> None:
        super().__init__(
            base_url,
            api_key,
            timeout=timeout,
            retries=retries,
            backoff=backoff,
            max_backoff=max_backoff,
            max_retry_after=max_retry_after,
            signing_key=signing_key,
            headers=headers,
        )
        self.http = httpx.AsyncClient(
            base_url=self.base_url, headers=self.headers, timeout=self.timeout, transport=transport
        )

    async def run(self, call: Call[T]) -> T:
        """Carry ``call`` out, retrying as the policy allows."""
        attempts = _Attempts(call, self.policy, self.signing_key)
        while True:
            request = attempts.request(self.http)
            try:
                response = await self.http.send(request)
            except httpx.TransportError as error:
                wait = attempts.after_failure(error)
            else:
                answered = attempts.after_answer(response)
                if answered is None:
                    return attempts.result(response)
                wait = answered
            await asyncio.sleep(wait)

    async def aclose(self) -> None:
        await self.http.aclose()

    async def __aenter__(self) -> Self:
        return self

    async def __aexit__(
        self, kind: type[BaseException] | None, error: BaseException | None, trace: TracebackType | None
    ) -> None:
        await self.aclose()

    get_health = _awaitable(Requests.get_health)
    send_message = _awaitable(Requests.send_message)
    list_messages = _awaitable(Requests.list_messages)
    get_message = _awaitable(Requests.get_message)
    cancel_message = _awaitable(Requests.cancel_message)
    send_batch = _awaitable(Requests.send_batch)
    list_batches = _awaitable(Requests.list_batches)
    get_batch = _awaitable(Requests.get_batch)
    cancel_batch = _awaitable(Requests.cancel_batch)
    create_template = _awaitable(Requests.create_template)
    list_templates = _awaitable(Requests.list_templates)
    get_template = _awaitable(Requests.get_template)
    update_template = _awaitable(Requests.update_template)
    delete_template = _awaitable(Requests.delete_template)
    list_gateways = _awaitable(Requests.list_gateways)
    list_inbound = _awaitable(Requests.list_inbound)
    list_opt_outs = _awaitable(Requests.list_opt_outs)
    add_opt_out = _awaitable(Requests.add_opt_out)
    remove_opt_out = _awaitable(Requests.remove_opt_out)
    list_log = _awaitable(Requests.list_log)
    list_callbacks = _awaitable(Requests.list_callbacks)
    retry_callback = _awaitable(Requests.retry_callback)
    get_callback_settings = _awaitable(Requests.get_callback_settings)
    set_callback_settings = _awaitable(Requests.set_callback_settings)
    rotate_callback_secret = _awaitable(Requests.rotate_callback_secret)
    get_stats = _awaitable(Requests.get_stats)
    get_webhook_stats = _awaitable(Requests.get_webhook_stats)
    list_alerts = _awaitable(Requests.list_alerts)
