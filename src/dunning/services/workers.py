"""The ``workers`` table: heartbeats of worker processes, and releasing the runs of dead ones.

Each worker process writes its row every ``Tuning.heartbeat_s`` from a thread
of its own (:mod:`dunning.liveness`); each run it starts records its id on the
job. The scheduler reads the table on every pass: a worker silent for
``Tuning.worker_dead_after_s`` is dead, and the runs it left are sent again at
once (by the crash rule of :mod:`dunning.services.recovery`) instead of
waiting for ``Tuning.run_lease_s``.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime

from sqlalchemy import delete, select
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.orm import Session

from dunning.services.jobs import RUN_COLUMNS, Dispatch, release_dead_run, resend_unsent, run_of, wall_now
from dunning.services.recovery import Beat, dead_workers, stranded, unsent
from dunning.store.models import Job, Worker


def beat(session: Session, worker_id: str, *, host: str, pid: int, at: datetime | None = None) -> None:
    """Record that ``worker_id`` is alive (the row is created on the first beat, or again after a freeze)."""
    at = at or wall_now()
    name = session.get_bind().dialect.name
    insert = (postgresql if name == "postgresql" else sqlite).insert
    session.execute(
        insert(Worker)
        .values(id=worker_id, host=host[:255], pid=pid, started_at=at, heartbeat_at=at)
        .on_conflict_do_update(index_elements=["id"], set_={"heartbeat_at": at})
    )


def retire(session: Session, worker_id: str) -> None:
    """Forget a worker: it stopped cleanly, or the scheduler recovered everything it held."""
    session.execute(delete(Worker).where(Worker.id == worker_id))


def find_dead(session: Session, *, dead_after_s: float, now: datetime | None = None) -> list[str]:
    """Workers whose heartbeat stopped ``dead_after_s`` ago or more."""
    beats = [Beat(r.id, r.heartbeat_at) for r in session.execute(select(Worker.id, Worker.heartbeat_at))]
    return dead_workers(beats, now=now or wall_now(), dead_after_s=dead_after_s)


@dataclass
class Released:
    """The runs of dead workers that one pass released."""

    dispatch: list[Dispatch] = field(default_factory=list)
    parked: int = 0
    unsent: int = 0  # jobs the dead workers had created already due, sent in their stead


def release_runs_of(
    session: Session, dead: Sequence[str], *, max_crashes: int, queue_lease_s: float
) -> Released:
    """Send again (or park, by the crash rule) every started, unfinished run of the ``dead`` workers.

    Also sends the jobs they had created already due, whose messages they were
    to send after their commit and may not have.

    The rows are read without a lock and each is updated only if its run is
    still the one that was read, so a run that finishes meanwhile, or a second
    scheduler doing the same, wins without harm.
    """
    out = Released()
    if not dead:
        return out
    rows = session.execute(
        select(*RUN_COLUMNS).where(Job.status == "claimed", Job.worker_id.in_(list(dead)))
    ).all()
    outbox = {r.id: r.outbox_id for r in rows}
    runs = [run_of(r) for r in rows]
    for run in unsent(runs, set(dead)):
        again = resend_unsent(session, run, queue_lease_s=queue_lease_s)
        if again is not None:
            out.dispatch.append(again)
            out.unsent += 1
    for run in stranded(runs, set(dead)):
        released = release_dead_run(
            session,
            run,
            outbox_id=outbox[run.job_id],
            max_crashes=max_crashes,
            queue_lease_s=queue_lease_s,
            cause=f"worker {run.worker_id} stopped beating",
        )
        if isinstance(released, Dispatch):
            out.dispatch.append(released)
        elif released:
            out.parked += 1
    return out
