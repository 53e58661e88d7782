"""The provider adapter contract.

An adapter is small: it builds the provider's request and reads its answer (:meth:`Provider.send`),
verifies and reads the provider's webhooks (:meth:`Provider.parse_webhook`), optionally asks the
provider about a message (:meth:`Provider.poll`), and sorts errors into temporary (retry later)
and permanent (fail now) by raising the ``ProviderError`` subclasses of ``tidings.errors``.
Claiming, retries, rate limits, the status machine and logging live once, in ``worker/``,
``services/`` and ``store/``. An adapter declares the channels it sends (``channels``); a message
carries a channel-specific content (``domain.content``).

An adapter over an HTTP API subclasses ``providers.http.HttpProvider``, which runs the send
pipeline and the HTTP exchange once for all of them; ``providers/ADDING.md`` lists the files a new
provider adds and the hooks it fills in.
"""

from __future__ import annotations

import abc
import dataclasses
import hmac
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass, field
from typing import Any, ClassVar

import aiohttp

from tidings.config import ProviderSettings
from tidings.domain.content import Channel, Content, EmailContent, SmsContent
from tidings.domain.failures import FailureReason, reason_for
from tidings.domain.reports import InboundMessage, ProviderReport, Report
from tidings.domain.status import Status
from tidings.errors import WebhookMediaType, WebhookUnknownEvent


@dataclass(frozen=True)
class OutboundMessage:
    """What an adapter needs to send one message."""

    id: str
    to: str
    sender: str | None
    attempt: int
    content: Content

    @property
    def channel(self) -> Channel:
        return Channel.EMAIL if isinstance(self.content, EmailContent) else Channel.SMS

    @property
    def sms(self) -> SmsContent:
        """The SMS content (an SMS adapter is only given SMS)."""
        if not isinstance(self.content, SmsContent):
            raise TypeError(f"message {self.id} is not an SMS")
        return self.content

    @property
    def email(self) -> EmailContent:
        """The email content (an email adapter is only given email)."""
        if not isinstance(self.content, EmailContent):
            raise TypeError(f"message {self.id} is not an email")
        return self.content


@dataclass(frozen=True)
class SendResult:
    """The provider accepted the message.

    ``provider_message_ids`` are the provider's ids for it: usually one, but a provider that gives
    one id per SMS part (SMPP) gives several, and a receipt for any of them finds the message.
    """

    provider_message_ids: tuple[str, ...] = ()
    provider_status: str | None = None
    status: Status = Status.SENT
    raw: dict[str, Any] = field(default_factory=dict)

    @property
    def provider_message_id(self) -> str | None:
        """The provider's main id (the first)."""
        return self.provider_message_ids[0] if self.provider_message_ids else None


@dataclass(frozen=True)
class WebhookRequest:
    """An incoming webhook, independent of the web framework.

    ``url`` is the public URL the provider posted to (what it signs), query string included.
    """

    url: str
    headers: Mapping[str, str]
    body: bytes

    def header(self, name: str) -> str | None:
        """A header by case-insensitive name."""
        lowered = name.lower()
        for key, value in self.headers.items():
            if key.lower() == lowered:
                return value
        return None

    @property
    def media_type(self) -> str:
        """The content type without parameters, lower case (``application/json``)."""
        return (self.header("content-type") or "").split(";", 1)[0].strip().lower()


@dataclass(frozen=True)
class WebhookResult:
    reports: list[ProviderReport] = field(default_factory=list)
    inbound: list[InboundMessage] = field(default_factory=list)
    body: bytes = b"OK"
    content_type: str = "text/plain"
    status: int = 200


@dataclass(frozen=True)
class PollRequest:
    """A message whose receipt is late, to ask the provider about."""

    id: str
    to: str
    sender: str | None
    provider_message_id: str


WebhookSink = Callable[["Provider", str, "WebhookRequest"], Awaitable[None]]
"""``deliver(provider, event, request)``: a webhook made inside tidings (the in-process fake's
receipts) taken through the webhook pipeline a posted one goes through: logged, checked, applied."""


@dataclass
class ProviderContext:
    """What the service gives every adapter."""

    base_url: str
    deliver: WebhookSink | None = None
    session: aiohttp.ClientSession | None = None

    def webhook_url(self, kind: str, name: str, event: str) -> str:
        return f"{self.base_url}/webhooks/{kind}/{name}/{event}"


class Provider(abc.ABC):
    """One configured provider (a ``[providers.NAME]`` table)."""

    kind: ClassVar[str]
    settings_model: ClassVar[type[ProviderSettings]] = ProviderSettings
    channels: ClassVar[frozenset[Channel]] = frozenset({Channel.SMS})
    """The channels this provider sends on."""

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
        """Hand one message to the provider; raise a ``tidings.errors.ProviderError`` when it refuses."""

    webhook_media_types: ClassVar[dict[str, frozenset[str]]] = {}
    """The content types each webhook event accepts; an event not listed does not exist."""

    legacy_webhook_paths: ClassVar[Mapping[str, str]] = {}
    """Other paths this kind's webhooks may arrive at (path → event), for a service being
    replaced; the first configured provider of the kind takes them."""

    pulls: ClassVar[bool] = False
    """Whether the provider fetches its own messages (the Android gateway): the dispatcher does not
    send for it."""

    can_poll: ClassVar[bool] = False
    """Whether :meth:`poll` can ask the provider about a message."""

    failure_reasons: ClassVar[Mapping[str, FailureReason]] = {}
    """This provider's error codes in shared words (``domain/failures.py``); codes not listed are
    ``unknown``."""

    def explain(self, report: Report) -> Report:
        """``report`` with its failure reason filled in, when it reports a failure and has none."""
        if report.status is not Status.FAILED or report.failure_reason is not None:
            return report
        return dataclasses.replace(report, failure_reason=self.failure_reason(report))

    def failure_reason(self, report: Report) -> FailureReason:
        """Why a report of failure says the message failed, from its error code."""
        return reason_for(report.error_code, self.failure_reasons)

    def check_webhook(self, event: str, request: WebhookRequest) -> None:
        """Refuse an event this provider does not have, or a body in the wrong content type."""
        allowed = self.webhook_media_types.get(event)
        if allowed is None:
            raise WebhookUnknownEvent(f"provider {self.name} has no webhook {event!r}")
        if request.media_type not in allowed:
            raise WebhookMediaType(
                f"webhook {event!r} takes {' or '.join(sorted(allowed))}, "
                f"not {request.media_type or 'a body without a content type'!r}"
            )

    def verify_webhook(self, event: str, request: WebhookRequest) -> None:
        """Raise :class:`WebhookUnauthorized` unless the request provably comes from the provider.

        Kept apart from :meth:`parse_webhook` so that a logged webhook can be parsed again
        (``tidings webhooks replay``) without its secrets, which are not logged.
        """
        return None

    async def parse_webhook(self, event: str, request: WebhookRequest) -> WebhookResult:
        """Read a verified webhook posted to ``/webhooks/{kind}/{name}/{event}``."""
        raise WebhookUnknownEvent(f"provider {self.name} has no webhook {event!r}")

    async def poll(self, message: PollRequest) -> Report | None:
        """Ask the provider for the status of ``message``; ``None`` when it has nothing new."""
        return None


def signatures_match(expected: str, given: str | None) -> bool:
    """Constant-time comparison of two signatures."""
    return given is not None and hmac.compare_digest(expected.encode(), given.encode())
