"""Sending job messages once their transaction has committed."""

from __future__ import annotations

from collections.abc import Iterable

import dramatiq
from dramatiq import Message

from dunning.queues import ACTOR_FOR_QUEUE
from dunning.services.jobs import Dispatch


def send_jobs(broker: dramatiq.Broker, items: Iterable[Dispatch]) -> int:
    """Enqueue ``run_job``/``deliver_email`` messages. A lost send is recovered by the job's lease."""
    count = 0
    for item in items:
        broker.enqueue(
            Message(
                queue_name=item.queue,
                actor_name=ACTOR_FOR_QUEUE[item.queue],
                args=(item.job_id,),
                kwargs={},
                options={},
            )
        )
        count += 1
    return count
