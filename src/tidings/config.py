"""Settings, from environment variables and an optional TOML file.

Every setting has a default, so tidings starts with no configuration at all: SQLite in
``./tidings.db`` and the ``fake`` provider. A TOML file named by ``TIDINGS_CONFIG`` may set any
top-level setting and declares providers as ``[providers.NAME]`` tables with a ``kind``.
Environment variables ``TIDINGS_<SETTING>`` override the file. A wrong or missing setting raises
:class:`~tidings.errors.ConfigError` naming it, before anything starts.
"""

from __future__ import annotations

import difflib
import ipaddress
import json
import os
import re
import tomllib
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import (
    AfterValidator,
    BaseModel,
    ConfigDict,
    Field,
    PrivateAttr,
    ValidationError,
    field_validator,
    model_validator,
)

from tidings.domain.costs import PriceTable
from tidings.domain.keywords import DEFAULT_HELP, DEFAULT_OPT_IN, DEFAULT_OPT_OUT
from tidings.errors import ConfigError

ENV_PREFIX = "TIDINGS_"


class ProviderSettings(BaseModel):
    """Settings every provider has; each kind adds its own (see ``tidings.providers``)."""

    model_config = ConfigDict(extra="forbid", frozen=True, populate_by_name=True)

    kind: str
    concurrency: int = Field(default=10, ge=1, le=10_000)
    """At most this many sends in flight at once, per worker process."""
    rate_limit: float | None = Field(default=None, gt=0)
    """At most this many sends per second, per worker process (unset: no limit)."""
    timeout_seconds: float = Field(default=30.0, gt=0)
    webhook_allow_ips: list[str] = Field(default_factory=list)
    """CIDR ranges this provider's webhooks may come from (empty: any address)."""
    webhook_max_bytes: int = Field(default=65_536, ge=256)
    """Largest webhook body accepted from this provider."""
    ordered: bool = False
    """Hand messages to the same number over in the order they were accepted."""
    poll: bool = True
    """Ask the provider for the status of messages whose receipt is late (where it can)."""
    currency: str | None = None
    """The currency of ``prices`` (ISO 4217, e.g. USD)."""
    prices: dict[str, str | int | float] = Field(default_factory=dict)
    """What a message costs when the provider does not say: destination prefix (``+254``) or
    ``*`` to the price of one SMS segment (the longest prefix wins); for email ``*`` is the price
    of one message. Exact decimals, at most six places."""

    @model_validator(mode="after")
    def _price_table(self) -> ProviderSettings:
        self._prices = PriceTable.parse(self.currency, self.prices)
        return self

    _prices: PriceTable | None = PrivateAttr(default=None)

    @property
    def price_table(self) -> PriceTable | None:
        """``prices`` read (``None``: no prices configured)."""
        return self._prices

    @field_validator("webhook_allow_ips")
    @classmethod
    def _cidrs(cls, value: list[str]) -> list[str]:
        return [_cidr(v) for v in value]


def _cidr(value: str) -> str:
    try:
        return str(ipaddress.ip_network(value.strip(), strict=False))
    except ValueError as exc:
        raise ValueError(f"{value!r} is not an IP address or CIDR range") from exc


_PREFIX = re.compile(r"^\+[0-9]{1,15}$")
_LABEL = r"[a-z0-9](?:[a-z0-9-]{0,61}[a-z0-9])?"
_DOMAIN = re.compile(rf"^(?=.{{1,253}}$)({_LABEL}\.)*{_LABEL}$")


def _share(value: float) -> float:
    if not 0 <= value <= 1:
        raise ValueError(f"{value:g} is not a share from 0 to 1 (write 0.9 for 90 %)")
    return value


Share = Annotated[float, AfterValidator(_share)]
"""A proportion, from 0 to 1."""
Seconds = Annotated[float, Field(gt=0, le=366 * 86_400)]
"""A duration of an alert rule: more than nothing, at most a year."""
Count = Annotated[int, Field(ge=0)]


class AlertRule(BaseModel):
    """What every alert rule has: it can be switched off."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    enabled: bool = True


class DeliveryRateRule(AlertRule):
    """The delivery rate of the messages accepted in the window is below ``below`` (seed 002)."""

    below: Share = 0.90
    window_seconds: Seconds = 86_400.0
    min_messages: Count = 10
    """Judged only when more than this many messages were attempted in the window."""


class FailureRateRule(AlertRule):
    """The failure rate of the messages accepted in the window is above ``above`` (seed 002)."""

    above: Share = 0.10
    window_seconds: Seconds = 86_400.0
    min_messages: Count = 10


class PendingRule(AlertRule):
    """More than ``above`` messages accepted in the window have no final status yet (seed 002)."""

    above: Count = 100
    window_seconds: Seconds = 86_400.0


class OldestWaitingRule(AlertRule):
    """A provider's oldest due message has waited more than ``seconds`` for a worker."""

    seconds: Seconds = 900.0


class FailoverRule(AlertRule):
    """A provider's messages moved to the next provider in their route more than ``above`` times
    in the window."""

    above: Count = 10
    window_seconds: Seconds = 3600.0


class GatewaySilentRule(AlertRule):
    """An Android gateway that has polled before has not polled for more than ``seconds`` (unset:
    the gateway's own ``silent_after_seconds``)."""

    seconds: Seconds | None = None


class WebhooksFailingRule(AlertRule):
    """More than the share ``above`` of a provider's webhooks in the window were refused or failed,
    out of more than ``min_requests``."""

    above: Share = 0.10
    window_seconds: Seconds = 3600.0
    min_requests: Count = 10


class CallbacksFailingRule(AlertRule):
    """More than ``above`` callbacks queued in the window failed for good or wait for a retry."""

    above: Count = 10
    window_seconds: Seconds = 3600.0


class BatchStalledRule(AlertRule):
    """A batch has messages due for more than ``seconds`` and none of its messages moved for as
    long."""

    seconds: Seconds = 900.0


RuleName = Literal[
    "delivery_rate",
    "failure_rate",
    "pending",
    "oldest_waiting",
    "failover",
    "gateway_silent",
    "webhooks_failing",
    "callbacks_failing",
    "batch_stalled",
]
"""The alert rules' names: the settings of :class:`AlertRules` (a test keeps them the same)."""


class AlertRules(BaseModel):
    """The ``[alerts]`` table: one table per rule, each on by default."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    delivery_rate: DeliveryRateRule = Field(default_factory=DeliveryRateRule)
    failure_rate: FailureRateRule = Field(default_factory=FailureRateRule)
    pending: PendingRule = Field(default_factory=PendingRule)
    oldest_waiting: OldestWaitingRule = Field(default_factory=OldestWaitingRule)
    failover: FailoverRule = Field(default_factory=FailoverRule)
    gateway_silent: GatewaySilentRule = Field(default_factory=GatewaySilentRule)
    webhooks_failing: WebhooksFailingRule = Field(default_factory=WebhooksFailingRule)
    callbacks_failing: CallbacksFailingRule = Field(default_factory=CallbacksFailingRule)
    batch_stalled: BatchStalledRule = Field(default_factory=BatchStalledRule)


class Settings(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    database_url: str = "sqlite:///./tidings.db"
    host: str = "127.0.0.1"
    port: int = Field(default=8000, ge=0, le=65535)
    public_url: str | None = None
    """Where providers reach this service (for receipts); default http://HOST:PORT."""
    workers: int | None = Field(default=None, ge=1, le=256)
    """HTTP processes of ``tidings serve`` and ``tidings api``, sharing one port (``serve`` adds one
    process for its worker and the gRPC API); unset: one per core. ``1``: all in one process."""
    grpc_port: int = Field(default=50051, ge=0, le=65535)
    """Where ``tidings serve`` and ``tidings grpc`` serve the gRPC API (on ``host``); 0: not at all."""
    grpc_tls_cert: str | None = None
    """A PEM certificate (chain) file: the gRPC API then serves TLS only (with ``grpc_tls_key``)."""
    grpc_tls_key: str | None = None
    log_level: Literal["DEBUG", "INFO", "WARNING", "ERROR"] = "INFO"
    log_format: Literal["auto", "json", "text"] = "auto"
    """``json`` lines, or ``text`` (``key=value``); ``auto``: text on a terminal, JSON otherwise."""
    access_log: bool = True
    """One log line per HTTP request: method, path, status, time taken and request id."""
    metrics_dir: str | None = None
    """A directory the tidings processes of one machine share for ``GET /metrics`` (Prometheus'
    multiprocess mode): each process writes its counters there and ``/metrics`` sums them. Unset:
    each process reports only its own, but the processes of one ``tidings serve`` or ``tidings api``
    share a directory of their own."""
    metrics_public: bool = False
    """Serve ``GET /metrics`` without an API key (otherwise a key with the ``read`` scope)."""

    default_region: str | None = None
    """ISO 3166 code used to read numbers written without +country code (e.g. KE)."""
    default_provider: str = "fake"
    default_email_provider: str | None = None
    """The provider for email without a route or a provider of its own (unset: ``default_provider``
    when it sends email, else the one provider that does)."""
    max_attachments: int = Field(default=10, ge=0, le=100)
    max_attachment_bytes: int = Field(default=10_485_760, ge=1024)
    """The most an email's attachments may weigh together (decoded)."""
    max_request_bytes: int = Field(default=1_048_576, ge=1024)
    max_body_chars: int = Field(default=1600, ge=1)
    max_batch_recipients: int = Field(default=100_000, ge=1)
    """Most recipients in one batch (``POST /v1/batches``); more is a 422 ``too_many_recipients``."""
    max_batch_bytes: int = Field(default=52_428_800, ge=1024)
    """Largest body ``POST /v1/batches`` accepts (other requests: ``max_request_bytes``)."""
    signature_tolerance_seconds: float = Field(default=300.0, gt=0, le=3600)
    """How far a signed request's timestamp may be from now; its signature is single-use meanwhile."""
    api_key_cache_seconds: float = Field(default=5.0, ge=0)
    api_key_rate_limit: float | None = Field(default=None, gt=0)
    """Requests a second each API key may make, per API process (unset: no limit); a key's own
    limit (``tidings keys create --rate-limit``) comes first."""
    auto_migrate: bool = True
    pool_size: int = Field(default=10, ge=1, le=1000)
    """Database connections per process (plus as many again in bursts)."""
    sqlite_synchronous: Literal["OFF", "NORMAL", "FULL", "EXTRA"] = "FULL"

    max_attempts: int = Field(default=11, ge=1, le=100)
    retry_base_seconds: float = Field(default=5.0, gt=0)
    retry_cap_seconds: float = Field(default=3600.0, gt=0)
    lease_seconds: float = Field(default=60.0, gt=0)
    claim_batch: int = Field(default=100, ge=1, le=10_000)
    poll_interval: float = Field(default=1.0, gt=0)
    maintenance_interval: float = Field(default=1.0, gt=0)

    failover_after: int = Field(default=3, ge=1, le=100)
    """Temporary failures in a row on one provider before the next one in the route is tried."""
    routes: dict[str, list[str]] = Field(default_factory=dict)
    """Destination prefix (``+225``) to the providers to try, in order; the longest prefix wins."""
    email_routes: dict[str, list[str]] = Field(default_factory=dict)
    """Email: a domain (``example.org``, which covers its subdomains) to the providers to try, in
    order; the longest matching domain wins."""
    trusted_proxies: list[str] = Field(default_factory=list)
    """CIDR ranges of reverse proxies whose ``X-Forwarded-For`` names a webhook's real sender."""
    poll_after_seconds: float = Field(default=3600.0, gt=0)
    """Ask the provider about a ``sent`` message with no receipt after this long."""
    poll_repeat_seconds: float = Field(default=3600.0, gt=0)
    poll_max: int = Field(default=6, ge=0, le=1000)
    """Polls per message before tidings stops asking (the message stays ``sent``)."""
    poll_batch: int = Field(default=50, ge=1, le=10_000)
    poll_check_seconds: float = Field(default=30.0, gt=0)

    opt_out_keywords: list[str] = Field(default_factory=lambda: list(DEFAULT_OPT_OUT))
    opt_in_keywords: list[str] = Field(default_factory=lambda: list(DEFAULT_OPT_IN))
    help_keywords: list[str] = Field(default_factory=lambda: list(DEFAULT_HELP))
    opt_out_scope: Literal["all", "sender"] = "all"
    """``all``: an opt-out stops every message to the number; ``sender``: only those from the
    number it was sent to (the message's ``sender``)."""
    opt_out_reply: str | None = None
    opt_in_reply: str | None = None
    help_reply: str | None = None
    callback_timeout_seconds: float = Field(default=10.0, gt=0)
    callback_concurrency: int = Field(default=10, ge=1, le=1000)
    """Callbacks in flight at once, per worker process."""
    callback_allow_networks: list[str] = Field(default_factory=list)
    """CIDR ranges callbacks may go to although they are loopback, private or link-local (an
    application on the same private network)."""
    callback_secret_grace_seconds: float = Field(default=86_400.0, ge=0)
    """After a key's signing secret is rotated, the old one keeps signing this long."""
    callback_retry_base_seconds: float = Field(default=180.0, gt=0)
    callback_retry_cap_seconds: float = Field(default=28_800.0, gt=0)
    """Back-off between deliveries of one callback: with 10 attempts, about a day in all."""

    webhook_log_retention_days: float | None = Field(default=30.0, gt=0)
    """Webhook-log rows older than this are deleted (unset: kept)."""
    callback_retention_days: float | None = Field(default=30.0, gt=0)
    """Delivered and failed callbacks older than this are deleted (unset: kept)."""
    message_body_retention_days: float | None = Field(default=None, gt=0)
    """Bodies, metadata and provider payloads of messages older than this are removed, once they
    have left the queue (unset: kept)."""
    inbound_retention_days: float | None = Field(default=None, gt=0)
    """Texts of inbound messages older than this are removed (unset: kept)."""
    prune_interval_seconds: float = Field(default=3600.0, gt=0)
    prune_batch: int = Field(default=1000, ge=1, le=100_000)
    """Most rows one retention statement touches."""

    stats_max_days: float = Field(default=93.0, gt=0, le=3660)
    """The longest range ``GET /v1/stats`` covers in one query (longer is a 422)."""

    alert_interval: float = Field(default=60.0, gt=0)
    """Seconds between two evaluations of the alert rules by each worker."""
    alerts: AlertRules = Field(default_factory=AlertRules)

    dashboard: bool = True
    """Serve the web dashboard at ``/dashboard`` (its users: ``tidings users create``)."""
    dashboard_session_hours: float = Field(default=12.0, gt=0, le=24 * 30)
    """A dashboard session ends after this long without a page being loaded."""

    providers: dict[str, dict[str, Any]] = Field(default_factory=dict)

    _sources: Sources | None = PrivateAttr(default=None)

    @property
    def sources(self) -> Sources:
        """Where each value came from (for error messages)."""
        return self._sources or Sources()

    @field_validator("trusted_proxies", "callback_allow_networks")
    @classmethod
    def _proxy_cidrs(cls, value: list[str]) -> list[str]:
        return [_cidr(v) for v in value]

    @field_validator("routes")
    @classmethod
    def _route_prefixes(cls, value: dict[str, list[str]]) -> dict[str, list[str]]:
        for prefix, names in value.items():
            if not _PREFIX.match(prefix):
                raise ValueError(f"route {prefix!r}: a prefix is + and 1 to 15 digits, like +225")
            if not names:
                raise ValueError(f"route {prefix!r}: name at least one provider")
        return value

    @field_validator("email_routes")
    @classmethod
    def _route_domains(cls, value: dict[str, list[str]]) -> dict[str, list[str]]:
        routes: dict[str, list[str]] = {}
        for domain, names in value.items():
            cleaned = domain.strip().lower().lstrip("@").lstrip(".")
            if not _DOMAIN.match(cleaned):
                raise ValueError(f"email route {domain!r}: a domain is like example.org")
            if not names:
                raise ValueError(f"email route {domain!r}: name at least one provider")
            routes[cleaned] = names
        return routes

    @field_validator("default_region")
    @classmethod
    def _known_region(cls, value: str | None) -> str | None:
        from tidings.domain.phone import is_valid_region

        if value is None or value == "":
            return None
        value = value.upper()
        if not is_valid_region(value):
            raise ValueError(f"unknown region {value!r}; use an ISO 3166 alpha-2 code such as KE or US")
        return value

    @field_validator("metrics_dir")
    @classmethod
    def _metrics_dir(cls, value: str | None) -> str | None:
        return value.strip() or None if value is not None else None

    @field_validator("database_url")
    @classmethod
    def _known_database(cls, value: str) -> str:
        if not value.startswith(("sqlite:", "sqlite+", "postgresql:", "postgresql+", "postgres:")):
            raise ValueError("must start with sqlite:/// or postgresql://")
        return value

    @model_validator(mode="after")
    def _grpc_tls_pair(self) -> Settings:
        if (self.grpc_tls_cert is None) != (self.grpc_tls_key is None):
            raise ValueError("grpc_tls_cert and grpc_tls_key go together: set both, or neither")
        return self

    @property
    def http_processes(self) -> int:
        """``workers``, or the number of cores this process may run on."""
        if self.workers is not None:
            return self.workers
        try:
            return max(1, len(os.sched_getaffinity(0)))
        except AttributeError:  # pragma: no cover - not Linux
            return max(1, os.cpu_count() or 1)

    @property
    def base_url(self) -> str:
        return (self.public_url or f"http://{self.host}:{self.port}").rstrip("/")

    def provider_tables(self) -> dict[str, dict[str, Any]]:
        """The configured providers; with none configured, one ``fake`` provider named ``fake``."""
        if self.providers:
            return dict(self.providers)
        return {"fake": {"kind": "fake"}}


_JSON_FIELDS = frozenset(
    {
        "routes",
        "trusted_proxies",
        "callback_allow_networks",
        "opt_out_keywords",
        "opt_in_keywords",
        "help_keywords",
        "alerts",
    }
)
"""Settings whose environment variable holds JSON (a table or a list)."""

PROVIDERS_PREFIX = f"{ENV_PREFIX}PROVIDERS__"
"""``TIDINGS_PROVIDERS__<NAME>__<SETTING>``: a provider's setting from the environment."""

_NOT_SETTINGS = frozenset({"TIDINGS_CONFIG", "TIDINGS_API_KEY"})
"""Variables with the prefix that are not settings: the file's name, and the API key a client
command (``tidings send-batch --url``) sends with (``TIDINGS_API_KEY_CACHE_SECONDS`` is a setting)."""
_NOT_SETTINGS_PREFIX = "TIDINGS_TEST_"
"""The test suite's own variables."""


class Sources:
    """Where each setting's value came from, to name it in an error: a variable, or the file."""

    def __init__(self, file: str | None = None) -> None:
        self.file = file
        self._variables: dict[tuple[str, ...], str] = {}

    def variable(self, path: tuple[str, ...], name: str) -> None:
        self._variables[path] = name

    def of(self, path: tuple[str, ...]) -> str | None:
        """Where the value at ``path`` came from: the variable, else the file (``None``: neither)."""
        for size in range(len(path), 0, -1):
            found = self._variables.get(path[:size])
            if found is not None:
                return f"from {found}"
        return f"in {self.file}" if self.file else None

    def env_name(self, path: tuple[str, ...]) -> str:
        """The variable that would set ``path``."""
        if len(path) >= 3 and path[0] == "providers":
            return f"{PROVIDERS_PREFIX}{path[1].upper()}__{path[2].upper()}"
        return f"{ENV_PREFIX}{path[0].upper()}"


def closest(name: str, known: Iterable[str]) -> str | None:
    """The one of ``known`` that ``name`` looks like a typo of, if any."""
    close = difflib.get_close_matches(name.lower(), list(known), n=1, cutoff=0.7)
    return close[0] if close else None


def _json_value(name: str, value: str) -> Any:
    try:
        return json.loads(value)
    except ValueError as exc:
        raise ConfigError(f"{name} must be JSON: {exc}") from exc


def _env_overrides(env: Mapping[str, str], values: dict[str, Any], sources: Sources) -> dict[str, Any]:
    fields = set(Settings.model_fields) - {"providers"}
    overrides: dict[str, Any] = {}
    unknown: list[str] = []
    for key, value in sorted(env.items()):
        if not key.startswith(ENV_PREFIX) or key in _NOT_SETTINGS or key.startswith(_NOT_SETTINGS_PREFIX):
            continue
        if key.startswith(PROVIDERS_PREFIX):
            _provider_override(key, value, values, sources)
            continue
        name = key[len(ENV_PREFIX) :].lower()
        if name not in fields:
            guess = closest(name, fields)
            unknown.append(f"{key} (did you mean {ENV_PREFIX}{guess.upper()}?)" if guess else key)
            continue
        overrides[name] = _json_value(key, value) if name in _JSON_FIELDS else value
        sources.variable((name,), key)
    if unknown:
        raise ConfigError(f"unknown setting variables: {', '.join(unknown)}")
    return overrides


def _provider_override(key: str, value: str, values: dict[str, Any], sources: Sources) -> None:
    """``TIDINGS_PROVIDERS__NAME__SETTING=value`` into ``values["providers"]``: the provider of that
    name in the file whatever its case, or a new one; a value that looks like JSON is read as JSON
    (``webhook_allow_ips='["10.0.0.0/8"]'``)."""
    rest = key[len(PROVIDERS_PREFIX) :]
    provider, _, setting = rest.partition("__")
    if not provider or not setting:
        raise ConfigError(f"{key}: write provider settings as {PROVIDERS_PREFIX}<NAME>__<SETTING>")
    tables: dict[str, Any] = values.setdefault("providers", {})
    name = next((n for n in tables if n.lower() == provider.lower()), provider.lower())
    table = tables.setdefault(name, {})
    if not isinstance(table, dict):
        raise ConfigError(f"setting providers.{name}: must be a table")
    stripped = value.strip()
    table[setting.lower()] = _json_value(key, value) if stripped[:1] in ("[", "{") else value
    sources.variable(("providers", name, setting.lower()), key)


def _names_in(model: type[BaseModel], path: Iterable[str]) -> list[str]:
    """The settings of the table at ``path`` inside ``model`` (``[alerts.pending]``: the pending
    rule's), to guess what an unknown one is a typo of."""
    for name in path:
        field = model.model_fields.get(name)
        inner = field.annotation if field is not None else None
        if not (isinstance(inner, type) and issubclass(inner, BaseModel)):
            return []
        model = inner
    return list(model.model_fields)


def describe_validation_error(
    exc: ValidationError,
    prefix: tuple[str, ...] = (),
    sources: Sources | None = None,
    known: Iterable[str] | type[BaseModel] = (),
) -> list[str]:
    """One line per problem, each naming the setting, where its value came from, and for an
    unknown one what it may be a typo of (among ``known``, or the settings of the model's table
    it is in)."""
    lines = []
    for error in exc.errors():
        path = (*prefix, *(str(p) for p in error["loc"]))
        message = str(error["msg"])
        if error["type"] == "extra_forbidden":
            names = (
                _names_in(known, (str(p) for p in error["loc"][:-1])) if isinstance(known, type) else known
            )
            guess = closest(path[-1], names)
            message = f"unknown setting (did you mean {guess}?)" if guess else "unknown setting"
        elif error["type"] == "missing":
            message = "missing: set it"
            if sources is not None:
                message += f" (or {sources.env_name(path)})"
        origin = sources.of(path) if sources is not None and error["type"] != "missing" else None
        where = f" ({origin})" if origin else ""
        lines.append(f"setting {'.'.join(path)}{where}: {message}")
    return lines


def load_settings(env: Mapping[str, str] | None = None) -> Settings:
    """Read the TOML file named by ``TIDINGS_CONFIG`` (if any), then the environment."""
    env = os.environ if env is None else env
    values: dict[str, Any] = {}
    path = env.get("TIDINGS_CONFIG")
    if path:
        file = Path(path)
        try:
            values = tomllib.loads(file.read_text(encoding="utf-8"))
        except FileNotFoundError as exc:
            raise ConfigError(f"TIDINGS_CONFIG names {path}, which does not exist") from exc
        except (OSError, tomllib.TOMLDecodeError, UnicodeDecodeError) as exc:
            raise ConfigError(f"cannot read configuration file {path}: {exc}") from exc
    sources = Sources(path)
    values.update(_env_overrides(env, values, sources))
    try:
        settings = Settings.model_validate(values)
    except ValidationError as exc:
        raise ConfigError(problems=describe_validation_error(exc, sources=sources, known=Settings)) from exc
    settings._sources = sources
    return settings
