"""A migration's terms from options or a TOML file: defaults, and every refusal naming its field."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

import pytest

from dunning.errors import Refused
from dunning.workflows.price_migrations.terms import MigrationTerms, from_options, from_toml

NOW = datetime(2026, 12, 6, 10, 0, tzinfo=UTC)


def options(**changes: Any) -> dict[str, Any]:
    base: dict[str, Any] = {
        "plan": "pro",
        "currency": "EUR",
        "new_amount": "5900",
        "effective": "2027-02-01",
        "reason": "Costs rose.",
    }
    base.update(changes)
    return base


def refused(values: dict[str, Any]) -> Refused:
    with pytest.raises(Refused) as caught:
        from_options(values, now=NOW)
    return caught.value


def test_defaults() -> None:
    terms = from_options(options(), now=NOW)
    assert terms == MigrationTerms(
        plan="pro",
        currency="EUR",
        interval="month",
        new_amount_minor=5900,
        effective_at=datetime(2027, 2, 1, tzinfo=UTC),
        notice_days=30,
        grandfather_months=0,
        offers=(),
        reason="Costs rose.",
        guardrail_percent=50,
        cancel_alert_percent=5,
        cancel_alert_days=14,
    )
    assert not terms.short_notice


def test_every_option() -> None:
    terms = from_options(
        options(
            currency="eur",
            interval="month",
            notice_days="10",
            grandfather_months="3",
            offers=["step-up:20:6", "annual-lock", "downgrade:basic:1900"],
            guardrail_percent="35",
            effective="2027-01-31",
        ),
        now=NOW,
    )
    assert terms.currency == "EUR"
    assert terms.notice_days == 10 and terms.short_notice  # explicit, so allowed below the 30-day minimum
    assert terms.not_before == datetime(2027, 4, 30, tzinfo=UTC)  # Jan 31 + 3 months, clamped
    assert [o["kind"] for o in terms.offers] == ["step_up", "annual_lock", "downgrade"]
    assert terms.guardrail_percent == 35


def test_effective_today_is_not_the_past() -> None:
    assert from_options(options(effective="2026-12-06"), now=NOW).effective_at == datetime(
        2026, 12, 6, tzinfo=UTC
    )
    aware = from_options(options(effective="2026-12-06T12:00:00+01:00"), now=NOW)
    assert aware.effective_at == datetime(2026, 12, 6, 11, 0, tzinfo=UTC)


@pytest.mark.parametrize(
    ("changes", "field", "reason"),
    [
        ({"plan": None}, "--plan", "required"),
        ({"currency": None}, "--currency", "required"),
        ({"new_amount": None}, "--new-amount", "required"),
        ({"effective": None}, "--effective", "required"),
        ({"reason": None}, "--reason", "required"),
        ({"plan": "  "}, "--plan", "must not be empty"),
        ({"plan": "pro\nmax"}, "--plan", "control character or a line break"),
        ({"currency": "EURO"}, "--currency", "at most 3 characters"),
        ({"currency": "ZZZ"}, "--currency", "'ZZZ' is not an ISO-4217 currency code"),
        ({"interval": "week"}, "--interval", "expected month or year, got 'week'"),
        ({"new_amount": "0"}, "--new-amount", "must be above zero"),
        ({"new_amount": "-100"}, "--new-amount", "must be 0 to"),
        ({"new_amount": "59.00"}, "--new-amount", "expected a whole number of minor units, got '59.00'"),
        ({"new_amount": "abc"}, "--new-amount", "expected a whole number"),
        ({"new_amount": str(10**12 + 1)}, "--new-amount", "must be 0 to 1,000,000,000,000"),
        ({"effective": "2026-12-05"}, "--effective", "2026-12-05 is in the past (today is 2026-12-06 UTC)"),
        ({"effective": "2026-12-06T09:00:00Z"}, "--effective", "is in the past"),
        ({"effective": "2026-12-07T09:00:00"}, "--effective", "needs its offset"),
        ({"effective": "01/02/2027"}, "--effective", "expected a date such as 2027-03-01"),
        ({"effective": "2032-01-01"}, "--effective", "more than 5 years ahead"),
        ({"notice_days": "6"}, "--notice-days", "6 days is too short: at least 7 when given explicitly"),
        ({"notice_days": "366"}, "--notice-days", "at most 365 days"),
        ({"notice_days": "thirty"}, "--notice-days", "expected a whole number of days"),
        ({"grandfather_months": "-1"}, "--grandfather-months", "must be 0 to 60 months"),
        ({"grandfather_months": "61"}, "--grandfather-months", "must be 0 to 60 months"),
        ({"guardrail_percent": "0"}, "--guardrail-percent", "must be 1 to"),
        ({"reason": " "}, "--reason", "must not be empty"),
        ({"reason": "x" * 1001}, "--reason", "at most 1000 characters"),
        ({"reason": "bad\x00byte"}, "--reason", "control character"),
        ({"offers": ["step-up:20"]}, "--offer", "expected step-up:PERCENT:MONTHS"),
        ({"offers": ["annual-lock", "annual-lock"]}, "--offer", "annual-lock is given twice"),
        ({"offers": ["downgrade:pro:1900"]}, "--offer", "downgrade to 'pro' is the migration's own plan"),
        (
            {"offers": ["downgrade:basic:5900"]},
            "--offer",
            "downgrade MINOR 5900 is not below the new amount 5900",
        ),
        ({"interval": "year", "offers": ["annual-lock"]}, "--offer", "not for a yearly migration"),
        (
            {"interval": "year", "offers": ["step-up:10:6"]},
            "--offer",
            "whole years: MONTHS 12, 24 or 36, not 6",
        ),
    ],
)
def test_refusals_name_the_option(changes: dict[str, Any], field: str, reason: str) -> None:
    exc = refused(options(**changes))
    assert exc.field == field
    assert reason in exc.reason, exc.reason
    assert "\n" not in str(exc)


def test_multiline_reason_is_kept() -> None:
    assert from_options(options(reason="Costs rose.\r\nThanks."), now=NOW).reason == "Costs rose.\nThanks."


def test_a_yearly_step_up_by_whole_years() -> None:
    terms = from_options(options(interval="year", new_amount="59000", offers=["step-up:10:12"]), now=NOW)
    assert terms.offers == ({"kind": "step_up", "percent": 10, "months": 12},)


# -- the file ----------------------------------------------------------------------------------

GOOD = """
plan = "pro"
currency = "EUR"
interval = "month"
new_amount = 5900
effective = 2027-02-01
notice_days = 45
grandfather_months = 2
offers = ["step-up:20:6", "annual-lock"]
reason = \"\"\"Costs rose.
Thank you for staying with us.\"\"\"
guardrail_percent = 40
cancel_alert_percent = 8
cancel_alert_days = 21
"""


def test_terms_from_a_file() -> None:
    terms = from_toml(GOOD, now=NOW)
    assert terms.effective_at == datetime(2027, 2, 1, tzinfo=UTC)
    assert (terms.notice_days, terms.grandfather_months, terms.guardrail_percent) == (45, 2, 40)
    assert (terms.cancel_alert_percent, terms.cancel_alert_days) == (8, 21)
    assert terms.reason == "Costs rose.\nThank you for staying with us."
    assert len(terms.offers) == 2


@pytest.mark.parametrize(
    ("text", "field", "reason"),
    [
        ("plan = ", "file", "not valid TOML"),
        (GOOD + "colour = 'blue'\n", "colour", "unknown key"),
        (GOOD.replace("new_amount = 5900", "new_amount = 59.0"), "new_amount", "expected a whole number"),
        (GOOD.replace("new_amount = 5900", "new_amount = true"), "new_amount", "expected a whole number"),
        (GOOD.replace("new_amount = 5900", 'new_amount = "5900"'), None, None),  # text digits are fine
        (
            GOOD.replace("effective = 2027-02-01", "effective = 2027-02-01T00:00:00"),
            "effective",
            "needs its offset",
        ),
        (GOOD.replace("effective = 2027-02-01", "effective = 2026-01-01"), "effective", "is in the past"),
        (GOOD.replace("effective = 2027-02-01", "effective = 20270201"), "effective", "expected a date"),
        (
            GOOD.replace('offers = ["step-up:20:6", "annual-lock"]', 'offers = "annual-lock"'),
            "offers",
            "a list",
        ),
        (GOOD.replace('offers = ["step-up:20:6", "annual-lock"]', "offers = [1]"), "offers", "offer text"),
        (GOOD.replace("notice_days = 45", "notice_days = 3"), "notice_days", "too short"),
        (GOOD.replace('plan = "pro"', "plan = 7"), "plan", "expected text, got int"),
        (
            GOOD.replace("cancel_alert_percent = 8", "cancel_alert_percent = 0"),
            "cancel_alert_percent",
            "1 to 100",
        ),
        (GOOD.replace('currency = "EUR"\n', ""), "currency", "required"),
    ],
)
def test_file_refusals_name_the_key(text: str, field: str | None, reason: str | None) -> None:
    if field is None:
        assert from_toml(text, now=NOW).new_amount_minor == 5900
        return
    with pytest.raises(Refused) as caught:
        from_toml(text, now=NOW)
    assert caught.value.field == field
    assert reason in caught.value.reason, caught.value.reason
