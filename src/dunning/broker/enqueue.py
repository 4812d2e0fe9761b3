"""Sending job messages once their transaction has committed."""

from __future__ import annotations

import os
from collections.abc import Iterable

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
            broker.enqueue(_message(item))
        return len(items)
    ids = _uuid4_strings(2 * len(items))
    messages = [
        _message(item, message_id=ids[2 * i], redis_id=ids[2 * i + 1]) for i, item in enumerate(items)
    ]
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


def _message(item: Dispatch, *, message_id: str | None = None, redis_id: str | None = None) -> Message[None]:
    # A job that was in flight when a worker died runs alone (``RunAlone`` middleware).
    options: dict[str, object] = {ALONE_OPTION: True} if item.alone else {}
    if redis_id is not None:
        options["redis_message_id"] = redis_id
    ids = {} if message_id is None else {"message_id": message_id}
    return Message(
        queue_name=item.queue,
        actor_name=ACTOR_FOR_QUEUE[item.queue],
        args=(item.job_id,),
        kwargs={},
        options=options,
        **ids,
    )


def _uuid4_strings(n: int) -> list[str]:
    """``n`` random (version 4) UUIDs as text, like ``str(uuid.uuid4())`` but from one ``urandom`` call.

    ``str(uuid4())`` costs several µs (a syscall and a ``UUID`` object each), and every
    message takes two: its Dramatiq id and its Redis id.
    """
    raw = bytearray(os.urandom(16 * n))
    out = []
    for i in range(0, 16 * n, 16):
        raw[i + 6] = (raw[i + 6] & 0x0F) | 0x40  # version 4
        raw[i + 8] = (raw[i + 8] & 0x3F) | 0x80  # RFC 4122 variant
        h = raw[i : i + 16].hex()
        out.append(f"{h[:8]}-{h[8:12]}-{h[12:16]}-{h[16:20]}-{h[20:]}")
    return out
