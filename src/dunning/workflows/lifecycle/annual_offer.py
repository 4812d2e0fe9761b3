"""The annual-switch offer: monthly subscribers past a tenure threshold, at most once per period.

Only active (paying) monthly subscriptions that will renew (not ``cancel_at_period_end``), with a
price, and never while a dunning case is open (held: dunning emails take priority). The offer is due
``tenure_months`` after the subscription started (or was first seen), and no sooner than
``every_days`` after the last offer was sent; when that time is past, at once.
"""

from __future__ import annotations

from datetime import datetime

from dunning.domain.lifecycle_policy import LifecyclePolicy
from dunning.workflows.lifecycle.facts import SubscriptionFacts
from dunning.workflows.lifecycle.planned import PlannedNotice, add_months, day, key_part, single_due, stamp

KIND = "annual_offer"


def plan(sub: SubscriptionFacts, policy: LifecyclePolicy, now: datetime) -> list[PlannedNotice]:
    """The annual offer wanted for ``sub`` at ``now``, if any (key ``annual_offer:SUB:DATE``)."""
    rules = policy.annual_offer
    if (
        not rules.enabled
        or sub.interval != "month"
        or sub.interval_count != 1  # the offer's money assumes a monthly price
        or sub.status != "active"
        or sub.cancel_at_period_end
        or sub.open_case
        or sub.amount_minor <= 0
    ):
        return []
    offer_at = add_months(sub.tenure_start, rules.tenure_months)
    why = f"monthly since {day(sub.tenure_start)}, {rules.tenure_months} months of tenure ({rules.path('tenure_months')})"
    if sub.last_annual_offer_at is not None and sub.last_annual_offer_at + rules.every > offer_at:
        offer_at = sub.last_annual_offer_at + rules.every
        why = f"last offer {day(sub.last_annual_offer_at)}, at most one per {rules.every_days:g} days ({rules.path('every_days')})"
    key = f"{KIND}:{key_part(sub.id)}:{day(offer_at)}"
    due_at, how = single_due(key, offer_at, now, sub.sent_keys)
    if how == "late":
        why += f"; was due {stamp(offer_at)}: at once"
    elif how == "sent":
        why += "; already sent"
    annual = rules.annual_price_minor(sub.amount_minor)
    return [
        PlannedNotice(
            key=key,
            kind=KIND,
            subscription_id=sub.id,
            customer_id=sub.customer_id,
            due_at=due_at,
            announced_at=due_at,
            variant=None,
            reason=f"annual offer: {why}",
            facts={
                "plan": sub.plan,
                "amount_minor": sub.amount_minor,
                "currency": sub.currency,
                "annual_price_minor": annual,
                "saving_minor": sub.amount_minor * 12 - annual,
                "discount_percent": rules.discount_percent,
                "months_free": rules.months_free,
            },
        )
    ]
