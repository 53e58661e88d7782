"""The running service: settings, database, providers and tracking, started and stopped together.

``tidings serve`` runs the API and a worker on one :class:`Service`; ``tidings api`` and
``tidings worker`` each run one half.
"""

from __future__ import annotations

import asyncio
import logging

from tidings.config import Settings
from tidings.domain.keywords import Action, Keywords
from tidings.providers import Provider, ProviderContext, build_providers
from tidings.routing import Router
from tidings.store import Store
from tidings.store.migrate import current_revision, head_revision, upgrade
from tidings.store.optouts import InboundPolicy
from tidings.tracking import Tracker
from tidings.webhooks import WebhookHandler
from tidings.worker.callbacks import CallbackSender
from tidings.worker.dispatcher import Dispatcher
from tidings.worker.wakeup import PostgresListener, Waker

log = logging.getLogger(__name__)


def inbound_policy(settings: Settings) -> InboundPolicy:
    """What to do with inbound SMS, from the settings."""
    replies = {
        Action.OPT_OUT: settings.opt_out_reply,
        Action.OPT_IN: settings.opt_in_reply,
        Action.HELP: settings.help_reply,
    }
    return InboundPolicy(
        keywords=Keywords(settings.opt_out_keywords, settings.opt_in_keywords, settings.help_keywords),
        scope=settings.opt_out_scope,
        replies={action: text for action, text in replies.items() if text},
        max_attempts=settings.max_attempts,
    )


class Service:
    def __init__(self, settings: Settings, store: Store | None = None) -> None:
        self.settings = settings
        self.store = store or Store.connect(
            settings.database_url,
            sqlite_synchronous=settings.sqlite_synchronous,
            pool_size=settings.pool_size,
        )
        self.inbound_policy = inbound_policy(settings)
        self.tracker = Tracker(self.store, self.inbound_policy)
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
        """Send messages and deliver callbacks until ``stop`` is set."""
        await asyncio.gather(
            self.dispatcher().run(stop), CallbackSender(self.store, self.settings, self.waker).run(stop)
        )

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
