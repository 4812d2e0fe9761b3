"""Redis loses everything in the middle of a run: the database's schedule brings the work back.

Real ``dunning worker`` processes, PostgreSQL, an SMTP server and the sandbox billing
API (see :mod:`tests.support.scenario`). Redis is restarted with its data wiped; the
workers, the scheduler and the producer reconnect by themselves (same port).
"""

from __future__ import annotations

import time
from pathlib import Path

import pytest
from tests.support.queued import queued_job_ids, queued_messages
from tests.support.scenario import Scenario

from dunning.broker.names import EVENTS_QUEUE, JOBS_QUEUE, MAIL_QUEUE

pytestmark = [pytest.mark.integration, pytest.mark.slow]


def _queued_event_ids(client) -> set[str]:
    """Ids of the events waiting in the billing_events list (not yet fetched by any worker)."""
    return {m["args"][0]["id"] for m in queued_messages(client, EVENTS_QUEUE)}


def _queued_job_ids(client) -> set[int]:
    """Ids of the jobs whose messages wait in Redis (not yet fetched by any worker)."""
    return set(queued_job_ids(client, JOBS_QUEUE, MAIL_QUEUE))


def test_redis_wiped_mid_run_claimed_jobs_come_back_through_leases(
    pg_url: str, redis_server, smtp, tmp_path: Path, dunning_broker
) -> None:
    broker, _ = dunning_broker
    client = broker.client  # type: ignore[attr-defined]
    with Scenario(
        db_url=pg_url,
        redis_url=redis_server.url,
        smtp=smtp,
        broker=broker,
        home=tmp_path,
        # Two threads prefetch 4 messages per process, fewer than a busy day claims: the rest of
        # the day's messages wait in Redis, where the wipe takes them.
        threads=2,
    ) as sc:
        sc.setup_customers()
        sc.send_failures()
        sc.settle()
        # Slow charges keep the day's work in flight when Redis goes.
        sc.sandbox.state.set_faults(latency_ms=300)
        lost: list[set[int]] = []
        running_at_wipe: list[int] = []

        def wiped() -> bool:
            # Wipe while workers are on some of the day's jobs and others still wait in Redis.
            if not (any(j.runs > 0 for j in sc.jobs(status="claimed")) and _queued_job_ids(client)):
                return False
            # Frozen, no worker can fetch between the snapshot and the wipe: what the snapshot
            # lists is exactly what the wipe loses (checked again: a fetch may have emptied it).
            with sc.workers.frozen():
                queued = _queued_job_ids(client)
                if not queued:
                    return False
                running_at_wipe.append(sum(1 for j in sc.jobs(status="claimed") if j.runs > 0))
                redis_server.restart(wipe=True)
            lost.append(queued)
            return True

        def wipe() -> None:
            sc.wait_until("the day's jobs running with others still queued in Redis", wiped, 30)

        # Day 1: every soft decline is retried; day 14: suspensions, billing calls and emails.
        sc.walk(at={1: wipe, 14: wipe})
        claims = {j.id: j.claims for j in sc.jobs()}
        f = sc.verify()
        print(
            f.line(
                "redis wiped mid-run",
                wipes=len(lost),
                jobs_lost_at_wipes=sum(map(len, lost)),
                running=sum(running_at_wipe),
                jobs_reclaimed_after_lease=sum(1 for c in claims.values() if c > 1),
                kills=sc.workers.kills,
                pool_restarts=sc.workers.restarts,
            )
        )
    assert not f.problems, f.problems
    assert len(lost) == 2 and all(lost), lost
    # Every job whose message the wipes took was claimed again once its lease ran out, and
    # verify() found its effect exactly once.
    assert {job: claims[job] for wiped in lost for job in wiped if claims[job] < 2} == {}


def test_redis_wiped_with_events_queued_producer_resends_unacknowledged(
    pg_url: str, redis_server, smtp, tmp_path: Path, dunning_broker
) -> None:
    broker, _ = dunning_broker
    with Scenario(
        db_url=pg_url,
        redis_url=redis_server.url,
        smtp=smtp,
        broker=broker,
        home=tmp_path,
        threads=2,  # prefetches 4 messages per process: the rest of the backlog stays in Redis
    ) as sc:
        sc.setup_customers()
        # Queue every failure while the pool is down, so that Redis holds a backlog when it goes.
        with sc.workers_stopped():
            failures = sc.send_failures()
        applied = lambda: len(set(failures) & sc.processed_ids())  # noqa: E731
        sc.wait_until("a fifth of the failures applied", lambda: applied() >= max(1, len(failures) // 5))
        # Frozen, no worker can fetch between the snapshot and the wipe: the queued events are lost.
        with sc.workers.frozen():
            queued = _queued_event_ids(broker.client)  # type: ignore[attr-defined]
            queued_at_wipe = len(queued)
            applied_at_wipe = applied()
            redis_server.restart(wipe=True)

        # The billing system re-sends every event we have not acknowledged (not in processed_events),
        # at once and then every 2 s, like a webhook sender retrying: duplicates race in-flight copies.
        resent = 0
        lost: set[str] = set()
        last = 0.0

        def producer() -> None:
            nonlocal resent, last
            if time.monotonic() - last < 2.0:
                return
            missing = set(sc.events) - sc.processed_ids()
            if not last:
                # Queued at the wipe and still not applied: only the re-send can bring these back.
                lost.update(queued & missing)
            last = time.monotonic()
            for event_id in sorted(missing):
                sc.resend(event_id)
                resent += 1

        sc.settle(poll=producer)
        sc.walk()
        f = sc.verify()
        print(
            f.line(
                "redis wiped with events queued",
                failure_events=len(failures),
                applied_at_wipe=applied_at_wipe,
                queued_at_wipe=queued_at_wipe,
                resent=resent,
            )
        )
    assert not f.problems, f.problems
    assert queued_at_wipe > 0, "nothing was queued when Redis was wiped"
    # The wipe did take events that only the producer's re-send brought back, and verify() found
    # every event applied exactly once.
    assert lost, "every event queued at the wipe was fetched before it: nothing was lost"
