"""Lifecycle policy sections: defaults, per-plan overrides, TOML loading, errors that name the field."""

from __future__ import annotations

from datetime import timedelta
from pathlib import Path

import pytest

from dunning.domain.lifecycle_policy import DEFAULT_LIFECYCLE
from dunning.domain.policy import DEFAULT_POLICY, PolicyError, load_policy, policy_from_dict


def _error(data: dict) -> PolicyError:
    with pytest.raises(PolicyError) as info:
        policy_from_dict(data)
    return info.value


# ---------------------------------------------------------------------------
# Defaults
# ---------------------------------------------------------------------------


def test_builtin_defaults() -> None:
    lc = DEFAULT_POLICY.lifecycle_for(None)
    assert lc == DEFAULT_LIFECYCLE
    assert lc.renewals.offsets_days == (30, 7)
    assert lc.renewals.intervals == frozenset({"year"})
    assert lc.card_expiry.offsets_days == (30, 7)
    offer = lc.annual_offer
    assert (offer.enabled, offer.tenure_months, offer.every_days) == (True, 3, 180)
    assert offer.every == timedelta(days=180)
    assert (offer.discount_percent, offer.months_free) == (15, None)
    assert lc.trials.offsets_days == (7, 3, 1)
    assert lc.trials.outcome_delay == timedelta(hours=2)
    assert lc.upgrades.offsets_days == (3, 1)
    assert lc.upgrades.long_taste == timedelta(days=7)
    assert lc.prices == {}


def test_empty_document_and_unknown_plan_use_the_defaults() -> None:
    policy = policy_from_dict({"plans": {"pro": {"grace_days": 21}}})
    assert policy.lifecycle_for("pro") == DEFAULT_LIFECYCLE  # flat dunning keys only: no lifecycle override
    assert policy.lifecycle_for("starter") is policy.lifecycle
    assert policy.lifecycle_for("") is policy.lifecycle
    assert policy.for_plan("pro").grace_days == 21


def test_offsets_are_stored_sorted_descending() -> None:
    policy = policy_from_dict({"renewals": {"offsets_days": [7, 60, 30]}, "trials": {"offsets_days": [1, 7]}})
    assert policy.lifecycle.renewals.offsets_days == (60, 30, 7)
    assert policy.lifecycle.trials.offsets_days == (7, 1)


def test_empty_offsets_disable_a_series() -> None:
    assert policy_from_dict({"card_expiry": {"offsets_days": []}}).lifecycle.card_expiry.offsets_days == ()


def test_annual_price_with_a_discount_and_with_months_free() -> None:
    discount = policy_from_dict({"annual_offer": {"discount_percent": 20}}).lifecycle.annual_offer
    assert discount.annual_price_minor(1000) == 9600  # 12 000 less 20 %
    free = policy_from_dict({"annual_offer": {"months_free": 2}}).lifecycle.annual_offer
    assert (free.discount_percent, free.months_free) == (None, 2)
    assert free.annual_price_minor(1000) == 10000
    # Rounded down, in the customer's favour: 999 * 12 * 85 / 100 = 10 189.8
    assert DEFAULT_LIFECYCLE.annual_offer.annual_price_minor(999) == 10189


# ---------------------------------------------------------------------------
# Per-plan overrides
# ---------------------------------------------------------------------------


def test_plan_section_overrides_key_by_key() -> None:
    policy = policy_from_dict(
        {
            "renewals": {"offsets_days": [30, 7], "intervals": ["year", "month"]},
            "trials": {"outcome_delay_hours": 4},
            "plans": {
                "pro": {"renewals": {"offsets_days": [60, 30, 7]}, "trials": {"offsets_days": [3]}},
                "team": {"grace_days": 20},
            },
        }
    )
    pro = policy.lifecycle_for("pro")
    assert pro.renewals.offsets_days == (60, 30, 7)
    assert pro.renewals.intervals == frozenset({"year", "month"})  # from the top-level section
    assert pro.trials.offsets_days == (3,)
    assert pro.trials.outcome_delay_hours == 4  # from the top-level section, not the built-in 2
    assert pro.card_expiry == policy.lifecycle.card_expiry
    assert policy.lifecycle.renewals.offsets_days == (30, 7)  # the top level is untouched
    assert policy.lifecycle_for("team") is policy.lifecycle


def test_reason_paths_name_where_a_value_came_from() -> None:
    policy = policy_from_dict({"plans": {"pro": {"renewals": {"offsets_days": [60]}}}})
    pro = policy.lifecycle_for("pro")
    assert pro.renewals.path("offsets_days") == "plans.pro.renewals.offsets_days"
    assert pro.renewals.path("intervals") == "renewals.intervals"
    assert pro.upgrades.path("offsets_days") == "temporary_upgrades.offsets_days"
    assert policy.lifecycle.renewals.path("offsets_days") == "renewals.offsets_days"


def test_plan_flat_dunning_keys_and_sections_together() -> None:
    policy = policy_from_dict(
        {
            "defaults": {"grace_days": 20},
            "plans": {
                "pro": {
                    "end_action": "downgrade",
                    "downgrade_plan": "free",
                    "annual_offer": {"tenure_months": 6},
                }
            },
        }
    )
    assert policy.for_plan("pro").end_action == "downgrade"
    assert policy.for_plan("pro").grace_days == 20
    assert policy.lifecycle_for("pro").annual_offer.tenure_months == 6
    # The flat dunning keys keep their validation inside a plan that also has sections.
    err = _error({"plans": {"pro": {"end_action": "downgrade", "trials": {"offsets_days": [3]}}}})
    assert err.field == "plans.pro.downgrade_plan"


def test_a_plan_may_choose_months_free_over_a_top_level_discount() -> None:
    policy = policy_from_dict(
        {"annual_offer": {"discount_percent": 10}, "plans": {"pro": {"annual_offer": {"months_free": 1}}}}
    )
    assert (policy.lifecycle.annual_offer.discount_percent, policy.lifecycle.annual_offer.months_free) == (
        10,
        None,
    )
    pro = policy.lifecycle_for("pro").annual_offer
    assert (pro.discount_percent, pro.months_free) == (None, 1)


def test_prices_are_shared_by_every_plan() -> None:
    policy = policy_from_dict(
        {
            "prices": {"pro": {"EUR": 4900, "USD": 5500}, "basic": {"EUR": 1900}},
            "plans": {"basic": {"renewals": {"offsets_days": [14]}}},
        }
    )
    for lc in (policy.lifecycle, policy.lifecycle_for("basic")):
        assert lc.prices == {"pro": {"EUR": 4900, "USD": 5500}, "basic": {"EUR": 1900}}
        assert lc.monthly_price("pro", "USD") == 5500
        assert lc.monthly_price("pro", "GBP") is None
        assert lc.monthly_price("team", "EUR") is None


def test_load_from_toml(tmp_path: Path) -> None:
    path = tmp_path / "policy.toml"
    path.write_text(
        """
version = "2026-12-a"

[renewals]
offsets_days = [30, 7]
intervals = ["year"]

[annual_offer]
tenure_months = 4
every_days = 90
months_free = 2

[trials]
offsets_days = [5, 1]
outcome_delay_hours = 1.5

[temporary_upgrades]
offsets_days = [2]
long_taste_days = 10

[prices.pro]
EUR = 4900

[plans.pro]
grace_days = 21

[plans.pro.renewals]
offsets_days = [60, 30, 7]
""",
        encoding="utf-8",
    )
    policy = load_policy(path)
    assert policy.for_plan("pro").grace_days == 21
    lc = policy.lifecycle
    assert (lc.annual_offer.tenure_months, lc.annual_offer.every_days, lc.annual_offer.months_free) == (
        4,
        90,
        2,
    )
    assert lc.annual_offer.discount_percent is None
    assert lc.trials.offsets_days == (5, 1)
    assert lc.trials.outcome_delay == timedelta(minutes=90)
    assert (lc.upgrades.offsets_days, lc.upgrades.long_taste_days) == ((2,), 10)
    assert lc.prices == {"pro": {"EUR": 4900}}
    assert policy.lifecycle_for("pro").renewals.offsets_days == (60, 30, 7)


def test_a_bad_section_in_a_file_names_the_key(tmp_path: Path) -> None:
    path = tmp_path / "policy.toml"
    path.write_text("[plans.pro.trials]\noffsets_days = [3, 3]\n", encoding="utf-8")
    with pytest.raises(PolicyError) as info:
        load_policy(path)
    assert info.value.field == "plans.pro.trials.offsets_days"
    assert "distinct" in info.value.reason


# ---------------------------------------------------------------------------
# Errors name the field
# ---------------------------------------------------------------------------


@pytest.mark.parametrize("section", ["renewals", "card_expiry", "trials", "temporary_upgrades"])
@pytest.mark.parametrize(
    ("offsets", "words"), [([7, 7], "distinct"), ([0, 3], "positive"), ([-1], "positive")]
)
def test_offsets_must_be_positive_and_distinct(section: str, offsets: list[int], words: str) -> None:
    err = _error({section: {"offsets_days": offsets}})
    assert err.field == f"{section}.offsets_days"
    assert words in err.reason
    err = _error({"plans": {"pro": {section: {"offsets_days": offsets}}}})
    assert err.field == f"plans.pro.{section}.offsets_days"


@pytest.mark.parametrize(
    ("data", "field"),
    [
        ({"renewals": {"offsets_days": [7.5]}}, "renewals.offsets_days[0]"),
        ({"renewals": {"offsets_days": [30, "7"]}}, "renewals.offsets_days[1]"),
        ({"renewals": {"offsets_days": 30}}, "renewals.offsets_days"),
        ({"renewals": {"intervals": ["fortnight"]}}, "renewals.intervals[0]"),
        ({"renewals": {"intervals": ["year", "decade"]}}, "renewals.intervals[1]"),
        ({"renewals": {"offset_days": [30]}}, "renewals.offset_days"),
        ({"renewals": []}, "renewals"),
        ({"annual_offer": {"discount_percent": 0}}, "annual_offer.discount_percent"),
        ({"annual_offer": {"discount_percent": 51}}, "annual_offer.discount_percent"),
        ({"annual_offer": {"discount_percent": 12.5}}, "annual_offer.discount_percent"),
        ({"annual_offer": {"months_free": 0}}, "annual_offer.months_free"),
        ({"annual_offer": {"months_free": 7}}, "annual_offer.months_free"),
        ({"annual_offer": {"tenure_months": -1}}, "annual_offer.tenure_months"),
        ({"annual_offer": {"tenure_months": 2.5}}, "annual_offer.tenure_months"),
        ({"annual_offer": {"every_days": 0}}, "annual_offer.every_days"),
        ({"annual_offer": {"every_days": -30}}, "annual_offer.every_days"),
        ({"annual_offer": {"enabled": "yes"}}, "annual_offer.enabled"),
        ({"trials": {"outcome_delay_hours": -1}}, "trials.outcome_delay_hours"),
        ({"temporary_upgrades": {"long_taste_days": 0}}, "temporary_upgrades.long_taste_days"),
        (
            {"plans": {"pro": {"annual_offer": {"discount_percent": 60}}}},
            "plans.pro.annual_offer.discount_percent",
        ),
        ({"plans": {"pro": {"renewals": 3}}}, "plans.pro.renewals"),
        ({"plans": {"pro": {"renewals": {"intervals": ["hour"]}}}}, "plans.pro.renewals.intervals[0]"),
    ],
)
def test_bad_values_name_the_field(data: dict, field: str) -> None:
    assert _error(data).field == field


def test_error_reasons_have_no_pydantic_prefix() -> None:
    err = _error({"trials": {"offsets_days": [3, 3]}})
    assert err.reason == "offsets must be distinct"
    assert str(err) == "trials.offsets_days: offsets must be distinct"


def test_discount_and_months_free_are_exclusive() -> None:
    err = _error({"annual_offer": {"discount_percent": 10, "months_free": 1}})
    assert err.field == "annual_offer.months_free"
    assert "not both" in err.reason
    err = _error({"plans": {"pro": {"annual_offer": {"discount_percent": 10, "months_free": 1}}}})
    assert err.field == "plans.pro.annual_offer.months_free"


@pytest.mark.parametrize(
    ("prices", "field", "words"),
    [
        ({"pro": {"eur": 4900}}, "prices.pro.eur", "ISO 4217"),
        ({"pro": {"EURO": 4900}}, "prices.pro.EURO", "ISO 4217"),
        ({"pro": {"EUR": 0}}, "prices.pro.EUR", "positive"),
        ({"pro": {"EUR": -5}}, "prices.pro.EUR", "positive"),
        ({"pro": {"EUR": 49.5}}, "prices.pro.EUR", "positive integer"),
        ({"pro": {"EUR": "4900"}}, "prices.pro.EUR", "positive integer"),
        ({"pro": {"EUR": True}}, "prices.pro.EUR", "positive integer"),
        ({"pro": 4900}, "prices.pro", "table"),
    ],
)
def test_bad_prices_name_the_field(prices: dict, field: str, words: str) -> None:
    err = _error({"prices": prices})
    assert err.field == field
    assert words in err.reason


def test_prices_must_be_a_table() -> None:
    assert _error({"prices": 4900}).field == "prices"


def test_prices_inside_a_plan_are_refused_with_a_hint() -> None:
    err = _error({"plans": {"pro": {"prices": {"EUR": 4900}}}})
    assert err.field == "plans.pro.prices"
    assert "[prices.<plan>]" in err.reason


def test_unknown_top_level_key_lists_the_new_sections() -> None:
    err = _error({"renewal": {"offsets_days": [30]}})
    assert err.field == "renewal"
    assert "renewals" in err.reason
    assert "temporary_upgrades" in err.reason
