"""One test per mistake listed at the end of DESIGN.md ("Mistakes others made that we must not").

End to end on real parts: Redis, SMTP (aiosmtpd), SQLite and PostgreSQL, the sandbox billing
API, an in-process Dramatiq worker and scheduler; simulated clock starting 2026-11-02 10:00 UTC.
"""

from __future__ import annotations

import itertools
import threading
import uuid
from collections import Counter
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from typing import Any

import dramatiq
import pytest
from sqlalchemy import func, select, update
from tests.support.harness import START, Harness
from tests.support.queued import queued_job_ids

from dunning.broker.names import MAIL_QUEUE
from dunning.contract import parse_event
from dunning.engine.ingest import ingest
from dunning.engine.jobs import claim_due
from dunning.engine.runner import run_job
from dunning.engine.scheduler import tick
from dunning.store.db import transaction
from dunning.store.models import Job, Outbox, ProcessedEvent, Subscription

pytestmark = pytest.mark.integration

DAY = timedelta(days=1)
GRACE = timedelta(days=14)


def _words(text: str) -> str:
    """Text with line wrapping undone."""
    return " ".join(text.split())


def _text(mail: Any) -> str:
    return _words(mail.message.get_body(preferencelist=("plain",)).get_content())


def _job(h: Harness, kind: str, status: str | None = None) -> Job:
    jobs = [j for j in h.jobs(status) if j.kind == kind]
    assert len(jobs) == 1, [(j.key, j.status) for j in jobs]
    return jobs[0]


# -- access cut on the first failure -------------------------------------------------------------


def test_access_is_not_cut_on_the_first_failure(world) -> None:
    h = world
    h.customer()
    h.fail(code="insufficient_funds", succeed_on_attempt=0)
    h.settle()
    assert h.billing_actions() == []
    assert h.case().status == "open"
    assert h.sandbox.state.subscription("sub_1").access == "active"

    # One hour before the end of grace: still no suspension, whatever the retries did.
    h.advance(GRACE - timedelta(hours=1), step=timedelta(days=4))
    assert h.billing_actions() == []
    assert h.case().status == "open"
    assert h.sandbox.state.subscription("sub_1").access == "active"

    h.advance(timedelta(hours=1))
    assert h.billing_actions() == ["suspend"]
    case = h.case()
    assert case.status == "suspended"
    assert case.suspended_at == START + GRACE
    assert h.sandbox.state.subscription("sub_1").access == "suspended"

    # Later steps (before the end action on day 21) never suspend again.
    h.advance(timedelta(days=6), step=timedelta(days=3))
    assert h.billing_actions() == ["suspend"]


# -- retries that go on after the subscription was cancelled ------------------------------------


def test_no_retries_or_emails_after_the_subscription_is_canceled(world) -> None:
    h = world
    h.customer()
    h.fail(code="insufficient_funds", succeed_on_attempt=0)
    h.settle()
    h.advance(timedelta(days=2), step=DAY)
    assert len(h.pay_calls()) == 1
    emails = h.notices()
    assert emails == ["payment_failed"]

    h.cancel()
    h.settle()
    case = h.case()
    assert case.status == "closed"
    assert case.outcome == "subscription_canceled"
    assert [j.key for j in h.jobs("pending") if j.case_id == case.id] == []

    h.advance(timedelta(days=25), step=timedelta(days=5))
    assert len(h.pay_calls()) == 1
    assert h.notices() == emails
    assert h.billing_actions() == []  # not suspended nor canceled again by us
    assert h.case().status == "closed"


# -- a "payment failed" email to a customer with no payment method at all ------------------------


def test_customer_without_payment_method_is_asked_to_add_one_and_never_charged(world) -> None:
    h = world
    h.customer(pm=False)
    h.fail(code="insufficient_funds", succeed_on_attempt=0)
    h.settle()

    case = h.case()
    assert case.has_payment_method is False
    [row] = h.outbox()
    assert row.kind == "payment_failed"
    assert "Add a payment method" in row.subject
    assert "no payment method on file" in _words(row.text)
    assert "try again" not in _words(row.text).lower()
    [mail] = h.smtp.messages
    body = _text(mail)
    assert "no payment method on file" in body
    assert "try again" not in body.lower()
    assert not [j for j in h.jobs() if j.kind == "retry"]

    h.advance(timedelta(days=15), step=timedelta(days=3))
    assert h.pay_calls() == []
    assert h.billing_actions() == ["suspend"]
    # No later email promises a retry either.
    for m in h.smtp.messages:
        assert "try again" not in _text(m).lower(), str(m["X-Dunning-Kind"])


# -- "renewed" and "payment failed" emails for the same renewal ---------------------------------


def test_late_failure_for_an_already_paid_invoice_sends_nothing(world) -> None:
    h = world
    h.customer()
    h.client.invoice_paid(invoice_id="in_1", subscription_id="sub_1", amount_minor=4900, currency="EUR")
    h.sent_events += 1
    h.settle()

    h.fail("in_1", code="insufficient_funds")
    h.settle()
    assert h.cases() == 0
    assert h.outbox() == []
    assert h.smtp.messages == []
    assert any("late failure for paid invoice in_1 ignored" in line for line in h.timeline())

    h.advance(timedelta(days=3), step=DAY)
    assert h.pay_calls() == []
    assert h.smtp.messages == []


# -- an attempt counter off by one, so access ended a retry early --------------------------------


def test_exactly_five_charges_the_last_on_day_12_before_suspension(world) -> None:
    h = world
    h.customer()
    h.fail(code="insufficient_funds", succeed_on_attempt=0)
    h.settle()
    h.advance(timedelta(days=15), step=DAY)

    attempts = h.attempts()
    assert [a.attempt_no for a in attempts] == [1, 2, 3, 4, 5]
    assert [a.requested_at for a in attempts] == [START + timedelta(days=d) for d in (1, 3, 5, 7, 12)]
    assert all(a.status == "failed" for a in attempts)
    case = h.case()
    assert case.attempts_made == 5
    assert case.scheduled_retries_made == 5
    assert case.suspended_at == START + GRACE
    assert attempts[-1].requested_at < case.suspended_at
    # The sandbox saw five charges, each one before the suspension call.
    calls = h.sandbox.state.calls()
    paths = [c.path for c in calls if not c.replay]
    assert paths.count("/invoices/in_1/pay") == 5
    suspend_at = paths.index("/subscriptions/sub_1/suspend")
    assert max(i for i, p in enumerate(paths) if p == "/invoices/in_1/pay") < suspend_at
    assert any("retry 5 declined" in line and "no retry left" in line for line in h.timeline())


# -- grace periods only re-checked at the next retry instead of on their own timer ---------------


def test_hard_decline_schedules_no_retry_but_grace_still_ends_on_day_14(world) -> None:
    h = world
    h.customer()
    h.fail(code="stolen_card", succeed_on_attempt=0)
    h.settle()
    assert not [j for j in h.jobs() if j.kind == "retry"]
    assert h.case().needs_new_payment_method is True
    assert h.notices() == ["payment_failed"]

    h.advance(GRACE - timedelta(hours=1), step=timedelta(days=3))
    assert h.billing_actions() == []
    h.advance(timedelta(hours=1))
    assert h.pay_calls() == []
    assert h.billing_actions() == ["suspend"]
    case = h.case()
    assert case.status == "suspended"
    assert case.suspended_at == START + GRACE


# -- duplicate emails when a job ran twice ------------------------------------------------------


def test_duplicate_event_id_changes_nothing(world) -> None:
    h = world
    h.customer()
    # Two deliveries at once (they may race), then a late redelivery.
    h.fail(code="insufficient_funds", event_id="evt_dup_1")
    h.fail(code="insufficient_funds", event_id="evt_dup_1")
    h.settle()
    h.fail(code="insufficient_funds", event_id="evt_dup_1")
    h.settle()

    assert h.cases() == 1
    assert h.notices() == ["payment_failed"]
    assert len(h.outbox()) == 1
    with h.rt.sessions() as s:
        assert s.execute(select(func.count()).where(ProcessedEvent.id == "evt_dup_1")).scalar_one() == 1
    h.advance(DAY)
    assert len(h.pay_calls()) == 1


def test_a_job_run_twice_has_one_effect(world) -> None:
    h = world
    h.customer()
    h.fail(code="insufficient_funds", succeed_on_attempt=0)
    h.settle()
    h.advance(DAY, step=DAY)
    assert h.notices() == ["payment_failed"]
    assert len(h.pay_calls()) == 1

    send = _job(h, "send_email", "done")
    retry = _job(h, "retry", "done")
    # A second delivery of a finished job's message does nothing.
    assert run_job(h.rt, send.id)[0] == "not_runnable"
    assert run_job(h.rt, retry.id)[0] == "not_runnable"

    # Even a second claim of a finished job (as if the scheduler re-enqueued it) has no new effect.
    with transaction(h.rt.sessions) as s:
        s.execute(
            update(Job)
            .where(Job.id.in_([send.id, retry.id]))
            .values(status="claimed", claims=Job.claims + 1, lease_until=None)
        )
    assert run_job(h.rt, send.id)[0] == "already_sent"
    run_job(h.rt, retry.id)
    h.settle()
    assert h.notices() == ["payment_failed"]
    assert len(h.pay_calls()) == 1
    assert len(h.attempts()) == 1
    # The schedule is intact: the day-3 retry still happens, once.
    h.advance(timedelta(days=2), step=DAY)
    assert [a.requested_at for a in h.attempts()] == [START + DAY, START + 3 * DAY]


# -- duplicate emails when two schedulers overlapped (PostgreSQL: SKIP LOCKED) -------------------


@pytest.fixture
def pg_idle(pg_url: str, make_world: Callable[..., Any]) -> Harness:
    """A harness on PostgreSQL with no worker or scheduler running: the test drives them."""
    return make_world(pg_url, start_workers=False)


def _envelope(type_: str, data: dict[str, Any]) -> dict[str, Any]:
    return {
        "id": f"evt_{uuid.uuid4().hex}",
        "type": type_,
        "occurred_at": datetime.now(UTC).isoformat(),
        "data": data,
    }


def test_two_schedulers_overlapping_enqueue_each_job_once(pg_idle: Harness) -> None:
    h = pg_idle
    n = 30
    # Customers in Auckland (23:00 local at the start): every payment_failed email waits for morning,
    # so each is a pending job that the schedulers will find due at once.
    for i in range(n):
        cid, sub, inv = f"cus_{i}", f"sub_{i}", f"in_{i}"
        h.sandbox.state.add_invoice(
            inv,
            subscription_id=sub,
            customer_id=cid,
            amount_minor=4900,
            currency="EUR",
            decline_code="insufficient_funds",
            succeed_on_attempt=0,
        )
        events = [
            _envelope(
                "customer.upserted",
                {"customer": {"id": cid, "email": f"{cid}@example.com", "timezone": "Pacific/Auckland"}},
            ),
            _envelope(
                "subscription.upserted",
                {
                    "subscription": {
                        "id": sub,
                        "customer_id": cid,
                        "plan": "pro",
                        "status": "active",
                        "amount_minor": 4900,
                        "currency": "EUR",
                        "interval": "month",
                        "current_period_end": (START + timedelta(days=30)).isoformat(),
                        "payment_method": {"present": True, "brand": "visa", "last4": "4242"},
                    }
                },
            ),
            _envelope(
                "invoice.payment_failed",
                {
                    "invoice": {
                        "id": inv,
                        "subscription_id": sub,
                        "customer_id": cid,
                        "amount_minor": 4900,
                        "currency": "EUR",
                    },
                    "decline_code": "insufficient_funds",
                },
            ),
        ]
        for env in events:
            _, dispatch = ingest(h.rt, parse_event(env))
            assert dispatch == []  # nothing due now: no job was claimed at insert
    rows = h.outbox()
    assert len(rows) == n
    wake = max(r.send_after for r in rows)
    assert wake > START
    h.rt.clock.advance(wake - START)  # type: ignore[attr-defined]
    with h.rt.sessions() as s:
        due = s.execute(
            select(func.count()).where(Job.status == "pending", Job.due_at <= h.rt.clock.now())
        ).scalar_one()
    assert due == n

    barrier = threading.Barrier(2)
    enqueued: list[int] = []
    errors: list[BaseException] = []

    def scheduler() -> None:
        try:
            barrier.wait()
            total, idle = 0, 0
            while idle < 3:
                got = tick(h.rt, h.broker, batch=4).enqueued
                total += got
                idle = idle + 1 if got == 0 else 0
            enqueued.append(total)
        except BaseException as exc:  # pragma: no cover - reported below
            errors.append(exc)

    threads = [threading.Thread(target=scheduler) for _ in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(30)
    assert errors == []
    assert sum(enqueued) == n
    mail_jobs = [j for j in h.jobs() if j.kind == "send_email"]
    assert len(mail_jobs) == n
    assert Counter(j.claims for j in mail_jobs) == Counter({1: n})
    # Each job in exactly one message on the queue (a message carries one id, or a batch of them).
    assert sorted(queued_job_ids(h.broker.client, MAIL_QUEUE)) == sorted(j.id for j in mail_jobs)

    worker = dramatiq.Worker(h.broker, worker_threads=4, worker_timeout=50)
    worker.start()
    try:
        h.settle()
    finally:
        worker.stop(timeout=10_000)
    messages = h.smtp.messages
    assert len(messages) == n
    assert Counter(m.rcpt_tos for m in messages).most_common(1)[0][1] == 1
    assert len({str(m["Message-ID"]) for m in messages}) == n
    with h.rt.sessions() as s:
        assert set(s.execute(select(Outbox.status)).scalars()) == {"sent"}


# -- a scheduler lock never released ------------------------------------------------------------


def test_a_claim_by_a_dead_scheduler_is_recovered_after_its_lease(world) -> None:
    h = world
    h.customer()
    h.fail(code="insufficient_funds", succeed_on_attempt=0)
    h.settle()
    retry = _job(h, "retry", "pending")
    assert retry.due_at == START + DAY

    # A scheduler claims the day-1 retry (committed) and dies before enqueueing it. (Its lease is
    # shortened from the harness's 5 s to keep the test quick; the claimer sets the lease.)
    with transaction(h.rt.sessions) as s:
        claimed = claim_due(
            s, now=retry.due_at, batch=100, queue_lease_s=1.0, max_crashes=h.rt.tuning.max_crashes
        )
    assert [d.job_id for d in claimed.dispatch] == [retry.id]
    h.rt.clock.advance(DAY)  # type: ignore[attr-defined]
    # Nothing runs it while the dead scheduler's lease holds...
    assert h.pay_calls() == []
    assert next(j for j in h.jobs() if j.id == retry.id).status == "claimed"
    # ...then the live scheduler takes it over once the lease runs out; settle waits for that.
    h.settle(timeout=30)

    job = next(j for j in h.jobs() if j.id == retry.id)
    assert job.status == "done"
    assert job.claims == 2
    assert job.runs == 1
    assert [c.idempotency_key for c in h.pay_calls()] == ["dunning:in_1:attempt-1"]
    assert len(h.attempts()) == 1


# -- blocking a whole account when one subscription is unpaid -----------------------------------


def test_one_unpaid_subscription_does_not_block_the_other(world) -> None:
    h = world
    h.customer()
    h.client.subscription_upserted(
        {
            "id": "sub_2",
            "customer_id": "cus_1",
            "plan": "team",
            "status": "active",
            "amount_minor": 9900,
            "currency": "EUR",
            "interval": "month",
            "current_period_end": (START + timedelta(days=30)).isoformat(),
        }
    )
    h.sent_events += 1
    h.settle()
    h.fail("in_1", sub="sub_1", code="insufficient_funds", succeed_on_attempt=0)
    h.settle()
    # The other subscription renews fine meanwhile; that does not settle the unpaid one.
    h.sandbox.state.add_invoice(
        "in_2", subscription_id="sub_2", customer_id="cus_1", amount_minor=9900, currency="EUR"
    )
    h.advance(timedelta(days=2), step=DAY)
    h.paid("in_2", sub="sub_2", amount=9900)
    h.settle()
    assert h.case("in_1").status == "open"
    assert h.cases() == 1

    h.advance(timedelta(days=13), step=timedelta(days=3))
    assert h.billing_actions("sub_1") == ["suspend"]
    assert h.billing_actions("sub_2") == []
    assert h.sandbox.state.subscription("sub_2").access == "active"
    with h.rt.sessions() as s:
        assert s.get(Subscription, "sub_1").access == "suspended"
        assert s.get(Subscription, "sub_2").access == "active"
    assert h.pay_calls("in_2") == []


# -- a burst of catch-up charges after recovery -------------------------------------------------


def test_no_burst_of_catch_up_charges_after_a_long_stop(world) -> None:
    h = world
    h.customer()
    h.fail(code="insufficient_funds", succeed_on_attempt=0)
    h.settle()
    # Time stops (outage) and comes back ten days later in one jump: four retries were due.
    h.advance(timedelta(days=10), step=timedelta(days=10))
    attempts = h.attempts()
    assert len(attempts) == 1
    assert attempts[0].requested_at == START + timedelta(days=10)
    assert len(h.pay_calls()) == 1
    nxt = _job(h, "retry", "pending")
    assert nxt.due_at >= START + timedelta(days=10, hours=20)

    # Catching up goes on at the policy's minimum gap, never past the end of grace.
    h.advance(timedelta(days=5), step=timedelta(hours=12))
    times = [a.requested_at for a in h.attempts()]
    assert len(times) >= 2
    assert all(b - a >= timedelta(hours=20) for a, b in itertools.pairwise(times))
    assert all(t < START + GRACE for t in times)
    assert h.billing_actions() == ["suspend"]


# -- never at 3 a.m. their time -----------------------------------------------------------------


def test_email_due_in_quiet_hours_waits_for_the_morning(world) -> None:
    h = world
    # 10:00 UTC is 19:00 in Tokyo: not quiet, the email goes at once.
    h.customer("cus_1", tz="Asia/Tokyo")
    h.fail("in_1", sub="sub_1", cid="cus_1", code="insufficient_funds")
    h.settle()
    assert h.notices("cus_1@example.com") == ["payment_failed"]

    # 18:00 UTC is 03:00 in Tokyo: the email waits until 08:00 Tokyo (23:00 UTC).
    h.customer("cus_2", sub="sub_2", tz="Asia/Tokyo")
    h.advance(timedelta(hours=8))
    assert h.rt.clock.now() == START.replace(hour=18)
    h.fail("in_2", sub="sub_2", cid="cus_2", code="insufficient_funds")
    h.settle()
    assert h.cases() == 2
    assert h.notices("cus_2@example.com") == []
    [row] = [r for r in h.outbox() if r.customer_id == "cus_2"]
    assert row.status == "pending"
    assert row.send_after == START.replace(hour=23)

    h.advance(timedelta(hours=4, minutes=59), step=timedelta(hours=2))
    assert h.notices("cus_2@example.com") == []
    h.advance(timedelta(minutes=1))
    assert h.notices("cus_2@example.com") == ["payment_failed"]
    [mail] = [m for m in h.smtp.messages if "cus_2@example.com" in m.rcpt_tos]
    assert str(mail["X-Dunning-Notice"]).startswith("payment_failed:")
    h.advance(timedelta(hours=6))
    assert h.notices("cus_2@example.com") == ["payment_failed"]
    assert h.notices("cus_1@example.com") == ["payment_failed"]
