"""Renewal notices: some days before ``current_period_end`` of a subscription that will renew.

Only for the billing intervals listed in ``renewals.intervals`` (default yearly), and only when the
billing system will actually charge: never when ``cancel_at_period_end`` is set, never while trialing
(the trial's own reminders say what happens), never for canceled, paused or incomplete subscriptions.
"""

from __future__ import annotations

from datetime import datetime

from dunning.domain.lifecycle_policy import LifecyclePolicy
from dunning.workflows.lifecycle.facts import SubscriptionFacts
from dunning.workflows.lifecycle.planned import (
    CHARGING,
    PlannedNotice,
    card_facts,
    day,
    iso,
    key_part,
    offset_series,
)

KIND = "renewal_notice"


def plan(sub: SubscriptionFacts, policy: LifecyclePolicy, now: datetime) -> list[PlannedNotice]:
    """The renewal notices wanted for ``sub`` at ``now`` (keys ``renewal_notice:SUB:DATE:30d``)."""
    rules = policy.renewals
    if sub.interval not in rules.intervals or sub.status not in CHARGING or sub.cancel_at_period_end:
        return []
    renews_at = sub.current_period_end
    facts = {
        "renews_at": iso(renews_at),
        "amount_minor": sub.amount_minor,
        "currency": sub.currency,
        "plan": sub.plan,
        "interval": sub.interval,
        "interval_count": sub.interval_count,
        **card_facts(sub),
    }
    return offset_series(
        sub=sub,
        kind=KIND,
        key_prefix=f"{KIND}:{key_part(sub.id)}:{day(renews_at)}",
        announced_at=renews_at,
        offsets_days=rules.offsets_days,
        now=now,
        what=f"renewal on {day(renews_at)}",
        policy_key=rules.path("offsets_days"),
        facts=facts,
    )
