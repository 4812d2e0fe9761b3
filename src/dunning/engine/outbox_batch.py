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
- one ``SELECT … FOR UPDATE OF outbox`` locks their outbox rows, in id order,
  and loads the cases and customers the decisions and renderings read;
- the facts of :mod:`.send_facts` (paused kinds, bounces, unsubscribes, what
  each address was sent lately) are loaded in two statements;
- then each email is decided and rendered by the same code as alone
  (:func:`dunning.engine.outbox.prepare_row`), from what was loaded.

A batch message (``deliver_email([id, ...])``, :func:`dunning.engine.runner.run_batch`)
starts its jobs the same way, by :func:`begin_all`: the message is the batch, so its
transaction is its own rather than a group commit with other threads'.

Idempotency is that of one email alone: the start and every decision commit
together or not at all, and the point of no return (``pending -> sending``)
is still each email's own, later (:mod:`.outbox_commits`). If anything in the
batch fails (a row that cannot be rendered, a deadlock, the database), the
whole transaction rolls back, as if it never ran, and every thread of the
batch starts its job alone by the usual path, which meets the failure where
it always did.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from datetime import timedelta
from typing import TYPE_CHECKING, Final

from sqlalchemy import bindparam, select, update
from sqlalchemy.orm import make_transient_to_detached
from sqlalchemy.orm.attributes import set_committed_value

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

log = logging.getLogger(__name__)

_JOBS = Job.__table__
_OUTBOX = Outbox.__table__
# Built once: constructing a statement (coercions, cache key) cost as much as running it.
_START = (
    update(_JOBS)
    .where(
        _JOBS.c.id.in_(bindparam("ids", expanding=True)),
        _JOBS.c.status == "claimed",
        _JOBS.c.runs < _JOBS.c.claims,
        _JOBS.c.alone.is_(False),
    )
    .values(runs=_JOBS.c.runs + 1, lease_until=bindparam("lease"), worker_id=bindparam("worker"))
    .returning(*_JOBS.c)
)
_ATTEMPTS = (
    update(_OUTBOX)
    .where(_OUTBOX.c.id.in_(bindparam("ids", expanding=True)))
    .values(attempts=_OUTBOX.c.attempts + 1)
)
_LOCK = (
    select(Outbox, Case, Customer)
    .outerjoin(Case, Case.id == Outbox.case_id)
    .outerjoin(Customer, Customer.id == Outbox.customer_id)
    .where(Outbox.id.in_(bindparam("ids", expanding=True)))
    .order_by(Outbox.id)
    .with_for_update(of=_OUTBOX)
)


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
        except Exception as exc:
            # Rolled back: each of them starts alone (ALONE), and meets the failure there. The
            # type only: the message may quote a row (an address, a name).
            log.warning(
                "a batch of %d mail jobs could not start together (%s); each starts alone",
                len(indexes),
                type(exc).__name__,
            )
            continue
        for i, outcome in zip(indexes, outcomes, strict=True):
            results[i] = outcome
    return results


def _begin_batch(rt: Runtime, session: Session, worker_id: str | None, job_ids: list[int]) -> list[Outcome]:
    """Start the jobs, lock, decide and render their emails; one outcome per id (None: not runnable)."""
    wall = wall_now()
    # Core, not the ORM's UPDATE … RETURNING: the jobs come back as plain rows, made detached
    # objects below (what the ORM path yields after ``expunge``) at a fraction of its CPU.
    jobs: dict[int, Job] = {}
    for row in session.execute(
        _START,
        {
            "ids": sorted(set(job_ids)),
            "lease": wall + timedelta(seconds=rt.tuning.run_lease_s),
            "worker": worker_id,
        },
    ).mappings():
        job = Job(**row)
        make_transient_to_detached(job)
        jobs[job.id] = job
    outbox_ids = sorted({j.outbox_id for j in jobs.values() if j.kind == "send_email" and j.outbox_id})
    rows: dict[int, Outbox] = {}
    if outbox_ids:
        # Locked in id order, as any two batches do: neither waits for the other in a cycle. The
        # cases and customers the decisions and renderings read come in the same statement (only
        # the outbox rows are locked, as alone); no workflow writes outbox rows, so waiting for a
        # lock here only ever waits for another run of the same email.
        found = session.execute(
            _LOCK, {"ids": outbox_ids}, execution_options={"populate_existing": True}
        ).all()
        rows = {outbox.id: outbox for outbox, _, _ in found}
        # Held until the transaction ends: the identity map only keeps rows someone refers to,
        # and ``session.get`` finds them there without a query.
        session.info["send_rows"] = found
        send_facts.load(session, (o.to_email for o in rows.values()), rt.clock.now())
    outcomes: list[Outcome] = []
    attempted: list[Outbox] = []
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
            ready = prepare_row(rt, session, job, row, count_attempt=False)
            if isinstance(ready, Ready):
                attempted.append(row)
        outcomes.append(Started(job, ready))
    if attempted:
        # Every attempt counted by one statement; the objects learn the new count without
        # becoming dirty (the unit of work's flush of one UPDATE per row cost more).
        session.execute(_ATTEMPTS, {"ids": [row.id for row in attempted]})
        for row in attempted:
            set_committed_value(row, "attempts", row.attempts + 1)
    return outcomes  # the jobs were never in the session: nothing to expunge


_begins: GroupCommit[Begin, Outcome] = GroupCommit(_begin_many)


def begin(rt: Runtime, job_id: int, *, worker_id: str | None) -> Outcome:
    """Start a claimed job with whatever other threads are starting: :class:`Started`, None (not
    runnable: done, running elsewhere, or to run alone), or :data:`ALONE` (start it alone)."""
    try:
        return _begins.submit(Begin(rt, job_id, worker_id))
    except Exception as exc:
        # The batch was interrupted: its transaction rolled back, or committed (then the start
        # alone finds nothing to run, and the scheduler releases the run as a dead one's).
        log.warning("a mail job's grouped start failed (%s); it starts alone", type(exc).__name__)
        return ALONE


def begin_all(rt: Runtime, job_ids: Sequence[int], *, worker_id: str | None) -> list[Outcome]:
    """Start the jobs of one batch message together, in one transaction of their own.

    One outcome per id, as :func:`begin` gives: the message already is a batch, so it is not
    mixed with other threads' starts. If the transaction fails, every job is :data:`ALONE`.
    """
    items = [Begin(rt, job_id, worker_id) for job_id in job_ids]
    return [ALONE if isinstance(r, Exception) else r for r in _begin_many(items)]
