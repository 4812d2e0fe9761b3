"""The same no-op actor on a bare ``RedisBroker`` with Dramatiq's default middleware (reference only).

``dramatiq benchmarks.noop_actor_plain`` shows what the product's middleware
(DeadLetters, RedactTracebacks, RunAlone and Heartbeat; before 2026-12 also PoisonGuard's two extra Redis
round trips per message) costs compared with stock Dramatiq.
"""

from __future__ import annotations

import os
from typing import Any

import dramatiq
from dramatiq.brokers.redis import RedisBroker

QUEUE = "bench_noop_plain"
ACTOR = "bench_noop_plain"

broker = RedisBroker(url=os.environ["DUNNING_REDIS_URL"])
dramatiq.set_broker(broker)

__all__ = ["ACTOR", "QUEUE", "broker", "noop"]


@dramatiq.actor(queue_name=QUEUE, actor_name=ACTOR, max_retries=0)
def noop(*args: Any) -> None:
    """Do nothing."""
