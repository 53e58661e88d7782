"""The running service: settings, database, providers and the services over them, started and
stopped together.

``tidings serve`` runs the API and a worker on one :class:`Service`; ``tidings api`` and
``tidings worker`` each run one half; the CLI's other commands use one for a moment. Every
transport calls the same services: :attr:`Service.accepting`, :attr:`~Service.messages`,
:attr:`~Service.inbound`, :attr:`~Service.webhooks`, :attr:`~Service.gateway`,
:attr:`~Service.callbacks`, :attr:`~Service.batches`, :attr:`~Service.templates`,
:attr:`~Service.alerts`, :attr:`~Service.operators` (the dashboard's users).
"""

from __future__ import annotations

import asyncio
import logging

from tidings import metrics
from tidings.config import Settings
from tidings.errors import ConfigError
from tidings.providers import Provider, ProviderContext, build_providers
from tidings.providers.base import WebhookRequest
from tidings.providers.fake import FakeProvider, FakeSettings
from tidings.services.accepting import TEST_PROVIDER, Acceptor
from tidings.services.alerts import AlertService
from tidings.services.batches import BatchService
from tidings.services.callbacks import CallbackService
from tidings.services.changes import ChangeFeed
from tidings.services.gateway import GatewayService
from tidings.services.inbound import InboundPolicy, InboundService
from tidings.services.keys import KeyChecker
from tidings.services.messages import MessageService
from tidings.services.operators import OperatorService
from tidings.services.retention import Retention
from tidings.services.routing import Router, email_default
from tidings.services.stats import StatsService
from tidings.services.templates import TemplateService
from tidings.services.tracking import Tracker
from tidings.services.unsubscribe import UnsubscribeService
from tidings.services.webhooks import WebhookHandler
from tidings.store import Store
from tidings.store.migrate import current_revision, head_revision, upgrade
from tidings.worker.callbacks import CallbackSender
from tidings.worker.dispatcher import Dispatcher
from tidings.worker.wakeup import PostgresListener, Waker

log = logging.getLogger(__name__)


class Service:
    def __init__(self, settings: Settings, store: Store | None = None) -> None:
        # Before any metric exists: where they are kept is fixed when the first one is made.
        metrics.configure(settings.metrics_dir)
        self.settings = settings
        self.store = store or Store.connect(
            settings.database_url,
            sqlite_synchronous=settings.sqlite_synchronous,
            pool_size=settings.pool_size,
        )
        metrics.count_statements(self.store.engine)
        self.waker = Waker()
        self.context = ProviderContext(base_url=settings.base_url, deliver=self._deliver_webhook)
        # Built now so that a wrong provider table stops start-up before anything opens.
        self.providers: dict[str, Provider] = build_providers(settings, self.context)
        if TEST_PROVIDER in self.providers:
            raise ConfigError(f"setting providers.{TEST_PROVIDER}: the name is tidings' own (for test keys)")
        # Test keys' messages go to an in-process fake, never to a real provider.
        self.providers[TEST_PROVIDER] = FakeProvider(TEST_PROVIDER, FakeSettings(kind="fake"), self.context)
        self.store.reports.prices = {name: p.settings.price_table for name, p in self.providers.items()}
        self.tracker = Tracker(self.store, self.providers)
        self.router = Router(settings, self.providers, email_provider=email_default(settings, self.providers))
        # One per process, for every transport: a key's rate limit counts all its requests.
        self.key_checker = KeyChecker(
            self.store.keys, settings.api_key_cache_seconds, default_rate=settings.api_key_rate_limit
        )
        self.messages = MessageService(self.store)
        self.changes = ChangeFeed(self.store)
        self.inbound = InboundService(self.store, InboundPolicy.from_settings(settings))
        self.webhooks = WebhookHandler(self.store, self.tracker, self.inbound, self.providers, settings)
        self.gateway = GatewayService(self.store, self.inbound, self.providers)
        self.callbacks = CallbackService(
            self.store,
            self.waker,
            grace_seconds=settings.callback_secret_grace_seconds,
            allow_networks=settings.callback_allow_networks,
        )
        self.accepting = Acceptor(
            settings, self.providers, self.router, self.store, self.waker, callbacks=self.callbacks
        )
        self.templates = TemplateService(self.store)
        self.unsubscribe = UnsubscribeService(self.store, settings.base_url)
        self.batches = BatchService(
            settings, self.accepting, self.templates, self.store, self.waker, self.unsubscribe
        )
        self.retention = Retention(self.store, settings)
        self.stats = StatsService(self.store, settings.stats_max_days)
        self.alerts = AlertService(self.store, settings, self.providers)
        self.operators = OperatorService(self.store.operators, settings.dashboard_session_hours)
        self._listener: PostgresListener | None = None
        self._started: list[Provider] = []
        self.started = False

    async def _deliver_webhook(self, provider: Provider, event: str, request: WebhookRequest) -> None:
        await self.webhooks.receive(provider, event, request, peer=None)

    async def start(self, *, listen: bool = False) -> None:
        """Migrate (when allowed), start the providers and, for a worker on PostgreSQL, LISTEN."""
        if self.settings.auto_migrate:
            await upgrade(self.store.engine)
        else:
            current = await current_revision(self.store.engine)
            if current != head_revision():
                log.warning(
                    "database schema is at %s, code expects %s: run `tidings migrate`",
                    current,
                    head_revision(),
                    extra={"action": "start"},
                )
        for provider in self.providers.values():
            await provider.start()
            self._started.append(provider)
        if listen and self.store.is_postgres:
            self._listener = PostgresListener(self.settings.database_url, self.waker)
            await self._listener.start()
        self.started = True

    def dispatcher(self) -> Dispatcher:
        return Dispatcher(self.store, self.providers, self.settings, self.waker, tracker=self.tracker)

    async def run_worker(self, stop: asyncio.Event) -> None:
        """Send messages, deliver callbacks, apply retention and check the alert rules until
        ``stop`` is set."""
        await asyncio.gather(
            self.dispatcher().run(stop),
            CallbackSender(self.store, self.settings, self.waker).run(stop),
            self.retention.run(stop),
            self.alerts.run(stop),
        )

    async def healthy(self) -> bool:
        """Whether the database answers."""
        try:
            await self.store.ping()
        except Exception as exc:
            log.warning("health check: database unreachable: %s", exc, extra={"action": "health"})
            return False
        return True

    async def close(self) -> None:
        if self._listener is not None:
            await self._listener.close()
        for provider in self._started:
            try:
                await provider.close()
            except Exception:
                log.exception("provider did not close cleanly", extra={"provider": provider.name})
        self._started.clear()
        await self.store.close()
        self.started = False
