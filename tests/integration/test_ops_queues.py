"""``dunning queues`` on real Redis and both databases: every count comes from where Dramatiq keeps it.

A retry waiting for its backoff is fetched by a worker at once and held in its memory until
its time: it is on no Redis list, only in the worker's ``__acks__.<worker>.<queue>.DQ`` set.
These tests put messages in each place (by Dramatiq's own enqueue and fetch, or by a running
worker) and check that ``queue_status`` counts them where they are.
"""

from __future__ import annotations

import json
import os
import socket
import time
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

pytestmark = pytest.mark.integration


@pytest.fixture
def quiet(idle_world: Any) -> Any:
    """The product's stores and broker, with no worker and no scheduler running."""
    return idle_world


def _message(queue: str, actor: str, *, ts_ms: int | None = None) -> Any:
    from dramatiq import Message

    extra = {"message_timestamp": ts_ms} if ts_ms is not None else {}
    return Message(queue_name=queue, actor_name=actor, args=(0,), kwargs={}, options={}, **extra)


def _job(key: str, *, status: str, due_at: datetime) -> Any:
    from dunning.store.models import Job

    return Job(
        key=key, kind="retry_charge", queue="dunning", status=status, due_at=due_at,
        created_at=due_at, claims=0, runs=0, crashes=0,
    )  # fmt: skip


def _row(queue: str, mid: str) -> dict[str, Any]:
    return {
        "message_id": mid,
        "queue": queue,
        "actor": "deliver_email",
        "payload": "{}",
        "field": None,
        "reason": "test",
        "error_type": "Test",
        "parked_at": datetime.now(UTC),
    }


def _cli_json(h: Any, db_url: str, redis_url: str, *args: str) -> Any:
    from typer.testing import CliRunner

    from dunning.cli import app
    from dunning.runtime import own_runtime

    env = {
        "DUNNING_DATABASE_URL": db_url,
        "DUNNING_REDIS_URL": redis_url,
        "DUNNING_CLOCK": "simulated",
        "DUNNING_HOME": str(h.rt.settings.home),
    }
    with own_runtime():  # the world's workers and heartbeats keep using theirs
        result = CliRunner().invoke(app, list(args), env=env)
    assert result.exit_code == 0, result.output
    return json.loads(result.output)


def test_each_count_comes_from_where_the_broker_keeps_it(quiet, db_url: str, redis_server) -> None:
    from dunning.broker.unparked import stash
    from dunning.ops.queues import queue_status
    from dunning.store.db import transaction
    from dunning.store.dead_letters import park

    h = quiet
    broker = h.broker
    hour_ago = int(time.time() * 1000) - 3_600_000
    broker.enqueue(_message("mail", "deliver_email", ts_ms=hour_ago))
    broker.enqueue(_message("mail", "deliver_email"))
    broker.enqueue(_message("dunning", "run_job"), delay=600_000)  # a retry's backoff, 10 minutes
    now = h.rt.clock.now()
    with transaction(h.rt.sessions) as s:
        s.add(_job("late", status="pending", due_at=now - timedelta(hours=2)))
        s.add(_job("later", status="pending", due_at=now - timedelta(minutes=5)))
        s.add(_job("future", status="pending", due_at=now + timedelta(days=1)))
        s.add(_job("running", status="claimed", due_at=now - timedelta(hours=3)))
    park(h.rt, _row("mail", "dead-1"))
    stash(broker.client, _row("mail", "dead-2"))

    status = queue_status(h.rt, broker.client)
    q = {row.name: row for row in status.queues}
    assert (q["mail"].ready, q["mail"].in_progress, q["mail"].delayed) == (2, 0, 0)
    assert 3600 <= q["mail"].oldest_ready_age_s < 3600 + 300
    assert (q["dunning"].ready, q["dunning"].delayed_waiting, q["dunning"].delayed_held) == (0, 1, 0)
    assert q["mail"].dead_lettered == 1 and q["dunning"].dead_lettered == 0
    s = status.scheduler
    # The simulated clock stands still: the lag is exactly the oldest due job's delay.
    assert (s.due_unclaimed, s.claimed, s.scheduled) == (2, 1, 1)
    assert s.lag_s == 7200.0 and s.oldest_due_at == now - timedelta(hours=2)
    assert (status.dead_letters.messages, status.dead_letters.waiting_in_redis) == (1, 1)
    assert status.workers == []

    # A consumer fetches: the fetched mail is in progress, the delayed one is held in its memory.
    mail = broker.consume("mail", prefetch=1, timeout=100)
    delayed = broker.consume("dunning.DQ", prefetch=1, timeout=100)
    try:
        assert next(mail) is not None and next(delayed) is not None
        status = queue_status(h.rt, broker.client)
        q = {row.name: row for row in status.queues}
        assert (q["mail"].ready, q["mail"].in_progress) == (1, 1)
        assert (q["dunning"].delayed_waiting, q["dunning"].delayed_held, q["dunning"].delayed) == (0, 1, 1)
        # This consumer's id has no heartbeat row: shown, and not alive.
        [holder] = status.workers
        assert holder.id == broker.broker_id and not holder.alive
        assert (holder.in_progress, holder.delayed_held) == (1, 1)
    finally:
        mail.close()
        delayed.close()

    out = _cli_json(h, db_url, redis_server.url, "queues", "--json")
    assert set(out) >= {"queues", "scheduler", "workers", "dead_letters"}
    by_name = {row["name"]: row for row in out["queues"]}
    assert by_name["mail"]["in_progress"] == 1 and by_name["dunning"]["delayed"] == 1
    assert out["scheduler"]["due_unclaimed"] == 2 and out["scheduler"]["lag_s"] == 7200.0
    assert out["dead_letters"] == {"messages": 1, "jobs": 0, "waiting_in_redis": 1, "total": 2}


def test_a_retry_held_by_a_running_worker_is_counted_as_delayed(world) -> None:
    from dunning.ops.queues import queue_status

    h = world
    h.broker.enqueue(_message("dunning", "run_job"), delay=600_000)
    deadline = time.monotonic() + 15
    while True:
        status = queue_status(h.rt, h.broker.client)
        q = {row.name: row for row in status.queues}["dunning"]
        # The lists and the workers' fetched sets are read one after the other, so a message
        # the worker fetches between the two reads is counted in both, once: wait for the
        # state to settle, not for its first sight in the worker.
        if (q.delayed_waiting, q.delayed_held) == (0, 1) or time.monotonic() > deadline:
            break
        time.sleep(0.05)
    # On no Redis list (the old count said 0), held by the worker until its time.
    assert (q.ready, q.delayed_waiting, q.delayed_held, q.delayed) == (0, 0, 1, 1)
    # /metrics and the ops page (dunning.ops.queue_depths) count it too.
    from dunning.ops import queue_depths

    assert {d.name: d.delayed for d in queue_depths(h.broker.client)}["dunning"] == 1
    [worker] = [w for w in status.workers if w.delayed_held]
    assert worker.alive and worker.host == socket.gethostname() and worker.pid == os.getpid()
    assert worker.last_seen is not None and worker.last_seen_age_s is not None


def test_scheduler_dry_run_lists_what_a_pass_would_enqueue_and_claims_nothing(
    quiet, db_url: str, redis_server
) -> None:
    from dunning.ops.preview import preview
    from dunning.store.db import transaction

    h = quiet
    now = h.rt.clock.now()
    with transaction(h.rt.sessions) as s:
        s.add(_job("b-due", status="pending", due_at=now - timedelta(minutes=1)))
        s.add(_job("a-due", status="pending", due_at=now - timedelta(hours=1)))
        s.add(_job("not-yet", status="pending", due_at=now + timedelta(minutes=1)))
        backing_off = _job("backing-off", status="pending", due_at=now - timedelta(hours=2))
        backing_off.retry_at = datetime.now(UTC) + timedelta(hours=1)
        s.add(backing_off)
        lost = _job("lost", status="claimed", due_at=now - timedelta(days=1))
        lost.lease_until = datetime.now(UTC) - timedelta(minutes=1)
        s.add(lost)
    assert [(w.key, w.why) for w in preview(h.rt)] == [
        ("a-due", "due"),
        ("b-due", "due"),
        ("lost", "lease expired"),
    ]
    out = _cli_json(h, db_url, redis_server.url, "scheduler", "--dry-run", "--json")
    assert [(w["key"], w["why"]) for w in out] == [
        ("a-due", "due"),
        ("b-due", "due"),
        ("lost", "lease expired"),
    ]
    # Nothing was claimed, nothing was sent.
    assert {j.key: (j.status, j.claims) for j in h.jobs()} == {
        "a-due": ("pending", 0),
        "b-due": ("pending", 0),
        "not-yet": ("pending", 0),
        "backing-off": ("pending", 0),
        "lost": ("claimed", 0),
    }
    assert h.broker.client.llen("dramatiq:dunning") == 0


def test_dlq_filters_and_the_audit_of_requeue_and_purge(quiet, db_url: str, redis_server) -> None:
    from dunning.store.db import transaction
    from dunning.store.dead_letters import park

    h = quiet
    old = _row("mail", "old-mail") | {
        "parked_at": datetime.now(UTC) - timedelta(days=3),
        "reason": "SMTP said no",
    }
    park(h.rt, old)
    park(
        h.rt, _row("billing_events", "fresh-event") | {"actor": "ingest_event", "reason": "amount_minor: bad"}
    )
    with transaction(h.rt.sessions) as s:
        dead = _job("poison", status="dead", due_at=h.rt.clock.now())
        dead.finished_at = datetime.now(UTC) - timedelta(hours=5)
        dead.last_error = "parked after 6 failed runs"
        s.add(dead)

    def refs(*args: str) -> list[str]:
        return [
            p["ref"][0] + p["what"].split()[0]
            for p in _cli_json(h, db_url, redis_server.url, "dlq", "list", "--json", *args)
        ]

    assert refs() == ["mingest_event", "jretry_charge", "mdeliver_email"]
    assert refs("--queue", "mail") == ["mdeliver_email"]
    assert refs("--actor", "ingest_event") == ["mingest_event"]
    assert refs("--actor", "run_job") == ["jretry_charge"]
    assert refs("--reason", "smtp") == ["mdeliver_email"]
    assert refs("--older-than", "2h") == ["jretry_charge", "mdeliver_email"]
    assert refs("--newer-than", "1d") == ["mingest_event", "jretry_charge"]
    assert refs("--older-than", "1d") == ["mdeliver_email"]

    listed = {
        p["what"].split()[0]: p["ref"]
        for p in _cli_json(h, db_url, redis_server.url, "dlq", "list", "--json")
    }
    from typer.testing import CliRunner

    from dunning.cli import app
    from dunning.runtime import own_runtime

    env = {
        "DUNNING_DATABASE_URL": db_url,
        "DUNNING_REDIS_URL": redis_server.url,
        "DUNNING_HOME": str(h.rt.settings.home),
    }
    with own_runtime():
        runner = CliRunner()
        done = runner.invoke(app, ["dlq", "requeue", listed["retry_charge"], "--by", "carol"], env=env)
        assert done.exit_code == 0, done.output
        done = runner.invoke(app, ["dlq", "purge", listed["deliver_email"]], env=env)
        assert done.exit_code == 0 and "purged 1" in done.output, done.output
    audit = _cli_json(h, db_url, redis_server.url, "dlq", "audit", "--json")
    import getpass

    assert [(a["by"], a["action"], a["target"]) for a in audit] == [
        (getpass.getuser(), "dlq.purge", listed["deliver_email"]),
        ("carol", "dlq.requeue", listed["retry_charge"]),
    ]
    assert audit[0]["detail"] == "1 purged" and "back to pending" in audit[1]["detail"]
    assert refs() == ["mingest_event"]


def test_watch_redraws_until_ctrl_c_and_exits_cleanly(quiet, db_url: str, redis_server) -> None:
    import signal
    import subprocess
    import sys
    import threading

    h = quiet
    env = os.environ | {
        "DUNNING_DATABASE_URL": db_url,
        "DUNNING_REDIS_URL": redis_server.url,
        "DUNNING_CLOCK": "simulated",
        "DUNNING_HOME": str(h.rt.settings.home),
        "COLUMNS": "120",
        # Rich draws live (as on a terminal) on this pipe, so each redraw can be seen.
        "TTY_COMPATIBLE": "1",
        "TTY_INTERACTIVE": "1",
    }
    h.broker.enqueue(_message("mail", "deliver_email"))
    proc = subprocess.Popen(
        [sys.executable, "-m", "dunning", "queues", "--watch", "0.2"],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    chunks: list[str] = []
    reader = threading.Thread(
        target=lambda: chunks.extend(iter(lambda: proc.stdout.read(256), "")), daemon=True
    )
    reader.start()
    try:
        deadline = time.monotonic() + 60
        while "".join(chunks).count("Broker queues") < 3 and time.monotonic() < deadline:
            assert proc.poll() is None, proc.stderr.read()
            time.sleep(0.1)
        drawn = "".join(chunks).count("Broker queues")
        proc.send_signal(signal.SIGINT)  # Ctrl-C
        errors = proc.stderr.read()
        proc.wait(timeout=20)
        reader.join(5)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert drawn >= 3  # drawn, then redrawn in place
    assert proc.returncode == 0, errors
    assert "Traceback" not in errors


def test_a_message_being_fetched_is_counted_once(probe_broker) -> None:
    """Counts read while consumers fetch: every message is ready or fetched, never both or neither.

    A fetch moves an id from the queue's list to the worker's ack set in one step (Dramatiq's
    Lua script); the counts are read in one ``MULTI``, so they always add up.
    """
    import threading

    from dunning.ops.broker_state import read_broker

    broker = probe_broker(lambda row: None)
    total = 200
    for _ in range(total):
        broker.enqueue(_message("mail", "deliver_email"))
    consumers: list[Any] = []

    def fetch_all() -> None:
        # One consumer per message: a consumer fetches no more until it acknowledges.
        for _ in range(total):
            consumer = broker.consume("mail", prefetch=1, timeout=100)
            consumers.append(consumer)
            for _attempt in range(50):
                if next(consumer) is not None:
                    break

    thread = threading.Thread(target=fetch_all, daemon=True)
    thread.start()
    sums: list[int] = []
    try:
        while thread.is_alive():
            [mail] = read_broker(broker.client, ("mail",), broker.namespace).queues
            sums.append(mail.ready + mail.in_progress)
        thread.join()
        [mail] = read_broker(broker.client, ("mail",), broker.namespace).queues
    finally:
        for consumer in consumers:
            consumer.close()
    assert (mail.ready, mail.in_progress) == (0, total)
    assert len(sums) > 10 and set(sums) == {total}, sorted(set(sums))
