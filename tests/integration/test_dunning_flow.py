"""End to end on real parts: Redis, SMTP (aiosmtpd), SQLite and PostgreSQL, the sandbox billing API."""

from __future__ import annotations

from datetime import timedelta

import pytest

pytestmark = pytest.mark.integration


def test_soft_decline_never_paid_runs_the_whole_policy(world) -> None:
    h = world
    h.customer()
    h.fail(code="insufficient_funds", succeed_on_attempt=0)
    h.settle()
    case = h.case()
    assert case.status == "open"
    assert h.notices() == ["payment_failed"]
    h.advance(timedelta(days=22))
    case = h.case()
    assert case.status == "canceled"
    # Exactly the five scheduled retries, each under its own key, all before suspension.
    keys = [c.idempotency_key for c in h.pay_calls()]
    assert keys == [f"dunning:in_1:attempt-{n}" for n in range(1, 6)]
    assert h.billing_actions() == ["suspend", "cancel"]
    assert h.notices() == [
        "payment_failed",
        "payment_reminder",
        "final_notice",
        "access_suspended",
        "subscription_ended",
    ]
    assert h.sandbox.state.stats()["double_charges"] == 0
