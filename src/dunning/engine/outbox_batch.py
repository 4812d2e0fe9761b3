"""Starting many ``send_email`` jobs in one transaction: the threads of a mail worker, group-committed.

Per email, the job's start, the outbox row's lock, the decision and the
rendering shared one transaction (:func:`dunning.engine.runner.run_job`); at
a few hundred emails a second its fixed costs (session, BEGIN, COMMIT, a
statement and a round trip per lookup, most of which find nothing) were half
of a mail worker's CPU. Here the threads of a worker process hand their job
ids to :class:`~dunning.engine.groupcommit.GroupCommit` (the leader-follower
pattern of the ingest path and of :mod:`.outbox_commits`), and the leader
starts them all in one transaction:

- one ``UPDATE jobs … RETURNING`` starts every job (the conditions of
  :func:`dunning.engine.jobs.start`, so a redelivered copy still finds nothing
  to do);
- one ``SELECT … FOR UPDATE`` locks their outbox rows, in id order;
- the cases and customers the decisions and renderings read, and the facts of
  :mod:`.send_facts` (paused kinds, bounces, unsubscribes, what each address
  was sent lately), are loaded in a statement each;
- then each email is decided and rendered by the same code as alone
  (:func:`dunning.engine.outbox.prepare_row`), from what was loaded.

Idempotency is that of one email alone: the start and every decision commit
together or not at all, and the point of no return (``pending -> sending``)
is still each email's own, later (:mod:`.outbox_commits`). If anything in the
batch fails (a row that cannot be rendered, a deadlock, the database), the
whole transaction rolls back, as if it never ran, and every thread of the
batch starts its job alone by the usual path, which meets the failure where
it always did.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from datetime import timedelta
from typing import TYPE_CHECKING, Any, Final

from sqlalchemy import select, update

from dunning.engine import send_facts
from dunning.engine.groupcommit import GroupCommit
from dunning.engine.jobs import wall_now
from dunning.engine.outbox import Ready, prepare_row
from dunning.store.db import transaction
from dunning.store.models import Case, Customer, Job, Outbox

if TYPE_CHECKING:
    from sqlalchemy.orm import Session

    from dunning.engine.registry import Result
    from dunning.runtime import Runtime


@dataclass(frozen=True)
class Begin:
    """Start one claimed job in this worker process (never one that must run alone)."""

    rt: Runtime
    job_id: int
    worker_id: str | None


@dataclass(frozen=True)
class Started:
    """A job started by a batch (detached from its session) and, for an email, its decision.

    ``ready``: a :class:`~dunning.engine.outbox.Ready` to deliver, the outcome already written
    (a tuple: not sent, and why), or None for a job that is not an email (run its handler).
    """

    job: Job
    ready: Ready | Result | None


class _Alone:
    """The batch failed as a whole: start this job alone, by the usual path."""


#: Returned by :func:`begin` when the job must be started alone (:func:`dunning.engine.runner.run_job`).
ALONE: Final = _Alone()

Outcome = Started | None | _Alone


def _groups(items: Sequence[Begin]) -> Iterator[tuple[Runtime, str | None, list[int]]]:
    """Indexes of the items by runtime and worker id (one each in production)."""
    groups: dict[tuple[int, str | None], tuple[Runtime, str | None, list[int]]] = {}
    for i, item in enumerate(items):
        groups.setdefault((id(item.rt), item.worker_id), (item.rt, item.worker_id, []))[2].append(i)
    yield from groups.values()


def _begin_many(items: list[Begin]) -> list[Outcome | Exception]:
    results: list[Outcome | Exception] = [ALONE] * len(items)
    for rt, worker_id, indexes in _groups(items):
        try:
            with transaction(rt.sessions) as session:
                outcomes = _begin_batch(rt, session, worker_id, [items[i].job_id for i in indexes])
        except Exception:
            continue  # rolled back: each of them starts alone (ALONE), and meets the failure there
        for i, outcome in zip(indexes, outcomes, strict=True):
            results[i] = outcome
    return results


def _begin_batch(rt: Runtime, session: Session, worker_id: str | None, job_ids: list[int]) -> list[Outcome]:
    """Start the jobs, lock, decide and render their emails; one outcome per id (None: not runnable)."""
    wall = wall_now()
    jobs: dict[int, Job] = {
        job.id: job
        for job in session.execute(
            update(Job)
            .where(
                Job.id.in_(sorted(set(job_ids))),
                Job.status == "claimed",
                Job.runs < Job.claims,
                Job.alone.is_(False),
            )
            .values(
                runs=Job.runs + 1,
                lease_until=wall + timedelta(seconds=rt.tuning.run_lease_s),
                worker_id=worker_id,
            )
            .returning(Job),
            execution_options={"populate_existing": True},
        ).scalars()
    }
    outbox_ids = sorted({j.outbox_id for j in jobs.values() if j.kind == "send_email" and j.outbox_id})
    rows: dict[int, Outbox] = {}
    if outbox_ids:
        # Locked in id order, as any two batches do: neither waits for the other in a cycle.
        rows = {
            o.id: o
            for o in session.execute(
                select(Outbox)
                .where(Outbox.id.in_(outbox_ids))
                .order_by(Outbox.id)
                .with_for_update()
                .execution_options(populate_existing=True)
            ).scalars()
        }
        # Held until the transaction ends: the identity map only keeps rows someone refers to.
        session.info["send_rows"] = [
            *_load(session, Case, {o.case_id for o in rows.values() if o.case_id}),
            *_load(session, Customer, {o.customer_id for o in rows.values() if o.customer_id}),
        ]
        send_facts.load(session, (o.to_email for o in rows.values()), rt.clock.now())
    outcomes: list[Outcome] = []
    for job_id in job_ids:
        job = jobs.pop(job_id, None)  # a second copy of one message in the batch: not runnable
        if job is None:
            outcomes.append(None)
            continue
        ready: Ready | Result | None = None
        if job.kind == "send_email":
            row = rows.get(job.outbox_id) if job.outbox_id else None
            if row is None:
                raise LookupError(f"outbox row {job.outbox_id} not found")  # alone, it is parked
            ready = prepare_row(rt, session, job, row)
        outcomes.append(Started(job, ready))
    session.flush()
    for outcome in outcomes:
        if isinstance(outcome, Started):
            session.expunge(outcome.job)
    return outcomes


def _load(session: Session, model: Any, ids: set[Any]) -> list[Any]:
    """Put the rows in the session's identity map, where ``session.get`` finds them without a query."""
    if not ids:
        return []
    return list(session.execute(select(model).where(model.id.in_(sorted(ids)))).scalars())


_begins: GroupCommit[Begin, Outcome] = GroupCommit(_begin_many)


def begin(rt: Runtime, job_id: int, *, worker_id: str | None) -> Outcome:
    """Start a claimed job with whatever other threads are starting: :class:`Started`, None (not
    runnable: done, running elsewhere, or to run alone), or :data:`ALONE` (start it alone)."""
    try:
        return _begins.submit(Begin(rt, job_id, worker_id))
    except Exception:
        # The batch was interrupted: its transaction rolled back, or committed (then the start
        # alone finds nothing to run, and the scheduler releases the run as a dead one's).
        return ALONE
