"""All SQL lives in this package; services and the worker call named functions.

db.py          engines (SQLite in WAL mode, PostgreSQL)
tables.py      the schema; migrations/ must produce exactly it
batcher.py     group commit: concurrent small writes share one transaction
sql.py         statement patterns the two queues share
messages.py    storing (the one insert path), reading, listing and cancelling messages
search.py      the full-text index of each database, and how a search reaches its rows
queue.py       claiming (the one claim), retries, promotion, reaping, failover, polling
reports.py     the one status writer for reports
events.py      each message's history, written with the callbacks it calls for
changes.py     status changes in the order of their events, for the change feed
callbacks.py   the callback outbox and its delivery queue
retention.py   pruning and redaction in bounded batches
measures.py    the other figures the alert rules watch
alerts.py      alerts raised once, confirmed and resolved, with their callbacks
batches.py     a batch's row (written with its messages) and its progress
figures.py     what GET /metrics reads when scraped (queue depth, oldest due message, …)
templates.py   stored templates and every version of them
signatures.py  signed requests' signatures, each usable once
secrets.py     the installation's own secrets (the unsubscribe links' key)
stats.py       the figures: totals and rates, grouped statistics, webhook processing
operators.py   the dashboard's users, their sessions and the audit log
inbound.py, optouts.py, gateways.py, webhooks.py, keys.py, log.py
"""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator

from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from tidings.store.alerts import AlertStore
from tidings.store.batcher import WriteBatcher
from tidings.store.batches import BatchStore
from tidings.store.callbacks import CallbackStore
from tidings.store.changes import ChangeStore
from tidings.store.db import create_engine
from tidings.store.figures import FigureStore
from tidings.store.gateways import GatewayStore
from tidings.store.inbound import InboundStore
from tidings.store.keys import KeyStore
from tidings.store.log import LogStore
from tidings.store.messages import MessageStore
from tidings.store.operators import OperatorStore
from tidings.store.optouts import OptOutStore
from tidings.store.queue import QueueStore
from tidings.store.reports import ReportStore
from tidings.store.retention import RetentionStore
from tidings.store.secrets import SecretStore
from tidings.store.signatures import SignatureStore
from tidings.store.templates import TemplateStore
from tidings.store.webhooks import WebhookLogStore


class Store:
    """The database, as the rest of tidings sees it."""

    def __init__(self, engine: AsyncEngine) -> None:
        self.engine = engine
        self.writes = WriteBatcher(engine)
        self.messages = MessageStore(engine, self.writes)
        self.queue = QueueStore(engine)
        self.reports = ReportStore(self.writes)
        self.keys = KeyStore(engine)
        self.webhooks = WebhookLogStore(engine, self.writes)
        self.inbound = InboundStore(engine)
        self.gateways = GatewayStore(engine)
        self.opt_outs = OptOutStore(engine)
        self.callbacks = CallbackStore(engine)
        self.log = LogStore(engine)
        self.retention = RetentionStore(engine)
        self.batches = BatchStore(engine)
        self.templates = TemplateStore(engine)
        self.signatures = SignatureStore(engine)
        self.secrets = SecretStore(engine)
        self.alerts = AlertStore(engine)
        self.figures = FigureStore(engine)
        self.operators = OperatorStore(engine)
        self.changes = ChangeStore(engine)

    @classmethod
    def connect(cls, url: str, *, sqlite_synchronous: str = "FULL", pool_size: int = 10) -> Store:
        return cls(create_engine(url, sqlite_synchronous=sqlite_synchronous, pool_size=pool_size))

    @property
    def is_postgres(self) -> bool:
        return self.engine.dialect.name == "postgresql"

    @contextlib.asynccontextmanager
    async def transaction(self) -> AsyncIterator[AsyncConnection]:
        """One transaction, for a service that composes several of the store's functions."""
        async with self.engine.begin() as conn:
            yield conn

    async def ping(self) -> None:
        """Raise unless the database answers."""
        async with self.engine.connect() as conn:
            await conn.execute(text("SELECT 1"))

    async def close(self) -> None:
        await self.writes.close()
        await self.engine.dispose()


__all__ = ["Store"]
