"""A backlog longer than the queue lease does not multiply the messages of every job in it."""

from __future__ import annotations

import time
from datetime import UTC, datetime, timedelta

import pytest
from sqlalchemy import select

from dunning.engine.jobs import claim_due, wall_now
from dunning.store.db import make_engine, make_sessionmaker, transaction
from dunning.store.migrate import upgrade
from dunning.store.models import Job

pytestmark = pytest.mark.integration


def test_unstarted_deliveries_back_off_and_a_started_one_resets(db_url: str) -> None:
    engine = make_engine(db_url)
    upgrade(engine)
    sessions = make_sessionmaker(engine)
    now = datetime(2026, 12, 1, 9, 0, tzinfo=UTC)
    with transaction(sessions) as s:
        s.add(
            Job(key="send:x", kind="send_email", queue="mail", status="pending", due_at=now, created_at=now)
        )
    lease = 0.2
    leases: list[float] = []
    for _ in range(5):
        with transaction(sessions) as s:
            got = claim_due(s, now=now, batch=10, queue_lease_s=lease, max_crashes=3)
            assert [d.queue for d in got.dispatch] == ["mail"]  # enqueued again each time the lease ran out
            job = s.execute(select(Job)).scalar_one()
            leases.append((job.lease_until - wall_now()).total_seconds())
        time.sleep(leases[-1] + 0.05)
    # Deliveries that never started: 1, 2, 3, 4 -> lease x1, x1, x2, x4, x8.
    expected = [lease, lease, 2 * lease, 4 * lease, 8 * lease]
    assert all(abs(got - want) < 0.1 for got, want in zip(leases, expected, strict=True)), leases
    with transaction(sessions) as s:
        job = s.execute(select(Job)).scalar_one()
        assert (job.claims, job.runs, job.crashes, job.status) == (5, 0, 0, "claimed")
        # A worker starts it at last and dies: the next delivery gets the plain lease again. The run
        # died beside whatever else its worker ran, so it proves nothing: the job is not counted as a
        # crash, it is sent again to run alone in its process.
        job.runs = job.claims
        job.lease_until = wall_now() - timedelta(seconds=1)
    with transaction(sessions) as s:
        got = claim_due(s, now=now, batch=10, queue_lease_s=lease, max_crashes=3)
        assert [(d.queue, d.alone) for d in got.dispatch] == [("mail", True)]
        assert (got.expired_started, got.expired_unstarted) == (1, 0)
        job = s.execute(select(Job)).scalar_one()
        assert (job.crashes, job.alone, job.claims) == (0, True, 6)
        assert abs((job.lease_until - wall_now()).total_seconds() - lease) < 0.1
    engine.dispose()


def test_parking_a_send_job_that_kept_dying_mid_delivery_marks_its_email_unknown(db_url: str) -> None:
    from dunning.store.models import Outbox

    engine = make_engine(db_url)
    upgrade(engine)
    sessions = make_sessionmaker(engine)
    now = datetime(2026, 12, 1, 9, 0, tzinfo=UTC)
    with transaction(sessions) as s:
        outbox = Outbox(
            key="payment_failed:1:opened",
            kind="payment_failed",
            case_id=1,
            customer_id="cus_1",
            to_email="jane@example.com",
            locale="en",
            message_id="<m@x>",
            status="sending",  # a run committed the point of no return, then its worker died
            send_after=now,
            created_at=now,
        )
        s.add(outbox)
        s.flush()
        s.add(
            Job(
                key="send:payment_failed:1:opened",
                kind="send_email",
                queue="mail",
                outbox_id=outbox.id,
                status="claimed",
                due_at=now,
                created_at=now,
                claims=4,
                runs=4,
                crashes=2,  # two runs died alone already; this third one did too
                alone=True,
                lease_until=wall_now() - timedelta(seconds=1),
            )
        )
    with transaction(sessions) as s:
        got = claim_due(s, now=now, batch=10, queue_lease_s=5, max_crashes=3)
        assert (got.dispatch, got.parked) == ([], 1)
    with sessions() as s:
        job = s.execute(select(Job)).scalar_one()
        email = s.execute(select(Outbox)).scalar_one()
        assert (job.status, job.crashes) == ("dead", 3)
        assert email.status == "unknown" and "mail server" in (email.last_error or "")
    engine.dispose()
