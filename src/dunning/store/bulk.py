"""Many rows into (or out of) one table in one statement, whatever their number.

The ingest path writes every row of a group commit (processed events,
invoices, cases, jobs, outbox rows, timeline lines) at once. An ORM flush or
an ``executemany`` costs a statement per row on the server and builds a
parameter set per row on the client. On PostgreSQL we send the rows as one
JSON document and let the server turn it back into rows of the table's type:

    INSERT INTO jobs (key, kind, ...) SELECT key, kind, ... FROM json_populate_recordset(NULL::jobs, $1::json)

orjson serialises a row (datetimes included) in about 0.4 µs, against 4.5 µs
for the standard library's ``json`` with a datetime hook and 11-15 µs for one
array per column (psycopg dumps arrays in Python); an ORM flush costs far
more. The text of the statement depends only on the table and its
columns, so psycopg prepares it once per connection and the server plans it
once. SQLite keeps SQLAlchemy's Core ``executemany`` (it runs in-process,
where a statement per row costs little).

:func:`insert_tables` goes one step further: the inserts of several tables are
the ``WITH`` queries of a single statement, so a whole unit of work is one
round trip. Each statement costs the client about 60-100 µs of CPU (psycopg
and SQLAlchemy, whatever its size), which at one statement per table was a
quarter of the ingest path's own CPU.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, replace
from functools import cache
from typing import Any

import orjson
from sqlalchemy import Connection, Row, Table, bindparam, select, update
from sqlalchemy.dialects import sqlite
from sqlalchemy.orm import Session


def insert_rows(
    session: Session,
    table: Table,
    rows: Sequence[dict[str, Any]],
    *,
    on_conflict: str | None = None,
    returning: Sequence[str] = (),
) -> list[Row[Any]]:
    """Insert ``rows`` (dicts with the same keys) into ``table`` in the session's transaction.

    ``on_conflict``: a unique column whose conflicts are skipped (``ON CONFLICT
    DO NOTHING``); without it a conflict raises ``IntegrityError`` as usual.
    ``returning``: columns to return, one row per row inserted; with
    ``on_conflict`` the skipped rows return nothing, so return a key to match
    them. Order of the returned rows is not guaranteed. ``None`` is SQL NULL
    (JSON columns included). Datetimes must be timezone-aware: on SQLite a
    naive one is refused (``UtcDateTime``), on PostgreSQL it is read as UTC
    (the integration tests run on both, so code that builds one fails there).
    """
    if not rows:
        return []
    if session.get_bind().dialect.name != "postgresql":
        return _insert_executemany(session, table, rows, on_conflict, tuple(returning))
    sql = _recordset_statement(table, tuple(rows[0]), on_conflict, tuple(returning))
    document = orjson.dumps(rows, option=orjson.OPT_NAIVE_UTC).decode()
    result = session.connection().exec_driver_sql(sql, (document,))
    return list(result.all()) if returning else []


@dataclass(frozen=True)
class Link:
    """Rows that name a row of another table written by the same call, by that row's key.

    A row whose ``field`` (a dict key, not a column) is set takes as ``column``
    the id of the row of ``parent`` inserted by the same :func:`insert_tables`
    whose ``parent_key`` column equals it; if that row was not inserted (it
    existed already: the parent's ``on_conflict`` skipped it), the row is
    skipped too. Rows without ``field`` keep their own ``column``.
    """

    field: str
    parent: str
    parent_key: str
    column: str


@dataclass(frozen=True)
class TableRows:
    """The rows of one table for :func:`insert_tables` (dicts with the same keys)."""

    table: Table
    rows: Sequence[dict[str, Any]]
    on_conflict: str | None = None
    returning: tuple[str, ...] = ()
    link: Link | None = None
    #: Set: the rows update the stored rows whose ``update_key`` column they name (the other
    #: columns they hold are set), instead of being inserted. No ``returning`` nor ``link``.
    update_key: str | None = None


def insert_tables(session: Session, parts: Sequence[TableRows]) -> list[tuple[Any, ...]]:
    """Insert the rows of several tables in one statement (PostgreSQL), in the session's transaction.

    Each part behaves as :func:`insert_rows` with its ``on_conflict``; parts
    without rows are left out. At most one part may have ``returning``: its
    inserted rows are what this returns. A part that another one links to must
    come before it. On PostgreSQL the parts are the data-modifying ``WITH``
    queries of one statement, whose text depends only on the tables and
    columns (prepared once per connection); it costs one round trip and one
    statement for the whole unit instead of one per table. On SQLite, one
    ``executemany`` per table, in order.
    """
    parts = [p for p in parts if p.rows]
    present = {p.table.name for p in parts}
    # A parent without rows inserted none: the rows linked to it are skipped.
    parts = [
        replace(p, rows=[r for r in p.rows if r.get(p.link.field) is None], link=None)
        if p.link is not None and p.link.parent not in present
        else p
        for p in parts
    ]
    parts = [p for p in parts if p.rows]
    if len([p for p in parts if p.returning]) > 1:
        raise ValueError("at most one part of insert_tables may return rows")
    if not parts:
        return []
    if session.get_bind().dialect.name != "postgresql":
        return _insert_tables_one_by_one(session, parts)
    shapes = tuple(
        (p.table, _columns(p), p.on_conflict, p.returning, p.link, _linked_keys(p, parts), p.update_key)
        for p in parts
    )
    documents: list[str] = []
    for p in parts:
        documents.append(orjson.dumps(p.rows, option=orjson.OPT_NAIVE_UTC).decode())
        if p.update_key is not None:
            documents.append(ids_param([r[p.update_key] for r in p.rows]))
        if p.link is not None:
            documents.append(orjson.dumps([r.get(p.link.field) for r in p.rows]).decode())
    result = session.connection().exec_driver_sql(_tables_statement(shapes), tuple(documents))
    return [tuple(r) for r in result.all()] if any(p.returning for p in parts) else []


def _columns(part: TableRows) -> tuple[str, ...]:
    columns = tuple(k for k in part.rows[0] if part.link is None or k != part.link.field)
    if part.link is not None and part.link.column not in columns:
        columns += (part.link.column,)
    return columns


def _linked_keys(part: TableRows, parts: Sequence[TableRows]) -> str | None:
    """The key column by which a later part links to this one (it must then return it)."""
    for other in parts:
        if other.link is not None and other.link.parent == part.table.name:
            return other.link.parent_key
    return None


@cache
def _tables_statement(shapes: tuple[tuple[Any, ...], ...]) -> str:
    ctes: list[str] = []
    final = "SELECT 1 WHERE false"
    for i, (table, columns, on_conflict, returning, link, linked_key, update_key) in enumerate(shapes):
        names = ", ".join(table.c[name].name for name in columns)
        if update_key is not None:
            sets = ", ".join(f"{table.c[n].name} = r.{table.c[n].name}" for n in columns if n != update_key)
            # The keys again, as ``= ANY(...)``: joined to the recordset alone, the planner
            # (which guesses 100 rows for it) scans the whole table and hashes it.
            ctes.append(
                f"t{i} AS (UPDATE {table.name} AS u SET {sets}"
                f" FROM json_populate_recordset(NULL::{table.name}, %s::json) AS r"
                f" WHERE u.{update_key} = r.{update_key} AND u.{update_key} = ANY({ANY_OF_JSON}))"
            )
            continue
        if link is None:
            source = f"SELECT {names} FROM json_populate_recordset(NULL::{table.name}, %s::json)"
        else:
            parent = next(j for j, shape in enumerate(shapes) if shape[0].name == link.parent)
            # The rows, side by side with their link keys (a second JSON array, ``value``).
            values = ", ".join(
                f"CASE WHEN r.value IS NULL THEN r.{name} ELSE l.id END"
                if name == link.column
                else f"r.{name}"
                for name in columns
            )
            source = (
                f"SELECT {values} FROM ROWS FROM (json_populate_recordset(NULL::{table.name}, %s::json),"
                f" json_array_elements_text(%s::json)) AS r"
                f" LEFT JOIN t{parent} AS l ON l.{link.parent_key} = r.value"
                f" WHERE r.value IS NULL OR l.id IS NOT NULL"
            )
        back = tuple(returning) + tuple(c for c in (linked_key, "id") if linked_key and c not in returning)
        ctes.append(
            f"t{i} AS (INSERT INTO {table.name} ({names}) {source}"
            + (f" ON CONFLICT ({on_conflict}) DO NOTHING" if on_conflict else "")
            + (f" RETURNING {', '.join(back)}" if back else "")
            + ")"
        )
        if returning:
            final = f"SELECT {', '.join(returning)} FROM t{i}"
    return f"WITH {', '.join(ctes)} {final}"


def _insert_tables_one_by_one(session: Session, parts: Sequence[TableRows]) -> list[tuple[Any, ...]]:
    ids: dict[str, dict[Any, Any]] = {}
    out: list[tuple[Any, ...]] = []
    for part in parts:
        if part.update_key is not None:
            _update_executemany(session, part.table, part.update_key, part.rows)
            continue
        rows: Sequence[dict[str, Any]] = part.rows
        link = part.link
        if link is not None:
            known = ids[link.parent]
            rows = []
            for row in part.rows:
                row = dict(row)
                key = row.pop(link.field, None)
                if key is not None:
                    if key not in known:
                        continue  # the parent existed already (and so does this row)
                    row[link.column] = known[key]
                row.setdefault(link.column, None)
                rows.append(row)
        key = _linked_keys(part, parts)
        back = tuple(part.returning) + tuple(c for c in (key, "id") if key and c not in part.returning)
        got = insert_rows(session, part.table, rows, on_conflict=part.on_conflict, returning=back)
        if key:
            ids[part.table.name] = {getattr(r, key): r.id for r in got}
        if part.returning:
            out = [tuple(getattr(r, c) for c in part.returning) for r in got]
    return out


def _update_executemany(session: Session, table: Table, key: str, rows: Sequence[dict[str, Any]]) -> None:
    columns = [name for name in rows[0] if name != key]
    stmt = (
        update(table)
        .where(table.c[key] == bindparam(f"_{key}"))
        .values({name: bindparam(f"_{name}") for name in columns})
    )
    session.connection().execute(stmt, [{f"_{k}": v for k, v in row.items()} for row in rows])


def _insert_executemany(
    session: Session,
    table: Table,
    rows: Sequence[dict[str, Any]],
    on_conflict: str | None,
    returning: tuple[str, ...],
) -> list[Row[Any]]:
    stmt = sqlite.insert(table)
    if on_conflict:
        stmt = stmt.on_conflict_do_nothing(index_elements=[on_conflict])
    if returning:
        stmt = stmt.returning(*(table.c[name] for name in returning), sort_by_parameter_order=True)
        return list(session.connection().execute(stmt, list(rows)).all())
    session.connection().execute(stmt, list(rows))
    return []


@cache
def _recordset_statement(
    table: Table, columns: tuple[str, ...], on_conflict: str | None, returning: tuple[str, ...]
) -> str:
    names = ", ".join(table.c[name].name for name in columns)
    return (
        f"INSERT INTO {table.name} ({names}) SELECT {names} FROM json_populate_recordset(NULL::{table.name}, %s::json)"
        + (f" ON CONFLICT ({on_conflict}) DO NOTHING" if on_conflict else "")
        + (f" RETURNING {', '.join(returning)}" if returning else "")
    )


def allocate_ids(session: Session, table: Table, n: int, *, above: int = 0) -> list[int]:
    """``n`` fresh primary keys for ``table``, to write rows with their final values at once.

    PostgreSQL: from the column's sequence. SQLite: write transactions are
    serialised (``BEGIN IMMEDIATE``), so the ids above the current maximum are
    ours until commit; ``above`` is the highest id this transaction already
    took (and may not have written yet).
    """
    if n <= 0:
        return []
    conn = session.connection()
    if conn.dialect.name == "postgresql":
        sql = _sequence_sql(table.name)
        return [r[0] for r in conn.exec_driver_sql(sql, (n,))]
    top = max(int(conn.exec_driver_sql(f"SELECT coalesce(max(id), 0) FROM {table.name}").scalar_one()), above)
    return list(range(top + 1, top + 1 + n))


@cache
def _sequence_sql(table: str) -> str:
    return f"SELECT nextval(pg_get_serial_sequence('{table}', 'id')) FROM generate_series(1, %s)"


def rows_by_ids(session: Session, table: Table, columns: tuple[str, ...], ids: list[str]) -> list[Row[Any]]:
    """Rows of ``table`` whose ``id`` is in ``ids``.

    On PostgreSQL a fixed statement with one parameter, prepared once per
    connection whatever the number of ids (an ``IN (...)`` list is a new
    statement for every length): the ids as a JSON array (:func:`ids_param`).
    """
    if not ids:
        return []
    conn = session.connection()
    if conn.dialect.name == "postgresql":
        return conn.exec_driver_sql(_rows_by_ids_sql(table.name, columns), (ids_param(ids),)).all()
    return conn.execute(select(*(table.c[name] for name in columns)).where(table.c.id.in_(ids))).all()


#: SQL for "the text values of the JSON array parameter", usable as ``column = ANY(...)`` (an index scan).
ANY_OF_JSON = "ARRAY(SELECT json_array_elements_text(%s::json))"


def ids_param(ids: Sequence[str]) -> str:
    """Text ids as the parameter of :data:`ANY_OF_JSON`.

    psycopg dumps a Python list as an array in Python, element by element
    (about 25 µs for 16 ids); orjson writes the JSON array in well under 1 µs.
    """
    return orjson.dumps(list(ids)).decode()


def present_ids(table: Table, ids: Sequence[str]) -> tuple[str, tuple[Any, ...]]:
    """For :func:`select_together`: which of ``ids`` are in ``table``, as a JSON array (or NULL)."""
    return _present_ids_sql(table.name), (ids_param(ids),)


@cache
def _present_ids_sql(table: str) -> str:
    return f"(SELECT json_agg(id) FROM {table} WHERE id = ANY({ANY_OF_JSON}))::text"


def select_together(
    session: Session, queries: Sequence[tuple[str, tuple[Any, ...]]], *, plan_each_time: bool = False
) -> list[Any]:
    """PostgreSQL: the values of several scalar subqueries, in one statement (one round trip).

    ``queries``: (parenthesised subquery, its parameters) each; the values come back in order.
    ``plan_each_time``: never a prepared statement's cached plan (:func:`unprepared`).
    """
    sql = "SELECT " + ", ".join(q for q, _ in queries)
    params = tuple(p for _, ps in queries for p in ps)
    if plan_each_time:
        with unprepared(session) as conn:
            return list(conn.exec_driver_sql(sql, params).one())
    return list(session.connection().exec_driver_sql(sql, params).one())


@contextmanager
def unprepared(session: Session) -> Iterator[Connection]:
    """PostgreSQL: the session's connection, on which psycopg prepares no statement meanwhile.

    psycopg prepares a statement the sixth time a connection runs it, and PostgreSQL
    then keeps one generic plan for it, made with the statistics and table sizes of
    that moment. For a lookup in a table that grows fast between two ANALYZE (``jobs``
    during a burst of ingest, or on a new install) that plan is a sequential scan
    chosen while the table was small, kept while it grows to tens of thousands of
    rows: 3-27 ms per statement instead of 0.2 ms. Unprepared, the statement is
    planned at each execution, with the table's current size (a fraction of a
    millisecond of the server's time).
    """
    conn = session.connection()
    driver = conn.connection.driver_connection
    saved = driver.prepare_threshold
    driver.prepare_threshold = None
    try:
        yield conn
    finally:
        driver.prepare_threshold = saved


@cache
def _rows_by_ids_sql(table: str, columns: tuple[str, ...]) -> str:
    return f"SELECT {', '.join(columns)} FROM {table} WHERE id = ANY({ANY_OF_JSON})"
