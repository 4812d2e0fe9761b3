"""The process's wiring: settings, database, clock, policy, billing, mail.

Actors and commands ask :func:`get_runtime` for it; tests install their own
with :func:`set_runtime`. Nothing here decides anything.
"""

from __future__ import annotations

import threading
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any

from sqlalchemy import Engine
from sqlalchemy.orm import Session, sessionmaker

from dunning.billing.port import BillingPort
from dunning.domain.clock import Clock, SystemClock
from dunning.domain.policy import Policy, load_policy
from dunning.engine.links import LinkSigner
from dunning.mail import sender_from_url
from dunning.mail.render import Renderer
from dunning.mail.sending import Sender
from dunning.settings import Settings, load_settings
from dunning.store.clock import DatabaseClock
from dunning.store.db import make_engine, make_sessionmaker
from dunning.store.unit import install as install_unit

DEFAULT_SANDBOX_URL = "http://127.0.0.1:8765"


@dataclass
class Tuning:
    """Knobs for leases and backoff; tests and fault drills shorten them."""

    queue_lease_s: float = 300.0  # backstop: a claimed job not started by then is enqueued again
    run_lease_s: float = 120.0  # backstop: must exceed the actors' time limit
    max_crashes: int = 3  # runs that died alone in their worker before the job or message is parked
    heartbeat_s: float = 2.0  # how often each worker process records that it is alive
    worker_dead_after_s: float = 10.0  # a worker silent this long is dead: its work is sent again
    max_runs: int = 12  # handled failures (billing or SMTP down) before the job is parked
    backoff_base_s: float = 5.0
    backoff_max_s: float = 600.0
    link_ttl_days: int = 21
    #: Mail jobs per ``deliver_email`` message at most (1: one message per email, as before
    #: batching). 50: the batch's start and its message cost ~0.1 ms an email, against ~0.2 at
    #: 25; a worker killed mid-batch leaves at most this many jobs to run alone, one at a time.
    mail_batch: int = 50
    #: A batch message starts no new email after this long; the rest go back to the scheduler.
    #: With one email's worst case (SMTP retries, ~45 s) it stays under the actors' time limit.
    mail_batch_s: float = 10.0

    @classmethod
    def from_env(cls, env: dict[str, str] | None = None) -> Tuning:
        """Overrides from ``DUNNING_TUNING_<FIELD>`` variables (e.g. ``DUNNING_TUNING_QUEUE_LEASE_S=5``)."""
        import os

        env = dict(os.environ if env is None else env)
        values: dict[str, Any] = {}
        for name, default in cls().__dict__.items():
            raw = env.get(f"DUNNING_TUNING_{name.upper()}")
            if raw is not None:
                try:
                    values[name] = type(default)(raw)
                except ValueError:
                    raise ValueError(
                        f"DUNNING_TUNING_{name.upper()}: expected a number, got {raw!r}"
                    ) from None
        return cls(**values)


@dataclass
class Runtime:
    settings: Settings
    engine: Engine
    sessions: sessionmaker[Session]
    clock: Clock
    policy: Policy
    billing: BillingPort
    renderer: Renderer
    sender: Sender
    links: LinkSigner
    tuning: Tuning = field(default_factory=Tuning)

    def close(self) -> None:
        """Release connections (the billing client's, the mail sender's and the pool's)."""
        for owner in (self.billing, self.sender):
            close = getattr(owner, "close", None)
            if callable(close):
                close()
        self.engine.dispose()


def build_runtime(
    settings: Settings | None = None,
    *,
    billing: BillingPort | None = None,
    sender: Sender | None = None,
    tuning: Tuning | None = None,
    **engine_kwargs: Any,
) -> Runtime:
    """Wire a runtime from settings (the environment by default)."""
    from dunning.billing.http_client import HttpBillingClient

    settings = settings or load_settings()
    engine = make_engine(settings.database_url, **engine_kwargs)
    sessions = make_sessionmaker(engine)
    tuning = tuning or Tuning.from_env()
    install_unit(sessions, lease_s=tuning.queue_lease_s)
    clock: Clock = SystemClock()
    if settings.clock == "simulated":
        reader = None
        if engine.dialect.name == "sqlite":
            reader = make_sessionmaker(make_engine(settings.database_url, immediate=False, pool_size=2))
        clock = DatabaseClock(sessions, reader)
    if billing is None:
        from dunning.telemetry import billing_call

        billing = HttpBillingClient(
            settings.billing_url or DEFAULT_SANDBOX_URL, settings.billing_secret, observer=billing_call
        )
    return Runtime(
        settings=settings,
        engine=engine,
        sessions=sessions,
        clock=clock,
        policy=load_policy(settings.policy_path),
        billing=billing,
        renderer=Renderer(override_dir=settings.templates_dir),
        sender=sender or sender_from_url(settings.smtp_url, settings.outbox_dir),
        links=LinkSigner(settings.link_secret, settings.public_url),
        tuning=tuning,
    )


_runtime: Runtime | None = None
_lock = threading.Lock()
# A thread's own runtime, for an in-process command that must not share (or replace) the
# one that other threads of the same process are using: see :func:`own_runtime`.
_local = threading.local()


def get_runtime() -> Runtime:
    """The process-wide runtime, built from the environment on first use.

    Inside :func:`own_runtime`, this thread's own runtime instead.
    """
    scope: list[Runtime | None] | None = getattr(_local, "scope", None)
    if scope is not None:
        if scope[0] is None:
            scope[0] = build_runtime()
        return scope[0]
    global _runtime
    if _runtime is None:
        with _lock:
            if _runtime is None:
                _runtime = build_runtime()
    return _runtime


def set_runtime(runtime: Runtime | None) -> None:
    """Install a runtime (tests, the demo); None resets to lazy construction."""
    global _runtime
    with _lock:
        _runtime = runtime


@contextmanager
def own_runtime() -> Iterator[None]:
    """Give the calling thread a runtime of its own, built from the environment on first use.

    For running a command in a process whose other threads (workers, heartbeats) keep using
    the process-wide runtime: resetting that one instead let a heartbeat thread build it from
    whatever the environment held at that moment, and the command then used the wrong database.
    """
    previous = getattr(_local, "scope", None)
    _local.scope = [None]
    try:
        yield
    finally:
        _local.scope = previous
