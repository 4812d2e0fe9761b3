"""A no-op actor on its own queue, with the product's broker and middleware: the Dramatiq ceiling.

Run as ``dramatiq benchmarks.noop_actor --processes 2 --threads 8`` (with
``DUNNING_REDIS_URL`` set): :func:`dunning.broker.setup.setup_broker` installs the same
broker and middleware list (RunAlone, Heartbeat, AgeLimit, TimeLimit, ShutdownNotifications,
DeadLetters, Retries, RedactTracebacks) that
``dunning worker`` uses, so the difference between this actor's rate and the
ingest rate is the cost of the product's own work.
"""

from __future__ import annotations

from typing import Any

import dramatiq

from dunning.broker.setup import setup_broker

broker = setup_broker()

QUEUE = "bench_noop"
ACTOR = "bench_noop"

__all__ = ["ACTOR", "QUEUE", "broker", "noop"]


@dramatiq.actor(queue_name=QUEUE, actor_name=ACTOR, max_retries=0)
def noop(*args: Any) -> None:
    """Do nothing."""
