"""Shared fixtures: real databases (a temporary SQLite file per test, a fresh PostgreSQL database
per test module), a started service over them, and an HTTP client with an API key.

The schema is migrated once per session, into a template on each backend; a test's database is a
copy of it (``CREATE DATABASE … TEMPLATE`` on PostgreSQL, a file copy on SQLite), so no test pays
for the migrations. The migration tests themselves start from empty databases
(``empty_database_url``).
"""

from __future__ import annotations

import asyncio
import os
import secrets
import shutil
import sqlite3
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import asyncpg
import httpx
import pytest
from sqlalchemy.engine import make_url

from tests.pg_cluster import Cluster
from tests.pg_cluster import unavailable as cluster_unavailable
from tests.stall_watch import (  # noqa: F401 (hooks)
    pytest_runtest_protocol,
    pytest_sessionstart,
    pytest_terminal_summary,
)
from tidings.config import Settings
from tidings.services import Service
from tidings.store import Store
from tidings.store.migrate import upgrade
from tidings.store.tables import metadata

POSTGRES_URL = os.environ.get("TIDINGS_TEST_POSTGRES_URL", "postgresql://postgres@127.0.0.1:5432/postgres")
IN_CI = os.environ.get("CI", "").lower() == "true"


def _fastapi_caches() -> list[Any]:
    """FastAPI's module-level caches of the dependency callables it has classified (up to 4,096
    each). Every app a test builds has its own closures, each holding its service, engine and
    compiled statements: kept in these caches, they made the test process grow past 1.3 GB and
    5 million objects, which each full pass of the garbage collector walks (about 0.9 s here, with
    every test's event loop paused)."""
    import fastapi._compat.v2
    import fastapi.dependencies.models

    found = []
    for module in (fastapi.dependencies.models, fastapi._compat.v2):
        found.extend(f for f in vars(module).values() if callable(getattr(f, "cache_clear", None)))
    return found


FASTAPI_CACHES = _fastapi_caches()


def pytest_runtest_logfinish(nodeid: str, location: tuple[str, int | None, str]) -> None:
    """Let go of the test's apps (see :func:`_fastapi_caches`)."""
    for cache in FASTAPI_CACHES:
        cache.cache_clear()


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


async def _migrate(url: str) -> None:
    """Upgrade the database at ``url`` to head, leaving no connection open to it."""
    store = Store.connect(url)
    try:
        await upgrade(store.engine)
    finally:
        await store.close()


@pytest.fixture(scope="session")
def postgres_server() -> str:
    reason = postgres_unavailable()
    if reason is not None:
        if IN_CI:
            pytest.fail(reason + " (CI=true: PostgreSQL tests must run)")
        pytest.skip(reason)
    return POSTGRES_URL


class PostgresDatabases:
    """Creates uniquely named databases on the test server and drops them again."""

    def __init__(self, server_url: str) -> None:
        self.server_url = server_url

    def url(self, name: str) -> str:
        return make_url(self.server_url).set(database=name).render_as_string(hide_password=False)

    def create(self, prefix: str, template: str | None = None) -> str:
        """A new database's name: empty, or a copy of ``template`` (which nobody may be connected to)."""
        name = f"{prefix}_{secrets.token_hex(6)}"
        copy = f' TEMPLATE "{template}"' if template is not None else ""
        asyncio.run(_admin(f'CREATE DATABASE "{name}"{copy}'))
        return name

    def drop(self, name: str) -> None:
        asyncio.run(_admin(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))


@pytest.fixture(scope="session")
def postgres_databases(postgres_server: str) -> PostgresDatabases:
    return PostgresDatabases(postgres_server)


@pytest.fixture(scope="session")
def postgres_template(postgres_databases: PostgresDatabases) -> Iterator[str]:
    """The name of a database migrated to head once per session, dropped at the end of the session
    (whatever happened). Unique, so that suites running side by side on one server each have one."""
    name = postgres_databases.create("tidings_template")
    try:
        asyncio.run(_migrate(postgres_databases.url(name)))
        yield name
    finally:
        postgres_databases.drop(name)


@pytest.fixture(scope="module")
def postgres_database(postgres_databases: PostgresDatabases, postgres_template: str) -> Iterator[str]:
    """A migrated PostgreSQL database for this test module (a copy of the template), dropped afterwards."""
    name = postgres_databases.create("tidings_test", template=postgres_template)
    try:
        yield postgres_databases.url(name)
    finally:
        postgres_databases.drop(name)


@pytest.fixture(scope="session")
def sqlite_template(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A SQLite file migrated to head once per session; tests get copies of it.

    The file is left whole on its own: its write-ahead log is checkpointed into it and the journal
    switched back to the rollback mode a new file starts in (tidings turns WAL on again when it
    connects to a copy), so copying the one file loses nothing.
    """
    path = tmp_path_factory.mktemp("sqlite-template") / "tidings.db"
    asyncio.run(_migrate(f"sqlite:///{path}"))
    conn = sqlite3.connect(path)
    try:
        busy, _, _ = conn.execute("PRAGMA wal_checkpoint(TRUNCATE)").fetchone()
        assert busy == 0, "the SQLite template is still in use"
        assert conn.execute("PRAGMA journal_mode=DELETE").fetchone() == ("delete",)
    finally:
        conn.close()
    leftovers = [p.name for p in path.parent.iterdir() if p != path]
    assert leftovers == [], f"the SQLite template left {leftovers} beside it"
    path.chmod(0o444)
    return path


@pytest.fixture(params=["sqlite", "postgres"])
def database_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    """Each test that uses it runs twice, on a migrated database: a SQLite file of its own, and this
    module's PostgreSQL database."""
    if request.param == "sqlite":
        path = tmp_path / "tidings.db"
        template: Path = request.getfixturevalue("sqlite_template")
        shutil.copyfile(template, path)
        return f"sqlite:///{path}"
    url: str = request.getfixturevalue("postgres_database")
    return url


@pytest.fixture(params=["sqlite", "postgres"])
def empty_database_url(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[str]:
    """A database with nothing in it, not even a schema, for each test that uses it: a new SQLite
    file, and a new PostgreSQL database (dropped afterwards). For the tests of the migrations."""
    if request.param == "sqlite":
        yield f"sqlite:///{tmp_path / 'tidings.db'}"
        return
    databases: PostgresDatabases = request.getfixturevalue("postgres_databases")
    name = databases.create("tidings_empty")
    try:
        yield databases.url(name)
    finally:
        databases.drop(name)


async def empty_tables(store: Store) -> None:
    async with store.engine.begin() as conn:
        for table in reversed(metadata.sorted_tables):
            await conn.execute(table.delete())


@pytest.fixture
async def store(database_url: str) -> AsyncIterator[Store]:
    """A migrated database with empty tables."""
    store = Store.connect(database_url)
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
