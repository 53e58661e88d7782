"""The running service: settings, database, providers and tracking, started and stopped together.

``tidings serve`` runs the API and a worker on one :class:`Service`; ``tidings api`` and
``tidings worker`` each run one half.
"""

from __future__ import annotations

import asyncio
import logging

from tidings.config import Settings
from tidings.providers import Provider, ProviderContext, build_providers
from tidings.routing import Router
from tidings.store import Store
from tidings.store.migrate import current_revision, head_revision, upgrade
from tidings.tracking import Tracker
from tidings.webhooks import WebhookHandler
from tidings.worker.dispatcher import Dispatcher
from tidings.worker.wakeup import PostgresListener, Waker

log = logging.getLogger(__name__)


class Service:
    def __init__(self, settings: Settings, store: Store | None = None) -> None:
        self.settings = settings
        self.store = store or Store.connect(
            settings.database_url,
            sqlite_synchronous=settings.sqlite_synchronous,
            pool_size=settings.pool_size,
        )
        self.tracker = Tracker(self.store)
        self.waker = Waker()
        self.context = ProviderContext(base_url=settings.base_url, sink=self.tracker.sink)
        # Built now so that a wrong provider table stops start-up before anything opens.
        self.providers: dict[str, Provider] = build_providers(settings, self.context)
        self.router = Router(settings, self.providers)
        self.webhooks = WebhookHandler(self.store, self.tracker, self.providers, settings)
        self._listener: PostgresListener | None = None
        self.started = False

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
        if listen and self.store.is_postgres:
            self._listener = PostgresListener(self.settings.database_url, self.waker)
            await self._listener.start()
        self.started = True

    def dispatcher(self) -> Dispatcher:
        return Dispatcher(self.store, self.providers, self.settings, self.waker, tracker=self.tracker)

    async def run_worker(self, stop: asyncio.Event) -> None:
        await self.dispatcher().run(stop)

    async def close(self) -> None:
        if self._listener is not None:
            await self._listener.close()
        for provider in self.providers.values():
            try:
                await provider.close()
            except Exception:
                log.exception("provider did not close cleanly", extra={"provider": provider.name})
        await self.store.close()
        self.started = False
