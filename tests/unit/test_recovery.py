"""Crash recovery rules: which workers are dead, which runs to release, and what a death counts."""

from __future__ import annotations

import threading
import time
from datetime import UTC, datetime, timedelta

from dunning.broker.liveness import RunLock
from dunning.engine.recovery import Beat, Run, after_death, dead_workers, stranded_runs, unsent

NOW = datetime(2026, 12, 4, 9, 0, tzinfo=UTC)


def ago(seconds: float) -> datetime:
    return NOW - timedelta(seconds=seconds)


def run(job_id: int, worker: str | None, *, claims: int = 1, runs: int = 1, alone: bool = False) -> Run:
    return Run(job_id, worker, claims, runs, alone, 0)


def test_a_worker_is_dead_once_silent_for_the_threshold_and_not_a_moment_before() -> None:
    beats = [Beat("fresh", ago(1)), Beat("slow", ago(9.9)), Beat("gone", ago(10)), Beat("long", ago(600))]
    assert dead_workers(beats, now=NOW, dead_after_s=10) == ["long", "gone"]
    assert dead_workers(beats, now=NOW + timedelta(seconds=0.1), dead_after_s=10) == ["long", "gone", "slow"]
    assert dead_workers([], now=NOW, dead_after_s=10) == []


def test_only_started_unfinished_runs_of_dead_workers_are_released() -> None:
    beats = [Beat("alive", ago(2)), Beat("dead", ago(30))]
    runs = [
        run(1, "dead"),  # started by the dead worker: released
        run(2, "alive"),  # its worker still beats: a slow run, left alone
        run(3, None, claims=2, runs=1),  # sent again after its run died; the new delivery not started
        run(4, None, runs=0),  # never started anywhere
        run(5, "unknown"),  # no heartbeat row at all: left to its lease
        run(6, "dead", claims=3, runs=3, alone=True),
        # A delivery was sent again while an older copy was on its way, and the older one started:
        # runs < claims, yet a run of the dead worker's is in progress.
        run(7, "dead", claims=3, runs=2),
        run(8, "dead", runs=0),  # created already due by the dead worker: not a run (see below)
    ]
    released = stranded_runs(runs, beats, now=NOW, dead_after_s=10)
    assert [r.job_id for r in released] == [1, 6, 7]
    # The same runs, judged a few seconds later, once the slow worker has gone quiet too.
    later = stranded_runs(runs, beats, now=NOW + timedelta(seconds=8), dead_after_s=10)
    assert [r.job_id for r in later] == [1, 2, 6, 7]


def test_jobs_a_dead_worker_created_already_due_are_sent_in_its_stead() -> None:
    runs = [
        run(1, "dead", runs=0),  # its creator was to send its message after commit
        run(2, "alive", runs=0),  # its creator lives: it sends it (or has)
        run(3, None, runs=0),  # sent by the scheduler: the lease covers it
        run(4, "dead"),  # a run, not a send
    ]
    assert [r.job_id for r in unsent(runs, {"dead"})] == [1]
    assert [r.job_id for r in runs if r.started] == [4]


def test_a_death_beside_other_work_only_marks_the_work_to_run_alone() -> None:
    for crashes in (0, 2, 7):
        verdict = after_death(ran_alone=False, crashes=crashes, max_crashes=3)
        assert (verdict.park, verdict.alone, verdict.crashes) == (False, True, crashes)


def test_deaths_while_running_alone_are_counted_and_park_at_the_limit() -> None:
    first = after_death(ran_alone=True, crashes=0, max_crashes=3)
    second = after_death(ran_alone=True, crashes=first.crashes, max_crashes=3)
    third = after_death(ran_alone=True, crashes=second.crashes, max_crashes=3)
    assert [(v.park, v.crashes) for v in (first, second, third)] == [(False, 1), (False, 2), (True, 3)]
    assert after_death(ran_alone=True, crashes=0, max_crashes=1).park


def test_the_run_lock_lets_an_alone_run_start_only_when_nothing_else_runs_and_go_first() -> None:
    lock = RunLock()
    lock.acquire_shared()
    lock.acquire_shared()
    events: list[str] = []

    def alone() -> None:
        lock.acquire_exclusive()
        events.append("alone starts")
        time.sleep(0.05)
        events.append("alone ends")
        lock.release_exclusive()

    def late_shared() -> None:
        lock.acquire_shared()
        events.append("late shared starts")
        lock.release_shared()

    t_alone = threading.Thread(target=alone)
    t_alone.start()
    deadline = time.monotonic() + 10
    while lock.state()[2] == 0 and time.monotonic() < deadline:  # the alone run is waiting
        time.sleep(0.005)
    t_late = threading.Thread(target=late_shared)
    t_late.start()
    time.sleep(0.05)
    assert events == []  # two runs still hold the lock: neither the alone run nor a newcomer starts
    events.append("shared runs end")
    lock.release_shared()
    lock.release_shared()
    t_alone.join(10)
    t_late.join(10)
    # The newcomer arrived while the alone run waited: it waits for the alone run to end.
    assert events == ["shared runs end", "alone starts", "alone ends", "late shared starts"]
    assert lock.state() == (0, False, 0)
