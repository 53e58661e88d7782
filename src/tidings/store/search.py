"""Full-text search over messages' body and subject, on each database's own engine.

SQLite has an external-content FTS5 table, ``messages_fts`` (tokenizer ``unicode61
remove_diacritics 2``), keyed by the rowid of ``messages`` and kept right by triggers; PostgreSQL a
generated ``tsvector`` column, ``search_vector`` (configuration ``simple``: no stemming or stop
words, messages are in many languages), with a GIN index. Both fold case and accents and cut words
at anything but letters and digits. Migration ``0011`` creates them; they are not in
``tables.py``, whose schema is the same on both databases, and :func:`declared` keeps them out
of the comparison of migrations with it.

Messages on SQLite must keep their rowids for the index to stay right: never rebuild the table
by copying rows (as Alembic's batch mode does) without running the FTS5 ``rebuild`` command after,
and recreate the triggers, which a dropped table takes with it.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING

from sqlalchemy import ColumnElement, column, func, literal, literal_column, select, table

if TYPE_CHECKING:
    from alembic.runtime.environment import NameFilterParentNames, NameFilterType

FTS_TABLE = "messages_fts"
VECTOR_COLUMN = "search_vector"
VECTOR_INDEX = "ix_messages_search"

_ONE_DATABASE_ONLY = {
    *(("table", None, f"{FTS_TABLE}{shadow}") for shadow in ("", "_data", "_idx", "_docsize", "_config")),
    ("column", "messages", VECTOR_COLUMN),
    ("index", "messages", VECTOR_INDEX),
}
"""(kind, table, name) of each: the FTS5 table with its shadow tables; the column and its index."""

_fts = table(FTS_TABLE, column("rowid"), column(FTS_TABLE))


def declared(name: str | None, type_: NameFilterType, parent_names: NameFilterParentNames) -> bool:
    """Whether ``tables.py`` declares the schema object ``name`` (of Alembic's ``type_``, in the
    table ``parent_names`` names): all do but the search index's, which exist on one database
    only. Alembic's ``include_name`` hook, for comparing the migrations with ``tables.py``."""
    parent = parent_names.get("table_name") if type_ in ("column", "index") else None
    return (type_, parent, name) not in _ONE_DATABASE_ONLY


def fts5_query(terms: Sequence[str]) -> str:
    """An FTS5 query that matches rows having every one of ``terms``: each a quoted string, so
    nothing in it is read as FTS5 syntax (operators, ``*``, ``column:``)."""
    return " ".join('"' + term.replace('"', '""') + '"' for term in terms)


def matches(dialect: str, terms: Sequence[str]) -> ColumnElement[bool]:
    """The condition on ``messages`` that its body or subject has every one of ``terms``."""
    if dialect == "postgresql":
        query = func.plainto_tsquery(
            literal_column("'simple'::regconfig"), func.tidings_search_text(" ".join(terms))
        )
        return literal_column(f"messages.{VECTOR_COLUMN}").bool_op("@@")(query)
    found = select(_fts.c.rowid).where(_fts.c[FTS_TABLE].match(literal(fts5_query(terms))))
    return literal_column("messages.rowid").in_(found.scalar_subquery())
