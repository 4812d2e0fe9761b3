"""Hypothesis on the queue path, with real workers: no input crashes a worker or loses an accepted event.

Each example writes a batch of raw messages the way a producer would (the
guide's MULTI / HSET / RPUSH / EXEC, right Redis id): valid events of fresh
customers, mixed with hostile ones (broken bytes, bad JSON, mutated
envelopes, wrong argument shapes). Afterwards every valid event has been
applied exactly once, every other message is a dead letter with a field and
a reason, and nothing is left in Redis (queue, bodies, acks sets) to be
redelivered. Runs on SQLite and PostgreSQL (``world``).
"""

from __future__ import annotations

import itertools
import json
import time
import uuid
from typing import Any

import pytest
import redis
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from sqlalchemy import func, select
from tests.support.hostile import hostile_bodies

from dunning.broker.decode import NotAMessage, decode_message
from dunning.contract import InvalidEvent, parse_message_args
from dunning.store.models import DeadLetter, ProcessedEvent

pytestmark = pytest.mark.integration

QUEUE_KEY = "dramatiq:billing_events"
MSGS_KEY = "dramatiq:billing_events.msgs"
_serial = itertools.count()

names = st.text(st.characters(codec="utf-8", exclude_categories=["Cs"]), max_size=30)
customers = st.fixed_dictionaries(
    {"email": st.sampled_from(["a@example.com", "b@bücher.example", "x.y+z@example.org"])},
    optional={
        "name": st.one_of(st.none(), names),
        "locale": st.sampled_from(["en", "fr", "pt-BR", "de_CH"]),
        "timezone": st.sampled_from(["UTC", "Europe/Paris", "America/Sao_Paulo"]),
        "unknown_field": names,
    },
)


def _valid(customer: dict[str, Any]) -> dict[str, Any]:
    n = next(_serial)
    return {
        "id": f"evt_fz_{n}_{uuid.uuid4().hex[:8]}",
        "type": "customer.upserted",
        "occurred_at": "2026-11-02T09:00:00Z",
        "data": {"customer": {"id": f"cus_fz_{n}", **customer}},
    }


def _message(redis_id: str, args: bytes) -> bytes:
    """The guide's message, ``args`` spliced in as bytes (so they can be anything)."""
    return (
        b'{"queue_name":"billing_events","actor_name":"ingest_event","args":'
        + args
        + b',"kwargs":{},"options":{"redis_message_id":"'
        + redis_id.encode()
        + b'"},"message_id":"'
        + redis_id.encode()
        + b'","message_timestamp":0}'
    )


def _refused_locally(body: bytes) -> bool:
    """True if the product's own checks refuse these message bytes (so the worker must park them)."""
    try:
        message = decode_message(body)
        parse_message_args(list(message.args), message.kwargs)
    except (NotAMessage, InvalidEvent):
        return True
    return False


items = st.one_of(
    customers.map(lambda c: ("valid", c)),
    hostile_bodies().map(lambda b: ("hostile", b)),
)


def _left_in_redis(client: redis.Redis) -> int:
    acked = sum(client.scard(key) for key in client.scan_iter("dramatiq:__acks__.*.billing_events"))
    return client.llen(QUEUE_KEY) + client.hlen(MSGS_KEY) + acked


# Hypothesis notes any change of the global `random` state while it draws an example, from any
# thread: the world's worker threads draw their idle-poll jitter from it (Dramatiq's
# compute_backoff) while this test draws. These strategies use no `random`.
@pytest.mark.filterwarnings("ignore:Do not use the `random` module inside strategies")
@settings(
    max_examples=20,
    derandomize=True,
    deadline=None,
    suppress_health_check=[
        HealthCheck.function_scoped_fixture,
        HealthCheck.too_slow,
        HealthCheck.filter_too_much,
    ],
)
@given(batch=st.lists(items, min_size=1, max_size=6))
def test_no_message_crashes_a_worker_or_loses_an_accepted_event(
    world: Any, redis_server: Any, batch: list[tuple[str, Any]]
) -> None:
    client = redis.Redis.from_url(redis_server.url)
    valid_ids: list[str] = []
    refused: list[str] = []
    with client.pipeline(transaction=True) as tx:
        for kind, value in batch:
            redis_id = str(uuid.uuid4())
            if kind == "valid":
                event = _valid(value)
                body = _message(redis_id, json.dumps([event]).encode())
                valid_ids.append(event["id"])
            else:
                body = _message(redis_id, b"[" + value + b"]")
                if not _refused_locally(body):
                    continue  # a mutation that happens to be a valid event may name what is unknown
                refused.append(redis_id)
            tx.hset(MSGS_KEY, redis_id, body)
            tx.rpush(QUEUE_KEY, redis_id)
        tx.execute()

    def state() -> tuple[int, int, int]:
        with world.rt.sessions() as s:
            applied = s.execute(
                select(func.count()).select_from(ProcessedEvent).where(ProcessedEvent.id.in_(valid_ids))
            ).scalar_one()
            parked = s.execute(
                select(func.count()).select_from(DeadLetter).where(DeadLetter.message_id.in_(refused))
            ).scalar_one()
        return applied, parked, _left_in_redis(client)

    deadline = time.monotonic() + 30
    while state() != (len(valid_ids), len(refused), 0):
        assert time.monotonic() < deadline, (state(), len(valid_ids), len(refused))
        time.sleep(0.05)
    with world.rt.sessions() as s:
        rows = s.execute(select(DeadLetter).where(DeadLetter.message_id.in_(refused))).scalars().all()
    for row in rows:
        assert row.field and row.reason, (row.field, row.reason)
        assert "could not be validated" not in row.reason and "details in worker logs" not in row.reason
    client.close()
