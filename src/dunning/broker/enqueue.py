"""Sending job messages once their transaction has committed."""

from __future__ import annotations

from collections.abc import Iterable
from uuid import uuid4

import dramatiq
from dramatiq import Message
from dramatiq.brokers.redis import RedisBroker

from dunning.broker.liveness import ALONE_OPTION
from dunning.broker.names import ACTOR_FOR_QUEUE
from dunning.engine.jobs import Dispatch


def send_jobs(broker: dramatiq.Broker, items: Iterable[Dispatch]) -> int:
    """Enqueue ``run_job``/``deliver_email`` messages. A lost send is recovered by the job's lease.

    On Redis, all of them go in one round trip: what Dramatiq's own enqueue
    script writes per message (the body in the queue's ``.msgs`` hash under a
    fresh Redis id, the id pushed on the queue's list; the producer guide
    documents the same), as one ``HSET`` and one ``RPUSH`` per queue in one
    ``MULTI``/``EXEC``, with the broker's enqueue hooks run around it as
    ``broker.enqueue`` would. A group commit sends all its jobs at once, so
    the commands (and their replies) no longer grow with the number of jobs.
    """
    items = list(items)
    if not isinstance(broker, RedisBroker) or len(items) < 2:
        for item in items:
            broker.enqueue(_message(item, {}))
        return len(items)
    messages = [_message(item, {"redis_message_id": str(uuid4())}) for item in items]
    for message in messages:
        broker.emit_before("enqueue", message, None)
    by_queue: dict[str, dict[str, bytes]] = {}
    for message in messages:
        by_queue.setdefault(message.queue_name, {})[message.options["redis_message_id"]] = message.encode()
    pipe = broker.client.pipeline(transaction=True)
    for queue_name, bodies in by_queue.items():
        queue = f"{broker.namespace}:{queue_name}"
        pipe.hset(f"{queue}.msgs", mapping=bodies)
        pipe.rpush(queue, *bodies)  # dicts keep the order of the messages
    pipe.execute()
    for message in messages:
        broker.emit_after("enqueue", message, None)
    return len(messages)


def _message(item: Dispatch, options: dict[str, object]) -> Message[None]:
    # A job that was in flight when a worker died runs alone (``RunAlone`` middleware).
    return Message(
        queue_name=item.queue,
        actor_name=ACTOR_FOR_QUEUE[item.queue],
        args=(item.job_id,),
        kwargs={},
        options={ALONE_OPTION: True, **options} if item.alone else options,
    )
