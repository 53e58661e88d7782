"""Alembic environment: tidings runs migrations on a connection it opened itself."""

from __future__ import annotations

from alembic import context

from tidings.store.search import declared
from tidings.store.tables import metadata

connection = context.config.attributes.get("connection")
if connection is None:
    raise RuntimeError("run migrations with `tidings migrate`, which provides the connection")

context.configure(
    connection=connection,
    target_metadata=metadata,
    render_as_batch=connection.dialect.name == "sqlite",
    compare_type=True,
    compare_server_default=True,
    include_name=declared,
)
with context.begin_transaction():
    context.run_migrations()
