"""Dead letters refused while PostgreSQL is down reach the table once it is back.

Before, a message that failed for good during a database outage was only in Dramatiq's own
dead-letter set (``<queue>.XQ``: no reason kept, no requeue, expired after 7 days). Now the
row waits in a Redis list and the scheduler writes it at its next pass after the outage.
Real PostgreSQL (stopped, then started again), real Redis, a real Dramatiq worker.
"""

from __future__ import annotations

import time
from pathlib import Path

import pytest

pytestmark = [pytest.mark.integration, pytest.mark.slow]


def test_a_dead_letter_refused_during_an_outage_is_written_once_the_database_is_back(
    pg_url: str, postgres_server, redis_server, smtp, tmp_path: Path, dunning_broker
) -> None:
    import dramatiq
    from dramatiq import Message
    from tests.support.harness import harness

    from dunning.broker.unparked import UNPARKED_KEY
    from dunning.engine.scheduler import tick, write_unparked
    from dunning.store.dead_letters import list_parked

    broker, counter = dunning_broker
    with harness(
        db_url=pg_url,
        redis_url=redis_server.url,
        smtp=smtp,
        home=tmp_path,
        broker=broker,
        counter=counter,
        start_workers=False,
    ) as h:
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
                deadline = time.monotonic() + 30
                while client.llen(UNPARKED_KEY) < 1 and time.monotonic() < deadline:
                    time.sleep(0.05)
            finally:
                worker.stop(timeout=10_000)
            assert client.llen(UNPARKED_KEY) == 1
            assert client.zcard("dramatiq:billing_events.XQ") == 1  # Dramatiq's own set has it too
            # While the database is down the scheduler's pass leaves the row where it is.
            assert write_unparked(h.rt, broker) == 0
            assert client.llen(UNPARKED_KEY) == 1
        finally:
            postgres_server.start()

        assert list_parked(h.rt) == []
        assert tick(h.rt, broker, recover=False).dead_letters_written == 1
        assert client.llen(UNPARKED_KEY) == 0
        [parked] = list_parked(h.rt)
        assert parked.queue == "billing_events" and parked.what == "no_such_actor"
        assert "no actor named 'no_such_actor'" in parked.reason
        assert tick(h.rt, broker, recover=False).dead_letters_written == 0
        assert len(list_parked(h.rt)) == 1
