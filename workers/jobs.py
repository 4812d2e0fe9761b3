"""The actors that run scheduled jobs: ``run_job`` (queue ``dunning``) and ``deliver_email`` (queue ``mail``).

Mail has its own queue so that a slow SMTP server never holds up charges.
"""

from __future__ import annotations

from typing import Any

import dramatiq

from dunning.broker.enqueue import send_jobs
from dunning.broker.liveness import current_worker_id, running_alone
from dunning.broker.names import JOBS_ACTOR, JOBS_QUEUE, MAIL_ACTOR, MAIL_QUEUE
from dunning.contract import InvalidEvent
from dunning.engine.runner import run_batch
from dunning.engine.runner import run_job as run
from dunning.runtime import get_runtime


def _job_id(args: tuple[Any, ...], kwargs: dict[str, Any]) -> int:
    # *args: a malformed message is refused here (parked at once), not retried as a TypeError.
    if len(args) != 1 or kwargs:
        raise InvalidEvent("args", "expected exactly one positional argument, the job id, and no kwargs")
    value = args[0]
    if isinstance(value, bool) or not isinstance(value, int):
        raise InvalidEvent("args[0]", "expected an integer job id")
    return value


@dramatiq.actor(queue_name=JOBS_QUEUE, actor_name=JOBS_ACTOR, throws=(InvalidEvent,), max_retries=5)
def run_job(*args: Any, **kwargs: Any) -> None:
    """Run one due job (retry, notice, suspension, end, billing call)."""
    rt = get_runtime()
    _, dispatch = run(rt, _job_id(args, kwargs), worker_id=current_worker_id(), alone=running_alone())
    send_jobs(dramatiq.get_broker(), dispatch, mail_batch=rt.tuning.mail_batch)


#: Most job ids one message may carry (``send_jobs`` puts ``Tuning.mail_batch``, 50 by default).
MAX_BATCH = 1000


def _job_ids(args: tuple[Any, ...], kwargs: dict[str, Any]) -> int | list[int]:
    """One job id, or the list of a batch message (``send_jobs`` groups mail jobs)."""
    if len(args) == 1 and isinstance(args[0], list) and not kwargs:
        ids = args[0]
        if not ids or len(ids) > MAX_BATCH:
            raise InvalidEvent("args[0]", f"expected a list of 1 to {MAX_BATCH} job ids")
        if any(isinstance(i, bool) or not isinstance(i, int) for i in ids):
            raise InvalidEvent("args[0]", "expected a list of integer job ids")
        return ids
    return _job_id(args, kwargs)


@dramatiq.actor(queue_name=MAIL_QUEUE, actor_name=MAIL_ACTOR, throws=(InvalidEvent,), max_retries=5)
def deliver_email(*args: Any, **kwargs: Any) -> None:
    """Deliver one outbox email, or a batch of them (a list of job ids: started together).

    One email is started with the emails other threads of this worker are starting; a batch
    is started in one transaction and its emails sent one by one (:func:`run_batch`).
    """
    rt = get_runtime()
    ids = _job_ids(args, kwargs)
    if isinstance(ids, int) or running_alone():
        # One job, or (a batch requeued by hand with the alone option) each alone in turn.
        dispatch = []
        for job_id in [ids] if isinstance(ids, int) else ids:
            _, more = run(rt, job_id, worker_id=current_worker_id(), alone=running_alone(), grouped=True)
            dispatch.extend(more)
    else:
        dispatch = run_batch(rt, ids, worker_id=current_worker_id())
    send_jobs(dramatiq.get_broker(), dispatch, mail_batch=rt.tuning.mail_batch)
