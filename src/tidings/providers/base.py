"""The provider adapter contract.

An adapter is small: it builds the provider's request and reads its answer (:meth:`Provider.send`),
verifies and reads the provider's webhooks (:meth:`Provider.parse_webhook`), and sorts errors into
temporary (retry later) and permanent (fail now). Claiming, retries, rate limits, the status
machine and logging live once, in ``worker/`` and ``store/``.

    ProviderError                  raised by send()
    ├── TemporaryProviderError     429, 5xx, timeouts, connection errors: retried with back-off
    └── PermanentProviderError     the provider refused the message for good: failed at once
"""

from __future__ import annotations

import abc
import hmac
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass, field
from typing import Any, ClassVar

import aiohttp

from tidings.config import ProviderSettings
from tidings.domain.status import Report, Status
from tidings.errors import TidingsError


@dataclass(frozen=True)
class OutboundMessage:
    """What an adapter needs to send one message."""

    id: str
    to: str
    body: str
    sender: str | None
    attempt: int


@dataclass(frozen=True)
class SendResult:
    """The provider accepted the message."""

    provider_message_id: str | None
    provider_status: str | None = None
    status: Status = Status.SENT
    raw: dict[str, Any] = field(default_factory=dict)


class ProviderError(Exception):
    """The provider did not accept the message."""

    temporary: ClassVar[bool] = False

    def __init__(
        self,
        message: str,
        *,
        code: str | None = None,
        raw: dict[str, Any] | None = None,
        retry_after: float | None = None,
    ) -> None:
        super().__init__(message)
        self.message = message
        self.code = code
        self.raw = raw or {}
        self.retry_after = retry_after


class TemporaryProviderError(ProviderError):
    """Try again later."""

    temporary = True


class PermanentProviderError(ProviderError):
    """Do not try again."""


@dataclass(frozen=True)
class ProviderReport:
    """A report from a provider about one message, found by our id or by the provider's."""

    report: Report
    message_id: str | None = None
    provider_message_id: str | None = None


@dataclass(frozen=True)
class WebhookRequest:
    """An incoming webhook, independent of the web framework."""

    url: str
    headers: Mapping[str, str]
    body: bytes


@dataclass(frozen=True)
class WebhookResult:
    reports: list[ProviderReport]
    body: bytes = b"OK"
    content_type: str = "text/plain"
    status: int = 200


class WebhookRejected(TidingsError):
    """The webhook could not be accepted."""

    code = "webhook_rejected"
    http_status = 400


class WebhookUnauthorized(WebhookRejected):
    """The webhook's signature does not verify."""

    code = "invalid_signature"
    http_status = 403


ReportSink = Callable[[str, list[ProviderReport]], Awaitable[None]]
"""Where receipts go: ``sink(provider_name, reports)``. Webhooks and in-process fakes share it."""


@dataclass
class ProviderContext:
    """What the service gives every adapter."""

    base_url: str
    sink: ReportSink
    session: aiohttp.ClientSession | None = None

    def webhook_url(self, kind: str, name: str, event: str) -> str:
        return f"{self.base_url}/webhooks/{kind}/{name}/{event}"


class Provider(abc.ABC):
    """One configured provider (a ``[providers.NAME]`` table)."""

    kind: ClassVar[str]
    settings_model: ClassVar[type[ProviderSettings]] = ProviderSettings

    def __init__(self, name: str, settings: ProviderSettings, context: ProviderContext) -> None:
        self.name = name
        self.settings = settings
        self.context = context

    async def start(self) -> None:
        """Open what the adapter needs (called once, inside the event loop)."""
        return None

    async def close(self) -> None:
        """Release what :meth:`start` opened and stop background work."""
        return None

    @abc.abstractmethod
    async def send(self, message: OutboundMessage) -> SendResult:
        """Hand one message to the provider; raise a :class:`ProviderError` when it refuses."""

    async def parse_webhook(self, event: str, request: WebhookRequest) -> WebhookResult:
        """Verify and read a webhook posted to ``/webhooks/{kind}/{name}/{event}``."""
        raise WebhookRejected(f"provider {self.name} has no webhook {event!r}")


def signatures_match(expected: str, given: str | None) -> bool:
    """Constant-time comparison of two signatures."""
    return given is not None and hmac.compare_digest(expected.encode(), given.encode())
