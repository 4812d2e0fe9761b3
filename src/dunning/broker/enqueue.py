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

    On Redis, all of them go in one round trip: the same ``HSET`` + ``RPUSH``
    per message as Dramatiq's own enqueue script (and as the producer guide
    documents), in one ``MULTI``/``EXEC``, with the broker's enqueue hooks run
    around it as ``broker.enqueue`` would.
    """
    messages = [
        Message(
            queue_name=item.queue,
            actor_name=ACTOR_FOR_QUEUE[item.queue],
            args=(item.job_id,),
            kwargs={},
            # A job that was in flight when a worker died runs alone (``RunAlone`` middleware).
            options={ALONE_OPTION: True} if item.alone else {},
        )
        for item in items
    ]
    if not isinstance(broker, RedisBroker) or len(messages) < 2:
        for message in messages:
            broker.enqueue(message)
        return len(messages)
    messages = [m.copy(options={"redis_message_id": str(uuid4())}) for m in messages]
    for message in messages:
        broker.emit_before("enqueue", message, None)
    pipe = broker.client.pipeline(transaction=True)
    for message in messages:
        queue = f"{broker.namespace}:{message.queue_name}"
        redis_id = message.options["redis_message_id"]
        pipe.hset(f"{queue}.msgs", redis_id, message.encode())
        pipe.rpush(queue, redis_id)
    pipe.execute()
    for message in messages:
        broker.emit_after("enqueue", message, None)
    return len(messages)
