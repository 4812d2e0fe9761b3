"""The group-committed sending mark and outcome (engine/outbox_commits.py), on SQLite and PostgreSQL.

Threads of one process submit at once, as a worker's threads do; the rows are
real outbox rows written by the product (a failed payment's first notice).
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from typing import Any

from sqlalchemy import update

from dunning.engine.outbox_commits import Settle, _write_many, _writes, mark_sending, settle
from dunning.store.db import transaction
from dunning.store.models import Job, Outbox


def _together(n: int, work: Callable[[int], Any]) -> list[Any]:
    """Run ``work(i)`` in ``n`` threads released at the same moment; their results (or errors)."""
    gate = threading.Barrier(n)
    results: list[Any] = [None] * n

    def run(i: int) -> None:
        gate.wait()
        try:
            results[i] = work(i)
        except Exception as exc:  # returned to the test
            results[i] = exc

    threads = [threading.Thread(target=run, args=(i,)) for i in range(n)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    return results


def test_many_runs_marking_one_row_at_once_exactly_one_owns_it(world) -> None:
    h = world
    (row,) = h.sent_failure_emails(1)
    with transaction(h.rt.sessions) as s:
        s.execute(update(Outbox).where(Outbox.id == row.id).values(status="pending"))
    batches = _writes.batches
    results = _together(8, lambda _: mark_sending(h.rt, row.id))
    assert results.count(True) == 1 and results.count(False) == 7, results
    assert _writes.batches > batches
    (after,) = [r for r in h.outbox() if r.id == row.id]
    assert after.status == "sending"


def test_outcomes_of_several_threads_are_all_written(world) -> None:
    h = world
    rows = h.sent_failure_emails(3)
    jobs = {j.outbox_id: j.id for j in h.jobs() if j.kind == "send_email"}
    with transaction(h.rt.sessions) as s:
        s.execute(
            update(Outbox).where(Outbox.id.in_([r.id for r in rows])).values(status="sending", sent_at=None)
        )
        s.execute(update(Job).where(Job.id.in_(list(jobs.values()))).values(status="claimed"))
    outcomes = [("sent", None), ("unknown", "parked: lost after the dot"), ("pending", "451 try later")]

    def work(i: int) -> None:
        status, error = outcomes[i]
        settle(h.rt, rows[i].id, jobs[rows[i].id], status, error)

    items = _writes.items
    assert _together(3, work) == [None, None, None]
    assert _writes.items == items + 3
    by_id = {r.id: r for r in h.outbox()}
    sent, unknown, pending = (by_id[r.id] for r in rows)
    assert (sent.status, sent.last_error) == ("sent", None) and sent.sent_at is not None
    assert (unknown.status, unknown.last_error) == ("unknown", "parked: lost after the dot")
    assert (pending.status, pending.last_error) == ("pending", "451 try later")
    job_status = {j.id: j.status for j in h.jobs()}
    # As jobs.finish(): sent -> done, unknown -> dead (parked for ops), pending -> untouched (backs off).
    assert [job_status[jobs[r.id]] for r in rows] == ["done", "dead", "claimed"]


def test_an_outcome_is_written_only_over_the_state_its_own_run_left(world) -> None:
    h = world
    rows = h.sent_failure_emails(4)
    jobs = {j.outbox_id: j.id for j in h.jobs() if j.kind == "send_email"}
    start = ["sent", "sending", "unknown", "pending"]
    with transaction(h.rt.sessions) as s:
        for row, status in zip(rows, start, strict=True):
            s.execute(update(Outbox).where(Outbox.id == row.id).values(status=status, last_error=None))
    # (status, error, owned): a run that failed before its 354 owned nothing; one that marked
    # the row owns it while it is sending, or unknown (parked by a run that took it for dead).
    outcomes = [
        ("pending", "451 before the 354", False),  # over another run's "sent": ignored
        ("failed", "550 to RCPT", False),  # over another run's "sending": ignored
        ("pending", "451 to the body", True),  # over "unknown": the marker knows better
        ("pending", "circuit open", False),  # over "pending": the error is recorded
    ]
    for row, (status, error, owned) in zip(rows, outcomes, strict=True):
        settle(h.rt, row.id, jobs[row.id], status, error, owned=owned)
    by_id = {r.id: r for r in h.outbox()}
    assert [(by_id[r.id].status, by_id[r.id].last_error) for r in rows] == [
        ("sent", None),
        ("sending", None),
        ("pending", "451 to the body"),
        ("pending", "circuit open"),
    ]


def test_one_group_with_several_outcomes_of_each_kind_is_written_in_one_transaction(world) -> None:
    # Deterministic, unlike the threads above: every statement of the outcome write runs as an
    # executemany of several rows (a status condition written as an IN list once made PostgreSQL's
    # executemany refuse it, failing the whole group).
    h = world
    rows = h.sent_failure_emails(8)
    jobs = {j.outbox_id: j.id for j in h.jobs() if j.kind == "send_email"}
    with transaction(h.rt.sessions) as s:
        s.execute(update(Outbox).where(Outbox.id.in_([r.id for r in rows[:6]])).values(status="sending"))
        s.execute(update(Outbox).where(Outbox.id.in_([r.id for r in rows[6:]])).values(status="pending"))
    kinds = [
        ("sent", None, True),
        ("sent", None, True),
        ("unknown", "lost after the dot", True),
        ("unknown", "lost after the dot", True),
        ("pending", "451 to the body", True),
        ("failed", "554 to the body", True),
        ("pending", "circuit open", False),
        ("failed", "550 to RCPT", False),
    ]
    now = h.rt.clock.now()
    items = [
        Settle(h.rt, row.id, jobs[row.id], status, error, now, owned)
        for row, (status, error, owned) in zip(rows, kinds, strict=True)
    ]
    assert _write_many(items) == [None] * len(items)
    by_id = {r.id: r for r in h.outbox()}
    assert [by_id[r.id].status for r in rows] == [k[0] for k in kinds]
    job_status = {j.id: j.status for j in h.jobs()}
    assert [job_status[jobs[r.id]] for r in rows][2:4] == ["dead", "dead"]
