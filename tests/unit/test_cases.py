"""The dunning case state machine, one behaviour per test, with an explicit ``now``.

Policy: ``DEFAULT_POLICY.default`` -- retries on days 1, 3, 5, 7, 12; grace 14 days;
reminder on day 6; final notice 2 days before suspension; end 7 days after
suspension; at least 20 h between charges; 3 immediate card-update retries.
"""

from __future__ import annotations

import itertools
from dataclasses import replace
from datetime import UTC, datetime, timedelta

import pytest

from dunning.domain.policy import DEFAULT_POLICY, PlanPolicy, policy_from_dict
from dunning.workflows.failed_payments.policy import (
    TERMINAL,
    BillingAction,
    CaseFacts,
    CaseStatus,
    Decision,
    Job,
    JobKind,
    NoticeKind,
    final_notice_at,
    next_retry_at,
    on_charge_result,
    on_end_due,
    on_notice_due,
    on_payment_method_updated,
    on_repeat_failure,
    on_retry_due,
    on_subscription_canceled,
    on_suspend_due,
    open_case,
    planned_retry_at,
    recover,
    suspend_at,
)

P = DEFAULT_POLICY.default
T0 = datetime(2026, 3, 2, 9, 30, tzinfo=UTC)
KEY = "42"
DAY = timedelta(days=1)
HOUR = timedelta(hours=1)
GAP = timedelta(hours=20)


def days(n: float) -> datetime:
    return T0 + timedelta(days=n)


def opened(code: str = "insufficient_funds", *, has_pm: bool = True, policy: PlanPolicy = P) -> Decision:
    return open_case(policy, T0, case_key=KEY, decline_code=code, has_payment_method=has_pm)


def only(jobs: tuple[Job, ...], kind: JobKind) -> Job:
    found = [j for j in jobs if j.kind is kind]
    assert len(found) == 1, found
    return found[0]


def of_kind(jobs: tuple[Job, ...], kind: JobKind) -> list[Job]:
    return [j for j in jobs if j.kind is kind]


def charge(
    facts: CaseFacts,
    now: datetime,
    *,
    manual: bool,
    succeeded: bool = False,
    code: str = "insufficient_funds",
    policy: PlanPolicy = P,
) -> Decision:
    """What the shell does with a retry job that charges: count the attempt, report the outcome."""
    due = on_retry_due(facts, policy, now, case_key=KEY, manual=manual)
    assert due.charge, due.timeline
    counted = replace(due.facts, attempts_made=due.facts.attempts_made + 1)
    return on_charge_result(
        counted,
        policy,
        now,
        case_key=KEY,
        succeeded=succeeded,
        decline_code=None if succeeded else code,
        manual=manual,
    )


def suspended_facts(code: str = "insufficient_funds") -> CaseFacts:
    return on_suspend_due(opened(code).facts, P, days(14), case_key=KEY).facts


# ---------------------------------------------------------------------------
# Opening a case
# ---------------------------------------------------------------------------


def test_open_case_keeps_access_and_opens_in_grace() -> None:
    d = opened()
    assert d.facts.status is CaseStatus.OPEN
    assert d.facts.opened_at == T0
    assert d.facts.attempts_made == 0
    assert d.facts.needs_new_payment_method is False
    assert d.billing == ()  # access is not cut on the first failure
    assert d.charge is False
    assert d.cancel_pending_jobs is False


def test_open_case_schedules_suspension_at_exactly_end_of_grace() -> None:
    job = only(opened().jobs, JobKind.SUSPEND)
    assert job.due_at == T0 + timedelta(days=14)
    assert job.key == f"suspend:{KEY}"
    assert suspend_at(opened().facts, P) == job.due_at


def test_open_case_schedules_the_reminder() -> None:
    notices = {j.key: j.due_at for j in of_kind(opened().jobs, JobKind.NOTICE)}
    assert notices[f"notice:{KEY}:reminder-1"] == days(6)


def test_open_case_schedules_final_notice_two_days_before_suspension() -> None:
    notices = {j.key: j.due_at for j in of_kind(opened().jobs, JobKind.NOTICE)}
    assert notices[f"notice:{KEY}:final"] == days(12)
    assert final_notice_at(opened().facts, P) == days(12)
    assert len(notices) == 2  # one reminder + the final notice


def test_open_case_schedules_first_retry_on_day_one() -> None:
    job = only(opened().jobs, JobKind.RETRY)
    assert job.due_at == days(1)
    assert job.key.startswith(f"retry:{KEY}:s0:a0")
    assert job.manual is False


def test_open_case_sends_payment_failed_soft() -> None:
    (notice,) = opened().notices
    assert notice.kind is NoticeKind.PAYMENT_FAILED
    assert notice.step == "opened"
    assert notice.variant == "soft"


@pytest.mark.parametrize(
    ("code", "variant"),
    [("stolen_card", "hard"), ("expired_card", "expired"), ("authentication_required", "action_required")],
)
def test_open_case_with_unretryable_decline(code: str, variant: str) -> None:
    d = opened(code)
    assert of_kind(d.jobs, JobKind.RETRY) == []
    assert d.facts.needs_new_payment_method is True
    (notice,) = d.notices
    assert (notice.kind, notice.variant) == (NoticeKind.PAYMENT_FAILED, variant)
    # Suspension still has its own timer, as do the notices.
    assert only(d.jobs, JobKind.SUSPEND).due_at == days(14)
    assert len(of_kind(d.jobs, JobKind.NOTICE)) == 2
    assert next_retry_at(d.facts, P) is None


def test_grace_is_enforced_on_its_own_timer_without_any_retry() -> None:
    d = opened("stolen_card")
    suspend_job = only(d.jobs, JobKind.SUSPEND)
    s = on_suspend_due(d.facts, P, suspend_job.due_at, case_key=KEY)
    assert s.facts.status is CaseStatus.SUSPENDED
    assert s.billing == (BillingAction.SUSPEND,)


def test_open_case_without_payment_method() -> None:
    d = opened(has_pm=False)
    (notice,) = d.notices
    assert notice.kind is NoticeKind.PAYMENT_FAILED
    assert notice.variant == "no_payment_method"
    assert of_kind(d.jobs, JobKind.RETRY) == []
    assert only(d.jobs, JobKind.SUSPEND).due_at == days(14)
    assert d.facts.has_payment_method is False


def test_open_case_records_the_decline_in_the_timeline() -> None:
    (line,) = opened("stolen_card").timeline
    assert "stolen_card" in line
    assert "hard" in line


# ---------------------------------------------------------------------------
# The retry schedule
# ---------------------------------------------------------------------------


def test_whole_schedule_makes_exactly_len_retry_days_charges_before_suspension() -> None:
    d = opened()
    facts = d.facts
    retry = only(d.jobs, JobKind.RETRY)
    charged_at: list[datetime] = []
    while True:
        now = retry.due_at
        result = charge(facts, now, manual=False)
        charged_at.append(now)
        facts = result.facts
        retries = of_kind(result.jobs, JobKind.RETRY)
        if not retries:
            break
        (retry,) = retries
        assert len(charged_at) < 20, "runaway schedule"
    assert len(charged_at) == len(P.retry_days) == 5
    assert charged_at == [days(n) for n in (1, 3, 5, 7, 12)]
    assert all(t < suspend_at(facts, P) for t in charged_at)
    assert facts.scheduled_retries_made == 5
    assert facts.attempts_made == 5
    assert facts.status is CaseStatus.OPEN  # suspension is not a side effect of the last retry
    assert next_retry_at(facts, P) is None


def test_planned_retry_times() -> None:
    facts = opened().facts
    assert [planned_retry_at(facts, P, i) for i in range(5)] == [days(n) for n in (1, 3, 5, 7, 12)]
    assert planned_retry_at(facts, P, 5) is None


def test_scheduled_retry_after_failure_points_to_next_day_in_the_schedule() -> None:
    result = charge(opened().facts, days(1), manual=False)
    job = only(result.jobs, JobKind.RETRY)
    assert job.due_at == days(3)
    assert job.key.startswith(f"retry:{KEY}:s1:a1")
    assert job.manual is False
    assert result.facts.last_attempt_at == days(1)
    assert result.facts.decline_code == "insufficient_funds"
    assert result.notices == ()  # a soft re-decline does not email again


@pytest.mark.parametrize("status", sorted(TERMINAL))
@pytest.mark.parametrize("manual", [False, True])
def test_retry_does_not_charge_a_terminal_case(status: CaseStatus, manual: bool) -> None:
    facts = replace(opened().facts, status=status)
    d = on_retry_due(facts, P, days(1), case_key=KEY, manual=manual)
    assert d.charge is False
    assert d.jobs == ()
    assert d.facts == facts


def test_retry_after_recovery_does_not_charge() -> None:
    facts = recover(opened().facts, T0 + HOUR, reason="invoice paid").facts
    assert on_retry_due(facts, P, days(1), case_key=KEY, manual=False).charge is False


def test_retry_after_subscription_canceled_does_not_charge() -> None:
    facts = on_subscription_canceled(opened().facts, T0 + HOUR, reason="customer").facts
    assert on_retry_due(facts, P, days(1), case_key=KEY, manual=False).charge is False


def test_scheduled_retry_while_suspended_does_not_charge() -> None:
    d = on_retry_due(suspended_facts(), P, days(14) + HOUR, case_key=KEY, manual=False)
    assert d.charge is False
    assert d.jobs == ()


def test_scheduled_retry_at_or_after_suspension_time_does_not_charge() -> None:
    facts = opened().facts
    assert on_retry_due(facts, P, days(14), case_key=KEY, manual=False).charge is False
    assert on_retry_due(facts, P, days(14) - timedelta(seconds=1), case_key=KEY, manual=False).charge


def test_scheduled_retry_without_usable_card_does_not_charge() -> None:
    no_card = replace(opened().facts, has_payment_method=False)
    bad_card = opened("lost_card").facts
    for facts in (no_card, bad_card):
        for manual in (False, True):
            assert on_retry_due(facts, P, days(1), case_key=KEY, manual=manual).charge is False


def test_late_retry_charges_once_and_does_not_catch_up() -> None:
    facts = opened().facts
    now = days(11)  # the day-1 retry runs 10 days late (outage)
    due = on_retry_due(facts, P, now, case_key=KEY, manual=False)
    assert due.charge is True
    assert due.jobs == ()
    result = charge(facts, now, manual=False)
    job = only(result.jobs, JobKind.RETRY)
    assert job.due_at >= now + GAP
    assert job.due_at == now + GAP  # days 3, 5 and 7 are overdue: the gap decides
    # Walking on from there, charges stay at least the gap apart and stop before the cut.
    facts, times = result.facts, [now]
    while job is not None:
        result = charge(facts, job.due_at, manual=False)
        times.append(job.due_at)
        facts = result.facts
        retries = of_kind(result.jobs, JobKind.RETRY)
        job = retries[0] if retries else None
    assert all(b - a >= GAP for a, b in itertools.pairwise(times))
    assert all(t < days(14) for t in times)
    assert len(times) <= len(P.retry_days)


def test_failed_card_update_retry_replans_the_schedule_after_the_gap() -> None:
    d = opened()
    update = on_payment_method_updated(d.facts, P, T0 + 20 * HOUR, case_key=KEY, present=True)
    manual = charge(update.facts, T0 + 20 * HOUR, manual=True)
    # The day-1 retry would come only 4 h later: the new plan (which replaces it) keeps the gap.
    job = only(manual.jobs, JobKind.RETRY)
    assert job.manual is False
    assert job.due_at == T0 + 20 * HOUR + GAP
    assert job.key != only(d.jobs, JobKind.RETRY).key
    assert manual.facts.scheduled_retries_made == 0  # card-update retries do not use retry days
    assert manual.facts.card_update_retries_used == 1


def test_min_retry_gap_defers_a_scheduled_retry_right_after_a_card_update_retry() -> None:
    d = opened()
    update = on_payment_method_updated(d.facts, P, T0 + 20 * HOUR, case_key=KEY, present=True)
    facts = charge(update.facts, T0 + 20 * HOUR, manual=True).facts
    # Should the old day-1 job still run (it was not replaced in time), it must not charge 4 h later.
    deferred = on_retry_due(facts, P, days(1), case_key=KEY, manual=False)
    assert deferred.charge is False
    job = only(deferred.jobs, JobKind.RETRY)
    assert job.due_at == T0 + 20 * HOUR + GAP
    assert job.manual is False
    assert deferred.facts == facts
    # At the deferred time it charges.
    assert on_retry_due(facts, P, job.due_at, case_key=KEY, manual=False).charge is True


def test_retry_exactly_at_the_gap_charges() -> None:
    facts = replace(opened().facts, last_attempt_at=days(1) - GAP)
    assert on_retry_due(facts, P, days(1), case_key=KEY, manual=False).charge is True


def test_manual_retry_ignores_the_gap() -> None:
    facts = replace(opened().facts, last_attempt_at=days(1) - HOUR)
    assert on_retry_due(facts, P, days(1), case_key=KEY, manual=True).charge is True


def test_scheduled_retry_success_recovers() -> None:
    result = charge(opened().facts, days(1), manual=False, succeeded=True)
    assert result.facts.status is CaseStatus.RECOVERED
    assert result.cancel_pending_jobs is True
    assert result.billing == ()  # access was never cut
    (notice,) = result.notices
    assert (notice.kind, notice.variant) == (NoticeKind.PAYMENT_RECOVERED, None)


@pytest.mark.parametrize(
    ("code", "variant"), [("stolen_card", "hard"), ("expired_card", "expired"), ("fraudulent", "hard")]
)
def test_hard_decline_on_retry_stops_retries_and_asks_for_a_card(code: str, variant: str) -> None:
    result = charge(opened().facts, days(1), manual=False, code=code)
    assert result.facts.needs_new_payment_method is True
    assert result.facts.decline_code == code
    assert of_kind(result.jobs, JobKind.RETRY) == []
    (notice,) = result.notices
    assert (notice.kind, notice.variant) == (NoticeKind.PAYMENT_FAILED, variant)
    assert on_retry_due(result.facts, P, days(3), case_key=KEY, manual=False).charge is False


def test_missing_decline_code_is_generic_and_soft() -> None:
    facts = replace(opened().facts, attempts_made=1)
    result = on_charge_result(
        facts, P, days(1), case_key=KEY, succeeded=False, decline_code=None, manual=False
    )
    assert result.facts.decline_code == "generic_decline"
    assert result.facts.needs_new_payment_method is False
    assert len(of_kind(result.jobs, JobKind.RETRY)) == 1


# ---------------------------------------------------------------------------
# Card updates
# ---------------------------------------------------------------------------


def test_card_update_retries_immediately() -> None:
    facts = opened("expired_card").facts
    now = days(2)
    d = on_payment_method_updated(facts, P, now, case_key=KEY, present=True)
    job = only(d.jobs, JobKind.RETRY)
    assert job.due_at == now
    assert job.key == f"retry:{KEY}:u1"
    assert job.manual is True
    assert d.facts.needs_new_payment_method is False
    assert d.facts.has_payment_method is True
    assert d.facts.card_update_retries_used == 1
    assert on_retry_due(d.facts, P, now, case_key=KEY, manual=True).charge is True


def test_card_update_budget_then_back_on_schedule() -> None:
    facts = opened().facts
    keys: list[str] = []
    for i in range(3):
        now = T0 + (i + 1) * HOUR
        d = on_payment_method_updated(facts, P, now, case_key=KEY, present=True)
        job = only(d.jobs, JobKind.RETRY)
        assert job.due_at == now
        assert job.manual is True
        keys.append(job.key)
        facts = charge(d.facts, now, manual=True).facts
    assert keys == [f"retry:{KEY}:u1", f"retry:{KEY}:u2", f"retry:{KEY}:u3"]
    assert facts.card_update_retries_used == 3
    assert facts.attempts_made == 3
    assert facts.scheduled_retries_made == 0  # card-update retries do not use the schedule
    # The fourth update: no immediate retry, the schedule (with the gap) decides.
    now = T0 + 4 * HOUR
    d = on_payment_method_updated(facts, P, now, case_key=KEY, present=True)
    assert d.facts.card_update_retries_used == 3
    job = only(d.jobs, JobKind.RETRY)
    assert job.manual is False
    assert ":u" not in job.key
    assert job.due_at == max(days(1), T0 + 3 * HOUR + GAP)
    assert job.due_at > now


def test_payment_method_removed_pauses_retries() -> None:
    d = on_payment_method_updated(opened().facts, P, T0 + HOUR, case_key=KEY, present=False)
    assert d.facts.has_payment_method is False
    assert d.jobs == ()
    assert d.notices == ()
    assert on_retry_due(d.facts, P, days(1), case_key=KEY, manual=False).charge is False


def test_card_update_on_terminal_case_does_nothing() -> None:
    facts = recover(opened().facts, T0 + HOUR, reason="paid").facts
    d = on_payment_method_updated(facts, P, T0 + 2 * HOUR, case_key=KEY, present=True)
    assert d.facts == facts
    assert d.changed is False


def test_card_update_while_suspended_retries_and_reinstates() -> None:
    facts = suspended_facts("stolen_card")
    now = days(16)
    d = on_payment_method_updated(facts, P, now, case_key=KEY, present=True)
    job = only(d.jobs, JobKind.RETRY)
    assert job.due_at == now
    assert job.manual is True
    result = charge(d.facts, now, manual=True, succeeded=True)
    assert result.facts.status is CaseStatus.RECOVERED
    assert result.billing == (BillingAction.REINSTATE,)
    assert result.cancel_pending_jobs is True  # the pending END job must not cancel a paying customer
    (notice,) = result.notices
    assert notice.kind is NoticeKind.PAYMENT_RECOVERED
    assert notice.variant == "was_suspended"


def test_failed_card_update_retry_while_suspended_stays_suspended() -> None:
    d = on_payment_method_updated(suspended_facts(), P, days(16), case_key=KEY, present=True)
    result = charge(d.facts, days(16), manual=True)
    assert result.facts.status is CaseStatus.SUSPENDED
    assert result.billing == ()
    assert of_kind(result.jobs, JobKind.RETRY) == []


# ---------------------------------------------------------------------------
# Suspension and the end
# ---------------------------------------------------------------------------


def test_suspend_from_open_cuts_this_subscription_only() -> None:
    now = days(14)
    d = on_suspend_due(opened().facts, P, now, case_key=KEY)
    assert d.facts.status is CaseStatus.SUSPENDED
    assert d.facts.suspended_at == now
    assert d.billing == (BillingAction.SUSPEND,)  # one action, for this case's subscription
    end = only(d.jobs, JobKind.END)
    assert end.due_at == now + timedelta(days=7)
    assert end.key == f"end:{KEY}"
    (notice,) = d.notices
    assert (notice.kind, notice.variant) == (NoticeKind.ACCESS_SUSPENDED, "cancel")


@pytest.mark.parametrize("status", [CaseStatus.SUSPENDED, *sorted(TERMINAL)])
def test_suspend_only_from_open(status: CaseStatus) -> None:
    facts = replace(opened().facts, status=status)
    d = on_suspend_due(facts, P, days(14), case_key=KEY)
    assert d.facts == facts
    assert d.billing == ()
    assert d.jobs == ()
    assert d.notices == ()


def test_end_cancels() -> None:
    d = on_end_due(suspended_facts(), P, days(21))
    assert d.facts.status is CaseStatus.CANCELED
    assert d.billing == (BillingAction.CANCEL,)
    assert d.cancel_pending_jobs is True
    (notice,) = d.notices
    assert (notice.kind, notice.variant) == (NoticeKind.SUBSCRIPTION_ENDED, "cancel")


def test_end_downgrades_for_a_downgrade_plan() -> None:
    policy = policy_from_dict(
        {"plans": {"pro": {"end_action": "downgrade", "downgrade_plan": "free", "downgrade_amount_minor": 0}}}
    ).for_plan("pro")
    facts = opened(policy=policy).facts
    s = on_suspend_due(facts, policy, days(14), case_key=KEY)
    assert s.notices[0].variant == "downgrade"
    d = on_end_due(s.facts, policy, days(21))
    assert d.facts.status is CaseStatus.DOWNGRADED
    assert d.billing == (BillingAction.DOWNGRADE,)
    assert d.cancel_pending_jobs is True
    (notice,) = d.notices
    assert (notice.kind, notice.variant) == (NoticeKind.SUBSCRIPTION_ENDED, "downgrade")
    assert "free" in d.timeline[0]


@pytest.mark.parametrize("status", [CaseStatus.OPEN, *sorted(TERMINAL)])
def test_end_only_from_suspended(status: CaseStatus) -> None:
    facts = replace(opened().facts, status=status)
    d = on_end_due(facts, P, days(21))
    assert d.facts == facts
    assert d.billing == ()
    assert d.changed is False


# ---------------------------------------------------------------------------
# Notices
# ---------------------------------------------------------------------------


def test_reminder_is_sent_on_time() -> None:
    d = on_notice_due(opened().facts, P, days(6), step="reminder-1")
    (notice,) = d.notices
    assert (notice.kind, notice.step, notice.variant) == (NoticeKind.PAYMENT_REMINDER, "reminder-1", "soft")


def test_reminder_variant_without_payment_method() -> None:
    d = on_notice_due(opened(has_pm=False).facts, P, days(6), step="reminder-1")
    assert d.notices[0].variant == "no_payment_method"


@pytest.mark.parametrize("late", [days(12), days(13), days(20)])
def test_stale_reminder_is_skipped(late: datetime) -> None:
    assert on_notice_due(opened().facts, P, late, step="reminder-1").notices == ()


def test_reminder_just_before_final_notice_time_is_sent() -> None:
    assert on_notice_due(opened().facts, P, days(12) - HOUR, step="reminder-1").notices != ()


def test_final_notice_is_sent() -> None:
    d = on_notice_due(opened("expired_card").facts, P, days(12), step="final")
    (notice,) = d.notices
    assert (notice.kind, notice.step, notice.variant) == (NoticeKind.FINAL_NOTICE, "final", "expired")


@pytest.mark.parametrize("late", [days(14), days(15)])
def test_final_notice_after_suspension_time_is_skipped(late: datetime) -> None:
    assert on_notice_due(opened().facts, P, late, step="final").notices == ()


@pytest.mark.parametrize("status", [CaseStatus.SUSPENDED, *sorted(TERMINAL)])
@pytest.mark.parametrize("step", ["reminder-1", "final"])
def test_no_notice_unless_open(status: CaseStatus, step: str) -> None:
    facts = replace(opened().facts, status=status)
    d = on_notice_due(facts, P, days(6) if step != "final" else days(12), step=step)
    assert d.notices == ()
    assert d.changed is False


# ---------------------------------------------------------------------------
# Other events
# ---------------------------------------------------------------------------


@pytest.mark.parametrize("start", ["open", "suspended"])
def test_subscription_canceled_closes_silently(start: str) -> None:
    facts = opened().facts if start == "open" else suspended_facts()
    d = on_subscription_canceled(facts, days(15), reason="customer request")
    assert d.facts.status is CaseStatus.CLOSED
    assert d.cancel_pending_jobs is True
    assert d.notices == ()
    assert d.billing == ()
    assert d.jobs == ()
    assert "customer request" in d.timeline[0]


def test_subscription_canceled_on_terminal_case_does_nothing() -> None:
    facts = recover(opened().facts, T0 + HOUR, reason="paid").facts
    d = on_subscription_canceled(facts, days(2), reason=None)
    assert d.facts.status is CaseStatus.RECOVERED
    assert d.changed is False


def test_repeat_soft_failure_updates_the_code_only() -> None:
    facts = opened().facts
    d = on_repeat_failure(facts, P, T0 + HOUR, decline_code="processing_error")
    assert d.facts == replace(facts, decline_code="processing_error")
    assert d.jobs == ()
    assert d.notices == ()
    assert d.billing == ()


def test_repeat_hard_failure_asks_for_a_new_card_once() -> None:
    facts = opened().facts
    first = on_repeat_failure(facts, P, T0 + HOUR, decline_code="stolen_card")
    assert first.facts.needs_new_payment_method is True
    assert first.facts.status is CaseStatus.OPEN
    assert first.facts.opened_at == T0  # never a new case, never a new grace period
    assert first.jobs == ()  # nothing new scheduled (no second suspension, no second schedule)
    (notice,) = first.notices
    assert (notice.kind, notice.variant) == (NoticeKind.PAYMENT_FAILED, "hard")
    second = on_repeat_failure(first.facts, P, T0 + 2 * HOUR, decline_code="lost_card")
    assert second.notices == ()
    assert second.jobs == ()
    assert second.facts.needs_new_payment_method is True
    assert second.facts.decline_code == "lost_card"
    # And the scheduled retry no longer charges the bad card.
    assert on_retry_due(second.facts, P, days(1), case_key=KEY, manual=False).charge is False


def test_repeat_failure_on_terminal_case_is_ignored() -> None:
    facts = on_subscription_canceled(opened().facts, T0 + HOUR, reason=None).facts
    d = on_repeat_failure(facts, P, T0 + 2 * HOUR, decline_code="stolen_card")
    assert d.facts == facts
    assert d.changed is False


@pytest.mark.parametrize("status", sorted(TERMINAL))
def test_recover_on_terminal_case_does_nothing(status: CaseStatus) -> None:
    facts = replace(opened().facts, status=status)
    d = recover(facts, days(3), reason="invoice paid")
    assert d.facts == facts
    assert d.changed is False
    assert d.notices == ()
    assert d.billing == ()


def test_recover_from_open() -> None:
    d = recover(opened().facts, days(2), reason="invoice paid")
    assert d.facts.status is CaseStatus.RECOVERED
    assert d.cancel_pending_jobs is True
    assert d.billing == ()
    assert d.notices[0].variant is None


# ---------------------------------------------------------------------------
# Job keys
# ---------------------------------------------------------------------------


def test_job_keys_are_unique_within_one_case() -> None:
    decisions: list[Decision] = []
    d = opened()
    decisions.append(d)
    # A card update shortly before the day-1 retry, declined: the plan moves past the gap ...
    u = on_payment_method_updated(d.facts, P, T0 + 20 * HOUR, case_key=KEY, present=True)
    decisions.append(u)
    m = charge(u.facts, T0 + 20 * HOUR, manual=True)
    decisions.append(m)
    job = only(m.jobs, JobKind.RETRY)
    facts = m.facts
    # ... then the rest of the schedule runs and fails.
    while True:
        r = charge(facts, job.due_at, manual=False)
        decisions.append(r)
        facts = r.facts
        retries = of_kind(r.jobs, JobKind.RETRY)
        if not retries:
            break
        job = retries[0]
    s = on_suspend_due(facts, P, days(14), case_key=KEY)
    decisions.append(s)
    u2 = on_payment_method_updated(s.facts, P, days(15), case_key=KEY, present=True)
    decisions.append(u2)
    m2 = charge(u2.facts, days(15), manual=True)
    decisions.append(m2)
    decisions.append(on_end_due(m2.facts, P, days(21)))
    keys = [j.key for dec in decisions for j in dec.jobs]
    assert len(keys) >= 12
    assert len(keys) == len(set(keys)), keys
    assert all(k.split(":")[1] == KEY for k in keys)


def test_a_deferred_plan_names_the_same_time_under_a_fresh_key() -> None:
    # The old day-1 job, deferred after a card-update retry, re-plans the time the failed
    # card-update retry already chose; its key is fresh (never one already used), and the
    # shell's one-pending-retry rule replaces the older plan.
    d = opened()
    u = on_payment_method_updated(d.facts, P, T0 + 20 * HOUR, case_key=KEY, present=True)
    m = charge(u.facts, T0 + 20 * HOUR, manual=True)
    deferred = on_retry_due(m.facts, P, days(1), case_key=KEY, manual=False)
    assert only(deferred.jobs, JobKind.RETRY).due_at == only(m.jobs, JobKind.RETRY).due_at
    assert only(deferred.jobs, JobKind.RETRY).key != only(m.jobs, JobKind.RETRY).key
    # A plan for a different time gets a different key.
    later = on_payment_method_updated(m.facts, P, T0 + 22 * HOUR, case_key=KEY, present=True)
    m2 = charge(later.facts, T0 + 22 * HOUR, manual=True)
    assert only(m2.jobs, JobKind.RETRY).due_at == T0 + 22 * HOUR + GAP
    assert only(m2.jobs, JobKind.RETRY).key != only(m.jobs, JobKind.RETRY).key


# ---------------------------------------------------------------------------
# The schedule survives unusable cards (regressions) and duplicate plans
# ---------------------------------------------------------------------------


class Shell:
    """Just enough of the job table: unique keys, and one scheduled retry pending per case."""

    def __init__(self, decision: Decision) -> None:
        self.issued: set[str] = set()
        self.pending: dict[str, Job] = {}
        self.take(decision)

    def take(self, decision: Decision) -> None:
        if decision.cancel_pending_jobs:
            self.pending.clear()
        planned = {j.key for j in decision.jobs if j.kind is JobKind.RETRY and not j.manual}
        if planned:  # a new plan replaces the scheduled retry still pending
            for key in [k for k, j in self.pending.items() if j.kind is JobKind.RETRY and not j.manual]:
                if key not in planned:
                    del self.pending[key]
        for job in decision.jobs:
            if job.key not in self.issued:  # ON CONFLICT (key) DO NOTHING
                self.issued.add(job.key)
                self.pending[job.key] = job

    def scheduled_retries(self) -> list[Job]:
        return [j for j in self.pending.values() if j.kind is JobKind.RETRY and not j.manual]


@pytest.mark.parametrize("code", ["expired_card", "stolen_card"])
def test_new_card_that_soft_declines_after_unretryable_open_is_retried_on_schedule(code: str) -> None:
    # Regression: a failed card-update retry used to assume a scheduled chain was pending.
    d = opened(code)
    assert of_kind(d.jobs, JobKind.RETRY) == []
    u = on_payment_method_updated(d.facts, P, days(2), case_key=KEY, present=True)
    result = charge(u.facts, days(2), manual=True, code="insufficient_funds")
    assert result.facts.needs_new_payment_method is False
    job = only(result.jobs, JobKind.RETRY)
    assert job.manual is False
    # No retry day is used yet: day 1 is overdue, so the first slot comes one gap after this charge.
    assert job.due_at == days(2) + GAP
    assert job.due_at == next_retry_at(result.facts, P)
    assert result.facts.scheduled_retries_made == 0


def test_new_card_after_no_payment_method_is_retried_on_schedule() -> None:
    d = opened(has_pm=False)
    u = on_payment_method_updated(d.facts, P, days(4), case_key=KEY, present=True)
    result = charge(u.facts, days(4), manual=True)
    assert only(result.jobs, JobKind.RETRY).due_at == days(4) + GAP


def test_schedule_resumes_after_card_removed_and_re_added() -> None:
    d = opened()
    removed = on_payment_method_updated(d.facts, P, T0 + 12 * HOUR, case_key=KEY, present=False)
    skipped = on_retry_due(removed.facts, P, days(1), case_key=KEY, manual=False)
    assert skipped.charge is False
    assert skipped.jobs == ()  # the day-1 job is used up
    added = on_payment_method_updated(skipped.facts, P, days(2), case_key=KEY, present=True)
    result = charge(added.facts, days(2), manual=True, code="insufficient_funds")
    job = only(result.jobs, JobKind.RETRY)
    assert job.due_at == days(2) + GAP


@pytest.mark.parametrize("how", ["card_removed", "hard_decline_event"])
def test_replanned_retry_after_a_skip_is_not_dropped(how: str) -> None:
    policy = policy_from_dict({"defaults": {"card_update_retries": 0}}).default
    d = opened(policy=policy)
    shell = Shell(d)
    (first,) = shell.scheduled_retries()
    if how == "card_removed":
        unusable = on_payment_method_updated(d.facts, policy, T0 + 12 * HOUR, case_key=KEY, present=False)
    else:
        unusable = on_repeat_failure(d.facts, policy, T0 + 12 * HOUR, decline_code="stolen_card")
    shell.take(unusable)
    del shell.pending[first.key]
    skipped = on_retry_due(unusable.facts, policy, first.due_at, case_key=KEY, manual=False)
    assert skipped.charge is False
    shell.take(skipped)
    added = on_payment_method_updated(skipped.facts, policy, days(2), case_key=KEY, present=True)
    assert next_retry_at(added.facts, policy) is not None  # the policy wants a retry ...
    shell.take(added)
    assert len(shell.scheduled_retries()) == 1  # ... and the job table must hold one


@pytest.mark.parametrize("budget", [1, 3])
def test_zero_gap_policy_never_charges_twice_for_one_retry_day(budget: int) -> None:
    # With min_retry_gap_hours = 0 the gap cannot absorb a duplicate plan: only the
    # one-scheduled-retry-per-case rule keeps a card update from starting a second chain.
    policy = policy_from_dict({"defaults": {"min_retry_gap_hours": 0, "card_update_retries": budget}}).default
    d = opened(policy=policy)
    shell = Shell(d)
    facts = d.facts
    now = T0
    # Use up the immediate retries, each declined softly, then one more card update.
    for _ in range(budget):
        now += HOUR
        u = on_payment_method_updated(facts, policy, now, case_key=KEY, present=True)
        shell.take(u)
        (manual,) = [j for j in shell.pending.values() if j.manual]
        del shell.pending[manual.key]
        result = charge(u.facts, now, manual=True, policy=policy)
        shell.take(result)
        facts = result.facts
    now += HOUR
    u = on_payment_method_updated(facts, policy, now, case_key=KEY, present=True)
    shell.take(u)
    facts = u.facts
    assert len(shell.scheduled_retries()) == 1
    scheduled_at: list[datetime] = []
    while retries := shell.scheduled_retries():
        job = min(retries, key=lambda j: j.due_at)
        del shell.pending[job.key]
        due = on_retry_due(facts, policy, job.due_at, case_key=KEY, manual=False)
        shell.take(due)
        facts = due.facts
        if due.charge:
            scheduled_at.append(job.due_at)
            result = charge(facts, job.due_at, manual=False, policy=policy)
            shell.take(result)
            facts = result.facts
        assert len(shell.scheduled_retries()) <= 1
    assert scheduled_at == [days(n) for n in policy.retry_days]
