"""Recovery end to end: a card update, an out-of-band payment or a scripted retry closes the case at once.

Real Redis, SMTP (aiosmtpd), SQLite and PostgreSQL, the sandbox billing API; simulated clock.
The harness starts at 10:00 UTC and a case opened then has its jobs due on whole days,
so stepping the clock one day at a time runs every job exactly when it is due.
"""

from __future__ import annotations

from datetime import timedelta

import pytest
from tests.support.harness import START

pytestmark = pytest.mark.integration

DAY = timedelta(days=1)


def _pending_case_jobs(h, case_id: int) -> list[str]:
    return [
        f"{j.kind}:{j.key}" for j in h.jobs() if j.case_id == case_id and j.status in ("pending", "claimed")
    ]


def test_card_update_mid_case_recovers_at_once(world) -> None:
    h = world
    h.customer()
    h.fail(code="insufficient_funds", succeed_on_attempt=0)
    h.settle()
    h.advance(timedelta(days=2), step=DAY)
    assert [c.idempotency_key for c in h.pay_calls()] == ["dunning:in_1:attempt-1"]
    assert h.case().status == "open"

    h.card_update(works=True)
    h.settle()

    # The immediate retry runs at once (same simulated instant) under a new attempt key.
    keys = [c.idempotency_key for c in h.pay_calls()]
    assert keys == ["dunning:in_1:attempt-1", "dunning:in_1:attempt-2"]
    attempts = h.attempts()
    assert [(a.attempt_no, a.trigger, a.status) for a in attempts] == [
        (1, "schedule", "failed"),
        (2, "card_update", "succeeded"),
    ]
    assert attempts[1].requested_at == START + timedelta(days=2)
    case = h.case()
    assert case.status == "recovered"
    assert case.outcome == "card_update"
    assert case.closed_at == START + timedelta(days=2)
    assert case.recovered_minor == 4900
    assert h.notices() == ["payment_failed", "payment_recovered"]
    # Nothing left for this case: retries, reminders, the final notice and the suspension are canceled.
    assert _pending_case_jobs(h, case.id) == []
    assert h.billing_actions() == []

    # Any job left behind would come due in these 30 days (large steps: nothing should be left to run).
    emails_before = len(h.smtp.messages)
    h.advance(timedelta(days=30), step=timedelta(days=10))
    assert len(h.smtp.messages) == emails_before
    assert len(h.pay_calls()) == 2
    assert h.billing_actions() == []
    assert h.case().status == "recovered"
    stats = h.sandbox.state.stats()
    assert stats["charges"]["in_1"] == 1
    assert stats["double_charges"] == 0


def test_card_update_after_suspension_reinstates(world) -> None:
    h = world
    h.customer()
    h.fail(code="insufficient_funds", succeed_on_attempt=0)
    h.settle()
    h.advance(timedelta(days=15), step=timedelta(days=7))  # days 7, 14, 15
    case = h.case()
    assert case.status == "suspended"
    assert case.suspended_at == START + timedelta(days=14)
    assert h.billing_actions() == ["suspend"]
    assert h.sandbox.state.subscription("sub_1").access == "suspended"
    charges_before = len(h.pay_calls())
    assert charges_before >= 1

    h.card_update(works=True)
    h.settle()

    case = h.case()
    assert case.status == "recovered"
    assert case.outcome == "card_update"
    assert len(h.pay_calls()) == charges_before + 1
    assert h.attempts()[-1].trigger == "card_update"
    assert h.attempts()[-1].status == "succeeded"
    assert h.billing_actions() == ["suspend", "reinstate"]
    assert h.sandbox.state.subscription("sub_1").access == "active"
    assert h.notices()[-1] == "payment_recovered"
    assert h.notices().count("payment_recovered") == 1
    recovered_mail = [m for m in h.smtp.messages if str(m["X-Dunning-Kind"]) == "payment_recovered"]
    assert len(recovered_mail) == 1

    # The end of the policy (cancel, due 7 days after suspension) no longer happens.
    h.advance(timedelta(days=10), step=timedelta(days=5))
    assert h.billing_actions() == ["suspend", "reinstate"]
    assert h.case().status == "recovered"
    assert "subscription_ended" not in h.notices()
    assert h.sandbox.state.stats()["double_charges"] == 0


def test_invoice_paid_mid_case_closes_it(world) -> None:
    h = world
    h.customer()
    h.fail(code="insufficient_funds", succeed_on_attempt=0)
    h.settle()
    h.advance(timedelta(days=4), step=DAY)
    assert len(h.pay_calls()) == 2  # days 1 and 3

    h.paid()
    h.settle()

    case = h.case()
    assert case.status == "recovered"
    assert case.outcome == "paid"
    assert case.closed_at == START + timedelta(days=4)
    assert h.notices() == ["payment_failed", "payment_recovered"]
    assert _pending_case_jobs(h, case.id) == []

    h.advance(timedelta(days=20), step=timedelta(days=5))
    assert len(h.pay_calls()) == 2
    assert h.billing_actions() == []
    assert h.notices() == ["payment_failed", "payment_recovered"]
    assert h.sandbox.state.stats()["double_charges"] == 0


def test_scripted_success_on_second_attempt_recovers_on_day_3(world) -> None:
    h = world
    h.customer()
    h.fail(code="insufficient_funds", succeed_on_attempt=2)
    h.settle()
    h.advance(timedelta(days=2), step=DAY)
    assert h.case().status == "open"
    assert len(h.pay_calls()) == 1

    h.advance(DAY, step=DAY)
    case = h.case()
    assert case.status == "recovered"
    assert case.outcome == "retry"
    assert case.closed_at == START + timedelta(days=3)
    attempts = h.attempts()
    assert [(a.attempt_no, a.status) for a in attempts] == [(1, "failed"), (2, "succeeded")]
    assert [a.requested_at for a in attempts] == [START + timedelta(days=1), START + timedelta(days=3)]
    assert h.notices() == ["payment_failed", "payment_recovered"]

    h.advance(timedelta(days=20), step=timedelta(days=5))
    assert [c.idempotency_key for c in h.pay_calls()] == ["dunning:in_1:attempt-1", "dunning:in_1:attempt-2"]
    assert h.sandbox.state.stats()["charges"]["in_1"] == 1
    assert h.billing_actions() == []
    assert h.notices() == ["payment_failed", "payment_recovered"]


def test_a_retry_that_finds_the_invoice_paid_elsewhere_recovers_without_charging(world) -> None:
    """Paid by other means while the invoice.paid event is still on its way: the billing API refuses."""
    h = world
    h.customer()
    h.fail(code="insufficient_funds", succeed_on_attempt=0)
    h.settle()
    h.sandbox.state.mark_paid("in_1")  # the customer paid by bank transfer; no event yet
    h.advance(DAY)  # the day-1 retry runs and gets 409 invoice_already_paid

    case = h.case()
    assert (case.status, case.outcome) == ("recovered", "paid")
    assert h.notices() == ["payment_failed", "payment_recovered"]
    assert _pending_case_jobs(h, case.id) == []
    stats = h.sandbox.state.stats()
    assert stats["charges"]["in_1"] == 0
    assert (stats["paid_elsewhere_requests"], stats["double_charges"]) == (1, 0)

    # The late event is then a no-op for the case, and nothing else is sent or charged.
    h.client.invoice_paid(invoice_id="in_1", subscription_id="sub_1", amount_minor=4900, currency="EUR")
    h.sent_events += 1
    h.advance(timedelta(days=10), step=timedelta(days=5))
    assert h.notices() == ["payment_failed", "payment_recovered"]
    assert len(h.pay_calls()) == 1
