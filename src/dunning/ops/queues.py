"""``dunning queues``: the broker's queues, the scheduler's backlog, live workers, dead letters.

Data only (no rendering): :func:`queue_status` returns a :class:`QueueStatus` whose
:meth:`~QueueStatus.to_json` is what ``dunning queues --json`` prints and what the ops
dashboard reads. Redis counts come from :mod:`dunning.ops.broker_state`.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from datetime import datetime
from typing import TYPE_CHECKING, Any

from sqlalchemy import and_, func, or_, select

from dunning.broker.names import ALL_QUEUES
from dunning.engine.jobs import wall_now
from dunning.engine.pauses import ALL_KINDS
from dunning.ops.broker_state import read_broker
from dunning.store.models import DeadLetter, Job, Worker
from dunning.store.ops_models import PausedKind

if TYPE_CHECKING:
    import redis

    from dunning.runtime import Runtime


@dataclass
class QueueRow:
    """One queue. ``delayed`` = ``delayed_waiting`` (in Redis) + ``delayed_held`` (in a worker's memory)."""

    name: str
    ready: int
    delayed: int
    delayed_waiting: int
    delayed_held: int
    #: Fetched by a worker and not acknowledged: running, or prefetched and waiting for a thread.
    in_progress: int
    #: Dead letters to review for this queue: refused messages not requeued, and parked jobs.
    dead_lettered: int
    #: Dramatiq's own dead-letter set (``<queue>.XQ``; overlaps ``dead_lettered``, expires after 7 days).
    dead_broker: int
    #: Wall-clock seconds since the oldest ready message was sent (None: nothing ready).
    oldest_ready_age_s: float | None


@dataclass
class SchedulerBacklog:
    """Jobs in the database, against the business clock."""

    #: Due, not backing off, not yet claimed: what the next scheduler pass would enqueue.
    due_unclaimed: int
    #: Due time of the oldest of those, and how far behind the clock it is (None: no backlog).
    oldest_due_at: datetime | None
    lag_s: float | None
    #: Due but waiting for their backoff after a failed run (``retry_at`` is later).
    backing_off: int
    claimed: int
    #: Pending, due later.
    scheduled: int
    #: Email sends on hold because their notice kind is paused (``dunning pause``).
    held: int


@dataclass
class WorkerRow:
    """A worker process by its heartbeat, and what it holds in Redis."""

    id: str
    host: str | None
    pid: int | None
    started_at: datetime | None
    last_seen: datetime | None
    last_seen_age_s: float | None
    #: Its heartbeat is younger than ``Tuning.worker_dead_after_s``; False for a worker that
    #: holds messages but has no heartbeat row (gone, or not ours): the scheduler takes them back.
    alive: bool
    in_progress: int = 0
    delayed_held: int = 0


@dataclass
class DeadLetterCounts:
    """Dead letters to review (``dunning dlq list``), and those still on their way to the table."""

    messages: int
    jobs: int
    #: Refused while the database was down: in Redis until the scheduler writes them.
    waiting_in_redis: int

    @property
    def total(self) -> int:
        return self.messages + self.jobs + self.waiting_in_redis


@dataclass
class QueueStatus:
    """Everything ``dunning queues`` shows."""

    at: datetime
    business_now: datetime
    queues: list[QueueRow]
    scheduler: SchedulerBacklog
    workers: list[WorkerRow]
    dead_letters: DeadLetterCounts
    paused: list[str] = field(default_factory=list)

    def to_json(self) -> dict[str, Any]:
        """A JSON-ready dict (datetimes as ISO 8601): ``queues``, ``scheduler``, ``workers``, ``dead_letters``."""
        dead = asdict(self.dead_letters) | {"total": self.dead_letters.total}
        return _jsonable(
            {
                "at": self.at,
                "business_now": self.business_now,
                "queues": [asdict(q) for q in self.queues],
                "scheduler": asdict(self.scheduler),
                "workers": [asdict(w) for w in self.workers],
                "dead_letters": dead,
                "paused": list(self.paused),
            }
        )


def _jsonable(value: Any) -> Any:
    if isinstance(value, dict):
        return {k: _jsonable(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_jsonable(v) for v in value]
    if isinstance(value, datetime):
        return value.isoformat()
    if isinstance(value, float):
        return round(value, 3)
    return value


def queue_status(rt: Runtime, client: redis.Redis | None = None) -> QueueStatus:
    """Read Redis and the database once; ``client`` defaults to the configured broker's Redis."""
    from dunning.broker.unparked import pending

    own = client is None
    if client is None:
        import redis as redis_lib

        from dunning.broker.setup import redis_url

        client = redis_lib.Redis.from_url(redis_url(rt.settings))
    try:
        broker = read_broker(client, ALL_QUEUES)
        waiting = pending(client)
    finally:
        if own:
            client.close()
    wall = wall_now()
    now = rt.clock.now()
    with rt.sessions() as s:
        scheduler = _backlog(s, now, wall)
        dead_msgs = dict(
            s.execute(
                select(DeadLetter.queue, func.count())
                .where(DeadLetter.requeued_at.is_(None))
                .group_by(DeadLetter.queue)
            ).all()
        )
        dead_jobs = dict(
            s.execute(select(Job.queue, func.count()).where(Job.status == "dead").group_by(Job.queue)).all()
        )
        beats = s.execute(select(Worker).order_by(Worker.host, Worker.pid)).scalars().all()
        paused = sorted("all" if k == ALL_KINDS else k for k in s.execute(select(PausedKind.kind)).scalars())
    queues = [
        QueueRow(
            name=b.name,
            ready=b.ready,
            delayed=b.delayed,
            delayed_waiting=b.delayed_waiting,
            delayed_held=b.delayed_held,
            in_progress=b.in_progress,
            dead_lettered=dead_msgs.get(b.name, 0) + dead_jobs.get(b.name, 0),
            dead_broker=b.dead_broker,
            oldest_ready_age_s=(
                max(0.0, wall.timestamp() - b.oldest_ready_ms / 1000)
                if b.oldest_ready_ms is not None
                else None
            ),
        )
        for b in broker.queues
    ]
    dead_after = rt.tuning.worker_dead_after_s
    workers = []
    for w in beats:
        age = (wall - w.heartbeat_at).total_seconds()
        held = broker.held_by.get(w.id, {})
        workers.append(
            WorkerRow(
                w.id, w.host, w.pid, w.started_at, w.heartbeat_at, age, age < dead_after, *_sum_held(held)
            )
        )
    known = {w.id for w in beats}
    for worker_id, held in sorted(broker.held_by.items()):
        if worker_id not in known and any(a or b for a, b in held.values()):
            workers.append(WorkerRow(worker_id, None, None, None, None, None, False, *_sum_held(held)))
    dead = DeadLetterCounts(sum(dead_msgs.values()), sum(dead_jobs.values()), waiting)
    return QueueStatus(wall, now, queues, scheduler, workers, dead, paused)


def _sum_held(held: dict[str, tuple[int, int]]) -> tuple[int, int]:
    return sum(a for a, _ in held.values()), sum(b for _, b in held.values())


def _backlog(s: Any, now: datetime, wall: datetime) -> SchedulerBacklog:
    from dunning.engine.pauses import HELD_PREFIX

    pending_due = and_(Job.status == "pending", Job.due_at <= now)
    ready = or_(Job.retry_at.is_(None), Job.retry_at <= wall)
    due, oldest = s.execute(select(func.count(), func.min(Job.due_at)).where(pending_due, ready)).one()
    backing_off = s.execute(select(func.count()).where(pending_due, ~ready)).scalar_one()
    claimed = s.execute(select(func.count()).where(Job.status == "claimed")).scalar_one()
    scheduled = s.execute(select(func.count()).where(Job.status == "pending", Job.due_at > now)).scalar_one()
    held = s.execute(
        select(func.count()).where(Job.status == "pending", Job.last_error.like(f"{HELD_PREFIX}%"))
    ).scalar_one()
    lag = max(0.0, (now - oldest).total_seconds()) if oldest is not None else None
    return SchedulerBacklog(due, oldest, lag, backing_off, claimed, scheduled, held)
