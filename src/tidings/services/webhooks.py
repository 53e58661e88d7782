"""The webhook pipeline shared by every provider: log, check, verify, parse, apply.

1. The request is written to the webhook log (committed) before anything else happens, so a
   request that later fails is never lost: its entry keeps the error, and
   ``tidings webhooks replay ID`` runs it again.
2. Checks: the sender's address against the provider's allowlist (``X-Forwarded-For`` is believed
   only from ``trusted_proxies``), the body size, the content type, then the provider's own
   signature check. A refused request answers 4xx and its entry says why.
3. The provider's adapter reads the body into reports and inbound messages; reports go through
   the tracker (a duplicate or an unknown id is recorded and answered 200, so the provider does
   not resend it), inbound messages to the inbound service (stored once each, with what they set
   off).
"""

from __future__ import annotations

import ipaddress
import logging
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any
from urllib.parse import parse_qsl, urlencode, urlsplit, urlunsplit

from tidings import metrics
from tidings.config import Settings
from tidings.domain.destinations import Network, networks
from tidings.errors import AddressNotAllowed, BadRequest, NotFound, WebhookRejected, WebhookTooLarge
from tidings.providers.base import Provider, WebhookRequest, WebhookResult
from tidings.services.inbound import InboundService
from tidings.services.tracking import Tracker
from tidings.store import Store
from tidings.store.db import unreachable
from tidings.store.webhooks import WebhookEntry

log = logging.getLogger(__name__)

# Query parameters that may carry a credential (Orange's notifyURL token, for one).
_SECRET_PARAMS = frozenset({"token", "secret", "key", "password", "signature", "auth", "access_token"})


def _within(address: str, networks: Sequence[Network]) -> bool:
    try:
        ip = ipaddress.ip_address(address)
    except ValueError:
        return False
    return any(ip in n for n in networks)


def client_address(peer: str | None, forwarded_for: str | None, trusted: Sequence[Network]) -> str | None:
    """The address a request really came from.

    ``X-Forwarded-For`` is read only when the peer is a trusted proxy, and then from the right:
    the first hop that is not itself a trusted proxy is the client (hops further left could be
    made up by anyone).
    """
    if peer is None or not forwarded_for or not _within(peer, trusted):
        return peer
    hops = [h.strip() for h in forwarded_for.split(",") if h.strip()]
    for hop in reversed(hops):
        if not _within(hop, trusted):
            return hop
    return hops[0] if hops else peer


def redact_url(url: str) -> str:
    """``url`` with the values of credential-like query parameters masked, for the log."""
    parts = urlsplit(url)
    if not parts.query:
        return url
    query = [
        (k, "***" if k.lower() in _SECRET_PARAMS else v)
        for k, v in parse_qsl(parts.query, keep_blank_values=True)
    ]
    return urlunsplit(parts._replace(query=urlencode(query)))


@dataclass(frozen=True)
class WebhookAnswer:
    status: int
    body: bytes
    content_type: str
    log_id: int


class WebhookHandler:
    def __init__(
        self,
        store: Store,
        tracker: Tracker,
        inbound: InboundService,
        providers: Mapping[str, Provider],
        settings: Settings,
    ) -> None:
        self.store = store
        self.tracker = tracker
        self.inbound = inbound
        self.providers = providers
        self._trusted = networks(settings.trusted_proxies)
        # Paths other services used for a provider's webhooks (seed 002's Orange paths): each goes
        # to the first configured provider whose kind declares it.
        self.legacy_paths: dict[str, tuple[Provider, str]] = {}
        for provider in providers.values():
            for path, event in provider.legacy_webhook_paths.items():
                self.legacy_paths.setdefault(path, (provider, event))
        self._allowed = {
            name: networks(p.settings.webhook_allow_ips)
            for name, p in providers.items()
            if p.settings.webhook_allow_ips
        }

    def provider(self, kind: str, name: str) -> Provider:
        """The configured provider ``name`` of ``kind``; :class:`NotFound` otherwise."""
        provider = self.providers.get(name)
        if provider is None or provider.kind != kind:
            raise NotFound(f"no {kind} provider named {name}")
        return provider

    async def receive(
        self, provider: Provider, event: str, request: WebhookRequest, peer: str | None
    ) -> WebhookAnswer:
        """Check, log and process one webhook request.

        Raises :class:`WebhookRejected` (4xx) for a request that is refused (logged with its body
        cut to a small cap, its size and hash); any other exception means processing failed
        (answered 500, or 503 when the database is out of reach, so the provider tries again) and
        the entry keeps the error.
        """
        started = time.perf_counter()
        # The event is a path segment anyone can write: only the provider's own name a series.
        named = event if event in provider.webhook_media_types else "unknown"
        outcome = "failed"
        try:
            answer = await self._receive(provider, event, request, peer, started)
            outcome = "processed"
            return answer
        except WebhookRejected as exc:
            outcome = exc.code
            raise
        finally:
            metrics.webhook(provider.name, named, outcome, time.perf_counter() - started)

    async def _receive(
        self, provider: Provider, event: str, request: WebhookRequest, peer: str | None, started: float
    ) -> WebhookAnswer:
        address = client_address(peer, request.header("x-forwarded-for"), self._trusted)
        logged: dict[str, Any] = {
            "provider": provider.name,
            "kind": provider.kind,
            "event": event,
            "url": redact_url(request.url),
            "headers": request.headers,
            "body": request.body,
            "remote_ip": address,
        }
        try:
            # The checks need no database: done first, so that a refused request (however large,
            # however many) costs one capped row.
            self._check(provider, event, request, address)
        except WebhookRejected as exc:
            entry_id = await self.store.webhooks.record(
                **logged,
                refused=(exc.http_status, f"{exc.code}: {exc.message}"),
                duration_ms=_since(started),
            )
            _warn_refused(entry_id, provider, event, exc)
            raise
        entry_id = await self.store.webhooks.record(**logged)
        return await self._process(entry_id, provider, event, request, started)

    def _check(self, provider: Provider, event: str, request: WebhookRequest, address: str | None) -> None:
        allowed = self._allowed.get(provider.name)
        if allowed is not None and (address is None or not _within(address, allowed)):
            raise AddressNotAllowed(f"webhooks for {provider.name} may not come from {address}")
        if len(request.body) > provider.settings.webhook_max_bytes:
            raise WebhookTooLarge(
                f"webhook body has {len(request.body)} bytes; "
                f"the limit for {provider.name} is {provider.settings.webhook_max_bytes}"
            )
        provider.check_webhook(event, request)
        provider.verify_webhook(event, request)

    async def replay(self, entry_id: int) -> WebhookEntry:
        """Process a logged webhook again (one whose processing failed, say); returns the entry as
        it stands afterwards. Only an entry that passed its checks when it arrived is replayed:
        secrets are not logged, so it cannot be verified again."""
        entry = await self.store.webhooks.get(entry_id)
        if entry is None:
            raise NotFound(f"no webhook log entry {entry_id}")
        if entry.verified is not True:
            raise BadRequest(f"webhook log entry {entry_id} was refused when it arrived; it is not replayed")
        provider = self.providers.get(entry.provider)
        if provider is None or provider.kind != entry.kind:
            raise NotFound(
                f"webhook log entry {entry_id} is for provider {entry.provider}, which is not configured"
            )
        request = WebhookRequest(url=entry.url, headers=entry.headers, body=entry.body)
        try:
            await self._process(entry_id, provider, entry.event, request, time.perf_counter())
        except WebhookRejected:
            pass  # recorded on the entry
        replayed = await self.store.webhooks.get(entry_id)
        assert replayed is not None
        return replayed

    async def _process(
        self, entry_id: int, provider: Provider, event: str, request: WebhookRequest, started: float
    ) -> WebhookAnswer:
        try:
            result: WebhookResult = await provider.parse_webhook(event, request)
        except WebhookRejected as exc:
            await self._refused(entry_id, provider, event, exc, started, verified=True)
            raise
        try:
            tracked = await self.tracker.apply(provider.name, result.reports)
            await self.inbound.receive(provider.name, result.inbound, webhook_log_id=entry_id)
        except Exception as exc:
            log.exception(
                "webhook %d could not be processed; replay it with `tidings webhooks replay %d`",
                entry_id,
                entry_id,
                extra={"action": "webhook", "provider": provider.name},
            )
            await self.store.webhooks.finish(
                entry_id,
                verified=True,
                processed=False,
                # What the API answers: 503 when the database is out of reach, else 500; either
                # way the provider sends it again.
                response_status=503 if unreachable(exc) else 500,
                error=f"{type(exc).__name__}: {exc}",
                duration_ms=_since(started),
            )
            raise
        await self.store.webhooks.finish(
            entry_id,
            verified=True,
            processed=True,
            response_status=result.status,
            message_id=tracked.applied[0].message_id if tracked.applied else None,
            reports=len(result.reports),
            unmatched=tracked.unmatched,
            inbound=len(result.inbound),
            duration_ms=_since(started),
        )
        return WebhookAnswer(
            status=result.status, body=result.body, content_type=result.content_type, log_id=entry_id
        )

    async def _refused(
        self,
        entry_id: int,
        provider: Provider,
        event: str,
        exc: WebhookRejected,
        started: float,
        *,
        verified: bool,
    ) -> None:
        _warn_refused(entry_id, provider, event, exc)
        await self.store.webhooks.finish(
            entry_id,
            verified=verified,
            processed=False,
            response_status=exc.http_status,
            error=f"{exc.code}: {exc.message}",
            duration_ms=_since(started),
        )


def _warn_refused(entry_id: int, provider: Provider, event: str, exc: WebhookRejected) -> None:
    log.warning(
        "webhook %d refused (%s): %s",
        entry_id,
        exc.code,
        exc.message,
        extra={"action": "webhook", "provider": provider.name, "event": event[:64]},
    )


def _since(started: float) -> float:
    return round((time.perf_counter() - started) * 1000, 3)
