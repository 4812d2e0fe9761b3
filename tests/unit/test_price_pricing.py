"""The planning maths of price migrations: rounding per currency exponent, increases, guardrail, MRR,
offer prices and syntax, and when a new price applies (examples, then properties)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from decimal import Decimal
from fractions import Fraction

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from dunning.domain.lifecycle_policy import DEFAULT_LIFECYCLE
from dunning.errors import Refused
from dunning.workflows.price_migrations.pricing import (
    BP_CAP,
    above_guardrail,
    add_months,
    annual_lock_price,
    apply_at,
    describe_offer,
    earliest_apply,
    exponent,
    format_minor,
    increase,
    increase_bp,
    mrr_minor,
    offer_text,
    parse_offer,
    percent_text,
    renewal,
    round_half_up,
    step_up_price,
    to_minor,
)

PROPERTIES = settings(max_examples=400, deadline=None)


def utc(*args: int) -> datetime:
    return datetime(*args, tzinfo=UTC)  # type: ignore[misc]


# -- rounding and currencies -------------------------------------------------------------------


@pytest.mark.parametrize(
    ("amount", "expected"),
    [
        (Fraction(1, 2), 1),
        (Fraction(3, 2), 2),
        (Fraction(5, 2), 3),  # half up, not to even
        (Fraction(-1, 2), -1),  # away from zero
        (Fraction(-5, 2), -3),
        (Decimal("2.4999"), 2),
        (Decimal("849.15"), 849),
        (Fraction(2, 3), 1),
        (Fraction(1, 3), 0),
        (7, 7),
        (0, 0),
    ],
)
def test_round_half_up(amount: Decimal | int | Fraction, expected: int) -> None:
    assert round_half_up(amount) == expected


def test_money_is_never_a_float() -> None:
    with pytest.raises(TypeError, match="never a float"):
        round_half_up(0.5)  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("currency", "digits", "major", "minor"),
    [
        ("EUR", 2, "19.995", 2000),
        ("EUR", 2, "19.994", 1999),
        ("JPY", 0, "1999.5", 2000),
        ("JPY", 0, "1999.4", 1999),
        ("BHD", 3, "1.2345", 1235),
        ("BHD", 3, "1.2344", 1234),
        ("KWD", 3, "0.0005", 1),
    ],
)
def test_rounding_to_each_currency_exponent(currency: str, digits: int, major: str, minor: int) -> None:
    assert exponent(currency) == digits
    assert to_minor(major, currency) == minor


def test_formatting_uses_the_currency_exponent() -> None:
    assert format_minor(4900, "EUR") == "49.00 EUR"
    assert format_minor(1234567, "JPY") == "1,234,567 JPY"
    assert format_minor(1234, "BHD") == "1.234 BHD"
    assert format_minor(-150, "EUR") == "-1.50 EUR"


def test_unknown_currency_is_refused() -> None:
    with pytest.raises(ValueError, match="unknown currency 'EURO'"):
        exponent("EURO")
    with pytest.raises(ValueError, match="unknown currency"):
        step_up_price(5900, 20, "eur")


# -- increases and the guardrail ---------------------------------------------------------------


@pytest.mark.parametrize(
    ("current", "new", "minor", "bp"),
    [
        (4900, 5900, 1000, 2041),  # 20.408... %
        (3900, 5900, 2000, 5128),  # 51.282... %
        (4900, 4900, 0, 0),
        (20000, 20001, 1, 1),  # exactly 0.5 bp: half up
        (20000, 19999, -1, -1),  # exactly -0.5 bp: away from zero
        (3, 4, 1, 3333),
        (100, 10_100, 10_000, 1_000_000),  # +10,000 %
        (1, 10**12, 10**12 - 1, BP_CAP),  # capped
        (0, 100, 100, BP_CAP),  # free today: no finite percentage
        (0, 0, 0, 0),
    ],
)
def test_increase_in_minor_units_and_hundredths_of_percent(
    current: int, new: int, minor: int, bp: int
) -> None:
    assert increase(current, new) == (minor, bp)


@given(st.integers(1, 10**12), st.integers(0, 10**12))
@PROPERTIES
def test_increase_bp_is_the_exact_percentage_rounded_half_up(current: int, new: int) -> None:
    exact = Fraction((new - current) * 10_000, current)
    bp = increase_bp(current, new)
    if abs(exact) < BP_CAP:
        assert abs(bp - exact) <= Fraction(1, 2)
        if abs(bp - exact) == Fraction(1, 2):
            assert abs(bp) > abs(exact)  # halves go away from zero
    else:
        assert abs(bp) == BP_CAP


def test_guardrail_is_strictly_above() -> None:
    assert not above_guardrail(5000, 50)
    assert above_guardrail(5001, 50)
    assert above_guardrail(BP_CAP, 1000)
    assert not above_guardrail(-3000, 0)


def test_percent_text() -> None:
    assert percent_text(2041) == "+20.41 %"
    assert percent_text(5) == "+0.05 %"
    assert percent_text(-150) == "-1.50 %"
    assert percent_text(0) == "+0.00 %"


# -- MRR ---------------------------------------------------------------------------------------


def test_mrr_is_the_monthly_equivalent() -> None:
    assert mrr_minor(4900, "month") == 4900
    assert mrr_minor(58800, "year") == 4900
    assert mrr_minor(1000, "year") == Fraction(250, 3)  # exact: round the total, not each term
    assert mrr_minor(14700, "month", 3) == 4900  # quarterly
    assert mrr_minor(1200, "week") == 5200
    assert round_half_up(3 * mrr_minor(1000, "year")) == 250
    with pytest.raises(ValueError, match="unknown interval"):
        mrr_minor(100, "fortnight")


# -- the offers' prices ------------------------------------------------------------------------


def test_step_up_price_rounds_half_up_to_the_minor_unit() -> None:
    assert step_up_price(5900, 20, "EUR") == 4720
    assert step_up_price(999, 15, "EUR") == 849  # 849.15
    assert step_up_price(1001, 50, "EUR") == 501  # 500.5
    assert step_up_price(1999, 50, "JPY") == 1000  # 999.5 yen
    assert step_up_price(12345, 10, "BHD") == 11111  # 11110.5 fils
    with pytest.raises(ValueError, match="between 1 and 99"):
        step_up_price(5900, 100, "EUR")


def test_annual_lock_uses_the_policy_formula() -> None:
    rules = DEFAULT_LIFECYCLE.annual_offer  # 15 % off by default
    assert annual_lock_price(4900, rules) == rules.annual_price_minor(4900) == 4900 * 12 * 85 // 100


# -- when the new price applies: examples ------------------------------------------------------


def test_first_renewal_after_effective_and_notice() -> None:
    # Notice on Dec 6 + 30 days = Jan 5; effective Feb 1: the Feb 15 renewal.
    assert apply_at(utc(2027, 1, 15), "month", 1, utc(2027, 2, 1), 0, utc(2026, 12, 6), 30) == utc(
        2027, 2, 15
    )


def test_a_renewal_that_comes_too_soon_is_passed_over() -> None:
    # Dec 20 is after the effective date but only 14 days after the notice: Jan 20 instead.
    assert apply_at(utc(2026, 12, 20), "month", 1, utc(2026, 12, 15), 0, utc(2026, 12, 6), 30) == utc(
        2027, 1, 20
    )


def test_grandfathering_pushes_the_date() -> None:
    # Effective Jan 31 + 3 months = Apr 30 (clamped); monthly renewals on the 10th: May 10.
    assert apply_at(utc(2027, 1, 10), "month", 1, utc(2027, 1, 31), 3, utc(2026, 12, 6), 30) == utc(
        2027, 5, 10
    )
    assert add_months(utc(2027, 1, 31), 1) == utc(2027, 2, 28)


def test_renewals_count_from_the_anchor_so_month_ends_come_back() -> None:
    anchor = utc(2027, 1, 31, 9, 30)
    assert [renewal(anchor, "month", 1, k).day for k in range(4)] == [31, 28, 31, 30]
    assert apply_at(anchor, "month", 1, utc(2027, 2, 15), 0, utc(2027, 1, 1), 7) == utc(2027, 2, 28, 9, 30)
    assert apply_at(anchor, "month", 1, utc(2027, 3, 1), 0, utc(2027, 1, 1), 7) == utc(2027, 3, 31, 9, 30)


def test_yearly_and_on_the_boundary() -> None:
    assert apply_at(utc(2027, 6, 1), "year", 1, utc(2027, 7, 1), 0, utc(2027, 1, 1), 30) == utc(2028, 6, 1)
    # A renewal exactly at the earliest instant applies ("on or after").
    assert apply_at(utc(2027, 2, 5), "month", 1, utc(2027, 1, 1), 0, utc(2027, 1, 6), 30) == utc(2027, 2, 5)


def test_a_period_end_in_the_past_still_counts_renewals_from_it() -> None:
    assert apply_at(utc(2026, 10, 3), "month", 1, utc(2026, 12, 1), 0, utc(2026, 12, 1), 30) == utc(
        2027, 1, 3
    )


# -- when the new price applies: properties ----------------------------------------------------

T0 = datetime(2026, 1, 1, tzinfo=UTC)


def moment(lo_days: int, hi_days: int) -> st.SearchStrategy[datetime]:
    return st.integers(lo_days * 1440, hi_days * 1440).map(lambda m: T0 + timedelta(minutes=m))


@given(
    anchor=moment(-60, 900),
    interval=st.sampled_from(["month", "year", "week", "day"]),
    count=st.integers(1, 3),
    effective=moment(0, 700),
    grandfather=st.integers(0, 24),
    notice_at=moment(0, 400),
    notice_days=st.integers(7, 365),
)
@PROPERTIES
def test_apply_at_is_the_first_renewal_allowed(
    anchor: datetime,
    interval: str,
    count: int,
    effective: datetime,
    grandfather: int,
    notice_at: datetime,
    notice_days: int,
) -> None:
    at = apply_at(anchor, interval, count, effective, grandfather, notice_at, notice_days)
    # Never before effective + grandfathering, never less than the notice after the notice.
    assert at >= add_months(effective, grandfather)
    assert at - notice_at >= timedelta(days=notice_days)
    # A renewal of this subscription (k >= 0), and the first allowed one (brute force).
    threshold = earliest_apply(effective, grandfather, notice_at, notice_days)
    k = 0
    while renewal(anchor, interval, count, k) < threshold:
        k += 1
    assert at == renewal(anchor, interval, count, k)
    assert k == 0 or renewal(anchor, interval, count, k - 1) < threshold


# -- offer syntax ------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "parsed"),
    [
        ("step-up:20:6", {"kind": "step_up", "percent": 20, "months": 6}),
        ("annual-lock", {"kind": "annual_lock"}),
        ("downgrade:basic:1900", {"kind": "downgrade", "plan": "basic", "amount_minor": 1900}),
        ("downgrade:team:v2:1900", {"kind": "downgrade", "plan": "team:v2", "amount_minor": 1900}),
        (" step-up:5:36 ", {"kind": "step_up", "percent": 5, "months": 36}),
    ],
)
def test_offers_parse_to_the_stored_shape(text: str, parsed: dict[str, object]) -> None:
    assert parse_offer(text) == parsed
    assert offer_text(parse_offer(text)) == text.strip()


@pytest.mark.parametrize(
    ("text", "reason"),
    [
        ("step-up:20", "expected step-up:PERCENT:MONTHS"),
        ("step-up:x:6", "expected step-up:PERCENT:MONTHS"),
        ("step-up:-5:6", "expected step-up:PERCENT:MONTHS"),
        ("step-up:0:6", "PERCENT must be 1 to 99, got 0"),
        ("step-up:100:6", "PERCENT must be 1 to 99, got 100"),
        ("step-up:20:0", "MONTHS must be 1 to 36, got 0"),
        ("step-up:20:37", "MONTHS must be 1 to 36, got 37"),
        ("annual-lock:12", "annual-lock takes no parameters"),
        ("downgrade:basic", "expected downgrade:PLAN:MINOR"),
        ("downgrade::1900", "expected downgrade:PLAN:MINOR"),
        ("downgrade:basic:19.00", "expected downgrade:PLAN:MINOR"),
        ("downgrade:basic:0", "MINOR must be above zero"),
        ("stepup:20:6", "unknown offer 'stepup:20:6'"),
        ("", "unknown offer ''"),
    ],
)
def test_bad_offers_are_refused_naming_the_field(text: str, reason: str) -> None:
    with pytest.raises(Refused) as caught:
        parse_offer(text, field="--offer")
    assert caught.value.field == "--offer"
    assert reason in caught.value.reason
    assert str(caught.value).startswith("--offer: ")


def test_offers_described_for_operators() -> None:
    assert describe_offer(parse_offer("step-up:20:6"), 5900, "EUR") == (
        "step-up: 47.20 EUR (20 % off) for 6 months, then 59.00 EUR"
    )
    assert (
        describe_offer(parse_offer("downgrade:basic:1900"), 5900, "EUR")
        == "downgrade: plan basic at 19.00 EUR"
    )


# -- cohorts and MRR of a preview --------------------------------------------------------------


def test_cohorts_by_current_amount_with_mrr_before_and_after() -> None:
    from dunning.workflows.price_migrations.pricing import Group, summarize

    jan, feb, mar = utc(2027, 1, 1), utc(2027, 2, 1), utc(2027, 3, 1)
    summary = summarize(
        [
            Group(3900, 5900, 5128, 10, first_notice=jan, first_applies=mar),
            Group(4900, 5900, 2041, 5, first_notice=jan, first_applies=feb),
            Group(3900, 5900, 5128, 2, first_notice=feb, first_applies=feb),  # same cohort, another state
            Group(4900, 5900, 2041, 3, kept=True),  # excluded: stays at 49
            Group(1900, 5900, 21053, 4, gone=True),  # left the plan: in neither total
        ],
        "month",
    )
    assert [(c.current_minor, c.count, c.increase_minor, c.bp) for c in summary.cohorts] == [
        (3900, 12, 2000, 5128),
        (4900, 5, 1000, 2041),
    ]
    assert summary.cohorts[0].first_notice == jan and summary.cohorts[0].first_applies == feb
    assert (summary.subscribers, summary.kept, summary.gone) == (17, 3, 4)
    assert summary.mrr_before_minor == 12 * 3900 + 8 * 4900
    assert summary.mrr_after_minor == 17 * 5900 + 3 * 4900


def test_yearly_mrr_is_rounded_once() -> None:
    from dunning.workflows.price_migrations.pricing import Group, summarize

    # 7 x 1000/12 = 583.33 and 7 x 1001/12 = 583.92: rounding each term would give 7 x 83 = 581.
    summary = summarize([Group(1000, 1001, 10, 7)], "year")
    assert (summary.mrr_before_minor, summary.mrr_after_minor) == (583, 584)
    assert summarize([], "month").cohorts == []
