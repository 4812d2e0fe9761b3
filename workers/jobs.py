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
    _, dispatch = run(
        get_runtime(), _job_id(args, kwargs), worker_id=current_worker_id(), alone=running_alone()
    )
    send_jobs(dramatiq.get_broker(), dispatch)


@dramatiq.actor(queue_name=MAIL_QUEUE, actor_name=MAIL_ACTOR, throws=(InvalidEvent,), max_retries=5)
def deliver_email(*args: Any, **kwargs: Any) -> None:
    """Deliver one outbox email (started with the emails other threads of this worker are starting)."""
    _, dispatch = run(
        get_runtime(),
        _job_id(args, kwargs),
        worker_id=current_worker_id(),
        alone=running_alone(),
        grouped=True,
    )
    send_jobs(dramatiq.get_broker(), dispatch)
