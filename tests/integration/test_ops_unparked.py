"""Dead letters refused while PostgreSQL is down reach the table once it is back.

Before, a message that failed for good during a database outage was only in Dramatiq's own
dead-letter set (``<queue>.XQ``: no reason kept, no requeue, expired after 7 days). Now the
row waits in a Redis list and the scheduler writes it at its next pass after the outage.
Real PostgreSQL (stopped, then started again), real Redis, a real Dramatiq worker.
"""

from __future__ import annotations

import time

import pytest

pytestmark = [pytest.mark.integration, pytest.mark.slow]


def test_dead_letters_refused_during_an_outage_are_written_once_the_database_is_back(
    pg_url: str, postgres_server, dunning_broker, make_world
) -> None:
    import dramatiq
    from dramatiq import Message

    from dunning.broker.unparked import UNPARKED_KEY
    from dunning.engine.scheduler import tick, write_unparked
    from dunning.store.dead_letters import list_parked

    broker, _ = dunning_broker
    h = make_world(pg_url, start_workers=False)
    client = broker.client
    postgres_server.stop()
    try:
        worker = dramatiq.Worker(broker, worker_threads=1, worker_timeout=50)
        worker.start()
        try:
            broker.enqueue(
                Message(
                    queue_name="billing_events",
                    actor_name="no_such_actor",
                    args=(),
                    kwargs={},
                    options={},
                )
            )
            # And bytes that are not a message at all, refused by the consumer itself.
            with client.pipeline() as tx:
                tx.hset("dramatiq:billing_events.msgs", "not-a-message-1", b"{not json")
                tx.rpush("dramatiq:billing_events", "not-a-message-1")
                tx.execute()
            deadline = time.monotonic() + 30
            while client.llen(UNPARKED_KEY) < 2 and time.monotonic() < deadline:
                time.sleep(0.05)
        finally:
            worker.stop(timeout=10_000)
        assert client.llen(UNPARKED_KEY) == 2
        assert client.zcard("dramatiq:billing_events.XQ") == 2  # Dramatiq's own set has them too
        # While the database is down the scheduler's pass leaves the row where it is.
        assert write_unparked(h.rt, broker) == 0
        assert client.llen(UNPARKED_KEY) == 2
    finally:
        postgres_server.start()

    assert list_parked(h.rt) == []
    assert tick(h.rt, broker, recover=False).dead_letters_written == 2
    assert client.llen(UNPARKED_KEY) == 0
    parked = {p.what: p for p in list_parked(h.rt)}
    assert set(parked) == {"no_such_actor", "(not a message)"}
    assert "no actor named 'no_such_actor'" in parked["no_such_actor"].reason
    assert parked["(not a message)"].reason.startswith("not a Dramatiq message")
    assert tick(h.rt, broker, recover=False).dead_letters_written == 0
    assert len(list_parked(h.rt)) == 2
