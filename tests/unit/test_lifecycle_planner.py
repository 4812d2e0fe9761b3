"""The lifecycle planner, kind by kind: what is wanted, when, with which key, facts and reason."""

from __future__ import annotations

from dataclasses import replace
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from dunning.domain.lifecycle_policy import DEFAULT_LIFECYCLE, LifecyclePolicy
from dunning.domain.policy import policy_from_dict
from dunning.workflows.lifecycle.facts import Card, SubscriptionFacts, Upgrade
from dunning.workflows.lifecycle.planned import add_months
from dunning.workflows.lifecycle.planner import KINDS, PlannedNotice, calendar, plan_notices

NOW = datetime(2026, 12, 1, 12, 0, tzinfo=UTC)
RENEWAL = datetime(2027, 1, 13, 9, 30, tzinfo=UTC)
VISA = Card(brand="visa", last4="4242", exp_month=12, exp_year=2030)


def at(text: str) -> datetime:
    return datetime.fromisoformat(text).replace(tzinfo=UTC)


def sub(**changes: Any) -> SubscriptionFacts:
    """A yearly, active, paying subscription renewing on RENEWAL, known for a year."""
    base = SubscriptionFacts(
        id="sub_1",
        customer_id="cus_1",
        plan="basic",
        status="active",
        amount_minor=12000,
        currency="EUR",
        interval="year",
        interval_count=1,
        current_period_end=RENEWAL,
        trial_end=None,
        cancel_at_period_end=False,
        started_at=None,
        first_seen_at=RENEWAL - timedelta(days=365),
        upgrade=None,
        card=VISA,
        open_case=False,
        last_annual_offer_at=None,
        sent_keys=frozenset(),
    )
    return replace(base, **changes)


def monthly(**changes: Any) -> SubscriptionFacts:
    return sub(
        **(
            {"interval": "month", "amount_minor": 1000, "current_period_end": at("2026-12-15T08:00")}
            | changes
        )
    )


def of(
    kind: str, s: SubscriptionFacts, policy: LifecyclePolicy = DEFAULT_LIFECYCLE, now: datetime = NOW
) -> list[PlannedNotice]:
    return [n for n in plan_notices(s, policy, now) if n.kind == kind]


def keys(notices: list[PlannedNotice]) -> list[str]:
    return [n.key for n in notices]


def lifecycle(data: dict, plan: str | None = None) -> LifecyclePolicy:
    return policy_from_dict(data).lifecycle_for(plan)


# ---------------------------------------------------------------------------
# Renewal notices
# ---------------------------------------------------------------------------


def test_yearly_renewal_gets_30_and_7_days() -> None:
    notices = of("renewal_notice", sub())
    assert keys(notices) == ["renewal_notice:sub_1:2027-01-13:30d", "renewal_notice:sub_1:2027-01-13:7d"]
    assert [n.due_at for n in notices] == [RENEWAL - timedelta(days=30), RENEWAL - timedelta(days=7)]
    first = notices[0]
    assert first.announced_at == RENEWAL
    assert (first.subscription_id, first.customer_id, first.variant) == ("sub_1", "cus_1", None)
    assert first.reason == "renewal on 2027-01-13: 30 days before (renewals.offsets_days)"
    assert first.facts == {
        "renews_at": "2027-01-13T09:30:00+00:00",
        "amount_minor": 12000,
        "currency": "EUR",
        "plan": "basic",
        "interval": "year",
        "interval_count": 1,
        "card_brand": "visa",
        "card_last4": "4242",
    }


def test_renewal_without_a_card_states_none() -> None:
    notices = of("renewal_notice", sub(card=None))
    assert notices[0].facts["card_brand"] is None
    assert notices[0].facts["card_last4"] is None


def test_monthly_gets_renewal_notices_only_when_the_policy_lists_month() -> None:
    assert of("renewal_notice", monthly(), now=at("2026-12-01T00:00")) == []
    policy = lifecycle({"renewals": {"intervals": ["year", "month"], "offsets_days": [3]}})
    notices = of("renewal_notice", monthly(), policy, now=at("2026-12-01T00:00"))
    assert keys(notices) == ["renewal_notice:sub_1:2026-12-15:3d"]


@pytest.mark.parametrize(
    "changes",
    [{"cancel_at_period_end": True}, {"status": "canceled"}, {"status": "trialing"}, {"status": "paused"}],
)
def test_no_renewal_notice_when_nothing_renews(changes: dict) -> None:
    assert of("renewal_notice", sub(**changes)) == []


def test_renewal_notices_still_go_while_dunning() -> None:
    assert len(of("renewal_notice", sub(status="past_due", open_case=True))) == 2


def test_per_plan_offsets_and_the_reason_names_the_plan_key() -> None:
    policy = lifecycle({"plans": {"pro": {"renewals": {"offsets_days": [60, 30, 7]}}}}, "pro")
    notices = of("renewal_notice", sub(plan="pro"), policy, now=RENEWAL - timedelta(days=90))
    assert [n.key.rsplit(":", 1)[1] for n in notices] == ["60d", "30d", "7d"]
    assert notices[0].reason.endswith("(plans.pro.renewals.offsets_days)")


def test_learned_late_gets_the_latest_missed_offset_at_once() -> None:
    now = RENEWAL - timedelta(days=10)
    notices = of("renewal_notice", sub(), now=now)
    assert keys(notices) == ["renewal_notice:sub_1:2027-01-13:30d", "renewal_notice:sub_1:2027-01-13:7d"]
    assert notices[0].due_at == now  # at once
    assert "learned late: at once" in notices[0].reason
    assert notices[1].due_at == RENEWAL - timedelta(days=7)


def test_learned_after_every_offset_gets_only_the_last_one() -> None:
    now = RENEWAL - timedelta(days=3)
    notices = of("renewal_notice", sub(), now=now)
    assert keys(notices) == ["renewal_notice:sub_1:2027-01-13:7d"]
    assert notices[0].due_at == now


def test_a_sent_offset_stays_wanted_at_its_time_and_the_next_missed_one_goes_at_once() -> None:
    now = RENEWAL - timedelta(days=3)
    sent = frozenset({"renewal_notice:sub_1:2027-01-13:30d"})
    notices = of("renewal_notice", sub(sent_keys=sent), now=now)
    assert [(n.key[-3:], n.due_at) for n in notices] == [
        ("30d", RENEWAL - timedelta(days=30)),
        (":7d", now),
    ]
    assert "already sent" in notices[0].reason


def test_no_second_notice_at_once_after_the_late_one_was_sent() -> None:
    now = RENEWAL - timedelta(days=2)
    sent = frozenset({"renewal_notice:sub_1:2027-01-13:7d"})
    notices = of("renewal_notice", sub(sent_keys=sent), now=now)
    # 7d was sent (at once, a day ago): it stays wanted at its original time; 30d does not come back.
    assert [(n.key[-2:], n.due_at) for n in notices] == [("7d", RENEWAL - timedelta(days=7))]


def test_nothing_at_once_once_the_renewal_has_passed() -> None:
    assert of("renewal_notice", sub(), now=RENEWAL) == []
    assert of("renewal_notice", sub(), now=RENEWAL + timedelta(days=1)) == []


def test_a_moved_renewal_date_makes_new_keys() -> None:
    before = set(keys(of("renewal_notice", sub())))
    after = set(keys(of("renewal_notice", sub(current_period_end=RENEWAL + timedelta(days=1)))))
    assert len(after) == 2
    assert before.isdisjoint(after)


# ---------------------------------------------------------------------------
# Expiring cards (pre-dunning)
# ---------------------------------------------------------------------------

EXPIRING = Card(brand="mastercard", last4="4444", exp_month=12, exp_year=2026)  # stops working 2027-01-01


def test_card_expiry_before_the_renewal_warns_30_and_7_days_before() -> None:
    notices = of("card_expiring", sub(card=EXPIRING))
    expiry = at("2027-01-01T00:00")
    assert keys(notices) == ["card_expiring:sub_1:2026-12:30d", "card_expiring:sub_1:2026-12:7d"]
    assert [n.due_at for n in notices] == [expiry - timedelta(days=30), expiry - timedelta(days=7)]
    assert notices[0].announced_at == expiry
    assert "card_expiry.offsets_days" in notices[0].reason
    assert notices[0].facts == {
        "expires_at": "2027-01-01T00:00:00+00:00",
        "exp_month": 12,
        "exp_year": 2026,
        "card_brand": "mastercard",
        "card_last4": "4444",
        "renews_at": "2027-01-13T09:30:00+00:00",
        "amount_minor": 12000,
        "currency": "EUR",
    }


def test_card_expiry_at_the_end_of_the_month() -> None:
    assert Card(brand=None, last4=None, exp_month=2, exp_year=2028).expires_at() == at("2028-03-01T00:00")
    assert Card(brand=None, last4=None, exp_month=12, exp_year=2028).expires_at() == at("2029-01-01T00:00")
    assert Card(brand=None, last4=None, exp_month=None, exp_year=2028).expires_at() is None
    assert Card(brand=None, last4=None, exp_month=13, exp_year=2028).expires_at() is None  # no such month


def test_card_update_past_the_renewal_stops_the_warnings() -> None:
    assert len(of("card_expiring", sub(card=EXPIRING))) == 2
    updated = Card(brand="mastercard", last4="5555", exp_month=1, exp_year=2027)  # works until 2027-02-01
    assert of("card_expiring", sub(card=updated)) == []


def test_card_expiring_after_the_next_monthly_charge_is_not_warned_yet() -> None:
    card = Card(brand="visa", last4="1111", exp_month=1, exp_year=2027)
    assert of("card_expiring", monthly(card=card)) == []  # next charge 2026-12-15, card good until 2027-02


@pytest.mark.parametrize(
    "changes",
    [
        {"card": None},
        {"cancel_at_period_end": True},
        {"status": "canceled"},
        {"card": Card(brand="visa", last4="1", exp_month=None, exp_year=None)},
    ],
)
def test_no_card_warning_without_a_charge_or_an_expiry(changes: dict) -> None:
    assert of("card_expiring", sub(**({"card": EXPIRING} | changes))) == []


def test_trial_card_expiring_before_the_first_charge() -> None:
    trial = sub(status="trialing", trial_end=at("2027-01-05T00:00"), card=EXPIRING)
    notices = of("card_expiring", trial)
    assert len(notices) == 2
    assert notices[0].facts["renews_at"] == "2027-01-05T00:00:00+00:00"
    # A trial ending before the card expires: no warning.
    assert of("card_expiring", replace(trial, trial_end=at("2026-12-20T00:00"))) == []


def test_card_warnings_still_go_while_dunning_and_late_knowledge_applies() -> None:
    now = at("2026-12-28T00:00")  # 30d and 7d (2026-12-25) both past, expiry ahead
    notices = of("card_expiring", sub(card=EXPIRING, open_case=True, status="past_due"), now=now)
    assert [(n.key[-2:], n.due_at) for n in notices] == [("7d", now)]
    assert of("card_expiring", sub(card=EXPIRING), now=at("2027-01-02T00:00")) == []  # never after expiry


# ---------------------------------------------------------------------------
# Annual-switch offer
# ---------------------------------------------------------------------------


def test_monthly_past_tenure_gets_the_offer_at_once() -> None:
    notices = of("annual_offer", monthly(started_at=at("2026-08-01T10:00")))
    assert len(notices) == 1
    offer = notices[0]
    assert offer.key == "annual_offer:sub_1:2026-11-01"
    assert offer.due_at == NOW == offer.announced_at
    assert "annual_offer.tenure_months" in offer.reason
    assert "at once" in offer.reason
    assert offer.facts == {
        "plan": "basic",
        "amount_minor": 1000,
        "currency": "EUR",
        "annual_price_minor": 10200,
        "saving_minor": 1800,
        "discount_percent": 15,
        "months_free": None,
    }


def test_offer_is_scheduled_at_the_end_of_the_tenure() -> None:
    notices = of("annual_offer", monthly(started_at=at("2026-10-31T10:00")))
    assert keys(notices) == ["annual_offer:sub_1:2027-01-31"]
    assert notices[0].due_at == at("2027-01-31T10:00")


def test_tenure_counts_from_first_seen_without_started_at() -> None:
    notices = of("annual_offer", monthly(started_at=None, first_seen_at=at("2026-11-30T00:00")))
    assert notices[0].due_at == at("2027-02-28T00:00")  # Nov 30 + 3 months, clamped


def test_at_most_one_offer_per_every_days() -> None:
    last = at("2026-10-01T09:00")
    notices = of("annual_offer", monthly(started_at=at("2025-01-01T00:00"), last_annual_offer_at=last))
    assert keys(notices) == ["annual_offer:sub_1:2027-03-30"]
    assert notices[0].due_at == last + timedelta(days=180)
    assert "annual_offer.every_days" in notices[0].reason


def test_months_free_offer_money() -> None:
    policy = lifecycle({"annual_offer": {"months_free": 2}})
    facts = of("annual_offer", monthly(started_at=at("2026-01-01T00:00")), policy)[0].facts
    assert (facts["annual_price_minor"], facts["saving_minor"]) == (10000, 2000)
    assert (facts["discount_percent"], facts["months_free"]) == (None, 2)


@pytest.mark.parametrize(
    "changes",
    [
        {"interval": "year"},
        {"interval_count": 3},
        {"status": "trialing"},
        {"status": "past_due"},
        {"status": "canceled"},
        {"cancel_at_period_end": True},
        {"open_case": True},
        {"amount_minor": 0},
        {"started_at": at("2026-10-01T00:00")},  # not 3 months yet: scheduled, not now
    ],
)
def test_no_offer_now(changes: dict) -> None:
    s = monthly(started_at=at("2026-01-01T00:00"))
    notices = of("annual_offer", replace(s, **changes))
    assert [n for n in notices if n.due_at <= NOW] == []


def test_disabled_offer() -> None:
    policy = lifecycle({"annual_offer": {"enabled": False}})
    assert of("annual_offer", monthly(started_at=at("2026-01-01T00:00")), policy) == []


def test_offer_held_during_dunning_comes_back_when_the_case_closes() -> None:
    s = monthly(started_at=at("2026-01-01T00:00"))
    assert of("annual_offer", replace(s, open_case=True)) == []
    later = NOW + timedelta(days=12)
    notices = of("annual_offer", s, now=later)
    assert keys(notices) == ["annual_offer:sub_1:2026-04-01"]
    assert notices[0].due_at == later


def test_a_sent_offer_is_not_repeated_at_once() -> None:
    s = monthly(started_at=at("2026-01-01T00:00"), sent_keys=frozenset({"annual_offer:sub_1:2026-04-01"}))
    notices = of("annual_offer", s)
    assert notices[0].due_at == at("2026-04-01T00:00")
    assert "already sent" in notices[0].reason


# ---------------------------------------------------------------------------
# Trials
# ---------------------------------------------------------------------------

TRIAL_END = at("2026-12-20T15:00")


def trial(**changes: Any) -> SubscriptionFacts:
    """A 14-day trial of a monthly plan, seen when it started."""
    start = TRIAL_END - timedelta(days=14)
    base = {"status": "trialing", "trial_end": TRIAL_END, "started_at": start, "first_seen_at": start}
    return monthly(**(base | {"current_period_end": TRIAL_END} | changes))


START = TRIAL_END - timedelta(days=14)


def test_trial_reminders_7_3_1_with_and_without_card() -> None:
    no_card = of("trial_reminder", trial(card=None), now=START)
    assert keys(no_card) == [f"trial_reminder:sub_1:2026-12-20:{d}d" for d in (7, 3, 1)]
    assert [n.due_at for n in no_card] == [TRIAL_END - timedelta(days=d) for d in (7, 3, 1)]
    assert {n.variant for n in no_card} == {"no_card"}
    assert no_card[0].facts == {
        "trial_ends_at": "2026-12-20T15:00:00+00:00",
        "plan": "basic",
        "amount_minor": 1000,
        "currency": "EUR",
        "interval": "month",
        "card_brand": None,
        "card_last4": None,
    }
    assert "trials.offsets_days" in no_card[0].reason
    with_card = of("trial_reminder", trial(), now=START)
    assert keys(with_card) == keys(no_card)  # same announced fact, same keys
    assert {n.variant for n in with_card} == {"card"}
    assert with_card[0].facts["card_last4"] == "4242"


def test_short_trial_drops_offsets_before_it_started() -> None:
    start = TRIAL_END - timedelta(days=4)
    notices = of("trial_reminder", trial(started_at=start, first_seen_at=start), now=start)
    assert keys(notices) == ["trial_reminder:sub_1:2026-12-20:3d", "trial_reminder:sub_1:2026-12-20:1d"]
    assert notices[0].due_at == TRIAL_END - timedelta(days=3)


def test_trial_start_falls_back_to_first_seen() -> None:
    seen = TRIAL_END - timedelta(days=2)
    notices = of("trial_reminder", trial(started_at=None, first_seen_at=seen), now=seen)
    assert keys(notices) == ["trial_reminder:sub_1:2026-12-20:1d"]


def test_trial_learned_late_gets_one_reminder_at_once() -> None:
    # Started 14 days before the end, seen 5 days before: 7d is past (sent at once), 3d and 1d ahead.
    now = TRIAL_END - timedelta(days=5)
    notices = of("trial_reminder", trial(first_seen_at=now), now=now)
    assert [(n.key[-2:], n.due_at) for n in notices] == [
        ("7d", now),
        ("3d", TRIAL_END - timedelta(days=3)),
        ("1d", TRIAL_END - timedelta(days=1)),
    ]


def test_trial_extended_makes_new_keys() -> None:
    before = of("trial_reminder", trial(), now=START)
    extended = of("trial_reminder", trial(trial_end=TRIAL_END + timedelta(days=7)), now=START)
    assert keys(extended) == [f"trial_reminder:sub_1:2026-12-27:{d}d" for d in (7, 3, 1)]
    assert set(keys(before)).isdisjoint(keys(extended))


def test_no_reminders_when_the_trial_is_set_to_cancel() -> None:
    assert of("trial_reminder", trial(cancel_at_period_end=True), now=START) == []


def test_while_trialing_there_is_no_outcome_yet() -> None:
    assert of("trial_ended", trial(), now=START) == []
    # The billing system has not reported the outcome yet: nothing, not even late reminders.
    assert plan_notices(trial(card=None), DEFAULT_LIFECYCLE, TRIAL_END + timedelta(hours=5)) == []


@pytest.mark.parametrize(
    ("status", "variant"), [("active", "converted"), ("canceled", "lapsed"), ("past_due", "lapsed")]
)
def test_trial_outcome_two_hours_after_the_end(status: str, variant: str) -> None:
    now = TRIAL_END + timedelta(minutes=30)
    ended = trial(status=status, current_period_end=TRIAL_END + timedelta(days=31))
    assert of("trial_reminder", ended, now=now) == []
    notices = of("trial_ended", ended, now=now)
    assert keys(notices) == ["trial_ended:sub_1:2026-12-20"]
    assert notices[0].variant == variant
    assert notices[0].due_at == notices[0].announced_at == TRIAL_END + timedelta(hours=2)
    assert "trials.outcome_delay_hours" in notices[0].reason
    assert notices[0].facts == {
        "trial_ended_at": "2026-12-20T15:00:00+00:00",
        "plan": "basic",
        "amount_minor": 1000,
        "currency": "EUR",
        "next_charge_at": "2027-01-20T15:00:00+00:00",
    }


def test_outcome_learned_late_goes_at_once_unless_sent() -> None:
    now = TRIAL_END + timedelta(days=1)
    converted = trial(status="active")
    assert of("trial_ended", converted, now=now)[0].due_at == now
    sent = replace(converted, sent_keys=frozenset({"trial_ended:sub_1:2026-12-20"}))
    assert of("trial_ended", sent, now=now)[0].due_at == TRIAL_END + timedelta(hours=2)


def test_early_conversion_cancels_reminders_and_confirms_at_once() -> None:
    now = TRIAL_END - timedelta(days=4)
    planned = plan_notices(trial(status="active"), DEFAULT_LIFECYCLE, now)
    assert [n.kind for n in planned if n.kind.startswith("trial")] == ["trial_ended"]
    ended = of("trial_ended", trial(status="active"), now=now)[0]
    assert (ended.variant, ended.due_at) == ("converted", now)
    assert "converted early" in ended.reason


def test_no_outcome_for_a_trial_we_never_saw_running() -> None:
    late = trial(status="active", first_seen_at=TRIAL_END + timedelta(days=3))
    assert of("trial_ended", late, now=TRIAL_END + timedelta(days=3)) == []


def test_trial_reminders_still_go_while_dunning() -> None:
    assert len(of("trial_reminder", trial(open_case=True), now=START)) == 3


# ---------------------------------------------------------------------------
# Temporary upgrades
# ---------------------------------------------------------------------------

ENDS = at("2026-12-20T00:00")
PRICES = {"prices": {"pro": {"EUR": 4900}, "basic": {"EUR": 1900}}}


def upgraded(days: int = 14, **changes: Any) -> SubscriptionFacts:
    taste = Upgrade(plan="pro", ends_at=ENDS, revert_to="basic", seen_at=ENDS - timedelta(days=days))
    return monthly(**({"upgrade": taste} | changes))


def test_long_taste_gets_3_and_1_days_and_a_revert_note() -> None:
    policy = lifecycle(PRICES)
    ending = of("upgrade_ending", upgraded(), policy)
    assert keys(ending) == [
        "upgrade_ending:sub_1:pro:2026-12-20:3d",
        "upgrade_ending:sub_1:pro:2026-12-20:1d",
    ]
    assert [n.due_at for n in ending] == [ENDS - timedelta(days=3), ENDS - timedelta(days=1)]
    assert "temporary_upgrades.offsets_days" in ending[0].reason
    assert ending[0].facts == {
        "upgrade_plan": "pro",
        "revert_to": "basic",
        "ends_at": "2026-12-20T00:00:00+00:00",
        "price_difference_minor": 3000,
        "currency": "EUR",
    }
    reverted = of("upgrade_reverted", upgraded(), policy)
    assert keys(reverted) == ["upgrade_reverted:sub_1:pro:2026-12-20"]
    assert reverted[0].due_at == reverted[0].announced_at == ENDS
    assert reverted[0].facts == {
        "upgrade_plan": "pro",
        "revert_to": "basic",
        "ended_at": "2026-12-20T00:00:00+00:00",
    }


def test_short_taste_gets_only_the_first_offset() -> None:
    assert keys(of("upgrade_ending", upgraded(days=5))) == ["upgrade_ending:sub_1:pro:2026-12-20:3d"]
    assert len(of("upgrade_ending", upgraded(days=7))) == 2  # 7 days is a long taste


def test_price_difference_is_none_without_both_prices() -> None:
    assert of("upgrade_ending", upgraded())[0].facts["price_difference_minor"] is None
    policy = lifecycle({"prices": {"pro": {"EUR": 4900}}})
    assert of("upgrade_ending", upgraded(), policy)[0].facts["price_difference_minor"] is None
    policy = lifecycle({"prices": {"pro": {"USD": 4900}, "basic": {"USD": 1900}}})
    assert of("upgrade_ending", upgraded(), policy)[0].facts["price_difference_minor"] is None


def test_upgrade_prompts_are_held_while_dunning_but_the_revert_note_is_not() -> None:
    s = upgraded(open_case=True)
    assert of("upgrade_ending", s) == []
    assert len(of("upgrade_reverted", s)) == 1


@pytest.mark.parametrize("status", ["trialing", "past_due", "canceled"])
def test_upgrade_notices_only_for_paying_customers(status: str) -> None:
    planned = plan_notices(upgraded(status=status), DEFAULT_LIFECYCLE, NOW)
    assert [n for n in planned if n.kind.startswith("upgrade")] == []


def test_removing_the_upgrade_removes_its_notices() -> None:
    assert [n for n in plan_notices(monthly(), DEFAULT_LIFECYCLE, NOW) if n.kind.startswith("upgrade")] == []


def test_revert_note_learned_late() -> None:
    now = ENDS + timedelta(hours=1)
    assert of("upgrade_ending", upgraded(), now=now) == []
    assert of("upgrade_reverted", upgraded(), now=now)[0].due_at == now


# ---------------------------------------------------------------------------
# The planner as a whole
# ---------------------------------------------------------------------------


def everything() -> SubscriptionFacts:
    return upgraded(card=EXPIRING, started_at=at("2026-06-01T00:00"))


def test_plan_concatenates_every_kind_with_unique_keys() -> None:
    policy = lifecycle({"renewals": {"intervals": ["month"]}})
    planned = plan_notices(everything(), policy, NOW)
    assert {n.kind for n in planned} == {
        "renewal_notice",
        "annual_offer",
        "upgrade_ending",
        "upgrade_reverted",
    }  # the card is good until 2027-01-01, after the 2026-12-15 charge
    assert len({n.key for n in planned}) == len(planned)
    assert {n.kind for n in planned} <= KINDS
    assert all(n.reason and "\n" not in n.reason for n in planned)


def test_calendar_lists_the_window_sorted_without_sent_notices() -> None:
    s = replace(everything(), sent_keys=frozenset({"upgrade_ending:sub_1:pro:2026-12-20:3d"}))
    upcoming = calendar(s, DEFAULT_LIFECYCLE, NOW, days=30)
    assert [n.key for n in upcoming] == [
        "annual_offer:sub_1:2026-09-01",
        "upgrade_ending:sub_1:pro:2026-12-20:1d",
        "upgrade_reverted:sub_1:pro:2026-12-20",
    ]
    assert [n.due_at for n in upcoming] == sorted(n.due_at for n in upcoming)
    assert [n.key for n in calendar(s, DEFAULT_LIFECYCLE, NOW, days=1)] == ["annual_offer:sub_1:2026-09-01"]


def test_planning_needs_an_aware_now() -> None:
    with pytest.raises(ValueError, match="aware"):
        plan_notices(sub(), DEFAULT_LIFECYCLE, datetime(2026, 12, 1))


def test_long_ids_keep_keys_within_200_characters_and_distinct() -> None:
    long_a, long_b = "s" * 255, "s" * 254 + "t"
    a = plan_notices(replace(everything(), id=long_a), DEFAULT_LIFECYCLE, NOW)
    b = plan_notices(replace(everything(), id=long_b), DEFAULT_LIFECYCLE, NOW)
    assert a and all(len(n.key) <= 200 for n in a + b)
    assert {n.key for n in a}.isdisjoint({n.key for n in b})


@pytest.mark.parametrize(
    ("start", "months", "expected"),
    [
        ("2026-01-31T10:00", 1, "2026-02-28T10:00"),
        ("2028-01-31T10:00", 1, "2028-02-29T10:00"),
        ("2026-11-30T00:00", 3, "2027-02-28T00:00"),
        ("2026-05-15T00:00", 12, "2027-05-15T00:00"),
        ("2026-05-15T00:00", 0, "2026-05-15T00:00"),
        ("2026-03-31T00:00", -1, "2026-02-28T00:00"),
    ],
)
def test_add_months(start: str, months: int, expected: str) -> None:
    assert add_months(at(start), months) == at(expected)
