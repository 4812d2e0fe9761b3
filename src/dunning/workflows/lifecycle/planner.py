"""The lifecycle planner: which notices should exist for a subscription, when, and why.

Pure: a function of the facts, the policy and ``now`` only, so the workers (reconcile on every fact
change, re-check when a job is due) and ``dunning calendar`` share one set of rules. Each kind's
rules live in its own module; this one concatenates them.
"""

from __future__ import annotations

from datetime import datetime, timedelta

from dunning.domain.lifecycle_policy import LifecyclePolicy
from dunning.workflows.lifecycle import annual_offer, card_expiry, renewals, trials, upgrades
from dunning.workflows.lifecycle.facts import SubscriptionFacts
from dunning.workflows.lifecycle.planned import PlannedNotice

__all__ = ["KINDS", "PlannedNotice", "calendar", "plan_notices"]

_PLANNERS = (renewals, card_expiry, annual_offer, trials, upgrades)

# Every kind the planner can return (annual_switch_confirmed is written by the accept page, not planned).
KINDS = frozenset(
    {
        renewals.KIND,
        card_expiry.KIND,
        annual_offer.KIND,
        trials.REMINDER,
        trials.ENDED,
        upgrades.ENDING,
        upgrades.REVERTED,
    }
)


def plan_notices(sub: SubscriptionFacts, policy: LifecyclePolicy, now: datetime) -> list[PlannedNotice]:
    """Every lifecycle notice wanted for ``sub`` at ``now``, including ones already sent (see ``sent_keys``).

    Notices not yet sent are due at or after ``now``; a notice never falls due after the time it
    announces. Keys are unique and depend on the facts only, never on ``now``.
    """
    if now.tzinfo is None:
        raise ValueError("now must be an aware datetime")
    notices: list[PlannedNotice] = []
    for kind in _PLANNERS:
        notices.extend(kind.plan(sub, policy, now))
    return notices


def calendar(
    sub: SubscriptionFacts, policy: LifecyclePolicy, now: datetime, days: float
) -> list[PlannedNotice]:
    """The notices ``sub`` will get in ``[now, now + days]`` as the facts stand, sorted by due time.

    Notices already sent are left out.
    """
    until = now + timedelta(days=days)
    wanted = [
        n for n in plan_notices(sub, policy, now) if n.key not in sub.sent_keys and now <= n.due_at <= until
    ]
    return sorted(wanted, key=lambda n: (n.due_at, n.key))
