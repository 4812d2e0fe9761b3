"""A Go or Ruby producer's Redis commands, issued one by one with ``execute_command``, never Dramatiq.

The message is built from the ``printf`` format of docs/producers.md (so the
guide cannot drift from what works) and sent with the guide's MULTI / HSET /
RPUSH / EXEC on one connection. Each message must be applied exactly once and
leave nothing behind in Redis (queue, body hash, any worker's acks set), or be
refused loudly (a dead letter with a reason), never left to loop. Runs on
SQLite and PostgreSQL (``world``).
"""

from __future__ import annotations

import json
import re
import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import redis
from sqlalchemy import func, select

from dunning.store.dead_letters import list_parked
from dunning.store.models import Customer, ProcessedEvent

pytestmark = pytest.mark.integration

GUIDE = Path(__file__).resolve().parents[2] / "docs" / "producers.md"
QUEUE_KEY = "dramatiq:billing_events"
MSGS_KEY = "dramatiq:billing_events.msgs"


def _guide_format() -> str:
    """The guide's message template: ``printf '<format>' "$ENVELOPE" "$R" "$MESSAGE_ID" "$NOW_MS"``."""
    found = re.search(r"MESSAGE=\$\(printf '([^']+)'", GUIDE.read_text(encoding="utf-8"))
    assert found, "docs/producers.md no longer shows the message as a printf format"
    return found.group(1)


def _customer(cid: str, **extra: Any) -> dict[str, Any]:
    return {
        "id": f"evt_{cid}",
        "type": "customer.upserted",
        "occurred_at": "2026-11-02T09:00:00Z",
        "data": {"customer": {"id": cid, "email": f"{cid}@example.com", **extra}},
    }


@pytest.fixture
def conn(redis_server: Any) -> Iterator[redis.Redis]:
    """One connection for every command, as MULTI ... EXEC needs (no pool handing out another)."""
    client = redis.Redis.from_url(redis_server.url, single_connection_client=True)
    yield client
    client.close()


def _send(conn: redis.Redis, r: str, message: str, *, push: str = "RPUSH", multi: bool = True) -> None:
    if multi:
        assert conn.execute_command("MULTI") in (b"OK", True, "OK")
    answers = [conn.execute_command("HSET", MSGS_KEY, r, message), conn.execute_command(push, QUEUE_KEY, r)]
    if multi:
        assert answers == [b"QUEUED", b"QUEUED"], answers
        added, length = conn.execute_command("EXEC")
    else:
        added, length = answers
    assert added == 1 and length >= 1


def _wait(what: str, done: Callable[[], bool], timeout: float = 30) -> None:
    deadline = time.monotonic() + timeout
    while not done():
        assert time.monotonic() < deadline, f"timed out waiting for: {what}"
        time.sleep(0.05)


def _left_in_redis(conn: redis.Redis) -> dict[str, int]:
    acked = sum(conn.scard(key) for key in conn.scan_iter("dramatiq:__acks__.*.billing_events"))
    return {"queue": conn.llen(QUEUE_KEY), "bodies": conn.hlen(MSGS_KEY), "acks": acked}


def _times_applied(world: Any, event_id: str) -> int:
    with world.rt.sessions() as s:
        return s.execute(
            select(func.count()).select_from(ProcessedEvent).where(ProcessedEvent.id == event_id)
        ).scalar_one()


def _customer_exists(world: Any, cid: str) -> bool:
    with world.rt.sessions() as s:
        return s.get(Customer, cid) is not None


def test_the_guides_exact_message_and_commands_are_applied_once(world: Any, conn: redis.Redis) -> None:
    envelope = _customer("cus_guide", name="Ada")
    r = str(uuid.uuid4())
    values = (json.dumps(envelope, separators=(",", ":")), r, str(uuid.uuid4()), int(time.time() * 1000))
    message = _guide_format() % values
    json.loads(message)  # the template makes JSON
    _send(conn, r, message)
    world.sent_events += 1
    world.settle()
    assert _customer_exists(world, "cus_guide")
    assert _times_applied(world, "evt_cus_guide") == 1
    assert _left_in_redis(conn) == {"queue": 0, "bodies": 0, "acks": 0}
    assert list_parked(world.rt) == []


def test_optional_dramatiq_fields_may_be_left_out_and_hset_then_lpush_works(
    world: Any, conn: redis.Redis
) -> None:
    # No message_id, no message_timestamp (Dramatiq fills both in); no MULTI (the guide's fallback);
    # LPUSH rather than RPUSH (a producer that got the side wrong: only the order changes).
    for cid, push, multi in (("cus_min_a", "RPUSH", False), ("cus_min_b", "LPUSH", True)):
        r = str(uuid.uuid4())
        message = json.dumps(
            {
                "queue_name": "billing_events",
                "actor_name": "ingest_event",
                "args": [_customer(cid)],
                "kwargs": {},
                "options": {"redis_message_id": r},
            }
        )
        _send(conn, r, message, push=push, multi=multi)
        world.sent_events += 1
    world.settle()
    for cid in ("cus_min_a", "cus_min_b"):
        assert _customer_exists(world, cid)
        assert _times_applied(world, f"evt_{cid}") == 1
    assert _left_in_redis(conn) == {"queue": 0, "bodies": 0, "acks": 0}
    assert list_parked(world.rt) == []


def test_a_message_without_its_redis_id_is_refused_loudly_and_never_loops(
    world: Any, conn: redis.Redis
) -> None:
    r = str(uuid.uuid4())
    message = json.dumps(
        {
            "queue_name": "billing_events",
            "actor_name": "ingest_event",
            "args": [_customer("cus_no_rid")],
            "kwargs": {},
            "options": {},
        }
    )
    _send(conn, r, message)
    _wait("the message parked", lambda: len(list_parked(world.rt)) == 1)
    _wait("Redis cleaned up", lambda: _left_in_redis(conn) == {"queue": 0, "bodies": 0, "acks": 0})
    [parked] = list_parked(world.rt)
    assert (parked.field, parked.what) == ("message", "(not a message)")
    assert "options.redis_message_id is missing" in parked.reason
    assert not _customer_exists(world, "cus_no_rid")
    # A valid message sent afterwards is applied: the refusal held nothing up, and nothing came back.
    r2 = str(uuid.uuid4())
    _send(conn, r2, message.replace('"options": {}', f'"options": {{"redis_message_id": "{r2}"}}'))
    world.sent_events += 1
    world.settle()
    assert _times_applied(world, "evt_cus_no_rid") == 1
    assert len(list_parked(world.rt)) == 1
    assert _left_in_redis(conn) == {"queue": 0, "bodies": 0, "acks": 0}


def test_an_invalid_event_is_parked_with_every_invalid_field(world: Any, conn: redis.Redis) -> None:
    envelope = _customer("cus_bad", locale="english!", timezone="Mars/Olympus")
    envelope["data"]["customer"]["email"] = "not an address"
    r = str(uuid.uuid4())
    message = json.dumps(
        {
            "queue_name": "billing_events",
            "actor_name": "ingest_event",
            "args": [envelope],
            "kwargs": {},
            "options": {"redis_message_id": r},
        }
    )
    _send(conn, r, message)
    world.sent_events += 1
    world.settle()
    [parked] = list_parked(world.rt)
    assert parked.field == "data.customer.email"
    lines = parked.reason.split("\n")
    assert [line.split(":")[0] for line in lines[1:]] == [
        "+ data.customer.locale",
        "+ data.customer.timezone",
    ]
    assert "Mars" not in parked.reason and "english" not in parked.reason  # values never echoed
    assert _times_applied(world, "evt_cus_bad") == 0
    assert _left_in_redis(conn) == {"queue": 0, "bodies": 0, "acks": 0}
    # What ops see: `dunning dlq show` prints the reason with every field.
    from typer.testing import CliRunner

    from dunning.cli import app
    from dunning.runtime import own_runtime

    env = {
        "DUNNING_DATABASE_URL": world.rt.settings.database_url,
        "DUNNING_HOME": str(world.rt.settings.home),
    }
    with own_runtime():  # the workers of the world still run on theirs
        shown = CliRunner().invoke(app, ["dlq", "show", parked.ref], env=env)
    assert shown.exit_code == 0, shown.output
    for path in ("data.customer.email", "data.customer.locale", "data.customer.timezone"):
        assert path in shown.output, shown.output


def test_a_message_whose_redis_id_is_not_the_one_it_was_queued_under_never_loops(
    world: Any, conn: redis.Redis
) -> None:
    # A producer bug: one uuid for HSET/RPUSH, another in options.redis_message_id. Acknowledging by
    # the wrong id would leave the real one in the worker's acks set, redelivered after every restart.
    r, claimed = str(uuid.uuid4()), str(uuid.uuid4())
    message = json.dumps(
        {
            "queue_name": "billing_events",
            "actor_name": "ingest_event",
            "args": [_customer("cus_wrong_rid")],
            "kwargs": {},
            "options": {"redis_message_id": claimed},
        }
    )
    _send(conn, r, message)
    _wait("the message parked", lambda: len(list_parked(world.rt)) == 1)
    _wait("Redis cleaned up", lambda: _left_in_redis(conn) == {"queue": 0, "bodies": 0, "acks": 0})
    [parked] = list_parked(world.rt)
    assert parked.field == "message"
    assert "options.redis_message_id" in parked.reason and "queued under" in parked.reason
    assert not _customer_exists(world, "cus_wrong_rid")


def test_an_event_carrying_a_field_named_redis_message_id_is_still_applied(
    world: Any, conn: redis.Redis
) -> None:
    # Unknown fields are allowed in an event; one that looks like the option must not confuse the check.
    r = str(uuid.uuid4())
    envelope = {**_customer("cus_lookalike"), "redis_message_id": str(uuid.uuid4())}
    message = json.dumps(
        {
            "queue_name": "billing_events",
            "actor_name": "ingest_event",
            "args": [envelope],
            "kwargs": {},
            "options": {"redis_message_id": r},
        }
    )
    _send(conn, r, message)
    world.sent_events += 1
    world.settle()
    assert _times_applied(world, "evt_cus_lookalike") == 1
    assert list_parked(world.rt) == []
    assert _left_in_redis(conn) == {"queue": 0, "bodies": 0, "acks": 0}
