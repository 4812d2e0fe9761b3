"""The money and dates of a price migration: pure functions, no database, no clock.

Amounts are integer minor units in each currency's own exponent (EUR 2, JPY 0, BHD 3:
Babel's ``get_currency_precision``), so a computed amount is rounded to one minor unit.
Rounding is half up, away from zero (``round_half_up``): 0.5 of a cent is a cent.
Percentages are kept as hundredths of a percent (``bp``: 1234 = 12.34 %), exact integers
that sort in SQL; the set-based statements of :mod:`.members` compute the same values
with the same rounding (the tests compare them).

When a new price applies (:func:`apply_at`): at the subscriber's first renewal
(``current_period_end`` plus whole billing periods, never before it) that is on or after
both ``effective + grandfather months`` and ``notice + notice days``. A renewal that comes
too soon is passed over for the next one: nobody's price rises with less notice than promised.
"""

from __future__ import annotations

import re
from calendar import monthrange
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from fractions import Fraction
from typing import TYPE_CHECKING, Any

from babel.numbers import get_currency_precision, list_currencies

from dunning.errors import Refused

if TYPE_CHECKING:
    from dunning.domain.lifecycle_policy import AnnualOfferPolicy

#: Hundredths of a percent in a whole: 100 % = 10_000 bp.
BP_PER_WHOLE = 10_000
#: Increases are capped here (999,999.99 %) so they fit the 32-bit column; a subscription
#: paying nothing today counts as this (its increase has no finite percentage).
BP_CAP = 99_999_999
#: Months in one billing period of each interval, where the period is calendar months.
MONTHS_PER = {"month": 1, "year": 12}
#: Billing periods per year of the intervals counted in days (MRR of weekly and daily plans).
_DAYS_PER = {"week": 7, "day": 1}
_PERIODS_PER_YEAR = {"month": 12, "year": 1, "week": 52, "day": 365}
_CURRENCIES = frozenset(list_currencies())

Amount = Decimal | int | Fraction


# -- money -------------------------------------------------------------------------------------


def exponent(currency: str) -> int:
    """Digits after the decimal point of ``currency`` (EUR 2, JPY 0, BHD 3); ValueError if unknown."""
    if currency not in _CURRENCIES:
        raise ValueError(f"unknown currency {currency!r} (ISO-4217, upper case)")
    return int(get_currency_precision(currency))


def round_half_up(amount: Amount) -> int:
    """``amount`` (a number of minor units, exact) to a whole minor unit, halves away from zero.

    Floats are refused: they cannot hold money exactly (0.285 * 100 is 28.499999...).
    """
    if isinstance(amount, float | bool):
        raise TypeError("money is never a float: give an int, a Decimal or a Fraction")
    exact = Fraction(amount)
    n, d = exact.numerator, exact.denominator
    if n >= 0:
        return (2 * n + d) // (2 * d)
    return -((-2 * n + d) // (2 * d))


def to_minor(major: Decimal | str | int, currency: str) -> int:
    """An amount in major units (``"19.995"`` EUR) to minor units of ``currency``, half up (2000)."""
    return round_half_up(Fraction(Decimal(str(major))) * 10 ** exponent(currency))


def format_minor(amount_minor: int, currency: str) -> str:
    """``4900, "EUR"`` -> ``"49.00 EUR"``; ``1234567, "JPY"`` -> ``"1,234,567 JPY"`` (for operators)."""
    digits = exponent(currency)
    return f"{Decimal(amount_minor).scaleb(-digits):,.{digits}f} {currency}"


# -- increases ---------------------------------------------------------------------------------


def increase_bp(current_minor: int, new_minor: int) -> int:
    """The increase from ``current`` to ``new`` in hundredths of a percent, half up, capped at :data:`BP_CAP`."""
    if current_minor < 0 or new_minor < 0:
        raise ValueError("amounts are never negative")
    if current_minor == 0:
        return 0 if new_minor == 0 else BP_CAP
    bp = round_half_up(Fraction((new_minor - current_minor) * BP_PER_WHOLE, current_minor))
    return max(-BP_CAP, min(BP_CAP, bp))


def increase(current_minor: int, new_minor: int) -> tuple[int, int]:
    """(increase in minor units, increase in hundredths of a percent) from ``current`` to ``new``."""
    return new_minor - current_minor, increase_bp(current_minor, new_minor)


def above_guardrail(bp: int, guardrail_percent: int) -> bool:
    """Whether an increase of ``bp`` is above the guardrail (strictly: exactly 50 % is not above 50 %)."""
    return bp > guardrail_percent * 100


def percent_text(bp: int) -> str:
    """``2041`` -> ``"+20.41 %"`` (signed: an increase reads as one)."""
    sign = "-" if bp < 0 else "+"
    return f"{sign}{abs(bp) // 100}.{abs(bp) % 100:02d} %"


def mrr_minor(amount_minor: int, interval: str, interval_count: int = 1) -> Fraction:
    """Monthly recurring revenue of one subscription, exact: yearly is amount / 12, quarterly amount / 3.

    Weekly and daily plans count 52 and 365 periods a year. Round a total, not each term.
    """
    if interval not in _PERIODS_PER_YEAR:
        raise ValueError(f"unknown interval {interval!r}")
    if interval_count < 1:
        raise ValueError("interval_count must be at least 1")
    return Fraction(amount_minor * _PERIODS_PER_YEAR[interval], 12 * interval_count)


# -- offers' prices ----------------------------------------------------------------------------


def step_up_price(new_minor: int, percent: int, currency: str) -> int:
    """What a step-up costs per period while it lasts: the new amount less ``percent``, half up.

    ``currency`` is checked (the amounts are in its minor units, so the result is rounded to one).
    """
    exponent(currency)
    if not 0 < percent < 100:
        raise ValueError("a step-up discount is between 1 and 99 percent")
    return round_half_up(Fraction(new_minor * (100 - percent), 100))


def annual_lock_price(current_minor: int, rules: AnnualOfferPolicy) -> int:
    """A year at the current monthly amount, less the policy's annual discount (its one formula)."""
    return rules.annual_price_minor(current_minor)


# -- dates -------------------------------------------------------------------------------------


def add_months(at: datetime, months: int) -> datetime:
    """``at`` plus whole calendar months, the day clamped to the month's end (Jan 31 + 1 = Feb 28/29)."""
    index = at.year * 12 + (at.month - 1) + months
    year, month0 = divmod(index, 12)
    return at.replace(year=year, month=month0 + 1, day=min(at.day, monthrange(year, month0 + 1)[1]))


def renewal(anchor: datetime, interval: str, interval_count: int, k: int) -> datetime:
    """The ``k``-th renewal after ``anchor`` (``k = 0`` is ``anchor``), counted from the anchor.

    Months are added to the anchor itself, not step by step, so a subscription renewing on the
    31st renews on Feb 28 and again on Mar 31, as billing systems do.
    """
    if interval in MONTHS_PER:
        return add_months(anchor, k * interval_count * MONTHS_PER[interval])
    if interval in _DAYS_PER:
        return anchor + timedelta(days=k * interval_count * _DAYS_PER[interval])
    raise ValueError(f"unknown interval {interval!r}")


def first_renewal_on_or_after(
    anchor: datetime, interval: str, interval_count: int, threshold: datetime
) -> datetime:
    """The first of ``anchor``'s renewals (``anchor`` included) that is on or after ``threshold``."""
    if anchor >= threshold:
        return anchor
    if interval in MONTHS_PER:
        step = interval_count * MONTHS_PER[interval]
        months = (threshold.year - anchor.year) * 12 + threshold.month - anchor.month
        k = months // step  # that renewal falls in threshold's month or before: at most one more
    else:
        step_s = interval_count * _DAYS_PER[interval] * 86_400
        k = int((threshold - anchor).total_seconds() // step_s)
    at = renewal(anchor, interval, interval_count, k)
    return at if at >= threshold else renewal(anchor, interval, interval_count, k + 1)


def earliest_apply(
    effective_at: datetime, grandfather_months: int, notice_at: datetime, notice_days: int
) -> datetime:
    """The earliest instant a new price may apply: after grandfathering and after the full notice."""
    return max(add_months(effective_at, grandfather_months), notice_at + timedelta(days=notice_days))


def apply_at(
    current_period_end: datetime,
    interval: str,
    interval_count: int,
    effective_at: datetime,
    grandfather_months: int,
    notice_at: datetime,
    notice_days: int,
) -> datetime:
    """When the new price applies: the first renewal on or after :func:`earliest_apply`.

    Renewals are ``current_period_end`` plus ``k >= 0`` billing periods. All instants are aware.
    """
    threshold = earliest_apply(effective_at, grandfather_months, notice_at, notice_days)
    return first_renewal_on_or_after(current_period_end, interval, interval_count, threshold).astimezone(UTC)


# -- offer syntax ------------------------------------------------------------------------------

_NUMBER = re.compile(r"[0-9]{1,12}")
OFFER_SYNTAX = "step-up:PERCENT:MONTHS, annual-lock or downgrade:PLAN:MINOR"
#: What a step-up may be: a discount of 1-99 % for 1-36 months.
STEP_UP_MONTHS_MAX = 36


def parse_offer(text: str, field: str = "offer") -> dict[str, Any]:
    """``step-up:PERCENT:MONTHS`` | ``annual-lock`` | ``downgrade:PLAN:MINOR`` -> the stored JSON shape.

    ``{"kind": "step_up", "percent": 10, "months": 6}``, ``{"kind": "annual_lock"}``,
    ``{"kind": "downgrade", "plan": "basic", "amount_minor": 1900}``. Errors are
    :class:`Refused` naming ``field``.
    """
    raw = text.strip()
    head, _, rest = raw.partition(":")
    if head == "annual-lock":
        if rest:
            raise Refused(field, f"annual-lock takes no parameters, got {raw!r}")
        return {"kind": "annual_lock"}
    if head == "step-up":
        percent, sep, months = rest.partition(":")
        if not sep or not _NUMBER.fullmatch(percent) or not _NUMBER.fullmatch(months):
            raise Refused(field, f"expected step-up:PERCENT:MONTHS with whole numbers, got {raw!r}")
        if not 1 <= int(percent) <= 99:
            raise Refused(field, f"step-up PERCENT must be 1 to 99, got {percent}")
        if not 1 <= int(months) <= STEP_UP_MONTHS_MAX:
            raise Refused(field, f"step-up MONTHS must be 1 to {STEP_UP_MONTHS_MAX}, got {months}")
        return {"kind": "step_up", "percent": int(percent), "months": int(months)}
    if head == "downgrade":
        plan, sep, amount = rest.rpartition(":")
        if not sep or not plan.strip() or not _NUMBER.fullmatch(amount):
            raise Refused(field, f"expected downgrade:PLAN:MINOR (MINOR a whole number), got {raw!r}")
        if int(amount) <= 0:
            raise Refused(field, f"downgrade MINOR must be above zero, got {amount}")
        return {"kind": "downgrade", "plan": plan.strip(), "amount_minor": int(amount)}
    raise Refused(field, f"unknown offer {raw!r}: expected {OFFER_SYNTAX}")


def offer_text(offer: dict[str, Any]) -> str:
    """The command-line spelling of a stored offer (the inverse of :func:`parse_offer`)."""
    kind = offer["kind"]
    if kind == "step_up":
        return f"step-up:{offer['percent']}:{offer['months']}"
    if kind == "downgrade":
        return f"downgrade:{offer['plan']}:{offer['amount_minor']}"
    return "annual-lock"


def describe_offer(offer: dict[str, Any], new_minor: int, currency: str) -> str:
    """One line for an operator: what taking the offer costs the subscriber."""
    kind = offer["kind"]
    if kind == "step_up":
        step = step_up_price(new_minor, offer["percent"], currency)
        return (
            f"step-up: {format_minor(step, currency)} ({offer['percent']} % off) for "
            f"{offer['months']} months, then {format_minor(new_minor, currency)}"
        )
    if kind == "downgrade":
        return f"downgrade: plan {offer['plan']} at {format_minor(offer['amount_minor'], currency)}"
    return "annual lock: yearly billing at the current amount x 12 less the annual offer's discount"


# -- cohorts -----------------------------------------------------------------------------------


@dataclass(frozen=True)
class Group:
    """Members alike (one row of the preview's grouped query): same amounts, same fate."""

    current_minor: int
    new_minor: int
    bp: int
    count: int
    kept: bool = False  # excluded or skipped: keeps the current price
    gone: bool = False  # left the plan since planning (a draft's estimate): counted apart
    first_notice: datetime | None = None
    first_applies: datetime | None = None


@dataclass
class Cohort:
    """Subscribers paying the same amount, and what the migration does to them."""

    current_minor: int
    new_minor: int
    bp: int
    count: int = 0
    first_notice: datetime | None = None
    first_applies: datetime | None = None

    @property
    def increase_minor(self) -> int:
        return self.new_minor - self.current_minor


@dataclass(frozen=True)
class Summary:
    """A migration's impact: its cohorts (by current amount), head counts and MRR before and after."""

    cohorts: list[Cohort]
    subscribers: int
    kept: int
    gone: int
    mrr_before_minor: int
    mrr_after_minor: int


def _earliest(a: datetime | None, b: datetime | None) -> datetime | None:
    return b if a is None else a if b is None else min(a, b)


def summarize(groups: Iterable[Group], interval: str) -> Summary:
    """Cohorts by current amount, and MRR (monthly equivalent) before and after, rounded once at the end.

    After: the new amount for the subscribers it applies to, the current one for those kept
    out; those who left the plan count in neither.
    """
    cohorts: dict[tuple[int, int], Cohort] = {}
    before = after = Fraction(0)
    subscribers = kept = gone = 0
    for g in groups:
        if g.gone:
            gone += g.count
            continue
        before += g.count * mrr_minor(g.current_minor, interval)
        if g.kept:
            kept += g.count
            after += g.count * mrr_minor(g.current_minor, interval)
            continue
        subscribers += g.count
        after += g.count * mrr_minor(g.new_minor, interval)
        cohort = cohorts.setdefault(
            (g.current_minor, g.new_minor), Cohort(g.current_minor, g.new_minor, g.bp)
        )
        cohort.count += g.count
        cohort.first_notice = _earliest(cohort.first_notice, g.first_notice)
        cohort.first_applies = _earliest(cohort.first_applies, g.first_applies)
    return Summary(
        cohorts=sorted(cohorts.values(), key=lambda c: (c.current_minor, c.new_minor)),
        subscribers=subscribers,
        kept=kept,
        gone=gone,
        mrr_before_minor=round_half_up(before),
        mrr_after_minor=round_half_up(after),
    )
