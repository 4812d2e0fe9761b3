"""Why a lifecycle notice that was planned is no longer wanted: the line written on the timeline.

The planner says what should exist; when a pending notice drops out of its plan
(a card updated, a trial converted, a renewal moved), support wants to read why
without re-running the rules in their head. The reasons are read off the facts
that usually cause each kind to drop out; any other change gets a generic line.
"""

from __future__ import annotations

from datetime import datetime

from dunning.workflows.lifecycle.facts import SubscriptionFacts


def kind_of(key: str) -> str:
    """The notice kind a notice key (or its job key, ``lc:<key>``) names."""
    return key.removeprefix("lc:").split(":", 1)[0]


def _day(at: datetime | None) -> str:
    return at.strftime("%Y-%m-%d") if at is not None else "?"


def why_not(key: str, sub: SubscriptionFacts | None, now: datetime) -> str:
    """One line saying why the notice ``key`` is not (or no longer) wanted for ``sub``."""
    kind = kind_of(key)
    if sub is None:
        return "the subscription is unknown"
    if sub.status == "canceled":
        return "the subscription is canceled"
    if kind == "renewal_notice":
        if sub.cancel_at_period_end:
            return "the subscription is set to cancel at the end of its period"
        return f"the renewal is now on {_day(sub.current_period_end)} ({sub.interval} billing, status {sub.status})"
    if kind == "card_expiring":
        if sub.card is None:
            return "no card is on file any more"
        expiry = sub.card.expires_at()
        return (
            f"the card on file ({sub.card.brand or 'card'} ending {sub.card.last4 or '????'}) now expires"
            f" {_day(expiry)}, after the next charge"
        )
    if kind in ("trial_reminder", "trial_ended"):
        if sub.status != "trialing" and (sub.trial_end is None or sub.trial_end > now):
            return f"the trial is over early (status {sub.status})"
        return f"the trial now ends on {_day(sub.trial_end)}"
    if kind in ("annual_offer",):
        if sub.open_case:
            return "held: a failed payment is being collected for this subscription"
        if sub.interval == "year":
            return "the subscription is billed yearly already"
        return "the subscription no longer qualifies for the offer (tenure, status or a recent offer)"
    if kind in ("upgrade_ending", "upgrade_reverted"):
        if sub.open_case and kind == "upgrade_ending":
            return "held: a failed payment is being collected for this subscription"
        if sub.upgrade is None:
            return "the temporary upgrade was removed or made permanent"
        return f"the temporary upgrade now ends on {_day(sub.upgrade.ends_at)}"
    return "no longer planned for the current facts"
