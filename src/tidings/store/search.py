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
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Literal

from sqlalchemy import (
    ColumnElement,
    Integer,
    Select,
    String,
    bindparam,
    case,
    column,
    exists,
    func,
    literal_column,
    select,
    table,
)
from sqlalchemy.ext.asyncio import AsyncConnection

from tidings.store.tables import messages

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
_ROWID = literal_column("messages.rowid", Integer())
"""The rowid of a message on SQLite, which the text index refers to."""


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


# -- how a search reaches its rows ------------------------------------------------------------------

SQLITE_FEW = 5_000
"""On SQLite, a text query or number prefix matching at most this many messages is where the
search starts: those rows are read and sorted (a few milliseconds)."""
SQLITE_WINDOW = 10_000
"""On SQLite, a walk through many matches checks each row against a list of this many of them,
the newest at or below where the walk starts (a few milliseconds to build)."""

TextAccess = Literal["drive", "window", "vector"]


@dataclass(frozen=True)
class Access:
    """How a search reaches its rows.

    PostgreSQL plans for itself, from the statistics it keeps (the text's included: see migration
    0011). SQLite keeps none and guesses, which for a common word means sorting hundreds of
    thousands of rows; so on SQLite :func:`sqlite_access` counts, up to a cap, what the text index
    and the number range hold, and picks: a few matches are read and sorted; many are met while
    walking the messages newest first, which stops as soon as a page is full.
    """

    text: TextAccess = "vector"
    """``drive``: start from the text index's matches. ``window``: walk the messages and check
    each row against the list of matches from rowid :attr:`window_from` up, built once; a row
    below it (past the newest :data:`SQLITE_WINDOW` matches: the walk went far, or the row was
    stored long after its id was made) asks the text index itself, which costs a hundred times
    more. ``vector``: PostgreSQL's ``@@`` on the row's vector, planned by PostgreSQL."""
    window_from: int = 0
    prefix_range: bool = True
    """Whether the number prefix is looked up as a range of ``ix_messages_to`` (else it is only
    checked on each row walked). On SQLite, the range is then where the search starts."""


POSTGRES = Access()
"""PostgreSQL's: the same statement whatever the counts; its planner picks."""


async def sqlite_access(
    conn: AsyncConnection,
    terms: Sequence[str],
    prefix: tuple[str, str | None] | None,
    after_id: str | None = None,
) -> Access:
    """How a SQLite search with text ``terms``, number range ``prefix`` and cursor ``after_id``
    reaches its rows, from capped counts (a few milliseconds at most)."""
    text: TextAccess = "window"
    window_from = 0
    if terms:
        match = _fts.c[FTS_TABLE].match(fts5_query(terms))
        found = await _count(conn, select(_fts.c.rowid).where(match).limit(SQLITE_FEW + 1))
        if found <= SQLITE_FEW:
            return Access(text="drive", prefix_range=False)
        # Rowids follow the order messages were stored in, which is their ids' order but for a
        # message stored a moment after its id was made: where the walk starts in rowids is
        # where the first message it meets is.
        below = [match]
        if after_id is not None:
            start = select(_ROWID).where(messages.c.id < after_id).order_by(messages.c.id.desc())
            first = (await conn.execute(start.limit(1))).scalar_one_or_none()
            below.append(_fts.c.rowid <= (first or 0))
        newest = select(_fts.c.rowid).where(*below).order_by(_fts.c.rowid.desc())
        edge = (await conn.execute(newest.offset(SQLITE_WINDOW).limit(1))).scalar_one_or_none()
        window_from = int(edge or 0)
    prefix_range = False
    if prefix is not None:
        low, high = prefix
        within = [messages.c.to >= low, *([messages.c.to < high] if high is not None else [])]
        found = await _count(conn, select(messages.c.id).where(*within).limit(SQLITE_FEW + 1))
        prefix_range = found <= SQLITE_FEW
    return Access(text=text, window_from=window_from, prefix_range=prefix_range)


async def _count(conn: AsyncConnection, capped: Select[Any]) -> int:
    return int((await conn.execute(select(func.count()).select_from(capped.subquery()))).scalar_one())


def matches(dialect: str, terms: Sequence[str], access: Access) -> ColumnElement[bool]:
    """The condition on ``messages`` that its body or subject has every one of ``terms``, in the
    form ``access`` says."""
    if dialect == "postgresql":
        # The words as a literal, not a parameter: a prepared statement's generic plan would
        # assume one selectivity for every word, rare or common. They are letters, digits and
        # marks only (domain.search), and quoted by SQLAlchemy all the same.
        words = bindparam("search_words", " ".join(terms), type_=String(), literal_execute=True)
        query = func.plainto_tsquery(literal_column("'simple'::regconfig"), func.tidings_search_text(words))
        return literal_column(f"messages.{VECTOR_COLUMN}").bool_op("@@")(query)
    match = _fts.c[FTS_TABLE].match(fts5_query(terms))
    rowid = _ROWID
    if access.text == "drive":
        return rowid.in_(select(_fts.c.rowid).where(match).scalar_subquery())
    listed = select(_fts.c.rowid).where(match, _fts.c.rowid >= access.window_from).scalar_subquery()
    # Unary plus: a check of each row walked, not an index to start from.
    listed_match = literal_column("+messages.rowid").in_(listed)
    if access.window_from <= 0:
        return listed_match
    asked = exists().where(match, _fts.c.rowid == rowid)
    in_window: ColumnElement[bool] = case((rowid >= access.window_from, listed_match), else_=asked)
    return in_window
