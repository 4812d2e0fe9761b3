"""The consumer's check of the Redis ids messages claim, against the real Redis (one command per fetch).

Each fetched body claims its Redis id (``options.redis_message_id``); the
consumer asks once per fetch which claims are in its acks set
(``RefusingRedisConsumer.fetched_ids``: SMISMEMBER on Redis >= 6.2, else a
script), and a message whose claim is not one of them is parked instead of run.
Both ways of asking are checked against the same server.
"""

from __future__ import annotations

import json
import uuid
from collections.abc import Callable
from typing import Any

import pytest

pytestmark = pytest.mark.integration


def _body(redis_id: str, i: int) -> bytes:
    return json.dumps(
        {
            "queue_name": "probe",
            "actor_name": "noop",
            "args": [i],
            "kwargs": {},
            "options": {"redis_message_id": redis_id},
            "message_id": f"m{i}",
            "message_timestamp": 0,
        }
    ).encode()


def _queue(broker: Any, bodies: dict[str, bytes]) -> None:
    ns = broker.namespace
    for redis_id, body in bodies.items():
        broker.client.hset(f"{ns}:probe.msgs", redis_id, body)
        broker.client.rpush(f"{ns}:probe", redis_id)


#: ``has_smismember`` forced: SMISMEMBER, or the script that older servers get.
WAYS = pytest.mark.parametrize("smismember", [True, False], ids=["smismember", "script"])


def test_the_server_version_decides_once_whether_smismember_is_used(probe_broker: Callable[..., Any]) -> None:
    broker = probe_broker(lambda row: None)
    key = f"{broker.namespace}:set"
    broker.client.sadd(key, "a", "c")
    assert broker.has_smismember is None
    assert [bool(m) for m in broker.members_of(key, ["a", "b", "c"])] == [True, False, True]
    major, minor = (int(p) for p in broker.client.info("server")["redis_version"].split(".")[:2])
    assert broker.has_smismember is ((major, minor) >= (6, 2))
    broker.has_smismember = not broker.has_smismember  # the other way gives the same answers
    assert [bool(m) for m in broker.members_of(key, ["a", "b", "c"])] == [True, False, True]


@WAYS
def test_fetched_ids_are_exactly_the_claims_in_the_acks_set(
    probe_broker: Callable[..., Any], smismember: bool
) -> None:
    broker = probe_broker(lambda row: None)
    broker.has_smismember = smismember
    good = [str(uuid.uuid4()) for _ in range(5)]
    wrong = {str(uuid.uuid4()): str(uuid.uuid4()) for _ in range(3)}  # queued under -> claimed
    bodies = {rid: _body(rid, i) for i, rid in enumerate(good)}
    bodies |= {rid: _body(claim, 10 + i) for i, (rid, claim) in enumerate(wrong.items())}
    _queue(broker, bodies)
    consumer = broker.consume("probe", prefetch=20, timeout=50)
    fetched = broker.do_fetch("probe", 20)
    assert len(fetched) == 8
    assert consumer.fetched_ids(fetched) == frozenset(good)
    assert consumer.fetched_ids([None, b"not json", *fetched[:2]]) == frozenset(good[:2])
    assert consumer.fetched_ids([]) == frozenset()


@WAYS
def test_a_batch_mixing_true_and_false_claims_delivers_the_true_ones_and_parks_the_rest(
    probe_broker: Callable[..., Any], smismember: bool
) -> None:
    from dunning.broker.consumer import WRONG_REDIS_ID

    rows: list[dict[str, Any]] = []
    broker = probe_broker(rows.append)
    broker.has_smismember = smismember
    good = [str(uuid.uuid4()) for _ in range(4)]
    wrong = {str(uuid.uuid4()): str(uuid.uuid4()) for _ in range(2)}
    bodies = {rid: _body(rid, i) for i, rid in enumerate(good)}
    bodies |= {rid: _body(claim, 10 + i) for i, (rid, claim) in enumerate(wrong.items())}
    _queue(broker, bodies)
    consumer = broker.consume("probe", prefetch=20, timeout=50)
    delivered = []
    while (message := next(consumer)) is not None:
        delivered.append(message.options["redis_message_id"])
        consumer.ack(message)
    assert sorted(delivered) == sorted(good)
    assert sorted(r["message_id"] for r in rows) == sorted(wrong)
    assert all(r["reason"] == f"not a Dramatiq message: {WRONG_REDIS_ID}" for r in rows)
    ns = broker.namespace
    assert broker.client.hlen(f"{ns}:probe.msgs") == 0
    assert broker.client.scard(f"{ns}:__acks__.{broker.broker_id}.probe") == 0
