"""The job table: insert, claim, start, finish. The schedule lives here.

Life of a job: ``pending`` (due at ``due_at``, business time) -> ``claimed``
(the scheduler enqueued it; lease on wall time) -> ``done`` / ``canceled``, or
back to ``pending`` after a handled failure, or ``dead`` (parked for ops) when
it keeps killing its worker or keeps failing.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

from sqlalchemy import and_, or_, select, update
from sqlalchemy.orm import Session

from dunning.store.models import Job, Outbox


@dataclass(frozen=True)
class Dispatch:
    """A message to send once the transaction that made it has committed."""

    queue: str
    job_id: int


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
            .values(status="claimed", claims=Job.claims + 1, lease_until=lease)
            .returning(Job.id, Job.queue)
        ).all()
        dispatch.extend(Dispatch(r.queue, r.id) for r in rows)
    # Claimed but neither started nor finished in time: the message or its worker was lost.
    expired = session.execute(
        select(Job.id, Job.runs, Job.claims, Job.crashes, Job.outbox_id)
        .where(Job.status == "claimed", Job.lease_until < wall)
        .order_by(Job.lease_until)
        .limit(batch)
        .with_for_update(skip_locked=True)
    ).all()
    parked = 0
    for row in expired:
        # runs == claims: the last delivery started and never finished: its worker died.
        crashed = row.runs >= row.claims
        crashes = row.crashes + (1 if crashed else 0)
        if crashes >= max_crashes:
            session.execute(
                update(Job)
                .where(Job.id == row.id)
                .values(
                    status="dead",
                    crashes=crashes,
                    finished_at=wall,
                    last_error=f"parked: {crashes} runs died without finishing (worker killed or hung)",
                )
            )
            if row.outbox_id is not None:
                # Its email may have been handed to the mail server by one of those runs (the row
                # says "sending"): say so, as the next run would have, instead of leaving it "sending".
                session.execute(
                    update(Outbox)
                    .where(Outbox.id == row.outbox_id, Outbox.status == "sending")
                    .values(
                        status="unknown",
                        last_error="parked: its sending job died repeatedly after handing it to the mail"
                        " server; check the server's log, then `dunning dlq requeue` to resend or purge",
                    )
                )
            parked += 1
            continue
        got = session.execute(
            update(Job)
            .where(Job.id == row.id)
            .values(
                claims=Job.claims + 1,
                crashes=crashes,
                lease_until=wall + timedelta(seconds=requeue_lease_s(queue_lease_s, row.claims - row.runs)),
            )
            .returning(Job.id, Job.queue)
        ).first()
        if got is not None:
            dispatch.append(Dispatch(got.queue, got.id))
    return ClaimResult(dispatch, parked)


def start(session: Session, job_id: int, *, run_lease_s: float) -> Job | None:
    """Take the right to run a claimed job; None if it is done, running elsewhere, or stale.

    One run per claim: a redelivered copy of a message whose run already
    started finds ``runs == claims`` and does nothing.
    """
    wall = wall_now()
    result = session.execute(
        update(Job)
        .where(Job.id == job_id, Job.status == "claimed", Job.runs < Job.claims)
        .values(runs=Job.runs + 1, lease_until=wall + timedelta(seconds=run_lease_s))
    )
    if not result.rowcount:
        return None
    return session.get(Job, job_id, populate_existing=True)


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
