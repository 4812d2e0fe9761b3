"""What Redis holds for each queue, read with the keys Dramatiq's Redis broker uses.

Dramatiq (2.2, ``brokers/redis/dispatch.lua``) keeps, per queue ``q`` in namespace ``ns``:

- ``ns:q``: the ready list of message ids (``rpush`` to enqueue, ``lpop`` to fetch), bodies in ``ns:q.msgs``;
- ``ns:q.DQ``: the same for delayed messages (``enqueue(..., delay=)``, which is how the ``Retries``
  middleware sends a retry with its backoff). A worker fetches a delayed message *at once* and keeps
  it in its own memory until its ``eta``, then enqueues it on ``ns:q`` and acknowledges it;
- ``ns:__acks__.<worker>.q`` and ``ns:__acks__.<worker>.q.DQ``: the ids a worker fetched and has not
  acknowledged yet. For ``q`` that is a message running or prefetched (waiting in the worker for a
  thread); for ``q.DQ`` it is a delayed message held in the worker's memory until its time;
- ``ns:q.XQ``: Dramatiq's own dead-letter set (a sorted set, kept 7 days).

So a held retry is not on any list, only in its worker's ``.DQ`` ack set: counting only ``ns:q.DQ``
shows it as 0. This module counts it from the ack sets.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Any

import redis

#: How many of the next ready messages are read to find the oldest (ids at the head are the oldest
#: but for messages given back by a recovery, which go back to the tail).
OLDEST_SCAN = 100


@dataclass
class BrokerQueue:
    """One queue's counts in Redis."""

    name: str
    ready: int = 0
    #: Delayed messages no worker has fetched yet (``q.DQ``).
    delayed_waiting: int = 0
    #: Delayed messages a worker holds in memory until their time (its ``q.DQ`` ack set).
    delayed_held: int = 0
    #: Fetched and not acknowledged: running, or prefetched and waiting in a worker for a thread.
    in_progress: int = 0
    #: Dramatiq's own dead-letter set (``q.XQ``).
    dead_broker: int = 0
    #: Wall-clock time (ms since the epoch) of the oldest ready message, from its ``message_timestamp``.
    oldest_ready_ms: int | None = None

    @property
    def delayed(self) -> int:
        """Every delayed message: waiting in Redis, or held by a worker."""
        return self.delayed_waiting + self.delayed_held


@dataclass
class BrokerState:
    """Every queue's counts, and what each worker id (Dramatiq ``broker_id``) holds per queue."""

    queues: list[BrokerQueue]
    #: worker id -> queue -> (in progress, delayed held)
    held_by: dict[str, dict[str, tuple[int, int]]] = field(default_factory=dict)


def parse_ack_key(key: str, namespace: str) -> tuple[str, str, bool] | None:
    """``ns:__acks__.<worker>.<queue>[.DQ]`` -> (worker, queue, delayed); None for another key."""
    prefix = f"{namespace}:__acks__."
    if not key.startswith(prefix):
        return None
    rest = key[len(prefix) :]
    worker, sep, queue = rest.partition(".")
    if not sep or not worker or not queue:
        return None
    delayed = queue.endswith(".DQ")
    return worker, queue[:-3] if delayed else queue, delayed


def message_timestamp(body: Any) -> int | None:
    """``message_timestamp`` (ms) of a Dramatiq message body; None for bytes that are not one."""
    if body is None:
        return None
    try:
        value = json.loads(body).get("message_timestamp")
    except (ValueError, AttributeError, UnicodeDecodeError):
        return None
    return value if isinstance(value, int) and not isinstance(value, bool) else None


#: How many times :func:`read_broker` reads at most while new ack sets keep appearing.
ACK_KEY_READS = 3


def _ack_keys(client: redis.Redis, namespace: str) -> list[str]:
    return [
        k.decode() if isinstance(k, bytes) else k for k in client.scan_iter(f"{namespace}:__acks__.*", 500)
    ]


def read_broker(client: redis.Redis, queues: tuple[str, ...], namespace: str = "dramatiq") -> BrokerState:
    """Read every queue's counts (a few round trips; ``SCAN`` for the ack sets, never ``KEYS``)."""
    by_name = {q: BrokerQueue(q) for q in queues}
    # The lists and the ack sets in one MULTI: a message a worker fetches moves from one to the
    # other atomically, so read apart it could be counted twice (or not at all) for a moment.
    # The ack sets are found by SCAN before it; a set that appears in between (a worker's first
    # fetch) would be missed, so the read is taken again while the sets found change.
    keys = _ack_keys(client, namespace)
    for _attempt in range(ACK_KEY_READS):
        parsed = [(k, parse_ack_key(k, namespace)) for k in keys]
        parsed = [(k, p) for k, p in parsed if p is not None and p[1] in by_name]
        pipe = client.pipeline(transaction=True)
        for q in queues:
            pipe.llen(f"{namespace}:{q}")
            pipe.llen(f"{namespace}:{q}.DQ")
            pipe.zcard(f"{namespace}:{q}.XQ")
            pipe.lrange(f"{namespace}:{q}", 0, OLDEST_SCAN - 1)
        for k, _ in parsed:
            pipe.scard(k)
        answers = pipe.execute()
        again = _ack_keys(client, namespace)
        if set(again) <= set(keys):
            break
        keys = again
    heads: dict[str, list[Any]] = {}
    for i, q in enumerate(queues):
        ready, waiting, dead, head = answers[4 * i : 4 * i + 4]
        b = by_name[q]
        b.ready, b.delayed_waiting, b.dead_broker = int(ready), int(waiting), int(dead)
        heads[q] = head
    for q, ids in heads.items():
        if ids:
            stamps = [message_timestamp(body) for body in client.hmget(f"{namespace}:{q}.msgs", ids)]
            known = [s for s in stamps if s is not None]
            by_name[q].oldest_ready_ms = min(known) if known else None
    held_by: dict[str, dict[str, tuple[int, int]]] = {}
    for (_, (worker, q, delayed)), n in zip(parsed, answers[4 * len(queues) :], strict=True):
        n = int(n)
        running, held = held_by.setdefault(worker, {}).get(q, (0, 0))
        if delayed:
            by_name[q].delayed_held += n
            held += n
        else:
            by_name[q].in_progress += n
            running += n
        held_by[worker][q] = (running, held)
    return BrokerState([by_name[q] for q in queues], held_by)
