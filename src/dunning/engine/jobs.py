"""The job table: insert, claim, start, finish. The schedule lives here.

Life of a job: ``pending`` (due at ``due_at``, business time) -> ``claimed``
(the scheduler enqueued it; lease on wall time) -> ``done`` / ``canceled``, or
back to ``pending`` after a handled failure, or ``dead`` (parked for ops) when
it keeps killing its worker or keeps failing. A run that dies is released as
soon as its worker's heartbeat stops (:mod:`dunning.engine.workers`); the
leases here are the backstop.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

from sqlalchemy import and_, or_, select, update
from sqlalchemy.orm import Session

from dunning.store.models import Job


@dataclass(frozen=True)
class Dispatch:
    """A message to send once the transaction that made it has committed."""

    queue: str
    job_id: int
    alone: bool = False  # the job may only run alone in its worker process (``Job.alone``)


_local_worker: str | None = None


def local_worker() -> str | None:
    """The id of the worker process this is (its ``workers`` row), None outside a worker."""
    return _local_worker


def set_local_worker(worker_id: str | None) -> None:
    """Set by the worker's ``Heartbeat`` middleware at boot (and cleared at shutdown)."""
    global _local_worker
    _local_worker = worker_id


def wall_now() -> datetime:
    """Wall-clock time, for leases (which are about processes, not customers)."""
    return datetime.now(UTC)


def cancel_case_jobs(session: Session, case_id: int, kinds: Sequence[str]) -> int:
    """Cancel a case's pending work of the given kinds (emails and billing calls stay)."""
    result = session.execute(
        update(Job)
        .where(Job.case_id == case_id, Job.status == "pending", Job.kind.in_(kinds))
        .values(status="canceled", finished_at=wall_now())
    )
    return result.rowcount or 0


def cancel_scheduled_retries(session: Session, case_id: int, *, keep: Sequence[str] = ()) -> int:
    """Cancel a case's pending scheduled (not card-update) retries, except the keys in ``keep``.

    ``keep`` matters: a decision that re-emits the plan already pending must not
    cancel it and then have its own insert ignored as a duplicate key.
    """
    result = session.execute(
        update(Job)
        .where(
            Job.case_id == case_id,
            Job.status == "pending",
            Job.kind == "retry",
            Job.payload.is_(None),
            Job.key.not_in(list(keep)),
        )
        .values(status="canceled", finished_at=wall_now())
    )
    return result.rowcount or 0


@dataclass(frozen=True)
class ClaimResult:
    dispatch: list[Dispatch]
    parked: int
    #: Leases that ran out: on a run that started (its worker died or hung) or on a delivery that
    #: never started (lost, or stuck in a backlog). With heartbeats, both are rare.
    expired_started: int = 0
    expired_unstarted: int = 0


#: Cap of the re-enqueue lease, in doublings of the queue lease (300 s -> at most 40 min).
MAX_LEASE_DOUBLINGS = 3


def requeue_lease_s(queue_lease_s: float, unstarted: int) -> float:
    """The lease of a job enqueued again after ``unstarted`` deliveries that never started.

    A delivery that has not even started within its lease was lost (Redis wiped)
    or is still waiting behind a backlog longer than the lease. In the second
    case every copy we add is one more message for the workers to skip, and a
    flat lease would add one per lease period to every job in the backlog (a
    retry storm that makes the backlog longer still). So each unstarted
    delivery doubles the next lease, up to ``2 ** MAX_LEASE_DOUBLINGS`` times.
    """
    return queue_lease_s * 2 ** max(0, min(unstarted - 1, MAX_LEASE_DOUBLINGS))


def claim_due(
    session: Session,
    *,
    now: datetime,
    batch: int,
    queue_lease_s: float,
    max_crashes: int,
) -> ClaimResult:
    """Claim due jobs and jobs whose lease ran out; the caller enqueues after commit.

    ``FOR UPDATE SKIP LOCKED`` lets several schedulers run on PostgreSQL
    without claiming the same row (SQLite serialises writers anyway).
    """
    wall = wall_now()
    lease = wall + timedelta(seconds=queue_lease_s)
    due_ids = (
        session.execute(
            select(Job.id)
            .where(
                Job.status == "pending",
                Job.due_at <= now,
                or_(Job.retry_at.is_(None), Job.retry_at <= wall),
            )
            .order_by(Job.due_at)
            .limit(batch)
            .with_for_update(skip_locked=True)
        )
        .scalars()
        .all()
    )
    dispatch: list[Dispatch] = []
    if due_ids:
        rows = session.execute(
            update(Job)
            .where(Job.id.in_(due_ids), Job.status == "pending")
            .values(status="claimed", claims=Job.claims + 1, lease_until=lease, worker_id=None)
            .returning(Job.id, Job.queue, Job.alone)
        ).all()
        dispatch.extend(Dispatch(r.queue, r.id, r.alone) for r in rows)
    # Claimed but neither started nor finished in time: the message or its worker was lost.
    from dunning.engine.workers import RUN_COLUMNS, run_of

    expired = session.execute(
        select(*RUN_COLUMNS)
        .where(Job.status == "claimed", Job.lease_until < wall)
        .order_by(Job.lease_until)
        .limit(batch)
        .with_for_update(skip_locked=True)
    ).all()
    parked = started = unstarted = 0
    for row in expired:
        run = run_of(row)
        if run.started:
            # A run started and never finished: its worker died or hung, and no heartbeat told
            # us (a worker without heartbeats, or a run stuck in a live worker).
            from dunning.engine.workers import release_dead_run  # which imports this module

            started += 1
            released = release_dead_run(
                session,
                run,
                outbox_id=row.outbox_id,
                max_crashes=max_crashes,
                queue_lease_s=queue_lease_s,
                cause="run lease expired",
            )
            if isinstance(released, Dispatch):
                dispatch.append(released)
            elif released:
                parked += 1
            continue
        unstarted += 1
        got = session.execute(
            update(Job)
            .where(Job.id == row.id)
            .values(
                claims=Job.claims + 1,
                worker_id=None,
                lease_until=wall + timedelta(seconds=requeue_lease_s(queue_lease_s, row.claims - row.runs)),
            )
            .returning(Job.id, Job.queue, Job.alone)
        ).first()
        if got is not None:
            dispatch.append(Dispatch(got.queue, got.id, got.alone))
    return ClaimResult(dispatch, parked, started, unstarted)


def start(
    session: Session,
    job_id: int,
    *,
    run_lease_s: float,
    worker_id: str | None = None,
    alone: bool = False,
) -> Job | None:
    """Take the right to run a claimed job; None if it is done, running elsewhere, or stale.

    One run per claim: a redelivered copy of a message whose run already
    started finds ``runs == claims`` and does nothing. A job marked ``alone``
    starts only in a run that is alone in its process (``alone=True``): an
    older copy of its message, sent before the mark, finds nothing to do.
    ``worker_id`` is recorded so that the scheduler can release the run as
    soon as that worker's heartbeat stops.
    """
    wall = wall_now()
    conditions = [Job.id == job_id, Job.status == "claimed", Job.runs < Job.claims]
    if not alone:
        conditions.append(Job.alone.is_(False))
    # RETURNING the row: one statement, not an UPDATE and then a SELECT of what it wrote.
    return (
        session.execute(
            update(Job)
            .where(*conditions)
            .values(runs=Job.runs + 1, lease_until=wall + timedelta(seconds=run_lease_s), worker_id=worker_id)
            .returning(Job),
            execution_options={"populate_existing": True},
        )
        .scalars()
        .first()
    )


def finish(session: Session, job: Job, *, status: str = "done", note: str | None = None) -> None:
    """Mark a job finished, in the transaction that carries its effects."""
    session.execute(
        update(Job)
        .where(Job.id == job.id)
        .values(status=status, finished_at=wall_now(), lease_until=None, last_error=note)
    )


def retry_later(
    session: Session,
    job: Job,
    *,
    error: str,
    backoff_base_s: float,
    backoff_max_s: float,
    max_runs: int | None,
) -> str:
    """A handled failure: back to pending with backoff, or dead after ``max_runs`` (None: never)."""
    if max_runs is not None and job.runs >= max_runs:
        finish(session, job, status="dead", note=f"parked after {job.runs} failed runs: {error}")
        return "dead"
    delay = min(backoff_max_s, backoff_base_s * 2 ** min(30, max(0, job.runs - 1)))
    session.execute(
        update(Job)
        .where(Job.id == job.id)
        .values(
            status="pending",
            lease_until=None,
            retry_at=wall_now() + timedelta(seconds=delay),
            last_error=error,
        )
    )
    return "retry"


def outstanding(session: Session, *, now: datetime) -> int:
    """Jobs due now that are not finished: zero means the system is idle at ``now``."""
    from sqlalchemy import func

    return (
        session.execute(
            select(func.count())
            .select_from(Job)
            .where(
                or_(
                    Job.status == "claimed",
                    and_(Job.status == "pending", Job.due_at <= now),
                )
            )
        ).scalar_one()
        or 0
    )
