"""Trial reminders before ``trial_end`` and the outcome notice after it.

Reminders go while the subscription is trialing; their variant says whether a card is on file
(``card``: confirm the first charge; ``no_card``: ask for one). Reminders due before the trial
started are dropped (short trials), and none go when the trial is set to cancel at its end (there is
no first charge to announce). The outcome (``converted`` when active, else ``lapsed``) goes
``outcome_delay_hours`` after ``trial_end``, once the status is no longer trialing, or at once when a
trial converts early. Only for trials we saw running: a subscription first seen after its trial ended
gets no outcome notice.
"""

from __future__ import annotations

from datetime import datetime

from dunning.domain.lifecycle_policy import LifecyclePolicy
from dunning.workflows.lifecycle.facts import SubscriptionFacts
from dunning.workflows.lifecycle.planned import (
    PlannedNotice,
    card_facts,
    day,
    iso,
    key_part,
    offset_series,
    single_due,
    stamp,
)

REMINDER = "trial_reminder"
ENDED = "trial_ended"


def plan(sub: SubscriptionFacts, policy: LifecyclePolicy, now: datetime) -> list[PlannedNotice]:
    """Trial reminders (``trial_reminder:SUB:DATE:3d``) or the outcome (``trial_ended:SUB:DATE``)."""
    if sub.trial_end is None:
        return []
    if sub.status == "trialing":
        return _reminders(sub, sub.trial_end, policy, now)
    return _outcome(sub, sub.trial_end, policy, now)


def _reminders(
    sub: SubscriptionFacts, trial_end: datetime, policy: LifecyclePolicy, now: datetime
) -> list[PlannedNotice]:
    if sub.cancel_at_period_end:
        return []
    variant = "card" if sub.card is not None else "no_card"
    return offset_series(
        sub=sub,
        kind=REMINDER,
        key_prefix=f"{REMINDER}:{key_part(sub.id)}:{day(trial_end)}",
        announced_at=trial_end,
        offsets_days=policy.trials.offsets_days,
        now=now,
        what=f"trial ends on {day(trial_end)}, {'card' if sub.card else 'no card'} on file",
        policy_key=policy.trials.path("offsets_days"),
        facts={
            "trial_ends_at": iso(trial_end),
            "plan": sub.plan,
            "amount_minor": sub.amount_minor,
            "currency": sub.currency,
            "interval": sub.interval,
            **card_facts(sub),
        },
        variant=variant,
        not_before=sub.tenure_start,
    )


def _outcome(
    sub: SubscriptionFacts, trial_end: datetime, policy: LifecyclePolicy, now: datetime
) -> list[PlannedNotice]:
    if sub.first_seen_at >= trial_end:
        return []  # we never saw this trial running: there is nothing for us to report
    converted = sub.status == "active"
    variant = "converted" if converted else "lapsed"
    key = f"{ENDED}:{key_part(sub.id)}:{day(trial_end)}"
    rules = policy.trials
    if converted and now < trial_end:
        due_at = now
        reason = f"trial ending {day(trial_end)} converted early (status active): at once (trials: outcome)"
    else:
        natural = trial_end + rules.outcome_delay
        due_at, how = single_due(key, natural, now, sub.sent_keys)
        reason = (
            f"trial ended {day(trial_end)}, {variant} (status {sub.status}): "
            f"{rules.outcome_delay_hours:g} hours after trial_end ({rules.path('outcome_delay_hours')})"
        )
        if how == "late":
            reason += f"; was due {stamp(natural)}: at once"
        elif how == "sent":
            reason += "; already sent"
    return [
        PlannedNotice(
            key=key,
            kind=ENDED,
            subscription_id=sub.id,
            customer_id=sub.customer_id,
            due_at=due_at,
            announced_at=due_at,
            variant=variant,
            reason=reason,
            facts={
                "trial_ended_at": iso(trial_end),
                "plan": sub.plan,
                "amount_minor": sub.amount_minor,
                "currency": sub.currency,
                "next_charge_at": iso(sub.current_period_end),
            },
        )
    ]
