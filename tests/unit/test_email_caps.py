"""Per-recipient caps and coalescing (:func:`dunning.domain.emails.decide`), the ``[emails]`` policy
table, and the mail class each workflow declares for its notice kinds. Pure: no servers.
"""

from __future__ import annotations

from datetime import UTC, datetime, time, timedelta
from zoneinfo import ZoneInfo

import pytest

from dunning.domain.emails import (
    DUNNING,
    PROMPT,
    TRANSACTIONAL,
    Defer,
    Drop,
    EmailCaps,
    Mail,
    MailKind,
    Send,
    decide,
)
from dunning.domain.policy import DEFAULT_POLICY, PolicyError, policy_from_dict
from dunning.engine import registry

NOW = datetime(2026, 11, 4, 15, 0, tzinfo=UTC)
QUIET = (time(21, 0), time(8, 0))
CAPS = EmailCaps(max_dunning_per_day=1, max_prompts_per_week=2)

FAILED = MailKind(DUNNING, 10)
REMINDER = MailKind(DUNNING, 20)
FINAL = MailKind(DUNNING, 30)
OFFER = MailKind(PROMPT, 10)
UPGRADE = MailKind(PROMPT, 20)
RENEWAL = MailKind(TRANSACTIONAL)


def _decide(email: Mail, *, sent=(), due=(), tz: str = "UTC", caps: EmailCaps = CAPS, now: datetime = NOW):
    return decide(email, sent=list(sent), due=list(due), caps=caps, timezone=tz, quiet_hours=QUIET, now=now)


def test_transactional_always_goes_whatever_else_was_sent() -> None:
    sent = [Mail(i, "payment_failed", FAILED, NOW - timedelta(hours=i)) for i in range(1, 5)]
    assert _decide(Mail(9, "renewal_notice", RENEWAL, NOW), sent=sent) == Send()


def test_one_dunning_email_a_day_the_second_is_deferred_to_the_next_local_morning() -> None:
    sent = [Mail(1, "payment_failed", FAILED, NOW - timedelta(hours=3), case_id=1)]
    decision = _decide(Mail(2, "payment_failed", FAILED, NOW, case_id=2), sent=sent)
    assert isinstance(decision, Defer)
    # Next local day starts at midnight, inside quiet hours: it lands when they end, 08:00 UTC.
    assert decision.until == datetime(2026, 11, 5, 8, 0, tzinfo=UTC)
    assert "at most 1 dunning email(s) a day" in decision.reason


def test_the_day_is_the_recipients_local_day() -> None:
    # 15:00 UTC is 07:00 the same day in Los Angeles, and 00:00 the next day in Tokyo.
    yesterday_la = [Mail(1, "payment_failed", FAILED, datetime(2026, 11, 4, 7, 30, tzinfo=UTC), case_id=1)]
    # 07:30 UTC on the 4th is 23:30 on the 3rd in Los Angeles: another day, so this one goes.
    assert (
        _decide(
            Mail(2, "payment_failed", FAILED, NOW, case_id=2), sent=yesterday_la, tz="America/Los_Angeles"
        )
        == Send()
    )
    # In UTC both are on the 4th.
    assert isinstance(_decide(Mail(2, "payment_failed", FAILED, NOW, case_id=2), sent=yesterday_la), Defer)
    # In Tokyo 15:00 UTC is the 5th already; 07:30 UTC was the 4th there.
    assert (
        _decide(Mail(2, "payment_failed", FAILED, NOW, case_id=2), sent=yesterday_la, tz="Asia/Tokyo")
        == Send()
    )


def test_deferral_lands_after_quiet_hours_in_the_recipients_zone() -> None:
    sent = [Mail(1, "payment_failed", FAILED, NOW - timedelta(hours=1), case_id=1)]
    decision = _decide(Mail(2, "payment_failed", FAILED, NOW, case_id=2), sent=sent, tz="Europe/Berlin")
    assert isinstance(decision, Defer)
    assert decision.until.astimezone(ZoneInfo("Europe/Berlin")).hour == 8


def test_two_dunning_emails_due_together_the_more_important_goes_the_other_waits() -> None:
    failed = Mail(1, "payment_failed", FAILED, NOW, case_id=1)
    final = Mail(2, "final_notice", FINAL, NOW, case_id=2)
    assert _decide(final, due=[failed]) == Send()
    assert isinstance(_decide(failed, due=[final]), Defer)


def test_an_earlier_step_of_the_same_case_is_merged_into_the_later_one() -> None:
    reminder = Mail(1, "payment_reminder", REMINDER, NOW, case_id=7)
    final = Mail(2, "final_notice", FINAL, NOW, case_id=7)
    assert _decide(final, due=[reminder]) == Send()
    decision = _decide(reminder, due=[final])
    assert isinstance(decision, Drop) and "merged into final_notice" in decision.reason
    # Also when the final notice already went today.
    sent_final = Mail(2, "final_notice", FINAL, NOW - timedelta(hours=2), case_id=7)
    assert isinstance(_decide(reminder, sent=[sent_final]), Drop)


def test_rivals_of_equal_rank_resolve_by_age_so_exactly_one_goes() -> None:
    a = Mail(1, "payment_failed", FAILED, NOW, case_id=1)
    b = Mail(2, "payment_failed", FAILED, NOW, case_id=2)
    outcomes = [_decide(a, due=[b]), _decide(b, due=[a])]
    assert outcomes.count(Send()) == 1


def test_a_higher_daily_dunning_cap_lets_two_go() -> None:
    caps = EmailCaps(max_dunning_per_day=2, max_prompts_per_week=2)
    sent = [Mail(1, "payment_failed", FAILED, NOW - timedelta(hours=1), case_id=1)]
    assert _decide(Mail(2, "payment_failed", FAILED, NOW, case_id=2), sent=sent, caps=caps) == Send()


def test_prompts_capped_per_week_and_dropped_not_deferred() -> None:
    sent = [
        Mail(1, "annual_offer", OFFER, NOW - timedelta(days=6)),
        Mail(2, "upgrade_ending", UPGRADE, NOW - timedelta(days=2)),
    ]
    decision = _decide(Mail(3, "upgrade_ending", UPGRADE, NOW), sent=sent)
    assert isinstance(decision, Drop) and "2 prompt(s) a week" in decision.reason
    # A week later the older one no longer counts.
    assert _decide(Mail(3, "upgrade_ending", UPGRADE, NOW), sent=sent, now=NOW + timedelta(days=1)) == Send()


def test_no_prompt_on_a_day_with_a_dunning_email() -> None:
    dunning_today = [Mail(1, "payment_failed", FAILED, NOW - timedelta(hours=2), case_id=1)]
    assert isinstance(_decide(Mail(2, "annual_offer", OFFER, NOW), sent=dunning_today), Drop)
    assert isinstance(
        _decide(Mail(2, "annual_offer", OFFER, NOW), due=[Mail(1, "payment_failed", FAILED, NOW)]), Drop
    )


def test_one_prompt_a_day_the_more_important_goes() -> None:
    offer = Mail(1, "annual_offer", OFFER, NOW)
    upgrade = Mail(2, "upgrade_ending", UPGRADE, NOW)
    assert _decide(upgrade, due=[offer]) == Send()
    decision = _decide(offer, due=[upgrade])
    assert isinstance(decision, Drop) and "upgrade_ending goes instead" in decision.reason


def test_zero_prompts_a_week_switches_prompts_off() -> None:
    caps = EmailCaps(max_dunning_per_day=1, max_prompts_per_week=0)
    assert isinstance(_decide(Mail(1, "annual_offer", OFFER, NOW), caps=caps), Drop)


def test_the_emails_table_of_the_policy_file() -> None:
    assert DEFAULT_POLICY.emails == EmailCaps(1, 2)
    policy = policy_from_dict({"emails": {"max_dunning_per_day": 2, "max_prompts_per_week": 0}})
    assert policy.emails == EmailCaps(2, 0)
    with pytest.raises(PolicyError) as err:
        policy_from_dict({"emails": {"max_dunning_per_day": 0}})
    assert err.value.field == "emails.max_dunning_per_day"
    with pytest.raises(PolicyError) as err:
        policy_from_dict({"emails": {"max_prompts_a_week": 3}})
    assert err.value.field.startswith("emails")


def test_each_workflow_classifies_its_own_kinds() -> None:
    registry.check()
    assert registry.mail_kind("payment_failed").mail_class == DUNNING
    assert registry.mail_kind("final_notice").rank > registry.mail_kind("payment_reminder").rank
    for kind in (
        "access_suspended",
        "payment_recovered",
        "subscription_ended",
        "renewal_notice",
        "card_expiring",
        "annual_switch_confirmed",
        "upgrade_reverted",
        "price_change_notice",
        "price_change_reminder",
        "price_choice_confirmed",
    ):
        assert registry.mail_kind(kind).mail_class == TRANSACTIONAL, kind
    for kind, variant in (
        ("trial_reminder", "card"),
        ("trial_reminder", "no_card"),
        ("trial_ended", "lapsed"),
    ):
        assert registry.mail_kind(kind, variant).mail_class == TRANSACTIONAL
    assert registry.mail_kind("annual_offer").mail_class == PROMPT
    assert registry.mail_kind("upgrade_ending").mail_class == PROMPT
    # Not any workflow's kind: the safe side.
    assert registry.mail_kind("no_such_kind").mail_class == TRANSACTIONAL


def test_a_workflow_cannot_classify_another_workflows_kind() -> None:
    rogue = registry.Workflow(name="rogue", notice_kinds=("x",), mail_kinds={"payment_failed": OFFER})
    with pytest.raises(ValueError, match="classifies 'payment_failed'"):
        registry.check((rogue,))
