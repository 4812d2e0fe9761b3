"""A consumer that stops gives back what it fetched and never handed out, against the real Redis.

Dramatiq's Redis consumer prefetches messages into a cache (the ids go into
the process's acks set). A clean shutdown (what a pool does when one of its
processes is SIGKILLed) ran and requeued what the worker threads held, but
left the cache's ids in the acks set, and the process's heartbeat row went
with the shutdown: those messages came back only when Dramatiq's maintenance
happened to run, or, for a job, when its five-minute lease ran out.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest
from dramatiq import Message

pytestmark = pytest.mark.integration


def _enqueue(broker: Any, n: int) -> list[str]:
    ids = []
    for i in range(n):
        message = Message(queue_name="probe", actor_name="noop", args=(i,), kwargs={}, options={})
        ids.append(broker.enqueue(message).options["redis_message_id"])
    return ids


def test_close_requeues_the_prefetched_messages_no_thread_was_handed(
    probe_broker: Callable[..., Any],
) -> None:
    broker = probe_broker(lambda row: None)
    ids = _enqueue(broker, 5)
    consumer = broker.consume("probe", prefetch=5, timeout=50)
    handed = next(consumer)
    assert handed is not None and handed.options["redis_message_id"] == ids[0]
    ns = broker.namespace
    acks = f"{ns}:__acks__.{broker.broker_id}.probe"
    assert broker.client.scard(acks) == 5  # all five fetched; four of them only in the cache
    consumer.close()
    # The four never handed out are back on the queue, in their order; the one handed out is
    # still the consumer's (its thread acknowledges or requeues it), and no body was lost.
    assert [i.decode() for i in broker.client.lrange(f"{ns}:probe", 0, -1)] == ids[1:]
    assert {m.decode() for m in broker.client.smembers(acks)} == {ids[0]}
    assert broker.client.hlen(f"{ns}:probe.msgs") == 5
    # Another consumer gets exactly them.
    other = broker.consume("probe", prefetch=10, timeout=50)
    again = []
    while (message := next(other)) is not None:
        again.append(message.options["redis_message_id"])
        other.ack(message)
    assert again == ids[1:]


def test_close_with_an_empty_cache_changes_nothing(probe_broker: Callable[..., Any]) -> None:
    broker = probe_broker(lambda row: None)
    ids = _enqueue(broker, 2)
    consumer = broker.consume("probe", prefetch=2, timeout=50)
    first, second = next(consumer), next(consumer)
    assert first is not None and second is not None
    consumer.close()
    ns = broker.namespace
    assert broker.client.llen(f"{ns}:probe") == 0
    assert {m.decode() for m in broker.client.smembers(f"{ns}:__acks__.{broker.broker_id}.probe")} == set(ids)
