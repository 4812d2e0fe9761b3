"""Pre-dunning: warn before the card on file expires, when it expires before the next charge.

A card stops working at the start of the month after ``exp_month``/``exp_year`` (UTC). The next
charge is the renewal at ``current_period_end``, or the first charge at ``trial_end`` while
trialing. No charge coming (canceled, ``cancel_at_period_end``, paused) means no warning; a new card
that outlives the charge means the pending warnings are no longer wanted.
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

KIND = "card_expiring"


def next_charge_at(sub: SubscriptionFacts) -> datetime | None:
    """When the billing system will next charge the card on file, or None when it will not."""
    if sub.cancel_at_period_end:
        return None
    if sub.status == "trialing":
        return sub.trial_end
    if sub.status in CHARGING:
        return sub.current_period_end
    return None


def plan(sub: SubscriptionFacts, policy: LifecyclePolicy, now: datetime) -> list[PlannedNotice]:
    """The card-expiry warnings wanted for ``sub`` at ``now`` (keys ``card_expiring:SUB:YYYY-MM:30d``)."""
    card = sub.card
    expires_at = card.expires_at() if card else None
    charge_at = next_charge_at(sub)
    if card is None or expires_at is None or charge_at is None or expires_at > charge_at:
        return []
    month = f"{card.exp_year:04d}-{card.exp_month:02d}"
    facts = {
        "expires_at": iso(expires_at),
        "exp_month": card.exp_month,
        "exp_year": card.exp_year,
        **card_facts(sub),
        "renews_at": iso(charge_at),
        "amount_minor": sub.amount_minor,
        "currency": sub.currency,
    }
    return offset_series(
        sub=sub,
        kind=KIND,
        key_prefix=f"{KIND}:{key_part(sub.id)}:{month}",
        announced_at=expires_at,
        offsets_days=policy.card_expiry.offsets_days,
        now=now,
        what=f"card expires {month}, before the charge on {day(charge_at)}",
        policy_key=policy.card_expiry.path("offsets_days"),
        facts=facts,
    )
