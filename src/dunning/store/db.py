"""Engines and sessions, with the pragmas each backend needs for many processes."""

from __future__ import annotations

import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from sqlalchemy import Engine, create_engine, event, exc
from sqlalchemy.orm import Session, sessionmaker


def make_engine(
    url: str, *, immediate: bool = True, ping_idle_s: float | None = None, **kwargs: Any
) -> Engine:
    """Create an engine; on SQLite, WAL mode and immediate write transactions.

    SQLite: several worker processes write the same file, so every transaction
    starts with ``BEGIN IMMEDIATE`` (a deferred one that later upgrades to a
    write lock fails with SQLITE_BUSY instead of waiting), with a generous
    busy timeout. Elsewhere, a pooled connection idle for ``ping_idle_s`` (default
    :data:`PING_IDLE_S`) is pinged before use, unless ``pool_pre_ping`` is given.
    """
    # Parameters (emails, names) must never end up in exception texts stored on the broker.
    kwargs.setdefault("hide_parameters", True)
    if url.startswith("sqlite"):
        path = url.split("///", 1)[-1]
        if path and path != ":memory:":
            Path(path).parent.mkdir(parents=True, exist_ok=True)
        engine = create_engine(url, connect_args={"timeout": 60, "isolation_level": None}, **kwargs)

        @event.listens_for(engine, "connect")
        def _pragmas(dbapi_conn: Any, _record: Any) -> None:
            cur = dbapi_conn.cursor()
            cur.execute("PRAGMA journal_mode=WAL")
            cur.execute("PRAGMA synchronous=NORMAL")
            cur.execute("PRAGMA busy_timeout=60000")
            cur.execute("PRAGMA foreign_keys=ON")
            cur.close()

        @event.listens_for(engine, "begin")
        def _begin(conn: Any) -> None:
            # ``immediate=False`` is for read-only engines: WAL readers never wait for writers.
            conn.exec_driver_sql("BEGIN IMMEDIATE" if immediate else "BEGIN")

        return engine
    ping = "pool_pre_ping" not in kwargs
    kwargs.setdefault("pool_size", 10)
    kwargs.setdefault("max_overflow", 20)
    engine = create_engine(url, **kwargs)
    if ping:
        _ping_when_idle(engine, PING_IDLE_S if ping_idle_s is None else ping_idle_s)
    return engine


#: A pooled connection idle this long is pinged before it is handed out (``SELECT 1``).
PING_IDLE_S = 5.0


def _ping_when_idle(engine: Engine, idle_s: float) -> None:
    """``pool_pre_ping`` for connections that sat idle: a busy worker's were in use a moment ago.

    ``pool_pre_ping`` costs a round trip and a statement on every checkout, i.e. every
    transaction (a few per email). A connection given back less than ``idle_s`` ago is handed
    out as is: if the server went away meanwhile, its first statement fails like any statement
    cut by an outage (the callers' error paths already handle that, since a connection can die
    between a ping and its use), and SQLAlchemy then recycles every older pooled connection.
    """

    @event.listens_for(engine, "checkin")
    def _checked_in(_dbapi_conn: Any, record: Any) -> None:
        record.info["idle_since"] = time.monotonic()

    @event.listens_for(engine, "checkout")
    def _checked_out(dbapi_conn: Any, record: Any, _proxy: Any) -> None:
        since = record.info.get("idle_since")
        if since is None or time.monotonic() - since < idle_s:
            return  # new, or used a moment ago
        dialect = engine.dialect
        try:
            dialect.do_ping(dbapi_conn)
        except dialect.loaded_dbapi.Error as err:
            if dialect.is_disconnect(err, dbapi_conn, None):
                raise exc.DisconnectionError() from None  # the pool discards it, hands out another
            raise


def make_sessionmaker(engine: Engine) -> sessionmaker[Session]:
    """Sessions that keep loaded objects usable after commit."""
    return sessionmaker(engine, expire_on_commit=False)


@contextmanager
def transaction(factory: sessionmaker[Session]) -> Iterator[Session]:
    """A session in one transaction: committed on success, rolled back on error."""
    with factory() as session, session.begin():
        yield session


def dialect_insert(session: Session) -> Any:
    """The ``insert`` of the session's dialect, the one with ``on_conflict_do_*`` (PostgreSQL or SQLite)."""
    from sqlalchemy.dialects import postgresql, sqlite

    return (postgresql if session.get_bind().dialect.name == "postgresql" else sqlite).insert
