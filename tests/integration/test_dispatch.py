"""Job messages sent after a commit: one round trip, and exactly what Dramatiq's own enqueue writes."""

from __future__ import annotations

from uuid import UUID

import pytest
from dramatiq import Message
from dramatiq.brokers.redis import RedisBroker

from dunning.broker.enqueue import send_jobs
from dunning.broker.names import ACTOR_FOR_QUEUE, JOBS_QUEUE, MAIL_QUEUE
from dunning.engine.jobs import Dispatch

pytestmark = pytest.mark.integration


@pytest.fixture
def broker(redis_server) -> RedisBroker:
    # Imported here: importing dunning.broker at collection would set the global broker
    # before the suite's Redis is known (and start an embedded one).
    from dunning.broker.setup import build_broker

    broker = build_broker(redis_server.url)
    broker.client.flushall()
    return broker


def _queued(broker: RedisBroker, queue: str) -> list[Message]:
    ids = broker.client.lrange(f"dramatiq:{queue}", 0, -1)
    bodies = broker.client.hmget(f"dramatiq:{queue}.msgs", ids)
    return [Message.decode(body) for body in bodies]


def test_a_batch_of_jobs_lands_on_their_queues_as_dramatiq_messages(broker: RedisBroker) -> None:
    items = [Dispatch(JOBS_QUEUE, 1), Dispatch(MAIL_QUEUE, 2), Dispatch(JOBS_QUEUE, 3)]
    assert send_jobs(broker, items) == 3
    jobs, mail = _queued(broker, JOBS_QUEUE), _queued(broker, MAIL_QUEUE)
    assert [m.args for m in jobs] == [(1,), (3,)] and [m.args for m in mail] == [(2,)]
    for m in [*jobs, *mail]:
        assert m.actor_name == ACTOR_FOR_QUEUE[m.queue_name]
        assert m.kwargs == {}
    # Each message is acknowledged by its own Redis id: they must all differ.
    redis_ids = {m.options["redis_message_id"] for m in [*jobs, *mail]}
    assert len(redis_ids) == 3
    # Both ids are random UUIDs as Dramatiq makes them (str(uuid4())), never shared between messages.
    ids = [m.message_id for m in [*jobs, *mail]] + sorted(redis_ids)
    assert len(set(ids)) == 6
    assert all(str(UUID(i)) == i and UUID(i).version == 4 for i in ids)


def test_one_job_and_none(broker: RedisBroker) -> None:
    assert send_jobs(broker, []) == 0
    assert send_jobs(broker, [Dispatch(MAIL_QUEUE, 7)]) == 1
    (only,) = _queued(broker, MAIL_QUEUE)
    assert only.args == (7,) and only.options["redis_message_id"]


def test_the_fast_path_writes_what_dramatiqs_own_enqueue_writes(broker: RedisBroker) -> None:
    """send_jobs mirrors RedisBroker.enqueue (one MULTI for many): same keys, same kinds, same fields."""
    stock = Message(
        queue_name=JOBS_QUEUE, actor_name=ACTOR_FOR_QUEUE[JOBS_QUEUE], args=(1,), kwargs={}, options={}
    )
    broker.enqueue(stock)
    # Dramatiq's script also beats this process's heartbeat: not a key of the message.
    stock_keys = {
        k.decode(): broker.client.type(k).decode()
        for k in broker.client.keys("*")
        if k != b"dramatiq:__heartbeats__"
    }
    broker.client.flushall()
    send_jobs(broker, [Dispatch(JOBS_QUEUE, 1)])
    ours_keys = {
        k.decode(): broker.client.type(k).decode()
        for k in broker.client.keys("*")
        if k != b"dramatiq:__heartbeats__"
    }
    assert (
        ours_keys == stock_keys == {f"dramatiq:{JOBS_QUEUE}": "list", f"dramatiq:{JOBS_QUEUE}.msgs": "hash"}
    )
    (ours,) = _queued(broker, JOBS_QUEUE)
    assert set(ours.asdict()) == set(stock.asdict())
    assert set(ours.options) == {"redis_message_id"}  # what Dramatiq's enqueue adds, and nothing else
    # The list holds the Redis id, and the hash maps it to the body, as Dramatiq's fetch expects.
    [redis_id] = broker.client.lrange(f"dramatiq:{JOBS_QUEUE}", 0, -1)
    assert redis_id.decode() == ours.options["redis_message_id"]


def test_mail_jobs_share_messages_of_at_most_mail_batch_ids_and_alone_ones_do_not(
    broker: RedisBroker,
) -> None:
    mail = [Dispatch(MAIL_QUEUE, i) for i in range(1, 61)]
    alone = [Dispatch(MAIL_QUEUE, 100, alone=True), Dispatch(MAIL_QUEUE, 101, alone=True)]
    items = [*mail[:30], alone[0], Dispatch(JOBS_QUEUE, 200), *mail[30:], alone[1]]
    assert send_jobs(broker, items, mail_batch=25) == 63  # jobs sent, not messages
    jobs, queued = _queued(broker, JOBS_QUEUE), _queued(broker, MAIL_QUEUE)
    assert [m.args for m in jobs] == [(200,)]
    batches = [m for m in queued if not m.options.get("dunning_alone")]
    singles = [m for m in queued if m.options.get("dunning_alone")]
    # In the order given, at most 25 to a message and as few messages as that allows, of even
    # sizes; the jobs that must run alone each in a message of their own.
    assert [m.args for m in batches] == [
        (list(range(1, 21)),),
        (list(range(21, 41)),),
        (list(range(41, 61)),),
    ]
    assert [m.args for m in singles] == [(100,), (101,)]
    assert all(m.actor_name == ACTOR_FOR_QUEUE[MAIL_QUEUE] for m in queued)
    assert len({m.options["redis_message_id"] for m in queued}) == 5
    broker.client.flushall()
    assert send_jobs(broker, mail[:11], mail_batch=5) == 11
    assert [len(m.args[0]) for m in _queued(broker, MAIL_QUEUE)] == [4, 4, 3]


def test_one_mail_job_per_message_when_mail_batch_is_one(broker: RedisBroker) -> None:
    assert send_jobs(broker, [Dispatch(MAIL_QUEUE, i) for i in (1, 2, 3)], mail_batch=1) == 3
    assert [m.args for m in _queued(broker, MAIL_QUEUE)] == [(1,), (2,), (3,)]
    broker.client.flushall()
    # A lone mail job keeps the single-id message every worker version reads.
    assert send_jobs(broker, [Dispatch(MAIL_QUEUE, 9)], mail_batch=25) == 1
    assert [m.args for m in _queued(broker, MAIL_QUEUE)] == [(9,)]
