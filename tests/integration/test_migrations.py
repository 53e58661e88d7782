"""The migrations produce exactly the schema the code declares, on SQLite and PostgreSQL."""

from __future__ import annotations

from typing import Any

from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext
from sqlalchemy import Connection, inspect

from tidings.store import Store
from tidings.store.migrate import current_revision, head_revision, upgrade
from tidings.store.tables import metadata


def _diff(connection: Connection) -> list[Any]:
    context = MigrationContext.configure(
        connection, opts={"compare_type": True, "compare_server_default": True}
    )
    return list(compare_metadata(context, metadata))


async def test_migrations_produce_exactly_the_declared_schema(store: Store) -> None:
    async with store.engine.connect() as conn:
        diff = await conn.run_sync(_diff)
    assert diff == []


async def test_migrations_reach_head_and_a_second_run_changes_nothing(store: Store) -> None:
    assert await current_revision(store.engine) == head_revision()
    assert await upgrade(store.engine) == head_revision()
    async with store.engine.connect() as conn:
        tables = await conn.run_sync(lambda c: set(inspect(c).get_table_names()))
    assert {"messages", "message_events", "message_tags", "api_keys"} <= tables


async def test_partial_queue_index_exists(store: Store) -> None:
    async with store.engine.connect() as conn:
        indexes = await conn.run_sync(lambda c: {i["name"] for i in inspect(c).get_indexes("messages")})
    assert {"ix_messages_due", "ix_messages_scheduled", "ix_messages_leased"} <= indexes
