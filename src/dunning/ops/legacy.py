"""The first ``dunning queues`` summary, kept for the ops page and ``/metrics`` that read it.

``dunning queues`` itself now reads :mod:`dunning.ops.queues`.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import TYPE_CHECKING

import redis
from sqlalchemy import func, select

from dunning.broker.names import ALL_QUEUES
from dunning.engine.jobs import wall_now
from dunning.store.models import DeadLetter, Job

if TYPE_CHECKING:
    from dunning.runtime import Runtime


@dataclass(frozen=True)
class QueueDepth:
    name: str
    ready: int
    delayed: int
    dead: int


@dataclass(frozen=True)
class Snapshot:
    now: datetime
    queues: list[QueueDepth]
    jobs: dict[str, int]
    oldest_due_age_s: float | None
    dead_letters: int


def queue_depths(client: redis.Redis, namespace: str = "dramatiq") -> list[QueueDepth]:
    """Ready, delayed and dead message counts per queue, read with the keys Dramatiq uses.

    ``delayed`` counts retries waiting for their backoff wherever they are: on the ``.DQ``
    list, or held in a worker's memory (:mod:`dunning.ops.broker_state`).
    """
    from dunning.ops.broker_state import read_broker

    state = read_broker(client, ALL_QUEUES, namespace)
    return [QueueDepth(b.name, b.ready, b.delayed, b.dead_broker) for b in state.queues]


def queue_snapshot(rt: Runtime, url: str) -> Snapshot:
    """Everything ``dunning queues`` prints."""
    now = rt.clock.now()
    with rt.sessions() as s:
        jobs: dict[str, int] = {}
        for status, n in s.execute(select(Job.status, func.count()).group_by(Job.status)):
            jobs[status] = n
        due = s.execute(
            select(func.count(), func.min(Job.due_at)).where(Job.status == "pending", Job.due_at <= now)
        ).one()
        jobs["pending (due now)"] = due[0]
        jobs["pending"] = jobs.get("pending", 0) - due[0]
        oldest = (now - due[1]).total_seconds() if due[1] is not None else None
        dead_letters = s.execute(
            select(func.count()).select_from(DeadLetter).where(DeadLetter.requeued_at.is_(None))
        ).scalar_one() + jobs.get("dead", 0)
    client = redis.Redis.from_url(url)
    try:
        depths = queue_depths(client)
    finally:
        client.close()
    order = ["pending (due now)", "claimed", "pending", "done", "canceled", "dead"]
    return Snapshot(now, depths, {k: jobs.get(k, 0) for k in order}, oldest, dead_letters)


__all__ = ["QueueDepth", "Snapshot", "queue_depths", "queue_snapshot", "wall_now"]
