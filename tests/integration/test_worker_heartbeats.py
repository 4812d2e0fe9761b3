"""The scheduler recovers a worker whose heartbeat stopped: its runs, and the messages it had fetched.

Written from the outside: the dead worker is a ``workers`` row that stopped
beating, the runs and the outbox are table rows, and what it had fetched is
what Dramatiq keeps in Redis (the message bodies, and the set of ids the
process took and never acknowledged), written as raw Redis commands.
"""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import select
from tests.support.queued import queued_messages

from dunning.engine.jobs import start, wall_now
from dunning.engine.scheduler import recover_dead_workers, tick
from dunning.runtime import Runtime, Tuning, build_runtime
from dunning.settings import load_settings
from dunning.store.db import transaction
from dunning.store.migrate import upgrade
from dunning.store.models import DeadLetter, Job, Outbox, Worker

pytestmark = pytest.mark.integration

NOW = datetime(2026, 12, 1, 9, 0, tzinfo=UTC)


@pytest.fixture
def rt(db_url: str, tmp_path: Path, dunning_broker: Any) -> Any:
    broker, _ = dunning_broker
    broker.client.flushall()
    env = {"DUNNING_HOME": str(tmp_path), "DUNNING_DATABASE_URL": db_url, "DUNNING_LINK_SECRET": "x"}
    runtime = build_runtime(load_settings(env), tuning=Tuning())
    upgrade(runtime.engine)
    yield runtime
    runtime.close()


def _worker(worker_id: str, silent_for_s: float) -> Worker:
    at = wall_now() - timedelta(seconds=silent_for_s)
    return Worker(id=worker_id, host="h", pid=1, started_at=at, heartbeat_at=at)


def _job(key: str, worker_id: str | None, *, runs: int = 1, **extra: Any) -> Job:
    values: dict[str, Any] = {
        "kind": "notice",
        "queue": "dunning",
        "status": "claimed",
        "due_at": NOW,
        "created_at": NOW,
        "claims": runs,
        "runs": runs,
        "lease_until": wall_now() + timedelta(seconds=120),  # the default run lease: far away
        "worker_id": worker_id,
        **extra,
    }
    return Job(key=key, **values)


def test_the_runs_of_a_dead_worker_are_sent_again_at_once_to_run_alone(
    rt: Runtime, dunning_broker: Any
) -> None:
    broker, _ = dunning_broker
    with transaction(rt.sessions) as s:
        s.add_all([_worker("alive", 2), _worker("dead", 11)])
        outbox = Outbox(
            key="payment_failed:1:opened",
            kind="payment_failed",
            case_id=1,
            customer_id="c1",
            to_email="c1@example.com",
            locale="en",
            message_id="<m1@x>",
            status="sending",  # its last run reached the point of no return, then died
            send_after=NOW,
            created_at=NOW,
        )
        s.add(outbox)
        s.flush()
        s.add_all(
            [
                _job("bystander", "dead"),
                # Sent again while an older copy was on its way; the older one started, then died.
                _job("late copy", "dead", runs=1, claims=2),
                _job("slow", "alive"),
                _job("waiting", None, runs=0, claims=1),  # sent, not started yet
                # Created already due by the dead worker, which was to send it after its commit.
                _job("unsent", "dead", runs=0, claims=1),
                _job(
                    "killer",
                    "dead",
                    runs=3,
                    kind="send_email",
                    queue="mail",
                    outbox_id=outbox.id,
                    alone=True,
                    crashes=2,  # this is its third alone run to die
                ),
            ]
        )
    result = tick(rt, broker)
    assert (result.workers_recovered, result.runs_released, result.parked) == (1, 3, 1)
    # Nothing waited for a lease: every lease in the table is still two minutes away.
    assert (result.expired_started, result.expired_unstarted) == (0, 0)
    with rt.sessions() as s:
        jobs = {j.key: j for j in s.execute(select(Job)).scalars()}
        workers = [w.id for w in s.execute(select(Worker)).scalars()]
        email = s.execute(select(Outbox)).scalar_one()
    bystander, late, slow, waiting, unsent, killer = (
        jobs[k] for k in ("bystander", "late copy", "slow", "waiting", "unsent", "killer")
    )
    # The run beside others is not counted: it is sent again, to run alone.
    assert (bystander.status, bystander.claims, bystander.runs, bystander.crashes, bystander.alone) == (
        "claimed",
        2,
        1,
        0,
        True,
    )
    assert (late.claims, late.runs, late.crashes, late.alone, late.worker_id) == (3, 1, 0, True, None)
    # Sent in its creator's stead, as it was (it never ran: nothing to suspect).
    assert (unsent.claims, unsent.runs, unsent.alone, unsent.worker_id) == (2, 0, False, None)
    # A slow run of a live worker, and a delivery that never started, are left as they were.
    assert (slow.claims, slow.runs, slow.alone) == (1, 1, False)
    assert (waiting.claims, waiting.runs, waiting.alone) == (1, 0, False)
    # The third death of a job that ran alone parks it, and its email is reported unknown.
    assert (killer.status, killer.crashes) == ("dead", 3)
    assert "while running alone" in (killer.last_error or "")
    assert email.status == "unknown"
    assert workers == ["alive"]
    # On Redis: one message for each, marked to run alone.
    sent = sorted(
        (m["args"], m["options"].get("dunning_alone")) for m in queued_messages(broker.client, "dunning")
    )
    assert sent == sorted([([bystander.id], True), ([late.id], True), ([unsent.id], None)])
    # Only a run alone in its process may start it now; an older copy of its message finds nothing to do.
    with transaction(rt.sessions) as s:
        assert start(s, bystander.id, run_lease_s=120, worker_id="w2") is None
    with transaction(rt.sessions) as s:
        started = start(s, bystander.id, run_lease_s=120, worker_id="w2", alone=True)
        assert started is not None and started.worker_id == "w2"
    # A second pass finds nothing more to do.
    again = tick(rt, broker)
    assert (again.workers_recovered, again.runs_released, again.enqueued) == (0, 0, 0)


def _put_fetched(broker: Any, worker_id: str, queue: str, redis_id: str, body: dict[str, Any]) -> None:
    """What Dramatiq's fetch leaves in Redis: the body in the queue's hash, the id in the worker's set."""
    client = broker.client
    client.hset(f"dramatiq:{queue}.msgs", redis_id, json.dumps(body))
    client.sadd(f"dramatiq:__acks__.{worker_id}.{queue}", redis_id)


def _event_message(n: int, **options: Any) -> dict[str, Any]:
    envelope = {
        "id": f"evt_{n}",
        "type": "customer.upserted",
        "occurred_at": "2026-12-01T09:00:00Z",
        "data": {},
    }
    return {
        "queue_name": "billing_events",
        "actor_name": "ingest_event",
        "args": [envelope],
        "kwargs": {},
        "options": {"redis_message_id": f"r{n}", **options},
        "message_id": f"m{n}",
        "message_timestamp": 1,
    }


def test_messages_a_dead_worker_fetched_go_back_and_only_an_alone_runs_death_counts(
    rt: Runtime, dunning_broker: Any
) -> None:
    broker, _ = dunning_broker
    client = broker.client
    with transaction(rt.sessions) as s:
        s.add(_worker("gone", 60))
    # Three billing events it had fetched: two were waiting (or ran beside each other), one ran
    # alone when the process died, for the third time. And one job message, and one delayed retry.
    _put_fetched(broker, "gone", "billing_events", "r1", _event_message(1))
    _put_fetched(
        broker, "gone", "billing_events", "r2", _event_message(2, dunning_alone=True, dunning_crashes=1)
    )
    _put_fetched(
        broker, "gone", "billing_events", "r3", _event_message(3, dunning_alone=True, dunning_crashes=2)
    )
    client.set("dunning:alone:gone", "billing_events r3")
    job_message = {**_event_message(4), "queue_name": "dunning", "actor_name": "run_job", "args": [7]}
    _put_fetched(broker, "gone", "dunning", "r4", job_message)
    delayed = {**_event_message(5), "queue_name": "billing_events.DQ"}
    _put_fetched(broker, "gone", "billing_events.DQ", "r5", delayed)
    client.zadd("dramatiq:__heartbeats__", {"gone": 1})

    result = recover_dead_workers(rt, broker)

    assert (result.workers_recovered, result.messages_given_back) == (1, 4)
    events = {m["message_id"]: m["options"] for m in queued_messages(broker.client, "billing_events")}
    assert set(events) == {"m1", "m2"}
    # Fetched beside others: marked to run alone, not counted.
    assert (events["m1"]["dunning_alone"], events["m1"]["dunning_crashes"]) == (True, 0)
    assert (events["m2"]["dunning_alone"], events["m2"]["dunning_crashes"]) == (True, 1)
    # The job message goes back as it was: its job row keeps the count.
    [job_back] = queued_messages(broker.client, "dunning")
    assert job_back == job_message
    [delayed_back] = queued_messages(broker.client, "billing_events.DQ")
    assert delayed_back == delayed
    # The one that died alone for the third time is parked for ops, with its payload, and gone from Redis.
    with rt.sessions() as s:
        [letter] = s.execute(select(DeadLetter)).scalars().all()
        assert s.execute(select(Worker)).first() is None
    assert (letter.message_id, letter.error_type, letter.queue) == ("m3", "PoisonMessage", "billing_events")
    assert "died 3 times while it ran alone" in letter.reason
    assert json.loads(letter.payload)["args"][0]["id"] == "evt_3"
    assert client.hget("dramatiq:billing_events.msgs", "r3") is None
    # Nothing of the dead worker is left in Redis.
    assert client.keys("dramatiq:__acks__.gone.*") == []
    assert client.exists("dunning:alone:gone") == 0
    assert client.zscore("dramatiq:__heartbeats__", "gone") is None


@pytest.mark.slow
def test_a_worker_busy_longer_than_the_dead_threshold_is_not_taken_for_dead(
    pg_url: str, redis_server: Any, smtp: Any, tmp_path: Path, dunning_broker: Any
) -> None:
    """A real worker whose only thread waits 3.5 s on the billing API, judged dead after 1.5 s of silence."""
    from tests.support.scenario import Scenario

    broker, _ = dunning_broker
    env = {
        "DUNNING_TUNING_HEARTBEAT_S": "0.3",
        "DUNNING_TUNING_WORKER_DEAD_AFTER_S": "1.5",
        "DUNNING_TUNING_RUN_LEASE_S": "120",  # no lease may end the run either
    }
    with Scenario(
        db_url=pg_url,
        redis_url=redis_server.url,
        smtp=smtp,
        broker=broker,
        home=tmp_path,
        cases=1,  # case 0 pays on its first retry, on day 1
        env=env,
        processes=1,
        threads=1,
    ) as sc:
        sc.setup_customers()
        sc.send_failures()
        sc.settle()
        # From now on every billing call takes 3.5 s: the day-1 retry keeps the only thread busy.
        sc.sandbox.state.set_faults(latency_ms=3500)
        sc.walk(until_day=1)
        totals = sc.scheduler_totals
        [retry] = sc.jobs(kind="retry", status="done")
        f = sc.verify()
    assert not f.problems, f.problems
    # One run, never released, never marked: the worker beat all along.
    assert (retry.claims, retry.runs, retry.crashes, retry.alone) == (1, 1, 0, False)
    assert (totals.workers_recovered, totals.runs_released) == (0, 0)
    assert len([c for c in sc.sandbox.state.calls() if c.path.endswith("/pay")]) == 1
