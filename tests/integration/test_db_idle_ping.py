"""Pooled PostgreSQL connections are pinged before use only when they sat idle (store/db.py).

The server cuts a pooled connection (``pg_terminate_backend``: what a restart or an
idle timeout does to it) while it waits in the pool.
"""

from __future__ import annotations

import pytest
from sqlalchemy import Engine, text
from sqlalchemy.exc import OperationalError

from dunning.store.db import make_engine

pytestmark = pytest.mark.integration


def _pid_then_cut(engine: Engine) -> int:
    """The backend of the one pooled connection, terminated once it is back in the pool."""
    with engine.connect() as conn:
        pid = conn.execute(text("select pg_backend_pid()")).scalar_one()
    other = make_engine(engine.url.render_as_string(hide_password=False))
    try:
        with other.connect() as admin:
            assert admin.execute(text("select pg_terminate_backend(:p)"), {"p": pid}).scalar_one()
    finally:
        other.dispose()
    return pid


def test_an_idle_connection_is_pinged_and_replaced(pg_url: str) -> None:
    engine = make_engine(pg_url, ping_idle_s=0.0, pool_size=1)  # every reuse counts as idle
    try:
        pid = _pid_then_cut(engine)
        with engine.connect() as conn:
            assert conn.execute(text("select 1")).scalar_one() == 1
            assert conn.execute(text("select pg_backend_pid()")).scalar_one() != pid
    finally:
        engine.dispose()


def test_a_connection_used_a_moment_ago_is_not_pinged(pg_url: str) -> None:
    # The trade: no round trip per transaction, and a cut that lands in the meantime fails the
    # first statement (as a cut between a ping and the statement always could); the next works.
    engine = make_engine(pg_url, ping_idle_s=3600.0, pool_size=1)
    try:
        _pid_then_cut(engine)
        with pytest.raises(OperationalError), engine.connect() as conn:
            conn.execute(text("select 1"))
        with engine.connect() as conn:
            assert conn.execute(text("select 1")).scalar_one() == 1
    finally:
        engine.dispose()
