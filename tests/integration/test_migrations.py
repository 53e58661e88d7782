"""The migrations produce exactly the schema the code declares, on SQLite and PostgreSQL.

These tests run the migrations themselves, on empty databases; the rest of the suite works on
copies of a database the migrations built once per session.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import pytest
from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext
from sqlalchemy import Connection, inspect

from tidings.clock import utcnow
from tidings.domain.messages import NewMessage
from tidings.store import Store
from tidings.store.messages import MessageFilter, insert_many, new_row
from tidings.store.migrate import current_revision, head_revision, upgrade
from tidings.store.search import declared
from tidings.store.tables import metadata


def _diff(connection: Connection) -> list[Any]:
    # The search index's objects exist on one database each and are left out by name
    # (store/search.py says why); everything else must match exactly.
    context = MigrationContext.configure(
        connection, opts={"compare_type": True, "compare_server_default": True, "include_name": declared}
    )
    return list(compare_metadata(context, metadata))


async def _tables(store: Store) -> set[str]:
    async with store.engine.connect() as conn:
        return await conn.run_sync(lambda c: set(inspect(c).get_table_names()))


@pytest.fixture
async def migrated(empty_database_url: str) -> AsyncIterator[Store]:
    """An empty database, then migrated to head by the migrations (not copied from a template)."""
    store = Store.connect(empty_database_url)
    try:
        assert await _tables(store) == set()
        assert await current_revision(store.engine) is None
        await upgrade(store.engine)
        yield store
    finally:
        await store.close()


async def test_migrations_produce_exactly_the_declared_schema(migrated: Store) -> None:
    async with migrated.engine.connect() as conn:
        diff = await conn.run_sync(_diff)
    assert diff == []


async def test_migrations_reach_head_and_a_second_run_changes_nothing(migrated: Store) -> None:
    assert await current_revision(migrated.engine) == head_revision()
    assert await upgrade(migrated.engine) == head_revision()
    assert {"messages", "message_events", "message_tags", "api_keys"} <= await _tables(migrated)


async def test_partial_queue_index_exists(migrated: Store) -> None:
    async with migrated.engine.connect() as conn:
        indexes = await conn.run_sync(lambda c: {i["name"] for i in inspect(c).get_indexes("messages")})
    assert {"ix_messages_due", "ix_messages_scheduled", "ix_messages_leased"} <= indexes


async def test_the_databases_the_other_tests_get_are_at_head_with_the_declared_schema(
    database_url: str,
) -> None:
    copy = Store.connect(database_url)
    try:
        assert await current_revision(copy.engine) == head_revision()
        async with copy.engine.connect() as conn:
            assert await conn.run_sync(_diff) == []
    finally:
        await copy.close()


async def test_messages_stored_before_the_search_index_existed_are_found(empty_database_url: str) -> None:
    store = Store.connect(empty_database_url)
    try:
        await upgrade(store.engine, "0010")
        new = NewMessage.sms(
            to="+254712345678", text="Miadi yako ni kesho asubuhi", provider="fake", max_attempts=3
        )
        row = new_row(new, utcnow())
        del row["exempt_from_opt_out"]  # a column since 0015
        async with store.transaction() as conn:
            await insert_many(conn, [(row, new)])

        await upgrade(store.engine)

        [found] = await store.messages.search(MessageFilter(terms=("asubuhi",)))
        assert found["body"] == new.text
    finally:
        await store.close()
