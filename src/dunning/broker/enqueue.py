"""Sending job messages once their transaction has committed."""

from __future__ import annotations

import os
from collections.abc import Iterable

import dramatiq
from dramatiq import Message
from dramatiq.brokers.redis import RedisBroker

from dunning.broker.liveness import ALONE_OPTION
from dunning.broker.names import ACTOR_FOR_QUEUE, MAIL_QUEUE
from dunning.engine.jobs import Dispatch
from dunning.runtime import Tuning

#: Mail jobs per message at most when the caller has no runtime (callers with one pass its
#: ``Tuning.mail_batch``, which ``DUNNING_TUNING_MAIL_BATCH`` sets).
MAIL_BATCH = Tuning.mail_batch


def send_jobs(broker: dramatiq.Broker, items: Iterable[Dispatch], *, mail_batch: int = MAIL_BATCH) -> int:
    """Enqueue ``run_job``/``deliver_email`` messages; returns how many jobs were sent.

    A lost send is recovered by the job's lease.

    The mail queue's jobs go up to ``mail_batch`` to a message (``deliver_email([id, ...])``,
    in the order given, the messages of even sizes): a mail worker starts a message's emails in one transaction and sends
    them over one pooled connection, and per-message costs (Dramatiq's, the start's statements
    and commit) are paid once per batch instead of once per email. A job that must run alone
    (``Dispatch.alone``: it was in flight when a worker died) always gets a message of its own,
    and a single job is sent as ``deliver_email(id)``, as before batching.

    On Redis, all of them go in one round trip: what Dramatiq's own enqueue
    script writes per message (the body in the queue's ``.msgs`` hash under a
    fresh Redis id, the id pushed on the queue's list; the producer guide
    documents the same), as one ``HSET`` and one ``RPUSH`` per queue in one
    ``MULTI``/``EXEC``, with the broker's enqueue hooks run around it as
    ``broker.enqueue`` would. A group commit sends all its jobs at once, so
    the commands (and their replies) no longer grow with the number of jobs.
    """
    items = list(items)
    groups = _grouped(items, mail_batch)
    if not isinstance(broker, RedisBroker) or len(groups) < 2:
        for group in groups:
            broker.enqueue(_message(group))
        return len(items)
    ids = _uuid4_strings(2 * len(groups))
    messages = [
        _message(group, message_id=ids[2 * i], redis_id=ids[2 * i + 1]) for i, group in enumerate(groups)
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
    return len(items)


def _grouped(items: list[Dispatch], mail_batch: int) -> list[list[Dispatch]]:
    """One list per message: the mail jobs that may share, ``mail_batch`` at a time; the others alone."""
    groups: list[list[Dispatch]] = []
    mail: list[Dispatch] = []
    for item in items:
        if item.queue == MAIL_QUEUE and not item.alone and mail_batch > 1:
            mail.append(item)
        else:
            groups.append([item])
    if mail:
        # As few messages as the cap allows, of even sizes (60 at 50 a message: 30 and 30, not
        # 50 and 10), so that the worker threads that take them finish together.
        count = -(-len(mail) // mail_batch)
        size, extra = divmod(len(mail), count)
        start = 0
        for i in range(count):
            end = start + size + (1 if i < extra else 0)
            groups.append(mail[start:end])
            start = end
    return groups


def _message(
    group: list[Dispatch], *, message_id: str | None = None, redis_id: str | None = None
) -> Message[None]:
    item = group[0]
    # A job that was in flight when a worker died runs alone (``RunAlone`` middleware).
    options: dict[str, object] = {ALONE_OPTION: True} if item.alone else {}
    if redis_id is not None:
        options["redis_message_id"] = redis_id
    ids = {} if message_id is None else {"message_id": message_id}
    return Message(
        queue_name=item.queue,
        actor_name=ACTOR_FOR_QUEUE[item.queue],
        # One job: its id, as always (and as a worker older than batches reads it); more: their list.
        args=(item.job_id,) if len(group) == 1 else ([g.job_id for g in group],),
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
