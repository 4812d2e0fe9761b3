"""The ``workers`` table: heartbeats of worker processes, and releasing the runs of dead ones.

Each worker process writes its row every ``Tuning.heartbeat_s`` from a thread
of its own (:mod:`dunning.broker.liveness`); each run it starts records its id on the
job. The scheduler reads the table on every pass: a worker silent for
``Tuning.worker_dead_after_s`` is dead, and the runs it left are sent again at
once (by the crash rule of :mod:`dunning.engine.recovery`) instead of
waiting for ``Tuning.run_lease_s``.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import delete, select, update
from sqlalchemy.orm import Session

from dunning.engine.jobs import Dispatch, wall_now
from dunning.engine.recovery import Beat, Run, after_death, dead_workers, stranded, unsent
from dunning.store.db import dialect_insert
from dunning.store.models import Job, Outbox, Worker


def beat(session: Session, worker_id: str, *, host: str, pid: int, at: datetime | None = None) -> None:
    """Record that ``worker_id`` is alive (the row is created on the first beat, or again after a freeze)."""
    at = at or wall_now()
    insert = dialect_insert(session)
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


#: The columns a run's release reads.
RUN_COLUMNS = (Job.id, Job.worker_id, Job.claims, Job.runs, Job.alone, Job.crashes, Job.outbox_id)


def run_of(row: Any) -> Run:
    """A :class:`Run` from a row selected with :data:`RUN_COLUMNS`."""
    return Run(row.id, row.worker_id, row.claims, row.runs, bool(row.alone), row.crashes)


def release_dead_run(
    session: Session,
    run: Run,
    *,
    outbox_id: int | None,
    max_crashes: int,
    queue_lease_s: float,
    cause: str,
) -> Dispatch | bool:
    """End a started run that died: the job is sent again (alone from now on) or parked.

    Returns the message to send, True if the job was parked, False if the row
    moved on meanwhile (the run finished after all, or another scheduler
    released it): the update only applies to the run as it was read.
    """
    wall = wall_now()
    verdict = after_death(ran_alone=run.alone, crashes=run.crashes, max_crashes=max_crashes)
    same_run = (
        Job.id == run.job_id,
        Job.status == "claimed",
        Job.claims == run.claims,
        Job.runs == run.runs,  # a run that started meanwhile is not the one that died
    )
    if verdict.park:
        moved = session.execute(
            update(Job)
            .where(*same_run)
            .values(
                status="dead",
                crashes=verdict.crashes,
                finished_at=wall,
                last_error=f"parked: {verdict.crashes} runs died without finishing while running alone"
                f" ({cause}): a job that kills or hangs its worker",
            )
        ).rowcount
        if moved and outbox_id is not None:
            # Its email may have been handed to the mail server by one of those runs (the row
            # says "sending"): say so, as the next run would have, instead of leaving it "sending".
            session.execute(
                update(Outbox)
                .where(Outbox.id == outbox_id, Outbox.status == "sending")
                .values(
                    status="unknown",
                    last_error="parked: its sending job died repeatedly after handing it to the mail"
                    " server; check the server's log, then `dunning dlq requeue` to resend or purge",
                )
            )
        return bool(moved)
    got = session.execute(
        update(Job)
        .where(*same_run)
        .values(
            claims=Job.claims + 1,
            crashes=verdict.crashes,
            alone=verdict.alone,
            worker_id=None,
            lease_until=wall + timedelta(seconds=queue_lease_s),
        )
        .returning(Job.id, Job.queue, Job.alone)
    ).first()
    return False if got is None else Dispatch(got.queue, got.id, got.alone)


def resend_unsent(session: Session, run: Run, *, queue_lease_s: float) -> Dispatch | None:
    """Send a job whose creator died before (perhaps) sending it; None if it moved on meanwhile.

    If the creator did send it, the first copy to start wins and the job's
    ``finish`` makes the other a no-op; every effect has an idempotency key
    for the rare overlap.
    """
    got = session.execute(
        update(Job)
        .where(
            Job.id == run.job_id,
            Job.status == "claimed",
            Job.claims == run.claims,
            Job.runs == 0,
            Job.worker_id == run.worker_id,
        )
        .values(
            claims=Job.claims + 1,
            worker_id=None,
            lease_until=wall_now() + timedelta(seconds=queue_lease_s),
        )
        .returning(Job.id, Job.queue, Job.alone)
    ).first()
    return None if got is None else Dispatch(got.queue, got.id, got.alone)


def give_back(session: Session, jobs: Sequence[Job], *, queue_lease_s: float) -> list[Dispatch]:
    """Send again runs this worker started and will not run (a batch that ran out of time).

    As a dead worker's release, but not marked alone (nothing died): a new claim, no worker,
    the queue lease. Only the runs as they were started are given back (``runs`` unchanged),
    so a row that moved on meanwhile is left alone. Their emails were never marked
    ``sending``: the next run decides and sends them as if this one had not started.
    """
    out: list[Dispatch] = []
    lease = wall_now() + timedelta(seconds=queue_lease_s)
    for job in jobs:
        got = session.execute(
            update(Job)
            .where(Job.id == job.id, Job.status == "claimed", Job.runs == job.runs)
            .values(claims=Job.claims + 1, worker_id=None, lease_until=lease)
            .returning(Job.id, Job.queue, Job.alone)
        ).first()
        if got is not None:
            out.append(Dispatch(got.queue, got.id, got.alone))
    return out


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
