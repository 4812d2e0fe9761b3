"""Shared fixtures. Logic lives in :mod:`tests.support`; this file only wires it to pytest.

Servers are real processes started once per test session and shared; the
function-scoped fixtures give each test a clean view of them (a fresh
database, an empty mailbox with no faults).
"""

from __future__ import annotations

import re
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.support.servers import PostgresServer, RedisProcess, SmtpServer, unique_database_name


def pytest_collection_finish(session: pytest.Session) -> None:
    """Refuse a test module that imports ``workers`` (the actors) when it is collected.

    Importing it sets Dramatiq's global broker from the environment (the one import
    with a side effect, on purpose: actors bind to it), before the
    ``dunning_broker`` fixture has pointed it at the suite's Redis: without
    ``DUNNING_REDIS_URL`` it starts an embedded Redis, and every test that
    enqueues through the global broker then writes where no worker reads.
    """
    import sys

    early = [name for name in ("workers",) if name in sys.modules]
    if early and session.items:
        raise pytest.UsageError(
            f"{', '.join(early)} imported while collecting tests: import it inside the test or fixture"
        )


# ---------------------------------------------------------------------------
# Real servers (session-scoped: started once, stopped when the run ends)
# ---------------------------------------------------------------------------


@pytest.fixture(scope="session")
def redis_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RedisProcess]:
    """A private redis-server on 127.0.0.1 (no persistence). Tests may kill or restart it."""
    with RedisProcess(tmp_path_factory.mktemp("redis")) as server:
        yield server


@pytest.fixture(scope="session")
def postgres_server() -> Iterator[PostgresServer]:
    """A throw-away PostgreSQL cluster; use ``pg_url`` for a database of your own."""
    with PostgresServer() as server:
        yield server


@pytest.fixture(scope="session")
def smtp_server() -> Iterator[SmtpServer]:
    """The session's SMTP server; tests should use ``smtp``, which starts each test clean."""
    with SmtpServer() as server:
        yield server


# ---------------------------------------------------------------------------
# Per-test views of the servers
# ---------------------------------------------------------------------------


@pytest.fixture
def smtp(smtp_server: SmtpServer) -> Iterator[SmtpServer]:
    """The SMTP server with no messages and no faults at the start (and end) of the test."""
    smtp_server.reset_faults()
    smtp_server.clear()
    yield smtp_server
    smtp_server.reset_faults()
    smtp_server.clear()


@pytest.fixture
def pg_url(postgres_server: PostgresServer, request: pytest.FixtureRequest) -> Iterator[str]:
    """SQLAlchemy URL of a fresh, empty PostgreSQL database, dropped after the test."""
    name = unique_database_name(re.sub(r"\[.*", "", request.node.name))
    url = postgres_server.create_database(name)
    yield url
    postgres_server.drop_database(name)


@pytest.fixture
def sqlite_url(tmp_path: Path) -> str:
    """SQLAlchemy URL of a new SQLite file in the test's temporary directory."""
    return f"sqlite:///{tmp_path / 'dunning.db'}"


# ---------------------------------------------------------------------------
# The product wired to the real servers (integration tests)
# ---------------------------------------------------------------------------


@pytest.fixture(scope="session")
def dunning_broker(redis_server: RedisProcess) -> Iterator[tuple[object, object]]:
    """The workers' Dramatiq broker bound to the session's Redis, with a message counter.

    ``workers`` sets the global broker at import from ``DUNNING_REDIS_URL``,
    so the variable is set before the first import.
    """
    import os

    os.environ["DUNNING_REDIS_URL"] = redis_server.url
    import workers

    from tests.support.harness import MessageCounter

    counter = MessageCounter()
    workers.broker.add_middleware(counter)
    yield workers.broker, counter


@pytest.fixture(params=["sqlite", "postgresql"])
def db_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    """Each integration test that asks for it runs on SQLite and on PostgreSQL."""
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path / 'dunning.db'}"
    return request.getfixturevalue("pg_url")


@pytest.fixture
def sessions(db_url: str) -> Iterator[Any]:
    """A sessionmaker on ``db_url``'s database, migrated to the latest schema (no runtime, no servers but it)."""
    from dunning.store.db import make_engine, make_sessionmaker
    from dunning.store.migrate import upgrade

    engine = make_engine(db_url)
    upgrade(engine)
    yield make_sessionmaker(engine)
    engine.dispose()


@pytest.fixture
def make_world(
    redis_server: RedisProcess,
    smtp: SmtpServer,
    tmp_path: Path,
    dunning_broker: tuple[object, object],
) -> Iterator[Callable[..., Any]]:
    """``make_world(db_url, **options)``: the product on real servers, stopped after the test.

    Options are :func:`tests.support.harness.harness`'s (``start_workers=False`` for a world
    the test drives itself, ``policy_path`` for another policy); one world per test.
    """
    from contextlib import ExitStack

    from tests.support.harness import harness

    broker, counter = dunning_broker
    with ExitStack() as stack:

        def make(db_url: str, **options: Any) -> Any:
            return stack.enter_context(
                harness(
                    db_url=db_url,
                    redis_url=redis_server.url,
                    smtp=smtp,  # type: ignore[arg-type]
                    home=tmp_path,
                    broker=broker,  # type: ignore[arg-type]
                    counter=counter,  # type: ignore[arg-type]
                    **options,
                )
            )

        yield make


@pytest.fixture
def world(db_url: str, make_world: Callable[..., Any]) -> Any:
    """A running product (worker, scheduler, sandbox billing) on real servers."""
    return make_world(db_url)


@pytest.fixture
def idle_world(db_url: str, make_world: Callable[..., Any]) -> Any:
    """The product's stores, broker and sandbox with no worker and no scheduler: the test drives them."""
    return make_world(db_url, start_workers=False)


@pytest.fixture
def probe_broker(dunning_broker: tuple[Any, Any]) -> Iterator[Callable[..., Any]]:
    """``make(park)``: a broker of our class on its own namespace (no worker consumes it), removed after the test."""
    from dunning.broker.consumer import DunningRedisBroker

    workers_broker, _ = dunning_broker
    namespace = f"probe-{uuid.uuid4()}"
    made: list[Any] = []

    def make(park: Callable[[dict[str, Any]], None]) -> Any:
        b = DunningRedisBroker(client=workers_broker.client, middleware=[], namespace=namespace, park=park)
        made.append(b)
        return b

    yield make
    client = workers_broker.client
    for key in client.scan_iter(f"{namespace}:*"):
        client.delete(key)
