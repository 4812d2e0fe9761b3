"""Batch messages on the mail queue: ``deliver_email([id, ...])``, started together, sent one by one.

The rows are real outbox rows written by the product (a failed payment's first
notice), sent once, then put back to ``pending`` with their job claimed again, as
the scheduler leaves them before it sends their messages. What counts is what the
SMTP server received: each email exactly once, whatever the batch went through.
"""

from __future__ import annotations

import logging
import time
from collections import Counter
from datetime import timedelta
from typing import Any

import pytest
from sqlalchemy import select, update
from tests.support.harness import fast_tuning

from dunning.broker.enqueue import send_jobs
from dunning.broker.names import MAIL_QUEUE
from dunning.engine.jobs import Dispatch, wall_now
from dunning.engine.outbox import Ready, deliver
from dunning.engine.outbox_batch import Started, begin_all
from dunning.engine.outbox_commits import mark_sending, settle
from dunning.engine.runner import _run, later, run_batch
from dunning.engine.scheduler import recover_dead_workers
from dunning.engine.workers import beat
from dunning.runtime import Tuning
from dunning.store.db import transaction
from dunning.store.models import Job, Outbox, Worker

pytestmark = pytest.mark.integration


def _pending(h: Any, n: int) -> list[Job]:
    """``n`` emails sent by the product, then made due again: rows ``pending``, jobs claimed, not started."""
    rows = h.sent_failure_emails(n)
    jobs = sorted((j for j in h.jobs() if j.kind == "send_email" and j.outbox_id), key=lambda j: j.id)
    assert len(jobs) == n
    with transaction(h.rt.sessions) as s:
        s.execute(
            update(Outbox)
            .where(Outbox.id.in_([r.id for r in rows]))
            .values(status="pending", sent_at=None, last_error=None)
        )
        # Claimed again and not started, with a lease far away: only what the test sends runs them.
        s.execute(
            update(Job)
            .where(Job.id.in_([j.id for j in jobs]))
            .values(
                status="claimed",
                claims=Job.runs + 1,
                worker_id=None,
                finished_at=None,
                lease_until=wall_now() + timedelta(hours=1),
            )
        )
    h.smtp.clear()
    return jobs


def _received(h: Any) -> Counter[str]:
    """Emails the SMTP server received, by notice key."""
    return Counter(str(m["X-Dunning-Notice"]) for m in h.smtp.messages)


def _keys(h: Any, jobs: list[Job]) -> list[str]:
    by_id = {r.id: r.key for r in h.outbox()}
    return [by_id[j.outbox_id] for j in jobs]


def _wait_sent(h: Any, n: int, timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if sum(r.status == "sent" for r in h.outbox() if r.kind == "payment_failed") >= n:
            h.settle()
            return
        time.sleep(0.02)
    raise AssertionError(f"not {n} sent: {Counter(r.status for r in h.outbox())}")


def _wait_done(h: Any, n: int, timeout: float = 30.0) -> None:
    """Until ``n`` mail messages in all were acknowledged (the harness counts them)."""
    deadline = time.monotonic() + timeout
    while h.counter.done[MAIL_QUEUE] < n:
        assert time.monotonic() < deadline, f"{h.counter.done[MAIL_QUEUE]} of {n} mail messages done"
        time.sleep(0.02)
    h.settle()


def test_a_batch_message_and_its_second_copy_deliver_each_email_once(world: Any) -> None:
    h = world
    jobs = _pending(h, 5)
    mail_done = h.counter.done[MAIL_QUEUE]
    dispatch = [Dispatch(MAIL_QUEUE, j.id) for j in jobs]
    # The same batch twice (a redelivery): the second copy finds every job started.
    assert send_jobs(h.broker, dispatch, mail_batch=5) == 5
    assert send_jobs(h.broker, dispatch, mail_batch=5) == 5
    _wait_sent(h, 5)
    _wait_done(h, mail_done + 2)  # both messages acknowledged (the second does nothing)
    assert h.counter.done[MAIL_QUEUE] == mail_done + 2  # two messages carried the ten deliveries
    assert _received(h) == Counter(_keys(h, jobs))  # each once
    assert {j.status for j in h.jobs() if j.id in {x.id for x in jobs}} == {"done"}


def test_run_batch_twice_sends_nothing_the_second_time(world: Any) -> None:
    h = world
    jobs = _pending(h, 3)
    ids = [j.id for j in jobs]
    before = {r.id: r.attempts for r in h.outbox()}
    assert run_batch(h.rt, ids) == []
    assert _received(h) == Counter(_keys(h, jobs))
    assert run_batch(h.rt, ids) == []  # redelivered: every job is finished
    assert run_batch(h.rt, [*ids, *ids]) == []
    assert _received(h) == Counter(_keys(h, jobs))
    rows = {r.id: r for r in h.outbox()}
    assert all(rows[j.outbox_id].status == "sent" for j in jobs)
    # Each delivery counted one attempt (the batch counts them in one statement), the copies none.
    assert [rows[j.outbox_id].attempts - before[j.outbox_id] for j in jobs] == [1, 1, 1]


def test_a_stale_run_failing_before_its_354_never_undoes_another_runs_delivery(world: Any) -> None:
    # Two runs of one job (its queue lease ran out while the first message waited, so the
    # scheduler sent it again): run A started first, run B delivered, then A failed before its
    # point of no return (the circuit open, a refused RCPT). A's "pending" must not overwrite
    # B's "sent": it once did, and the job's next run sent the email a second time.
    h = world
    (job,) = _pending(h, 1)
    (a,) = begin_all(h.rt, [job.id], worker_id=None)
    assert isinstance(a, Started) and isinstance(a.ready, Ready)
    with transaction(h.rt.sessions) as s:
        s.execute(update(Job).where(Job.id == job.id).values(claims=Job.claims + 1))
    assert run_batch(h.rt, [job.id]) == []  # run B delivers
    assert _received(h) == Counter(_keys(h, [job]))
    h.smtp.fail_next(100, code=451, at="rcpt")
    try:
        assert _run(h.rt, a.job, a.ready) == ("retry", [])  # A backs off, as in an outage
    finally:
        h.smtp.reset_faults()
    (row,) = [r for r in h.outbox() if r.id == job.outbox_id]
    assert row.status == "sent"
    h.settle()  # A's back-off made the job due again: its next run finds the email sent
    assert _received(h) == Counter(_keys(h, [job]))  # once
    assert [j.status for j in h.jobs() if j.id == job.id] == ["done"]


def test_an_email_parked_unknown_beside_its_live_run_is_sent_when_that_run_fails_before_the_dot(
    world: Any,
) -> None:
    # Run A marked the row at its 354; run B of the same job (sent again by the scheduler) found
    # it "sending", took A for dead and parked it "unknown" (job dead). A then got a 451 to the
    # body: nothing was delivered, and A knows it. Its "pending" must win over B's guess and its
    # back-off must make the job due again, or the email is lost (CI saw that once, after a
    # change that let A's back-off defer to B).
    h = world
    (job,) = _pending(h, 1)
    (a,) = begin_all(h.rt, [job.id], worker_id=None)
    assert isinstance(a, Started) and isinstance(a.ready, Ready)
    assert mark_sending(h.rt, job.outbox_id)  # A at its 354
    with transaction(h.rt.sessions) as s:
        s.execute(update(Job).where(Job.id == job.id).values(claims=Job.claims + 1))
    assert run_batch(h.rt, [job.id]) == []  # run B parks it
    (row,) = [r for r in h.outbox() if r.id == job.outbox_id]
    assert row.status == "unknown"
    assert [j.status for j in h.jobs() if j.id == job.id] == ["dead"]
    settle(h.rt, job.outbox_id, job.id, "pending", "451 to the body", owned=True)  # A's outcome
    assert later(h.rt, a.job, "TransientSendError: 451", outage=True) == "retry"
    h.settle()
    assert _received(h) == Counter(_keys(h, [job]))  # sent, once
    (row,) = [r for r in h.outbox() if r.id == job.outbox_id]
    assert row.status == "sent"
    assert [j.status for j in h.jobs() if j.id == job.id] == ["done"]


def test_a_batch_with_jobs_that_cannot_run_still_delivers_the_others(
    world: Any, caplog: pytest.LogCaptureFixture
) -> None:
    h = world
    done, alone, broken, fine = _pending(h, 4)
    with transaction(h.rt.sessions) as s:
        s.execute(update(Job).where(Job.id == done.id).values(status="done"))
        s.execute(update(Outbox).where(Outbox.id == done.outbox_id).values(status="sent"))
        s.execute(update(Job).where(Job.id == alone.id).values(alone=True))
        # A row no workflow can decide or render: alone, its job is parked.
        s.execute(update(Outbox).where(Outbox.id == broken.outbox_id).values(kind="no_such_kind"))
    with caplog.at_level(logging.WARNING, logger="dunning.engine.outbox_batch"):
        assert run_batch(h.rt, [done.id, alone.id, 10**9, broken.id, fine.id]) == []
    # The batch failed as a whole and each job started alone: the others met no harm.
    assert _received(h) == Counter(_keys(h, [fine]))
    warnings = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert any("PermanentJobError" in w and "each starts alone" in w for w in warnings), warnings
    assert not any("no_such_kind" in w for w in warnings)  # the type, never the text
    by_id = {j.id: j for j in h.jobs()}
    assert by_id[fine.id].status == "done"
    assert by_id[broken.id].status == "dead" and "no_such_kind" in (by_id[broken.id].last_error or "")
    # The job that must run alone was not touched by the batch: its own message will run it.
    assert (by_id[alone.id].status, by_id[alone.id].runs) == ("claimed", alone.runs)
    assert by_id[done.id].status == "done"


def test_a_batch_out_of_time_gives_the_rest_back(make_world: Any, pg_url: str) -> None:
    # A deadline already passed: each batch sends one email (always at least one) and gives back the rest.
    h = make_world(pg_url, tuning=Tuning(**{**fast_tuning().__dict__, "mail_batch_s": -1.0}))
    jobs = _pending(h, 3)
    back = run_batch(h.rt, [j.id for j in jobs])
    assert [d.job_id for d in back] == [j.id for j in jobs[1:]]
    assert all(d.queue == MAIL_QUEUE and not d.alone for d in back)
    assert _received(h) == Counter(_keys(h, jobs[:1]))
    by_id = {j.id: j for j in h.jobs()}
    for j in jobs[1:]:
        # A new claim the run never started: the next message runs it.
        row = by_id[j.id]
        assert (row.status, row.worker_id, row.claims, row.runs) == (
            "claimed",
            None,
            row.runs + 1,
            j.runs + 1,
        )
    statuses = {r.id: r.status for r in h.outbox()}
    assert [statuses[j.outbox_id] for j in jobs] == ["sent", "pending", "pending"]
    send_jobs(h.broker, back)  # what the actor does with them; the worker's batches go on the same way
    _wait_sent(h, 3)
    assert _received(h) == Counter(_keys(h, jobs))


def test_a_worker_dying_mid_batch_loses_nothing_and_sends_nothing_twice(make_world: Any, pg_url: str) -> None:
    h = make_world(pg_url)
    jobs = _pending(h, 4)
    ids = [j.id for j in jobs]
    dead = "worker-that-dies"
    with transaction(h.rt.sessions) as s:
        beat(s, dead, host="elsewhere", pid=1, at=wall_now())
    # What the dying worker did: start the whole batch, deliver its first email, then nothing more.
    started = begin_all(h.rt, ids, worker_id=dead)
    assert all(isinstance(x, Started) and isinstance(x.ready, Ready) for x in started)
    first = started[0]
    assert isinstance(first, Started) and isinstance(first.ready, Ready)
    assert deliver(h.rt, first.job, first.ready) == ("sent", [])
    with transaction(h.rt.sessions) as s:
        s.execute(
            update(Worker).where(Worker.id == dead).values(heartbeat_at=wall_now() - timedelta(hours=1))
        )
    # The scheduler's recovery (the world's own scheduler may get there first: either releases it).
    recover_dead_workers(h.rt, h.broker)
    _wait_sent(h, 4)
    # The batch message itself, given back to its queue by a recovery, finds nothing left to run.
    mail_done = h.counter.done[MAIL_QUEUE]
    send_jobs(h.broker, [Dispatch(MAIL_QUEUE, i) for i in ids], mail_batch=4)
    _wait_done(h, mail_done + 1)
    assert _received(h) == Counter(_keys(h, jobs))
    with h.rt.sessions() as s:
        rows = s.execute(select(Job).where(Job.id.in_(ids))).scalars().all()
    assert {j.status for j in rows} == {"done"}
    # Exactly the three it never reached were released, to run alone (the crash rule).
    assert sorted(j.id for j in rows if j.alone) == ids[1:]
    with h.rt.sessions() as s:
        assert s.get(Worker, dead) is None  # recovered and forgotten


def test_the_mail_actor_takes_one_job_id_or_a_list_and_refuses_anything_else(dunning_broker: Any) -> None:
    from workers.jobs import MAX_BATCH, _job_ids

    from dunning.contract import InvalidEvent

    assert _job_ids((7,), {}) == 7  # a message from before batches, or a job that runs alone
    assert _job_ids(([7, 8, 9],), {}) == [7, 8, 9]
    for args, kwargs in [
        (([],), {}),
        (([1, "2"],), {}),
        (([1, True],), {}),
        ((list(range(MAX_BATCH + 1)),), {}),
        (([1], [2]), {}),
        (([1],), {"x": 1}),
        (("7",), {}),
    ]:
        with pytest.raises(InvalidEvent):
            _job_ids(args, kwargs)
