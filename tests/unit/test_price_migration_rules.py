"""The price-migration workers' rules (pure): skips, the renewal a price applies at, the calls a choice makes."""

from __future__ import annotations

from dataclasses import dataclass, replace
from datetime import UTC, datetime, timedelta

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from dunning.workflows.price_migrations.pricing import add_months
from dunning.workflows.price_migrations.rules import (
    APPLY_WINDOW,
    EARLY_CANCEL,
    PlanChange,
    Terms,
    alert,
    application,
    apply_due,
    cancel_reason,
    choices_offered,
    in_window,
    job_key,
    offer_prices,
    reminder_due,
    target,
    why_skip,
)

NOW = datetime(2026, 11, 2, 10, tzinfo=UTC)
OFFERS = (
    {"kind": "step_up", "percent": 10, "months": 3},
    {"kind": "annual_lock"},
    {"kind": "downgrade", "plan": "basic", "amount_minor": 3900},
)
TERMS = Terms(
    id="pm_1",
    plan="pro",
    currency="EUR",
    interval="month",
    new_amount_minor=5900,
    effective_at=NOW,
    notice_days=30,
    grandfather_months=0,
    offers=OFFERS,
    reason="because",
)


@dataclass(frozen=True)
class Sub:
    plan: str = "pro"
    status: str = "active"
    amount_minor: int = 4900
    currency: str = "EUR"
    interval: str = "month"
    interval_count: int = 1
    current_period_end: datetime = NOW + timedelta(days=30)
    cancel_at_period_end: bool = False


def annual(monthly: int) -> int:
    return monthly * 12 * 85 // 100


@pytest.mark.parametrize(
    ("change", "reason"),
    [
        ({}, None),
        ({"status": "past_due"}, None),
        ({"status": "canceled"}, "canceled"),
        ({"cancel_at_period_end": True}, "canceled"),
        ({"status": "unpaid"}, "subscription unpaid"),
        ({"plan": "business"}, "plan changed"),
        ({"currency": "USD"}, "currency changed"),
        ({"interval": "year"}, "interval changed"),
        ({"amount_minor": 3900}, "amount changed"),
    ],
)
def test_why_skip_names_the_fact_that_changed(change: dict[str, object], reason: str | None) -> None:
    assert why_skip(TERMS, replace(Sub(), **change), 4900) == reason


def test_an_unknown_subscription_is_skipped() -> None:
    assert why_skip(TERMS, None, 4900) == "subscription unknown"


def test_cancellations_within_the_alert_window_are_told_apart() -> None:
    assert cancel_reason(TERMS, None, NOW) == "canceled before the notice"
    early = cancel_reason(TERMS, NOW, NOW + timedelta(days=14))
    assert early == "canceled within 14 days of the notice" and early.startswith(EARLY_CANCEL)
    assert cancel_reason(TERMS, NOW, NOW + timedelta(days=14, seconds=1)) == "canceled"


def test_the_alert_fires_only_above_the_threshold_share() -> None:
    assert alert(TERMS, 0, 0) is None
    assert alert(TERMS, 100, 5) is None  # 5 % is not above 5 %
    reason = alert(TERMS, 100, 6)
    assert reason is not None and reason.startswith("auto-paused: 6 of 100 notified subscribers (6.0%)")
    assert alert(replace(TERMS, cancel_alert_percent=50), 3, 1) is None
    assert alert(TERMS, 3, 1) is not None  # a small migration: one in three is a lot


def test_a_renewal_too_soon_after_the_notice_is_passed_over_for_the_next() -> None:
    sub = Sub()
    assert target(TERMS, sub, NOW, NOW) == NOW + timedelta(days=30)  # exactly 30 days: that one
    later = NOW + timedelta(hours=6)  # the notice left after quiet hours: 30 days from then
    assert target(TERMS, sub, later, NOW) == add_months(NOW + timedelta(days=30), 1)


def test_grandfathering_keeps_the_old_price_until_its_end() -> None:
    terms = replace(TERMS, grandfather_months=6)
    assert target(terms, Sub(), NOW, NOW) == add_months(NOW + timedelta(days=30), 5)  # May 2 >= May 2


def test_a_renewal_already_past_is_no_renewal_to_apply_at() -> None:
    # The billing system has not told us of the renewal after Dec 2 yet, and it is Dec 3.
    late = NOW + timedelta(days=31)
    assert target(TERMS, Sub(), NOW, late) == datetime(2027, 1, 2, 10, tzinfo=UTC)


def test_the_application_runs_12_hours_before_within_the_24_allowed() -> None:
    applies = NOW + timedelta(days=30)
    assert apply_due(applies, NOW) == applies - timedelta(hours=12)
    assert apply_due(applies, applies - timedelta(hours=3)) == applies - timedelta(hours=3)
    assert not in_window(applies, applies - APPLY_WINDOW - timedelta(seconds=1))
    assert in_window(applies, applies - APPLY_WINDOW)
    assert in_window(applies, applies - timedelta(seconds=1))
    assert not in_window(applies, applies)


def test_the_reminder_goes_7_days_before_unless_the_notice_is_that_close() -> None:
    applies = NOW + timedelta(days=30)
    assert reminder_due(applies, NOW) == applies - timedelta(days=7)
    assert reminder_due(NOW + timedelta(days=7), NOW) is None


def test_choices_follow_the_terms_and_annual_lock_is_for_monthly_billing() -> None:
    assert choices_offered(TERMS, "month", 1) == ("step_up", "annual_lock", "downgrade", "none")
    assert choices_offered(TERMS, "year", 1) == ("step_up", "downgrade", "none")
    assert choices_offered(TERMS, "month", 3) == ("step_up", "downgrade", "none")
    assert choices_offered(replace(TERMS, offers=()), "month", 1) == ()
    # An offer named twice counts once (the first).
    twice = replace(TERMS, offers=({"kind": "downgrade", "plan": "a", "amount_minor": 1}, *OFFERS))
    assert choices_offered(twice, "month", 1) == ("downgrade", "step_up", "annual_lock", "none")
    assert offer_prices(twice, 5900, 4900, annual)["downgrade"] == {"plan": "a", "amount_minor": 1}


def _apply(choice: str | None, terms: Terms = TERMS) -> object:
    return application(
        terms,
        choice=choice,
        new_amount_minor=5900,
        current_amount_minor=4900,
        applies_at=NOW + timedelta(days=30),
        sub_interval="month",
        sub_interval_count=1,
        annual_price=annual,
    )


def test_each_choice_makes_its_own_change_plan() -> None:
    at = NOW + timedelta(days=30)
    for choice in (None, "none"):
        app = _apply(choice)
        assert app.change == PlanChange("pro", 5900, "EUR", at) and app.step_end is None  # type: ignore[attr-defined]
    step = _apply("step_up")
    assert step.change == PlanChange("pro", 5310, "EUR", at)  # type: ignore[attr-defined]
    assert step.step_end == PlanChange("pro", 5900, "EUR", add_months(at, 3))  # type: ignore[attr-defined]
    assert _apply("annual_lock").change == PlanChange("pro", 49_980, "EUR", at, "year", 1)  # type: ignore[attr-defined]
    assert _apply("downgrade").change == PlanChange("basic", 3900, "EUR", at)  # type: ignore[attr-defined]
    # A choice whose offer the terms do not make is no choice: the new price.
    assert _apply("downgrade", replace(TERMS, offers=OFFERS[:1])).change.amount_minor == 5900  # type: ignore[attr-defined]


def test_a_recorded_call_round_trips_through_json() -> None:
    change = PlanChange("pro", 49_980, "EUR", NOW, "year", 1)
    assert PlanChange.from_payload(change.payload()) == change
    plain = PlanChange("pro", 5900, "EUR", NOW)
    assert PlanChange.from_payload(plain.payload()) == plain
    with pytest.raises(KeyError):
        PlanChange.from_payload({"plan": "pro"})


def test_keys_name_migration_subscription_and_step() -> None:
    assert job_key("pm_1", "org:42", "apply") == "price:pm_1:org:42:apply"


# -- properties -------------------------------------------------------------------------------

instants = st.datetimes(
    min_value=datetime(2026, 1, 1), max_value=datetime(2030, 1, 1), timezones=st.just(UTC)
)


@settings(max_examples=300, deadline=None)
@given(
    period_end=instants,
    effective=instants,
    notice=instants,
    late=st.timedeltas(min_value=timedelta(0), max_value=timedelta(days=400)),
    grandfather=st.integers(0, 24),
    notice_days=st.integers(7, 120),
    interval=st.sampled_from([("month", 1), ("month", 3), ("year", 1), ("week", 2)]),
)
def test_no_price_applies_before_grandfathering_ends_nor_without_the_full_notice_nor_in_the_past(
    period_end: datetime,
    effective: datetime,
    notice: datetime,
    late: timedelta,
    grandfather: int,
    notice_days: int,
    interval: tuple[str, int],
) -> None:
    terms = replace(TERMS, effective_at=effective, grandfather_months=grandfather, notice_days=notice_days)
    sub = Sub(current_period_end=period_end, interval=interval[0], interval_count=interval[1])
    now = notice + late
    at = target(terms, sub, notice, now)
    assert at >= add_months(effective, grandfather)
    assert at - notice >= timedelta(days=notice_days)
    assert at > now
    # And it is one of the subscription's renewals: the period end plus whole periods.
    assert at >= period_end
    # When the application job comes due, the call is inside the 24 hours before the renewal.
    assert in_window(at, apply_due(at, now))


@settings(max_examples=200, deadline=None)
@given(
    change=st.sampled_from(
        [
            {"status": "canceled"},
            {"cancel_at_period_end": True},
            {"plan": "other"},
            {"currency": "USD"},
            {"interval": "year"},
            {"amount_minor": 1},
            {"status": "incomplete"},
        ]
    ),
    amount=st.integers(1, 10**9),
)
def test_any_changed_fact_skips_the_member(change: dict[str, object], amount: int) -> None:
    sub = replace(Sub(amount_minor=amount), **change)
    current = amount if "amount_minor" not in change else amount + 1
    assert why_skip(TERMS, sub, current) is not None
