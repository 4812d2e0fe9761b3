"""Poison: bad messages mixed into good traffic, and a message that kills whichever worker runs it.

Real ``dunning worker`` processes, PostgreSQL, Redis, an SMTP server and the sandbox billing
API (see :mod:`tests.support.scenario`). Bad messages arrive two ways: through the Python
broker (a Dramatiq ``Message`` with bad arguments, no client-side validation) and written
straight into Redis as any other producer would (contract §1: ``HSET`` the message JSON
into ``dramatiq:<queue>.msgs``, ``RPUSH`` its id onto ``dramatiq:<queue>``).
"""

from __future__ import annotations

import contextlib
import json
import threading
import uuid
from collections import Counter
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from dramatiq import Message
from sqlalchemy import select
from tests.support.cluster import kill_pool
from tests.support.scenario import Scenario, raw_message

from dunning.contract import MAX_EVENT_BYTES
from dunning.store.models import Case, Job

pytestmark = [pytest.mark.integration, pytest.mark.slow]

QUEUE = "billing_events"


def _good_failure(n: int) -> dict[str, Any]:
    return {
        "id": f"evt_bad_{n}",
        "type": "invoice.payment_failed",
        "occurred_at": "2026-11-02T10:00:00Z",
        "data": {
            "invoice": {
                "id": f"in_bad_{n}",
                "subscription_id": "s0",
                "customer_id": "c0",
                "amount_minor": 4900,
                "currency": "EUR",
            },
            "decline_code": "insufficient_funds",
        },
    }


def _without_decline_code(n: int) -> Any:
    e = _good_failure(n)
    del e["data"]["decline_code"]
    return e


def _without_email(n: int) -> Any:
    return {
        "id": f"evt_bad_{n}",
        "type": "customer.upserted",
        "occurred_at": "2026-11-02T10:00:00Z",
        "data": {"customer": {"id": "c0", "name": "No Email"}},
    }


def _amount_is_text(n: int) -> Any:
    e = _good_failure(n)
    e["data"]["invoice"]["amount_minor"] = "lots"
    return e


def _date_is_text(n: int) -> Any:
    return {**_good_failure(n), "occurred_at": "yesterday"}


def _id_is_a_number(n: int) -> Any:
    return {**_good_failure(n), "id": n}


def _oversized(n: int) -> Any:
    e = _good_failure(n)
    e["data"]["failure_message"] = "x" * (MAX_EVENT_BYTES + 1000)
    return e


def _unknown_type(n: int) -> Any:
    return {**_good_failure(n), "type": "invoice.refunded"}


#: (what, envelope maker, the field the dead letter must name)
BAD: list[tuple[str, Callable[[int], Any], str]] = [
    ("missing field", _without_decline_code, "data.decline_code"),
    ("missing field", _without_email, "data.customer.email"),
    ("wrong type", _amount_is_text, "data.invoice.amount_minor"),
    ("wrong type", _date_is_text, "occurred_at"),
    ("wrong type", _id_is_a_number, "id"),
    ("oversized", _oversized, "(envelope)"),
    ("unknown type", _unknown_type, "type"),
    ("not an object", lambda n: [1, 2, 3], "(envelope)"),
    ("not an object", lambda n: "not json {", "(envelope)"),
    ("not an object", lambda n: 42, "(envelope)"),
    ("not an object", lambda n: None, "(envelope)"),
]


def _redis_write(broker: Any, message_id: str, body: bytes | str, queue: str = QUEUE) -> None:
    """Enqueue raw bytes the way Dramatiq's own dispatch script does."""
    broker.client.hset(f"dramatiq:{queue}.msgs", message_id, body)
    broker.client.rpush(f"dramatiq:{queue}", message_id)


def _message_json(args: list[Any], message_id: str, actor: str = "ingest_event", **extra: Any) -> str:
    return json.dumps(
        {
            "queue_name": QUEUE,
            "actor_name": actor,
            "args": args,
            "kwargs": {},
            "options": {"redis_message_id": message_id},  # required (docs/producers.md)
            "message_id": message_id,
            "message_timestamp": 0,
            **extra,
        }
    )


def test_bad_messages_mixed_into_good_traffic_are_parked_and_kill_no_worker(
    pg_url: str, redis_server, smtp, tmp_path: Path, dunning_broker
) -> None:
    broker, _ = dunning_broker
    with Scenario(db_url=pg_url, redis_url=redis_server.url, smtp=smtp, broker=broker, home=tmp_path) as sc:
        expected: dict[str, tuple[str, str, str]] = {}  # message id -> (transport, what, field)

        def one_bad(n: int) -> None:
            what, make, field = BAD[n % len(BAD)]
            envelope = make(n)
            if (n // len(BAD)) % 2 == 0:
                message = raw_message((envelope,))
                sc.send_bad(message)
                expected[message.message_id] = ("python", what, field)
            else:
                message_id = f"raw-{uuid.uuid4()}"
                _redis_write(broker, message_id, _message_json([envelope], message_id))
                sc.bad_expected += 1
                expected[message_id] = ("redis", what, field)

        # One bad message after every two good ones: a third of the traffic, in every phase.
        sc.after_send = lambda sent: one_bad(len(expected)) if sent % 2 == 0 else None
        sc.setup_customers()
        sc.send_failures()
        sc.settle()
        sc.walk()
        parked = {d.message_id: d for d in sc.dead_letters()}
        # Every message was acknowledged or moved to the broker's dead set: none is left behind.
        with contextlib.suppress(AssertionError):
            sc.wait_until("the queue drained", lambda: broker.client.hlen(f"dramatiq:{QUEUE}.msgs") == 0, 60)
        leftover = broker.client.hlen(f"dramatiq:{QUEUE}.msgs")
        f = sc.verify()
        wrong: dict[str, object] = {}
        for mid, want in expected.items():
            d = parked.get(mid)
            if d is None or d.field != want[2] or not d.reason or d.error_type != "InvalidEvent":
                wrong[mid] = (want, None if d is None else (d.field, d.reason, d.error_type))
        by_what = Counter(f"{t}/{w}" for t, w, _ in expected.values())
        print(
            f.line(
                "poison mix",
                bad_messages=len(expected),
                bad_share=f"{len(expected) / (len(expected) + len(sc.events)):.0%}",
                parked=len(parked),
                misparked=len(wrong),
                worker_deaths=sc.workers.restarts,
            )
        )
        print(f"  bad messages by transport/kind: {dict(sorted(by_what.items()))}")
    assert not f.problems, f.problems
    assert not wrong, wrong
    assert leftover == 0, f"{leftover} messages still on the events queue (never acknowledged)"
    assert len(parked) == len(expected)
    assert sc.workers.restarts == 0 and sc.workers.kills == 0
    assert "exited unexpectedly" not in sc.workers.log.read_text()


def test_a_job_that_kills_its_worker_is_parked_after_max_crashes(
    pg_url: str, redis_server, smtp, tmp_path: Path, dunning_broker
) -> None:
    broker, _ = dunning_broker
    max_crashes = 3
    with Scenario(
        db_url=pg_url,
        redis_url=redis_server.url,
        smtp=smtp,
        broker=broker,
        home=tmp_path,
        cases=10,
        processes=1,  # a pool of one boots faster after each kill
        env={
            "DUNNING_TUNING_MAX_CRASHES": str(max_crashes),
            "DUNNING_TUNING_QUEUE_LEASE_S": "2",
            # A killed run is noticed when its lease ends; every run here takes < 2 s.
            "DUNNING_TUNING_RUN_LEASE_S": "2",
        },
    ) as sc:
        # Case 9 (an expired card) gets a new card on day 2, when nothing else is due: its
        # immediate retry is the poison. The new card declines, so however far a killed run
        # got, no money moves; with its retry parked the case runs to its end (canceled).
        poison = 9
        sc.card_update_works[poison] = False
        sc.expected_override[poison] = "canceled"
        stop = threading.Event()
        state: dict[str, Any] = {"key": None, "runs": 0, "kills": 0}

        def killer() -> None:
            # Whenever the poison job starts a run, the worker running it dies (SIGKILL).
            while not stop.is_set():
                key = state["key"]
                if key is not None:
                    with sc.rt.sessions() as s:
                        job = s.execute(select(Job).where(Job.key == key)).scalar_one_or_none()
                    if job is not None and job.status == "claimed" and job.runs > state["runs"]:
                        state["runs"] = job.runs
                        if kill_pool(sc.workers):
                            state["kills"] += 1
                stop.wait(0.01)

        def arm() -> None:
            with sc.rt.sessions() as s:
                case = s.execute(select(Case).where(Case.invoice_id == f"in{poison}")).scalar_one()
            state["key"] = f"retry:{case.id}:u1"
            # Slow charges: the poison's run lasts long enough to be caught in the act.
            sc.sandbox.state.set_faults(latency_ms=1000)

        def disarm() -> None:
            sc.sandbox.state.set_faults(latency_ms=0)

        killing = threading.Thread(target=killer, daemon=True)
        killing.start()
        try:
            sc.setup_customers()
            sc.send_failures()
            sc.settle()
            sc.walk(at={2: arm, 3: disarm}, settle_timeout=120)
        finally:
            stop.set()
            killing.join(5)
        [job] = sc.jobs(key=state["key"])
        dead_jobs = sc.jobs(status="dead")
        f = sc.verify(
            dead_jobs_allowed=1,
            extra_dead_letters_allowed=max_crashes,  # the broker's own copy may be parked by PoisonGuard
            unsettled_allowed={f"in{poison}"},
        )
        letters = sc.dead_letters()
        print(
            f.line(
                "poison job",
                kills=state["kills"],
                pool_restarts=sc.workers.restarts,
                job_runs=job.runs,
                job_crashes=job.crashes,
                job_status=job.status,
                messages_parked_by_poison_guard=len(letters),
            )
        )
    assert not f.problems, f.problems
    assert job.status == "dead", (job.status, job.last_error)
    assert job.crashes == max_crashes
    assert "died without finishing" in (job.last_error or "")
    assert [j.key for j in dead_jobs] == [job.key]
    # The killer strikes every run it sees start; with runs this slow (1 s billing latency, 2 s
    # leases) a live but slow run can also be re-claimed and struck, so kills >= crashes.
    assert state["kills"] >= max_crashes
    assert all(d.error_type == "PoisonMessage" for d in letters), [(d.error_type, d.reason) for d in letters]


# -- what a worker cannot decode or route ---------------------------------------------------------


@pytest.fixture(scope="module")
def quiet_world(
    postgres_server, redis_server, smtp_server, tmp_path_factory, dunning_broker
) -> Iterator[Scenario]:
    """One small world for the probes below (they only send events; no clock walk)."""
    from tests.support.servers import unique_database_name

    name = unique_database_name("poison_probes")
    url = postgres_server.create_database(name)
    broker, _ = dunning_broker
    smtp_server.reset_faults()
    smtp_server.clear()
    try:
        with Scenario(
            db_url=url,
            redis_url=redis_server.url,
            smtp=smtp_server,
            broker=broker,
            home=tmp_path_factory.mktemp("poison_probes"),
            cases=4,
        ) as sc:
            sc.setup_customers()
            yield sc
    finally:
        postgres_server.drop_database(name)


def _parked(sc: Scenario, message_id: str) -> bool:
    return any(d.message_id == message_id for d in sc.dead_letters())


def test_message_for_an_unknown_actor_is_parked_in_dead_letters(
    quiet_world: Scenario, dunning_broker
) -> None:
    sc = quiet_world
    broker, _ = dunning_broker
    message = raw_message((sc.customer_event(0),), actor="no_such_actor")
    broker.enqueue(message)
    sc.send(sc.customer_event(1) | {"id": "evt_after_unknown_actor"})  # a good event behind it
    sc.settle(20)

    def in_xq() -> bool:
        # Dramatiq's dead-letter set is keyed by the Redis id; the message id is in the stored body.
        bodies = broker.client.hvals(f"dramatiq:{QUEUE}.XQ.msgs")
        return any(message.message_id.encode() in body for body in bodies)

    sc.wait_until("the worker to refuse the message", in_xq, 10)
    print(f"\nunknown actor: parked in dead_letters {_parked(sc, message.message_id)}, in Redis XQ {in_xq()}")
    sc.wait_until("the message parked in dead_letters", lambda: _parked(sc, message.message_id), 3)


def test_message_with_arguments_that_do_not_fit_is_parked_at_once_naming_args(
    quiet_world: Scenario, dunning_broker
) -> None:
    sc = quiet_world
    broker, _ = dunning_broker
    no_args = raw_message(())
    extra_kwarg = Message(
        queue_name=QUEUE,
        actor_name="ingest_event",
        args=(sc.customer_event(2),),
        kwargs={"unexpected": 1},
        options={},
    )
    broker.enqueue(no_args)
    broker.enqueue(extra_kwarg)

    def parked_with_field() -> bool:
        rows = {d.message_id: d for d in sc.dead_letters()}
        return all(
            (d := rows.get(m.message_id)) is not None and d.field is not None for m in (no_args, extra_kwarg)
        )

    try:
        sc.wait_until("both messages parked naming the field", parked_with_field, 6)
    finally:
        print(f"\nwrong arguments: parked within 6 s: {parked_with_field()}")


def _wrong(**fields: Any) -> bytes:
    """A message whose wrapper has one field of the wrong type."""
    return json.dumps({**json.loads(_message_json([{}], "r")), **fields}).encode()


#: Bytes a producer might leave on the queue that are not a Dramatiq message, and the reason they get.
NOT_MESSAGES: list[tuple[bytes, str]] = [
    (b"\x00\xffnot a message {", "invalid UTF-8 at byte 1"),
    (b"not json {", "invalid JSON at byte 0"),
    (b'{"queue_name": "billing_events", "args": [', "invalid JSON at byte 42"),  # cut short
    ('{"é": 1,}'.encode(), "invalid JSON at byte 9"),  # a byte offset, not a character offset
    (b"[1, 2, 3]", "JSON array, not a message object"),
    (b'"ingest_event"', "JSON string, not a message object"),
    (
        b'{"a": 1}',
        "missing key(s) 'queue_name', 'actor_name', 'args', 'kwargs', 'options'; unknown key(s) 'a'",
    ),
    (_wrong(message_id=[1]), "message_id is not a string"),
    (_wrong(options=["redis_message_id"]), "options is not an object"),
    (_wrong(kwargs=[]), "kwargs is not an object"),
    (_wrong(args=7), "args is not a list"),
]


def _worker_log_since(sc: Scenario, offset: int) -> str:
    return sc.workers.log.read_bytes()[offset:].decode("utf-8", "replace")


def test_undecodable_bytes_on_redis_are_parked_and_strand_no_good_event(quiet_world: Scenario) -> None:
    from dunning.broker.decode import escape_bytes

    sc = quiet_world
    broker = sc.broker
    restarts, kills = sc.workers.restarts, sc.workers.kills
    garbage = {f"garbage-{uuid.uuid4()}": (body, reason) for body, reason in NOT_MESSAGES}
    # Queued while the pool is down, interleaved with good events, so that every batch a worker
    # fetches (prefetch 8 per process) mixes garbage and good events.
    with sc.workers_stopped():
        log_offset = sc.workers.log.stat().st_size
        for i, (redis_id, (body, _)) in enumerate(garbage.items()):
            sc.send(sc.customer_event(i % sc.cases) | {"id": f"evt_around_garbage_{i}"})
            _redis_write(broker, redis_id, body)
        sc.send(sc.customer_event(0) | {"id": "evt_around_garbage_last"})
    sc.wait_until("both worker processes up", lambda: len(sc.workers.worker_pids()) == 2, 30)
    pids = set(sc.workers.worker_pids())
    stranded: set[str] = set(sc.events)
    parked: dict[str, Any] = {}
    try:
        sc.wait_until("every good event applied", lambda: set(sc.events) <= sc.processed_ids(), 20)
        sc.wait_until(
            "every garbage parked", lambda: garbage.keys() <= {d.message_id for d in sc.dead_letters()}, 5
        )
    finally:
        stranded = set(sc.events) - sc.processed_ids()
        parked = {d.message_id: d for d in sc.dead_letters() if d.message_id in garbage}
        print(
            f"\nundecodable bytes: {len(garbage)} among {len(garbage) + 1} good events; good events "
            f"stranded {len(stranded)}, garbage parked {len(parked)}/{len(garbage)}, worker deaths "
            f"{sc.workers.restarts - restarts}"
        )
    assert not stranded
    for redis_id, (body, reason) in garbage.items():
        d = parked[redis_id]
        assert (d.queue, d.actor, d.field, d.error_type) == (
            QUEUE,
            "(not a message)",
            "message",
            "NotAMessage",
        ), redis_id
        assert d.reason == f"not a Dramatiq message: {reason}", (d.reason, reason)
        assert d.payload == escape_bytes(body)
        assert d.requeued_at is None
    # Acknowledged, not left for a redelivery: nothing in the queue's hash, its dead set or any ack set.
    sc.wait_until("the queue drained", lambda: broker.client.hlen(f"dramatiq:{QUEUE}.msgs") == 0, 5)
    dead_set = {m.decode() for m in broker.client.zrange(f"dramatiq:{QUEUE}.XQ", 0, -1)}
    assert not dead_set & garbage.keys()  # (the probes above leave their own refused messages there)
    fetched = set()
    for key in broker.client.scan_iter(f"dramatiq:__acks__.*.{QUEUE}"):
        fetched |= {m.decode() for m in broker.client.smembers(key)}
    assert not fetched & garbage.keys()
    # No worker process died or restarted, and no consumer thread crashed.
    assert set(sc.workers.worker_pids()) == pids
    assert (sc.workers.restarts, sc.workers.kills) == (restarts, kills)
    log = _worker_log_since(sc, log_offset)
    assert "Consumer encountered" not in log and "exited unexpectedly" not in log, log[-3000:]
    assert log.count("not a Dramatiq message") == len(garbage), log[-3000:]


# -- the consumer on its own, against the real Redis ----------------------------------------------


def _mixed_queue(broker: Any, queue: str) -> tuple[list[str], dict[str, bytes]]:
    """Good messages with every kind of garbage between them; (good message ids, garbage by Redis id).

    ``queue`` may be a delay queue (``probe.DQ``): the good messages are then sent delayed.
    """
    good, garbage = [], {}
    delay = 1 if queue.endswith(".DQ") else None

    def one_good(i: int) -> None:
        message = Message(queue_name="probe", actor_name="noop", args=(i,), kwargs={}, options={})
        good.append(broker.enqueue(message, delay=delay).message_id)

    for i, (body, _) in enumerate(NOT_MESSAGES):
        one_good(i)
        redis_id = f"garbage-{i}"
        broker.client.hset(f"{broker.namespace}:{queue}.msgs", redis_id, body)
        broker.client.rpush(f"{broker.namespace}:{queue}", redis_id)
        garbage[redis_id] = body
    one_good(len(NOT_MESSAGES))
    return good, garbage


def _drain(consumer: Any) -> list[Any]:
    out = []
    while (message := next(consumer)) is not None:
        out.append(message)
    return out


def test_consumer_parks_what_is_not_a_message_and_delivers_the_rest_of_the_batch(probe_broker) -> None:
    rows: list[dict[str, Any]] = []
    broker = probe_broker(rows.append)
    good, garbage = _mixed_queue(broker, "probe")
    consumer = broker.consume("probe", prefetch=100, timeout=50)
    delivered = _drain(consumer)
    assert [m.message_id for m in delivered] == good
    assert {r["message_id"]: r["reason"] for r in rows} == {
        redis_id: f"not a Dramatiq message: {reason}"
        for redis_id, (_, reason) in zip(garbage, NOT_MESSAGES, strict=True)
    }
    assert all(r["field"] == "message" and r["error_type"] == "NotAMessage" for r in rows)
    # The garbage is acknowledged (gone from the hash and the fetched set); the good ones wait for theirs.
    msgs = broker.client.hkeys(f"{broker.namespace}:probe.msgs")
    assert not {m.decode() for m in msgs} & garbage.keys()
    assert broker.client.zcard(f"{broker.namespace}:probe.XQ") == 0
    for m in delivered:
        consumer.ack(m)
    assert broker.client.hlen(f"{broker.namespace}:probe.msgs") == 0
    assert broker.client.scard(f"{broker.namespace}:__acks__.{broker.broker_id}.probe") == 0


@pytest.mark.parametrize("queue", ["probe", "probe.DQ"])
def test_consumer_leaves_garbage_in_the_broker_dead_set_when_it_cannot_park_it(probe_broker, queue) -> None:
    def park(row: dict[str, Any]) -> None:
        raise ConnectionError("database down")

    broker = probe_broker(park)
    good, garbage = _mixed_queue(broker, queue)
    consumer = broker.consume(queue, prefetch=3, timeout=50)  # small batches: many fetches
    delivered = []
    while (message := next(consumer)) is not None:
        delivered.append(message)
        consumer.ack(message)
    assert [m.message_id for m in delivered] == good
    ns = broker.namespace
    dead = {k.decode(): v for k, v in broker.client.hgetall(f"{ns}:probe.XQ.msgs").items()}
    assert dead == garbage  # whole, byte for byte
    assert {m.decode() for m in broker.client.zrange(f"{ns}:probe.XQ", 0, -1)} == garbage.keys()
    assert broker.client.hlen(f"{ns}:{queue}.msgs") == 0
