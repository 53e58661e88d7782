"""All SQL lives in this package; the worker and the API call named methods."""

from __future__ import annotations

from sqlalchemy.ext.asyncio import AsyncEngine

from tidings.store.batcher import WriteBatcher
from tidings.store.db import create_engine
from tidings.store.gateways import GatewayStore
from tidings.store.inbound import InboundStore
from tidings.store.keys import KeyStore
from tidings.store.log import LogStore
from tidings.store.messages import MessageStore
from tidings.store.optouts import OptOutStore
from tidings.store.outbox import CallbackStore
from tidings.store.webhooks import WebhookLogStore


class Store:
    """The database, as the rest of tidings sees it."""

    def __init__(self, engine: AsyncEngine) -> None:
        self.engine = engine
        self.writes = WriteBatcher(engine)
        self.messages = MessageStore(engine, self.writes)
        self.keys = KeyStore(engine)
        self.webhooks = WebhookLogStore(engine, self.writes)
        self.inbound = InboundStore(engine, self.messages)
        self.gateways = GatewayStore(engine, self.messages)
        self.opt_outs = OptOutStore(engine)
        self.callbacks = CallbackStore(engine)
        self.log = LogStore(engine)

    @classmethod
    def connect(cls, url: str, *, sqlite_synchronous: str = "FULL", pool_size: int = 10) -> Store:
        return cls(create_engine(url, sqlite_synchronous=sqlite_synchronous, pool_size=pool_size))

    @property
    def is_postgres(self) -> bool:
        return self.engine.dialect.name == "postgresql"

    async def close(self) -> None:
        await self.writes.close()
        await self.engine.dispose()


__all__ = ["Store"]
