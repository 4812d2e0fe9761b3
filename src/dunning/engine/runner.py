"""Running one scheduled job: what the ``run_job`` and ``deliver_email`` actors call.

The job's kind names its handler: the engine's own (``send_email``,
:mod:`dunning.engine.outbox`) or a workflow's (:func:`dunning.engine.registry.job_handler`).
Each handler follows the same rule: effects that leave the building (a charge,
a billing call, an email) are recorded before they are made, made outside any
transaction, and their outcome is committed together with the job's end. This
module owns what happens when a handler fails: park, back off, or leave it to
the lease.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Sequence
from functools import partial
from typing import TYPE_CHECKING

from dunning import telemetry
from dunning.billing.port import BillingUnavailable
from dunning.broker.names import MAIL_QUEUE
from dunning.engine.jobs import Dispatch, finish, retry_later, start
from dunning.engine.outbox import Ready, deliver, prepare_email, send_email
from dunning.engine.outbox_batch import ALONE, Started, begin, begin_all
from dunning.engine.registry import JobHandler, Result, job_handler
from dunning.engine.workers import give_back
from dunning.errors import PermanentJobError
from dunning.mail.sending import TransientSendError
from dunning.store.db import transaction
from dunning.store.models import Job

if TYPE_CHECKING:
    from dunning.runtime import Runtime

log = logging.getLogger(__name__)

#: Job kinds the engine runs itself, for every workflow.
ENGINE_JOBS: dict[str, JobHandler] = {"send_email": send_email}


def run_job(
    rt: Runtime, job_id: int, *, worker_id: str | None = None, alone: bool = False, grouped: bool = False
) -> Result:
    """Run a claimed job once. Returns an outcome word and messages to send after commit.

    ``worker_id``: the worker process running it (its heartbeat row), recorded on the job so
    that the scheduler can send the job again as soon as that worker dies. ``alone``: the run
    is alone in its process, the only way a job marked ``alone`` may start. ``grouped``: start
    it with the jobs other threads are starting (:mod:`.outbox_batch`; the mail actor does).
    """
    started = begin(rt, job_id, worker_id=worker_id) if grouped and not alone else ALONE
    if started is None:
        return "not_runnable", []
    if isinstance(started, Started):
        job, ready = started.job, started.ready
    else:
        job, ready = _start_alone(rt, job_id, worker_id=worker_id, alone=alone)
        if job is None:
            return "not_runnable", []
    return _run(rt, job, ready)


def run_batch(rt: Runtime, job_ids: Sequence[int], *, worker_id: str | None = None) -> list[Dispatch]:
    """Run the mail jobs of one batch message: started together, then delivered one by one.

    The jobs start in one transaction (:func:`.outbox_batch.begin_all`: one statement per
    step for the whole batch), and each email is then sent over the worker's pooled SMTP
    connection exactly as alone (:func:`_run`): its own ``pending -> sending`` mark is
    committed at its own 354, so a worker killed mid-batch has sent each email at most once,
    and the ones it had not reached are still ``pending``, their runs released by the
    scheduler like any dead worker's. If the start fails as a whole, each job starts alone.

    A batch starts no new delivery after ``Tuning.mail_batch_s``: the jobs it has not reached
    are given back to the scheduler (:func:`.workers.give_back`), so that a slow mail server
    never keeps a message past the actors' time limit or a job past its lease. One job's
    unexpected error does not stop the others; the first is raised once they are done (the
    message is retried, and finds the finished jobs finished). Returns the messages to send.
    """
    deadline = time.monotonic() + rt.tuning.mail_batch_s
    dispatch: list[Dispatch] = []
    late: list[Job] = []
    error: Exception | None = None
    ran = False  # at least one delivery per batch, whatever the clock says: always progress
    with telemetry.held():  # the deliveries' counts in one round trip
        for job_id, started in zip(job_ids, begin_all(rt, job_ids, worker_id=worker_id), strict=True):
            if started is None:
                continue  # done, running elsewhere, or to run alone: not this message's to run
            try:
                if not isinstance(started, Started):
                    if ran and time.monotonic() > deadline:
                        dispatch.append(Dispatch(MAIL_QUEUE, job_id))  # claimed, not started: send again
                        continue
                    ran = True
                    _, more = run_job(rt, job_id, worker_id=worker_id)
                elif isinstance(started.ready, Ready) and ran and time.monotonic() > deadline:
                    late.append(started.job)
                    continue
                else:
                    ran = ran or isinstance(started.ready, Ready)
                    _, more = _run(rt, started.job, started.ready)
                dispatch.extend(more)
            except Exception as exc:
                error = error or exc
    if late:
        with transaction(rt.sessions) as session:
            dispatch.extend(give_back(session, late, queue_lease_s=rt.tuning.queue_lease_s))
        log.warning("mail batch out of time: %d emails given back to the scheduler", len(late))
    if error is not None:
        raise error
    return dispatch


def _start_alone(
    rt: Runtime, job_id: int, *, worker_id: str | None, alone: bool
) -> tuple[Job | None, Ready | Result | None]:
    """Start the job in a transaction of its own (an email is also locked, decided and rendered in it)."""
    try:
        with transaction(rt.sessions) as session:
            job = start(session, job_id, run_lease_s=rt.tuning.run_lease_s, worker_id=worker_id, alone=alone)
            if job is None:
                return None, None
            # An email is locked, decided and rendered in the transaction that starts its job.
            ready = prepare_email(rt, session, job) if job.kind == "send_email" else None
            session.expunge(job)
    except Exception:
        # Whatever failed also undid the start: start again alone, and let the handler below
        # meet the failure in its own transaction, as every other job kind does.
        with transaction(rt.sessions) as session:
            job = start(session, job_id, run_lease_s=rt.tuning.run_lease_s, worker_id=worker_id, alone=alone)
            if job is None:
                return None, None
            session.expunge(job)
        ready = None
    return job, ready


def _run(rt: Runtime, job: Job, ready: Ready | Result | None) -> Result:
    """Run a started job's handler (for an email prepared at its start: the delivery)."""
    if isinstance(ready, tuple):
        return ready  # decided not to send (already sent, parked, stale): written with the start
    handler = ENGINE_JOBS.get(job.kind) or job_handler(job.kind)
    if ready is not None:
        handler = partial(deliver, ready=ready)  # the rest of send_email, failures handled below
    try:
        if handler is None:
            raise PermanentJobError(f"unknown job kind {job.kind!r}")
        return handler(rt, job)
    except PermanentJobError as exc:
        with transaction(rt.sessions) as session:
            finish(session, job, status="dead", note=f"parked: {exc}")
        log.error("job %s parked: %s", job.id, exc)
        return "dead", []
    except (BillingUnavailable, TransientSendError) as exc:
        # An outage, not a bug: back off (capped) for as long as it lasts. Each run
        # re-checks the policy, so work that went stale meanwhile is dropped, not done late.
        return later(rt, job, f"{type(exc).__name__}: {exc}", outage=True), []
    except Exception as exc:
        # Unexpected (a bug, the database going away): back off, and park after max_runs.
        log.exception("job %s failed", job.id)
        try:
            return later(rt, job, f"{type(exc).__name__}"), []
        except Exception:
            # The database itself is down: the lease expires and the scheduler tries again.
            raise exc from None


def later(rt: Runtime, job: Job, error: str, *, outage: bool = False) -> str:
    """Back off: the job runs again later (an outage backs off for as long as it lasts; a bug is parked after ``max_runs``)."""
    with transaction(rt.sessions) as session:
        fresh = session.get(Job, job.id, populate_existing=True)
        assert fresh is not None
        return retry_later(
            session,
            fresh,
            error=error,
            backoff_base_s=rt.tuning.backoff_base_s,
            backoff_max_s=rt.tuning.backoff_max_s,
            max_runs=None if outage else rt.tuning.max_runs,
        )
