"""A case opened in a transaction is a plain object that must carry every column of the table."""

from __future__ import annotations

from dataclasses import fields
from datetime import UTC, datetime

from dunning.store.models import Case
from dunning.store.unit import NewCase
from dunning.workflows.failed_payments.cases import facts_of


def test_new_case_has_exactly_the_columns_of_cases() -> None:
    assert {f.name for f in fields(NewCase)} == {c.key for c in Case.__table__.columns}


def test_new_case_defaults_are_those_of_a_fresh_case() -> None:
    case = NewCase(
        invoice_id="in_1",
        subscription_id="sub_1",
        customer_id="cus_1",
        plan="pro",
        amount_minor=4900,
        currency="EUR",
        status="open",
        decline_code="insufficient_funds",
        first_decline_code="insufficient_funds",
        has_payment_method=True,
        opened_at=datetime(2026, 12, 1, tzinfo=UTC),
        policy_version="v1",
    )
    facts = facts_of(case)
    assert (facts.attempts_made, facts.scheduled_retries_made, facts.card_update_retries_used) == (0, 0, 0)
    assert facts.needs_new_payment_method is False and facts.suspended_at is None
    assert (case.recovered_minor, case.outcome, case.closed_at) == (0, None, None)
