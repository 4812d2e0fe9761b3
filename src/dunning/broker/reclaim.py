"""Giving back, at once, the messages a dead worker process had fetched from Redis.

Dramatiq's Redis broker keeps the ids a process fetched and has not
acknowledged in ``<ns>:__acks__.<broker id>.<queue>``, and gives them back
when the process's heartbeat is older than ``heartbeat_timeout``, during a
maintenance pass that runs by chance with some commands. The scheduler does
the same as soon as the worker's own heartbeat (the ``workers`` row, whose id
is the broker id) stops, for every queue of the product, and applies the
crash rule to messages that have no job row (billing events): each one that
was fetched is marked to run alone next time, and the one that was running
alone when the process died (named by :func:`dunning.broker.liveness.alone_marker`)
gets a crash counted in its options, and is parked once the count reaches
``max_crashes``. Job messages are given back as they are; their job rows
carry the count.

A ``WATCH`` on each set makes this safe against a second scheduler, or
Dramatiq's own maintenance, doing the same at the same moment.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from datetime import UTC, datetime

import redis
from dramatiq import Message
from dramatiq.brokers.redis import RedisBroker
from dramatiq.common import dq_name

from dunning.broker.liveness import ALONE_OPTION, CRASHES_OPTION, alone_marker
from dunning.broker.middleware.dead_letters import Parker, parked_payload
from dunning.broker.names import ALL_QUEUES, EVENTS_QUEUE
from dunning.engine.recovery import after_death

log = logging.getLogger(__name__)


@dataclass
class Reclaimed:
    """What giving back one dead worker's messages did."""

    requeued: int = 0
    marked_alone: int = 0
    parked: int = 0


def fetched_key(namespace: str, worker_id: str, queue: str) -> str:
    """Dramatiq's set of the ids a worker process fetched from ``queue`` and has not acknowledged."""
    return f"{namespace}:__acks__.{worker_id}.{queue}"


def reclaim(broker: RedisBroker, worker_id: str, *, max_crashes: int, park: Parker) -> Reclaimed:
    """Put back on their queues the messages ``worker_id`` fetched; apply the crash rule to events."""
    client: redis.Redis = broker.client
    raw = client.get(alone_marker(worker_id))
    running = raw.decode() if raw else None
    out = Reclaimed()
    for queue in ALL_QUEUES:
        for name in (queue, dq_name(queue)):
            # Only the main queue's messages may have been running; the delay queue's were waiting.
            suspect = name == EVENTS_QUEUE
            _reclaim_queue(broker, worker_id, name, suspect, running, max_crashes, park, out)
    client.zrem(f"{broker.namespace}:__heartbeats__", worker_id)
    client.delete(alone_marker(worker_id))
    return out


def _reclaim_queue(
    broker: RedisBroker,
    worker_id: str,
    queue: str,
    suspect: bool,
    running: str | None,
    max_crashes: int,
    park: Parker,
    out: Reclaimed,
) -> None:
    fetched = fetched_key(broker.namespace, worker_id, queue)
    queue_key = f"{broker.namespace}:{queue}"
    bodies_key = f"{queue_key}.msgs"
    with broker.client.pipeline(transaction=True) as pipe:
        while True:
            try:
                pipe.watch(fetched)
                ids = sorted(pipe.smembers(fetched))
                if not ids:
                    pipe.unwatch()
                    return
                bodies = pipe.hmget(bodies_key, ids)
                present = [(i, b) for i, b in zip(ids, bodies, strict=True) if b is not None]
                rewritten: dict[bytes, bytes] = {}
                parked: list[bytes] = []
                if suspect:
                    for redis_id, body in present:
                        ran_alone = running == f"{queue} {redis_id.decode()}"
                        new = _after_death(body, queue, ran_alone, max_crashes, park)
                        if new is None:
                            parked.append(redis_id)
                        elif new != body:
                            rewritten[redis_id] = new
                back = [i for i, _ in present if i not in parked]
                pipe.multi()
                if rewritten:
                    pipe.hset(bodies_key, mapping=rewritten)  # type: ignore[arg-type]
                if parked:
                    pipe.hdel(bodies_key, *parked)
                if back:
                    pipe.rpush(queue_key, *back)
                pipe.delete(fetched)
                pipe.execute()
            except redis.WatchError:
                continue  # someone else gave them back meanwhile: look again (the set is gone)
            out.requeued += len(back)
            out.marked_alone += len(rewritten)
            out.parked += len(parked)
            if back or parked:
                log.warning(
                    "worker %s died: %d messages of %s given back (%d marked to run alone), %d parked",
                    worker_id,
                    len(back),
                    queue,
                    len(rewritten),
                    len(parked),
                )
            return


def _after_death(body: bytes, queue: str, ran_alone: bool, max_crashes: int, park: Parker) -> bytes | None:
    """The message's new body (marked alone, maybe counted), or None once it is parked."""
    try:
        message = Message.decode(body)
        options = dict(message.options)
    except Exception:
        return body  # not a message: the consumer that fetches it again refuses and parks it
    verdict = after_death(
        ran_alone=ran_alone, crashes=int(options.get(CRASHES_OPTION) or 0), max_crashes=max_crashes
    )
    if verdict.park:
        # Parked before it leaves Redis: if the database refuses, the exception keeps it there.
        park(
            {
                "message_id": message.message_id,
                "queue": queue,
                "actor": message.actor_name,
                "payload": parked_payload(message),
                "field": None,
                "reason": f"parked: its worker died {verdict.crashes} times while it ran alone"
                " (a message that kills its worker)",
                "error_type": "PoisonMessage",
                "parked_at": datetime.now(UTC),
            }
        )
        log.warning(
            "parked message %s (%s): its worker died %d times while it ran alone",
            message.message_id,
            message.actor_name,
            verdict.crashes,
        )
        return None
    if options.get(ALONE_OPTION) and verdict.crashes == int(options.get(CRASHES_OPTION) or 0):
        return body
    return message.copy(options={ALONE_OPTION: True, CRASHES_OPTION: verdict.crashes}).encode()
