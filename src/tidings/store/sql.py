"""Statement patterns shared by the two queues tidings keeps in tables: messages and the callback
outbox. Both take due rows in one statement, keep per-key order, and lean on partial indexes."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from sqlalchemy import ColumnElement, Select, Table, exists, literal_column, select


def is_value(column: Any, value: str) -> ColumnElement[bool]:
    """``column = 'value'`` with the value as a literal, not a bound parameter: partial indexes
    (``WHERE status = 'pending'``) are only used when the planner sees the value when it plans
    (SQLite always, PostgreSQL once it switches a prepared statement to a generic plan)."""
    result: ColumnElement[bool] = column == literal_column(f"'{value}'")
    return result


def in_values(column: Any, values: Sequence[str]) -> ColumnElement[bool]:
    """``column IN ('a', 'b')`` with literal values (see :func:`is_value`)."""
    result: ColumnElement[bool] = column.in_([literal_column(f"'{v}'") for v in values])
    return result


def picked_once(query: Select[Any], *, is_postgres: bool) -> Any:
    """The ids ``query`` picks, evaluated exactly once, for ``UPDATE … WHERE id IN (…)``.

    As a plain ``IN (SELECT … LIMIT n FOR UPDATE SKIP LOCKED)``, PostgreSQL may plan a semi-join
    that re-runs the subquery per row, skipping the rows the statement already updated, so the
    LIMIT is lost and one worker takes the whole queue. A materialised CTE is evaluated once.
    """
    if not is_postgres:
        return query.scalar_subquery()
    picked = query.cte("picked").prefix_with("MATERIALIZED")
    return select(picked.c.id)


def waits_for_earlier(table: Table, key: str, waiting: Sequence[str]) -> ColumnElement[bool]:
    """True for a row of ``table`` while an earlier row (smaller id) with the same ``key`` is in
    one of the ``waiting`` statuses: how both queues keep per-key order."""
    earlier = table.alias("earlier")
    return exists().where(
        earlier.c[key] == table.c[key],
        earlier.c.id < table.c.id,
        in_values(earlier.c.status, waiting),
    )
