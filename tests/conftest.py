"""Shared fixtures: real databases (a temporary SQLite file per test, a fresh PostgreSQL database
per test module), a started service over them, and an HTTP client with an API key."""

from __future__ import annotations

import asyncio
import os
import secrets
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import asyncpg
import httpx
import pytest
from sqlalchemy.engine import make_url

from tests.pg_cluster import Cluster
from tests.pg_cluster import unavailable as cluster_unavailable
from tidings.config import Settings
from tidings.services import Service
from tidings.store import Store
from tidings.store.migrate import upgrade
from tidings.store.tables import metadata

POSTGRES_URL = os.environ.get("TIDINGS_TEST_POSTGRES_URL", "postgresql://postgres@127.0.0.1:5432/postgres")
IN_CI = os.environ.get("CI", "").lower() == "true"


def _dsn(url: str) -> str:
    return make_url(url).set(drivername="postgresql").render_as_string(hide_password=False)


async def _admin(sql: str) -> None:
    conn = await asyncpg.connect(_dsn(POSTGRES_URL), timeout=5)
    try:
        await conn.execute(sql)
    finally:
        await conn.close()


def postgres_unavailable() -> str | None:
    """Why PostgreSQL cannot be used, or None when it can."""
    try:
        asyncio.run(_admin("SELECT 1"))
    except Exception as exc:
        return f"PostgreSQL at {POSTGRES_URL} is unreachable: {exc!r}"
    return None


@pytest.fixture(scope="session")
def postgres_server() -> str:
    reason = postgres_unavailable()
    if reason is not None:
        if IN_CI:
            pytest.fail(reason + " (CI=true: PostgreSQL tests must run)")
        pytest.skip(reason)
    return POSTGRES_URL


@pytest.fixture(scope="module")
def postgres_database(postgres_server: str) -> Iterator[str]:
    """A fresh, empty PostgreSQL database for this test module, dropped afterwards."""
    name = f"tidings_test_{secrets.token_hex(6)}"
    asyncio.run(_admin(f'CREATE DATABASE "{name}"'))
    try:
        yield make_url(postgres_server).set(database=name).render_as_string(hide_password=False)
    finally:
        asyncio.run(_admin(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))


@pytest.fixture(params=["sqlite", "postgres"])
def database_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    """Each test that uses it runs twice: on a new SQLite file, and on PostgreSQL."""
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path / 'tidings.db'}"
    url: str = request.getfixturevalue("postgres_database")
    return url


async def empty_tables(store: Store) -> None:
    async with store.engine.begin() as conn:
        for table in reversed(metadata.sorted_tables):
            await conn.execute(table.delete())


@pytest.fixture
async def store(database_url: str) -> AsyncIterator[Store]:
    """A migrated, empty database."""
    store = Store.connect(database_url)
    await upgrade(store.engine)
    await empty_tables(store)
    try:
        yield store
    finally:
        await store.close()


def make_settings(database_url: str, **overrides: Any) -> Settings:
    values: dict[str, Any] = {
        "database_url": database_url,
        "poll_interval": 0.05,
        "maintenance_interval": 0.05,
        "retry_base_seconds": 0.01,
        "retry_cap_seconds": 0.05,
        "api_key_cache_seconds": 0,
        # The tests' callback receivers listen on loopback, which callbacks may not go to unless
        # an operator opens it.
        "callback_allow_networks": ["127.0.0.0/8"],
        "providers": {"fake": {"kind": "fake", "latency_ms": 0, "receipt_delay_ms": 10}},
    }
    values.update(overrides)
    return Settings.model_validate(values)


@pytest.fixture
async def service(store: Store, database_url: str) -> AsyncIterator[Service]:
    """A started service (no worker running) over the test database."""
    service = Service(make_settings(database_url), store=Store.connect(database_url))
    await service.start()
    try:
        yield service
    finally:
        await service.close()


@pytest.fixture
async def api_key(store: Store) -> str:
    _key, secret = await store.keys.create("test")
    return secret


@pytest.fixture
async def client(service: Service, api_key: str) -> AsyncIterator[httpx.AsyncClient]:
    from tidings.api.app import create_app

    transport = httpx.ASGITransport(app=create_app(service))
    async with httpx.AsyncClient(
        transport=transport, base_url="http://tidings.test", headers={"Authorization": f"Bearer {api_key}"}
    ) as client:
        yield client


@pytest.fixture
def own_postgres() -> Iterator[Cluster]:
    """A PostgreSQL server of this test's own, to stop and restart at will."""
    reason = cluster_unavailable()
    if reason is not None:
        if IN_CI:
            pytest.fail(reason + " (CI=true: these tests must run)")
        pytest.skip(reason)
    cluster = Cluster()
    try:
        cluster.init()
        cluster.start()
        yield cluster
    finally:
        cluster.remove()
