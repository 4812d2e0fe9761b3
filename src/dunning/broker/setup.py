"""The Dramatiq broker with our middleware, built from settings.

Importing this module starts nothing: :func:`setup_broker` builds the broker
and makes it Dramatiq's global one (the actors' package, ``workers``, calls
it). The URL comes from ``DUNNING_REDIS_URL`` or, when unset, the install's
embedded Redis (started on first use and shared by every process of the
install).

The broker is Dramatiq's Redis broker whose consumer refuses bytes that are
not a message (:mod:`dunning.broker.consumer`).
"""

from __future__ import annotations

import logging
from typing import Any

import dramatiq
import redis
from dramatiq.middleware import AgeLimit, Retries, ShutdownNotifications, TimeLimit

from dunning.broker.consumer import DunningRedisBroker
from dunning.broker.liveness import Heartbeat
from dunning.broker.middleware import DeadLetters, FreezeBootHeap, RedactTracebacks, RunAlone
from dunning.settings import Settings, load_settings

log = logging.getLogger(__name__)

#: Actor time limit; job leases (``Tuning.run_lease_s``) must be longer.
TIME_LIMIT_MS = 60_000


def redis_url(settings: Settings) -> str:
    """The configured broker URL, starting the embedded Redis if none is configured."""
    if settings.redis_url:
        return settings.redis_url
    from dunning.devtools.embedded_redis import ensure_embedded_redis

    return ensure_embedded_redis(settings.home)


def _park_in_database(row: dict[str, Any]) -> None:
    from dunning.runtime import get_runtime
    from dunning.store.dead_letters import park

    park(get_runtime(), row)


#: Dramatiq's ``heartbeat_timeout`` by default. The scheduler gives back a dead worker's messages
#: after ``Tuning.worker_dead_after_s`` (10 s); Dramatiq's own pass is the backstop when no
#: scheduler runs, and must come later so that the scheduler's (which also marks suspect billing
#: events to run alone) acts first. Each worker refreshes this heartbeat from its own thread, so
#: a live worker with busy or slow actors is never taken for dead.
HEARTBEAT_TIMEOUT_MS = 30_000


def build_broker(url: str, *, heartbeat_timeout_ms: int | None = None) -> DunningRedisBroker:
    """A Redis broker with the middleware set we rely on.

    ``heartbeat_timeout_ms`` (env ``DUNNING_BROKER_HEARTBEAT_MS``, default
    :data:`HEARTBEAT_TIMEOUT_MS`) is how long a silent worker's unacknowledged
    messages wait before Dramatiq's own maintenance gives them to another worker.
    """
    import os

    if heartbeat_timeout_ms is None:
        heartbeat_timeout_ms = int(os.environ.get("DUNNING_BROKER_HEARTBEAT_MS", str(HEARTBEAT_TIMEOUT_MS)))
    client = redis.Redis.from_url(url)
    dead = DeadLetters(_park_in_database)
    middleware = [
        # First: a run that must be alone waits for the others before any other hook (its time
        # limit included) starts.
        RunAlone(),
        Heartbeat(),
        AgeLimit(),
        TimeLimit(time_limit=TIME_LIMIT_MS),
        ShutdownNotifications(),
        # No Callbacks or Pipelines: no actor of ours uses them, each costs every message a hook
        # call per signal, and with them a message's options (on_success, pipe_target) could make
        # a worker enqueue any of our actors.
        dead,  # before Retries: its after-hook runs once Retries has ruled
        Retries(max_retries=20, min_backoff=1_000, max_backoff=300_000),
        # After Retries: Dramatiq runs after-hooks in reverse, so it keeps the exception first.
        RedactTracebacks(),
        FreezeBootHeap(),  # only in processes ``dunning worker`` starts
    ]
    # Per million broker commands, how many also run Dramatiq's maintenance (Dramatiq: 1000).
    maintenance = int(os.environ.get("DUNNING_BROKER_MAINTENANCE_CHANCE", "1000"))
    # Longest wait of a consumer on an empty queue before it asks again (unset: Dramatiq's, up to 1 s).
    idle_poll = os.environ.get("DUNNING_BROKER_IDLE_POLL_MS")
    return DunningRedisBroker(
        park=_park_in_database,
        idle_poll_ms=max(1, int(idle_poll)) if idle_poll else None,
        client=client,
        middleware=middleware,
        heartbeat_timeout=heartbeat_timeout_ms,
        maintenance_chance=maintenance,
    )


def setup_broker(settings: Settings | None = None) -> DunningRedisBroker:
    """Build the broker from settings and make it Dramatiq's global broker."""
    from dunning import telemetry

    broker = build_broker(redis_url(settings or load_settings()))
    dramatiq.set_broker(broker)
    # This process's billing calls, emails and refusals are counted in the broker's Redis.
    telemetry.install(broker.client)
    return broker
