"""How long the oldest ready message of each queue has waited (wall time), read from Dramatiq's keys.

Dramatiq's Redis broker appends message ids to the queue's list and workers
take them from the head, so the head is the oldest ready message; its body (in
the queue's ``.msgs`` hash) carries ``message_timestamp`` and, for a message
that was delayed, the ``eta`` it became ready at.
"""

from __future__ import annotations

import json

import redis

from dunning.broker.names import ALL_QUEUES


def ready_since_ms(body: bytes | str | None) -> int | None:
    """When a message became ready (ms since the epoch): its ``eta`` if delayed, else when it was sent."""
    if body is None:
        return None
    try:
        message = json.loads(body)
        stamp = int(message.get("message_timestamp") or 0)
        eta = (message.get("options") or {}).get("eta")
        return max(stamp, int(eta)) if isinstance(eta, int | float) else stamp
    except (ValueError, TypeError, AttributeError):
        return None  # not a message: the consumer parks it, it has no age to report


def oldest_ready_ages(client: redis.Redis, now_ms: int, namespace: str = "dramatiq") -> dict[str, float]:
    """Seconds the head of each queue has been ready (0 for an empty queue); two round trips."""
    pipe = client.pipeline(transaction=False)
    for q in ALL_QUEUES:
        pipe.lindex(f"{namespace}:{q}", 0)
    heads = pipe.execute()
    pipe = client.pipeline(transaction=False)
    for q, head in zip(ALL_QUEUES, heads, strict=True):
        pipe.hget(f"{namespace}:{q}.msgs", head or b"")
    bodies = pipe.execute()
    ages = {}
    for q, head, body in zip(ALL_QUEUES, heads, bodies, strict=True):
        since = ready_since_ms(body) if head else None
        ages[q] = max(0.0, (now_ms - since) / 1000) if since else 0.0
    return ages
