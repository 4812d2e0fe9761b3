"""Temporary upgrades (a taste of a higher tier): a prompt before it ends, a note when it reverts.

Only for paying (status active) subscriptions. The first (largest) offset of
``temporary_upgrades.offsets_days`` applies to every taste, the others only to tastes of at least
``long_taste_days`` (taste = ``ends_at`` minus when we first saw the upgrade). Prompts are held while
a dunning case is open; the revert note is not. Removing the upgrade (or upgrading for real)
removes both from the plan.
"""

from __future__ import annotations

from datetime import datetime

from dunning.domain.lifecycle_policy import LifecyclePolicy
from dunning.workflows.lifecycle.facts import SubscriptionFacts, Upgrade
from dunning.workflows.lifecycle.planned import (
    PlannedNotice,
    day,
    iso,
    key_part,
    offset_series,
    single_due,
    stamp,
)

ENDING = "upgrade_ending"
REVERTED = "upgrade_reverted"


def plan(sub: SubscriptionFacts, policy: LifecyclePolicy, now: datetime) -> list[PlannedNotice]:
    """Prompts (``upgrade_ending:SUB:PLAN:DATE:3d``) and the revert note (``upgrade_reverted:SUB:PLAN:DATE``)."""
    upgrade = sub.upgrade
    if upgrade is None or sub.status != "active":
        return []
    notices = [] if sub.open_case else _ending(sub, upgrade, policy, now)
    return notices + _reverted(sub, upgrade, now)


def price_difference_minor(upgrade: Upgrade, currency: str, policy: LifecyclePolicy) -> int | None:
    """What keeping the upgraded plan costs more per month, from ``[prices]``; None when a price is missing."""
    upgraded = policy.monthly_price(upgrade.plan, currency)
    current = policy.monthly_price(upgrade.revert_to, currency)
    if upgraded is None or current is None:
        return None
    return upgraded - current


def _ending(
    sub: SubscriptionFacts, upgrade: Upgrade, policy: LifecyclePolicy, now: datetime
) -> list[PlannedNotice]:
    rules = policy.upgrades
    taste = upgrade.ends_at - upgrade.seen_at
    offsets = rules.offsets_days if taste >= rules.long_taste else rules.offsets_days[:1]
    return offset_series(
        sub=sub,
        kind=ENDING,
        key_prefix=f"{ENDING}:{key_part(sub.id)}:{key_part(upgrade.plan)}:{day(upgrade.ends_at)}",
        announced_at=upgrade.ends_at,
        offsets_days=offsets,
        now=now,
        what=f"{upgrade.plan} taste of {taste.days} days ends on {day(upgrade.ends_at)}",
        policy_key=rules.path("offsets_days"),
        facts={
            "upgrade_plan": upgrade.plan,
            "revert_to": upgrade.revert_to,
            "ends_at": iso(upgrade.ends_at),
            "price_difference_minor": price_difference_minor(upgrade, sub.currency, policy),
            "currency": sub.currency,
        },
    )


def _reverted(sub: SubscriptionFacts, upgrade: Upgrade, now: datetime) -> list[PlannedNotice]:
    key = f"{REVERTED}:{key_part(sub.id)}:{key_part(upgrade.plan)}:{day(upgrade.ends_at)}"
    due_at, how = single_due(key, upgrade.ends_at, now, sub.sent_keys)
    reason = f"{upgrade.plan} taste ends {stamp(upgrade.ends_at)}, reverts to {upgrade.revert_to} (temporary_upgrades: at ends_at)"
    if how == "late":
        reason += ": at once"
    elif how == "sent":
        reason += "; already sent"
    return [
        PlannedNotice(
            key=key,
            kind=REVERTED,
            subscription_id=sub.id,
            customer_id=sub.customer_id,
            due_at=due_at,
            announced_at=due_at,
            variant=None,
            reason=reason,
            facts={
                "upgrade_plan": upgrade.plan,
                "revert_to": upgrade.revert_to,
                "ended_at": iso(upgrade.ends_at),
            },
        )
    ]
