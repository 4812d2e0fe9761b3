"""The dunning case state machine: pure functions from facts, policy and ``now`` to a decision.

A case is opened by the first failed payment of an invoice and ends recovered
(paid), closed (the subscription was canceled elsewhere), or at the end of the
policy: canceled or downgraded. The workflow (``handlers``, ``jobs``, ``cases``) loads the
facts, calls one of the ``on_*`` functions, and persists the returned
:class:`Decision` -- new facts, jobs to schedule, notices, billing actions --
in one transaction.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from datetime import datetime, timedelta
from enum import StrEnum

from dunning.domain.policy import PlanPolicy
from dunning.workflows.failed_payments.declines import DeclineClass, classify_decline


class CaseStatus(StrEnum):
    OPEN = "open"  # in grace: access on, retrying
    SUSPENDED = "suspended"  # access cut, waiting for a card or payment until the end
    RECOVERED = "recovered"
    CANCELED = "canceled"
    DOWNGRADED = "downgraded"
    CLOSED = "closed"  # subscription canceled outside dunning; we stop


TERMINAL = frozenset({CaseStatus.RECOVERED, CaseStatus.CANCELED, CaseStatus.DOWNGRADED, CaseStatus.CLOSED})


class JobKind(StrEnum):
    RETRY = "retry"
    NOTICE = "notice"
    SUSPEND = "suspend"
    END = "end"


class NoticeKind(StrEnum):
    PAYMENT_FAILED = "payment_failed"
    PAYMENT_REMINDER = "payment_reminder"
    FINAL_NOTICE = "final_notice"
    ACCESS_SUSPENDED = "access_suspended"
    PAYMENT_RECOVERED = "payment_recovered"
    SUBSCRIPTION_ENDED = "subscription_ended"


class BillingAction(StrEnum):
    SUSPEND = "suspend"
    REINSTATE = "reinstate"
    CANCEL = "cancel"
    DOWNGRADE = "downgrade"


@dataclass(frozen=True)
class CaseFacts:
    """Everything the policy needs to know about one case."""

    status: CaseStatus
    opened_at: datetime
    decline_code: str
    has_payment_method: bool
    needs_new_payment_method: bool = False  # the card on file is known bad and not replaced yet
    attempts_made: int = 0  # our charge attempts so far (the billing system's own failure is attempt 0)
    scheduled_retries_made: int = 0  # how many of the policy's retry_days have been used
    card_update_retries_used: int = 0
    last_attempt_at: datetime | None = None
    suspended_at: datetime | None = None

    @property
    def decline_class(self) -> DeclineClass:
        return classify_decline(self.decline_code)

    @property
    def terminal(self) -> bool:
        return self.status in TERMINAL


@dataclass(frozen=True)
class Job:
    """Work due later. ``key`` is unique per case: the same decision never schedules twice."""

    kind: JobKind
    key: str
    due_at: datetime
    manual: bool = False  # a retry the customer triggered (card update), outside the schedule


@dataclass(frozen=True)
class Notice:
    """An email to send. ``step`` makes the idempotency key ``kind:case:step``."""

    kind: NoticeKind
    step: str
    variant: str | None = None


@dataclass(frozen=True)
class Decision:
    """What to do, as data. ``charge`` asks the shell to charge now."""

    facts: CaseFacts
    jobs: tuple[Job, ...] = ()
    cancel_pending_jobs: bool = False
    notices: tuple[Notice, ...] = ()
    billing: tuple[BillingAction, ...] = ()
    charge: bool = False
    timeline: tuple[str, ...] = ()

    @property
    def changed(self) -> bool:
        return bool(self.jobs or self.notices or self.billing or self.charge or self.cancel_pending_jobs)


def suspend_at(facts: CaseFacts, policy: PlanPolicy) -> datetime:
    """When access is cut if nothing is paid: the end of grace."""
    return facts.opened_at + policy.grace


def final_notice_at(facts: CaseFacts, policy: PlanPolicy) -> datetime:
    """When the final notice (naming the suspension date) is due."""
    return suspend_at(facts, policy) - policy.final_notice_before


def planned_retry_at(facts: CaseFacts, policy: PlanPolicy, index: int) -> datetime | None:
    """The policy's time for scheduled retry ``index`` (0-based), or None past the last."""
    if index >= len(policy.retry_days):
        return None
    return facts.opened_at + timedelta(days=policy.retry_days[index])


def next_retry_at(facts: CaseFacts, policy: PlanPolicy) -> datetime | None:
    """When the next scheduled retry will run, if one will (used by notices)."""
    if facts.status is not CaseStatus.OPEN or not _can_retry_card(facts):
        return None
    planned = planned_retry_at(facts, policy, facts.scheduled_retries_made)
    if planned is None:
        return None
    if facts.last_attempt_at is not None:
        planned = max(planned, facts.last_attempt_at + policy.min_retry_gap)
    return planned if planned < suspend_at(facts, policy) else None


def _can_retry_card(facts: CaseFacts) -> bool:
    return facts.has_payment_method and not facts.needs_new_payment_method


def _failure_variant(facts: CaseFacts) -> str:
    if not facts.has_payment_method:
        return "no_payment_method"
    if not facts.needs_new_payment_method and facts.decline_class is not DeclineClass.SOFT:
        # The bad card was replaced: don't ask again for a card the customer already gave us.
        return DeclineClass.SOFT.value
    return facts.decline_class.value


def _retry_job(facts: CaseFacts, policy: PlanPolicy, case_key: str) -> Job | None:
    """The next scheduled retry. A case has at most one pending: the shell replaces any other.

    The key carries the due time, so re-planning the same slot later never collides
    with the key of a job that was already used or replaced.
    """
    due = next_retry_at(facts, policy)
    if due is None:
        return None
    key = f"retry:{case_key}:s{facts.scheduled_retries_made}:a{facts.attempts_made}:{_stamp(due)}"
    return Job(JobKind.RETRY, key, due)


def _stamp(at: datetime) -> str:
    """``f"{at:%Y%m%dT%H%M%S}"``: strftime costs about 4 µs, and every opened case formats one."""
    if at.year < 1000:  # strftime does not pad these years the same way everywhere
        return f"{at:%Y%m%dT%H%M%S}"
    return at.isoformat(timespec="seconds")[:19].replace("-", "").replace(":", "")


def _minute(at: datetime) -> str:
    """``f"{at:%Y-%m-%d %H:%M}"``, without strftime (see :func:`_stamp`)."""
    if at.year < 1000:
        return f"{at:%Y-%m-%d %H:%M}"
    return at.isoformat(sep=" ", timespec="minutes")[:16]


def _replan(job: Job | None, now: datetime) -> Job | None:
    """A re-planned retry gets a key of its own (the plan's time), never one already used."""
    if job is None:
        return None
    return Job(job.kind, f"{job.key}@{now:%Y%m%dT%H%M%S}", job.due_at, job.manual)


def open_case(
    policy: PlanPolicy, now: datetime, *, case_key: str, decline_code: str, has_payment_method: bool
) -> Decision:
    """A payment failed and no case exists for the invoice: open one.

    Access stays on: suspension is a job of its own at the end of grace, not a
    side effect of the last retry, so it happens on time even when no retry is
    scheduled (hard decline, no card).
    """
    cls = classify_decline(decline_code)
    facts = CaseFacts(
        status=CaseStatus.OPEN,
        opened_at=now,
        decline_code=decline_code,
        has_payment_method=has_payment_method,
        needs_new_payment_method=cls is not DeclineClass.SOFT,
    )
    cut = suspend_at(facts, policy)
    jobs: list[Job] = [Job(JobKind.SUSPEND, f"suspend:{case_key}", cut)]
    for i, day in enumerate(policy.reminder_days):
        jobs.append(Job(JobKind.NOTICE, f"notice:{case_key}:reminder-{i + 1}", now + timedelta(days=day)))
    jobs.append(Job(JobKind.NOTICE, f"notice:{case_key}:final", cut - policy.final_notice_before))
    retry = _retry_job(facts, policy, case_key)
    if retry:
        jobs.append(retry)
    return Decision(
        facts=facts,
        jobs=tuple(jobs),
        notices=(Notice(NoticeKind.PAYMENT_FAILED, "opened", _failure_variant(facts)),),
        timeline=(f"case opened: {decline_code} ({cls.value}); access kept until {_minute(cut)}Z",),
    )


def on_repeat_failure(facts: CaseFacts, policy: PlanPolicy, now: datetime, *, decline_code: str) -> Decision:
    """Another failure event for an invoice that already has a case: update, never duplicate."""
    if facts.terminal:
        return Decision(facts, timeline=(f"failure event ignored: case already {facts.status}",))
    new_class = classify_decline(decline_code)
    updated = replace(facts, decline_code=decline_code)
    if new_class is not DeclineClass.SOFT and not facts.needs_new_payment_method:
        updated = replace(updated, needs_new_payment_method=True)
        return Decision(
            updated,
            notices=(Notice(NoticeKind.PAYMENT_FAILED, f"decline-{decline_code}", new_class.value),),
            timeline=(f"payment failed again: {decline_code} ({new_class.value}); asking for a new card",),
        )
    return Decision(updated, timeline=(f"payment failed again: {decline_code}",))


def on_retry_due(
    facts: CaseFacts, policy: PlanPolicy, now: datetime, *, case_key: str, manual: bool
) -> Decision:
    """A retry job is due. ``manual`` marks the immediate retry that follows a card update."""
    if facts.terminal:
        return Decision(facts, timeline=(f"retry skipped: case {facts.status}",))
    if facts.status is CaseStatus.SUSPENDED and not manual:
        return Decision(facts, timeline=("retry skipped: access already suspended",))
    if not _can_retry_card(facts):
        return Decision(facts, timeline=("retry skipped: no usable payment method",))
    if not manual:
        if now >= suspend_at(facts, policy):
            return Decision(facts, timeline=("retry skipped: grace period over",))
        if facts.last_attempt_at is not None and now < facts.last_attempt_at + policy.min_retry_gap:
            # A card-update retry ran recently: defer rather than charge twice in a row.
            job = _replan(_retry_job(facts, policy, case_key), now)
            return Decision(facts, jobs=(job,) if job else (), timeline=("retry deferred: charged recently",))
    return Decision(facts, charge=True)


def on_charge_result(
    facts: CaseFacts,
    policy: PlanPolicy,
    now: datetime,
    *,
    case_key: str,
    succeeded: bool,
    decline_code: str | None,
    manual: bool,
) -> Decision:
    """The outcome of a charge attempt we made (``attempts_made`` already counts it)."""
    facts = replace(facts, last_attempt_at=now)
    if not manual:
        facts = replace(facts, scheduled_retries_made=facts.scheduled_retries_made + 1)
    n = facts.attempts_made
    if succeeded:
        return recover(facts, now, reason=f"retry {n} succeeded")
    code = decline_code or "generic_decline"
    cls = classify_decline(code)
    facts = replace(facts, decline_code=code)
    if facts.terminal:
        return Decision(facts, timeline=(f"retry {n} declined: {code}",))
    if cls is not DeclineClass.SOFT:
        newly_bad = not facts.needs_new_payment_method
        facts = replace(facts, needs_new_payment_method=True)
        notices = (Notice(NoticeKind.PAYMENT_FAILED, f"attempt-{n}", cls.value),) if newly_bad else ()
        return Decision(
            facts,
            notices=notices,
            timeline=(f"retry {n} declined: {code} ({cls.value}); no more retries of this card",),
        )
    # After a card-update retry too: the schedule resumes (or starts, if the card was bad at
    # open), and the shell replaces any retry still pending, so there is never a second chain.
    job = _retry_job(facts, policy, case_key)
    when = f"; next retry {job.due_at:%Y-%m-%d %H:%M}Z" if job else "; no retry left before suspension"
    return Decision(facts, jobs=(job,) if job else (), timeline=(f"retry {n} declined: {code}{when}",))


def recover(facts: CaseFacts, now: datetime, *, reason: str) -> Decision:
    """The invoice is paid: close the case at once, restore access, thank the customer."""
    if facts.terminal:
        return Decision(facts, timeline=(f"payment noted ({reason}); case already {facts.status}",))
    was_suspended = facts.status is CaseStatus.SUSPENDED
    return Decision(
        replace(facts, status=CaseStatus.RECOVERED),
        cancel_pending_jobs=True,
        billing=(BillingAction.REINSTATE,) if was_suspended else (),
        notices=(
            Notice(NoticeKind.PAYMENT_RECOVERED, "recovered", "was_suspended" if was_suspended else None),
        ),
        timeline=(f"recovered: {reason}" + ("; access reinstated" if was_suspended else ""),),
    )


def on_payment_method_updated(
    facts: CaseFacts, policy: PlanPolicy, now: datetime, *, case_key: str, present: bool
) -> Decision:
    """The customer changed their payment method: retry at once (within a budget)."""
    if facts.terminal:
        return Decision(facts)
    if not present:
        return Decision(
            replace(facts, has_payment_method=False), timeline=("payment method removed; retries paused",)
        )
    facts = replace(facts, has_payment_method=True, needs_new_payment_method=False)
    if facts.card_update_retries_used >= policy.card_update_retries:
        job = _replan(_retry_job(facts, policy, case_key), now)
        return Decision(
            facts,
            jobs=(job,) if job else (),
            timeline=("payment method updated; immediate-retry budget used, back on the schedule",),
        )
    used = facts.card_update_retries_used + 1
    facts = replace(facts, card_update_retries_used=used)
    job = Job(JobKind.RETRY, f"retry:{case_key}:u{used}", now, manual=True)
    return Decision(facts, jobs=(job,), timeline=("payment method updated; retrying now",))


def on_suspend_due(facts: CaseFacts, policy: PlanPolicy, now: datetime, *, case_key: str) -> Decision:
    """Grace is over: cut access (this subscription only) and start the countdown to the end."""
    if facts.status is not CaseStatus.OPEN:
        return Decision(facts, timeline=(f"suspension skipped: case {facts.status}",))
    facts = replace(facts, status=CaseStatus.SUSPENDED, suspended_at=now)
    end = Job(JobKind.END, f"end:{case_key}", now + policy.end_after)
    return Decision(
        facts,
        jobs=(end,),
        billing=(BillingAction.SUSPEND,),
        notices=(Notice(NoticeKind.ACCESS_SUSPENDED, "suspended", policy.end_action),),
        timeline=(f"grace over: access suspended; {policy.end_action} on {end.due_at:%Y-%m-%d}",),
    )


def on_end_due(facts: CaseFacts, policy: PlanPolicy, now: datetime) -> Decision:
    """The last step: cancel, or downgrade to keep the customer."""
    if facts.status is not CaseStatus.SUSPENDED:
        return Decision(facts, timeline=(f"end skipped: case {facts.status}",))
    if policy.end_action == "downgrade":
        return Decision(
            replace(facts, status=CaseStatus.DOWNGRADED),
            cancel_pending_jobs=True,
            billing=(BillingAction.DOWNGRADE,),
            notices=(Notice(NoticeKind.SUBSCRIPTION_ENDED, "ended", "downgrade"),),
            timeline=(f"downgraded to {policy.downgrade_plan}",),
        )
    return Decision(
        replace(facts, status=CaseStatus.CANCELED),
        cancel_pending_jobs=True,
        billing=(BillingAction.CANCEL,),
        notices=(Notice(NoticeKind.SUBSCRIPTION_ENDED, "ended", "cancel"),),
        timeline=("subscription canceled for non-payment",),
    )


def on_notice_due(facts: CaseFacts, policy: PlanPolicy, now: datetime, *, step: str) -> Decision:
    """A reminder or the final notice is due; skipped when stale or no longer true."""
    if facts.status is not CaseStatus.OPEN:
        return Decision(facts)
    if step == "final":
        if now >= suspend_at(facts, policy):
            return Decision(facts, timeline=("final notice skipped: too late",))
        return Decision(facts, notices=(Notice(NoticeKind.FINAL_NOTICE, step, _failure_variant(facts)),))
    # After an outage, a reminder that is overtaken by the final notice would only add noise.
    if now >= final_notice_at(facts, policy):
        return Decision(facts, timeline=(f"{step} skipped: overtaken by the final notice",))
    return Decision(facts, notices=(Notice(NoticeKind.PAYMENT_REMINDER, step, _failure_variant(facts)),))


def on_subscription_canceled(facts: CaseFacts, now: datetime, *, reason: str | None) -> Decision:
    """The subscription ended elsewhere: stop everything, say nothing more."""
    if facts.terminal:
        return Decision(facts)
    return Decision(
        replace(facts, status=CaseStatus.CLOSED),
        cancel_pending_jobs=True,
        timeline=(f"subscription canceled ({reason or 'no reason given'}); dunning stopped",),
    )
