"""Hostile messages written raw on Redis, next to valid events, through real ``dunning worker`` processes.

Each message is written the way docs/producers.md tells a Go producer to
(``MULTI`` / ``HSET dramatiq:billing_events.msgs R <json>`` / ``RPUSH
dramatiq:billing_events R`` / ``EXEC``), never through Dramatiq's enqueue,
while the worker pool is down, so that the batch each worker fetches mixes
them with valid events. Then: every valid event is applied, every hostile
message is listed by the real ``dunning dlq list`` with its field and reason,
no consumer crashed, and nothing is left on the queue or in an acks set.
"""

from __future__ import annotations

import json
import subprocess
import sys
import time
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import redis
from sqlalchemy import select
from tests.support.hostile import nested
from tests.support.scenario import Scenario, event

from dunning.store.models import Customer

pytestmark = [pytest.mark.integration, pytest.mark.slow]

QUEUE = "billing_events"


def _failure(n: int, **invoice: Any) -> dict[str, Any]:
    data = {
        "invoice": {
            "id": f"in_h{n}",
            "subscription_id": "s0",
            "customer_id": "c0",
            "amount_minor": 4900,
            "currency": "EUR",
            **invoice,
        },
        "decline_code": "insufficient_funds",
    }
    return event(f"evt_hostile_{n}", "invoice.payment_failed", data)


def _customer(cid: str, **fields: Any) -> dict[str, Any]:
    customer = {"id": cid, "email": f"{cid}@example.com", "name": "Valid", "timezone": "UTC", **fields}
    return event(f"evt_{cid}", "customer.upserted", {"customer": customer})


def _message(redis_id: str, args: str, *, options: str | None = None) -> bytes:
    """The producer guide's message JSON, with ``args`` spliced in as text (so it can be anything)."""
    opts = options if options is not None else json.dumps({"redis_message_id": redis_id})
    return (
        '{"queue_name":"billing_events","actor_name":"ingest_event","args":'
        + args
        + ',"kwargs":{},"options":'
        + opts
        + f',"message_id":"{redis_id}","message_timestamp":{int(time.time() * 1000)}}}'
    ).encode("utf-8")


def _envelope(value: dict[str, Any]) -> str:
    return "[" + json.dumps(value, separators=(",", ":")) + "]"


#: name -> (message bytes for a Redis id, the field `dunning dlq list` must show, a piece of its reason)
HOSTILE: dict[str, tuple[Callable[[str], bytes], str, str]] = {
    "5,000-digit integer": (
        lambda r: _message(
            r, _envelope(_failure(1)).replace('"amount_minor":4900', '"amount_minor":' + "9" * 5000)
        ),
        "message",
        "number too large: 5000 digits",
    ),
    "5,000-deep nesting": (
        lambda r: _message(r, "[" + '{"x":' + "[" * 5000 + "]" * 5000 + "}]"),
        "message",
        "nested more than 100 levels deep",
    ),
    "not UTF-8": (
        lambda r: b'{"queue_name":"billing_events","args":["\xff\xfe\xfd"]}',
        "message",
        "invalid UTF-8 at byte",
    ),
    "no redis_message_id": (
        lambda r: _message(r, _envelope(_customer("c_no_ack")), options="{}"),
        "message",
        "options.redis_message_id is missing",
    ),
    # Valid Dramatiq messages whose envelope is hostile: refused by the event validation.
    "deep nesting inside args": (
        lambda r: _message(r, _envelope({**_failure(2), "extra": nested(60)})),
        "extra[0].n[0].n[0]",
        "nested more than 32 levels deep",
    ),
    "500-digit integer inside args": (
        lambda r: _message(
            r, _envelope(_failure(3)).replace('"amount_minor":4900', '"amount_minor":' + "8" * 500)
        ),
        "data.invoice.amount_minor",
        "number too large",
    ),
    "amount_minor true": (
        lambda r: _message(r, _envelope(_failure(4, amount_minor=True))),
        "data.invoice.amount_minor",
        "valid integer",
    ),
    "amount_minor as text": (
        lambda r: _message(r, _envelope(_failure(5, amount_minor="4900"))),
        "data.invoice.amount_minor",
        "valid integer",
    ),
    "currency XYZ": (
        lambda r: _message(r, _envelope(_failure(6, currency="XYZ"))),
        "data.invoice.currency",
        "ISO-4217",
    ),
    "two recipients in one email": (
        lambda r: _message(r, _envelope(_customer("c_two", email="victim@example.com,postmaster"))),
        "data.customer.email",
        "not a single email address",
    ),
    "lone surrogate": (
        lambda r: _message(r, _envelope(_customer("c_sur", name="\ud800"))),
        "data.customer.name",
        "lone surrogate",
    ),
    "two arguments": (
        lambda r: _message(
            r, "[" + _envelope(_customer("c_a"))[1:-1] + "," + _envelope(_customer("c_b"))[1:-1] + "]"
        ),
        "args",
        "exactly one positional argument",
    ),
}


def _raw_write(client: redis.Redis, redis_id: str, body: bytes) -> None:
    """MULTI / HSET / RPUSH / EXEC, as the producer guide says."""
    with client.pipeline(transaction=True) as tx:
        tx.hset(f"dramatiq:{QUEUE}.msgs", redis_id, body)
        tx.rpush(f"dramatiq:{QUEUE}", redis_id)
        tx.execute()


def _dlq_list(env: dict[str, str]) -> str:
    """The real CLI, as ops would run it (wide enough that a row is a line)."""
    result = subprocess.run(
        [sys.executable, "-m", "dunning", "dlq", "list"],
        env={**env, "COLUMNS": "600"},
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 0, result.stderr
    return result.stdout


def test_hostile_messages_on_raw_redis_are_parked_and_valid_events_in_the_same_batch_applied(
    pg_url: str, redis_server: Any, smtp: Any, tmp_path: Path, dunning_broker: Any
) -> None:
    broker, _ = dunning_broker
    client = redis.Redis.from_url(redis_server.url)
    with Scenario(
        db_url=pg_url, redis_url=redis_server.url, smtp=smtp, broker=broker, home=tmp_path, cases=1
    ) as sc:
        sc.setup_customers()
        sent: dict[str, str] = {}  # Redis id -> hostile name
        valid: list[str] = []
        with sc.workers_stopped():
            log_offset = sc.workers.log.stat().st_size
            for i, (name, (make, _, _)) in enumerate(HOSTILE.items()):
                envelope = _customer(f"c_ok_{i}")
                redis_id = str(uuid.uuid4())
                _raw_write(client, redis_id, _message(redis_id, _envelope(envelope)))
                valid.append(envelope["id"])
                redis_id = str(uuid.uuid4())
                _raw_write(client, redis_id, make(redis_id))
                sent[redis_id] = name
        try:
            sc.wait_until("every valid event applied", lambda: set(valid) <= sc.processed_ids(), 60)
            sc.wait_until(
                "every hostile message parked",
                lambda: sent.keys() <= {d.message_id for d in sc.dead_letters()},
                30,
            )
            sc.wait_until(
                "the queue drained",
                lambda: client.llen(f"dramatiq:{QUEUE}") == 0 and client.hlen(f"dramatiq:{QUEUE}.msgs") == 0,
                30,
            )
        finally:
            parked = {d.message_id: d for d in sc.dead_letters() if d.message_id in sent}
            print(
                f"\nhostile on raw Redis: {len(sent)} hostile among {len(valid)} valid; valid applied "
                f"{len(set(valid) & sc.processed_ids())}, hostile parked {len(parked)}: "
                + ", ".join(f"{sent[k]} -> {d.field}: {d.reason}" for k, d in parked.items())
            )
        listing = _dlq_list(sc.env)
        acked_left = set()
        for key in client.scan_iter(f"dramatiq:__acks__.*.{QUEUE}"):
            acked_left |= {m.decode() for m in client.smembers(key)}
        with sc.rt.sessions() as s:
            customers = set(s.execute(select(Customer.id)).scalars())
        log = sc.workers.log.read_bytes()[log_offset:].decode("utf-8", "replace")

    # Every valid event fetched with the hostile ones was applied.
    assert {f"c_ok_{i}" for i in range(len(HOSTILE))} <= customers
    assert not {"c_no_ack", "c_two", "c_sur", "c_a", "c_b"} & customers
    # Every hostile message is in `dunning dlq list`, with its field and reason.
    rows = [line for line in listing.splitlines() if QUEUE in line]
    for redis_id, name in sent.items():
        _, field, reason = HOSTILE[name]
        d = parked[redis_id]
        assert d.field is not None and d.field.startswith(field), (name, d.field, d.reason)
        assert reason in d.reason, (name, d.reason)
        assert any(field in row and reason in row for row in rows), (name, field, reason, listing[-4000:])
        if d.field == "message":  # refused by the consumer: its bytes are the payload
            assert d.error_type == "NotAMessage" and d.payload
        else:
            assert d.error_type == "InvalidEvent", (name, d.error_type)
    # Nothing left for a redelivery: not on the queue, not in any worker's acks set.
    assert client.llen(f"dramatiq:{QUEUE}") == 0
    assert client.hlen(f"dramatiq:{QUEUE}.msgs") == 0
    assert not acked_left, acked_left
    # No consumer crashed, no worker died.
    assert "Consumer encountered" not in log and "exited unexpectedly" not in log, log[-3000:]
    assert sc.workers.restarts == 0 and sc.workers.kills == 0
    client.close()
