"""One sample notice per failed-payment kind, for previews, the gallery and the start-up check."""

from __future__ import annotations

from typing import Any

from dunning.mail import samples
from dunning.workflows.failed_payments.notices import ACTION_PURPOSES, KINDS, NoticeContext

# The most common variant of each kind: a soft decline, a cancel at the end.
_FIELDS: dict[str, dict[str, Any]] = {
    "payment_failed": {"decline_class": "soft", "decline_reason": "insufficient_funds"},
    "payment_reminder": {},
    "final_notice": {},
    "access_suspended": {"end_action": "cancel"},
    "payment_recovered": {"was_suspended": True},
    "subscription_ended": {"end_action": "downgrade", "downgrade_plan": "Free", "downgrade_amount_minor": 0},
}


def sample(kind: str, locale: str = "en") -> NoticeContext:
    """A complete notice of ``kind`` to the sample customer in ``locale``; ``KeyError`` for another kind."""
    if kind not in KINDS:
        raise KeyError(kind)
    return NoticeContext(
        kind=kind,
        customer_name=samples.NAME,
        customer_email=samples.EMAIL,
        locale=locale,
        timezone=samples.TIMEZONE,
        plan="Pro",
        amount_minor=4900,
        currency="EUR",
        next_retry_at=samples.at(4),
        suspend_at=samples.at(8, 22),
        end_at=samples.at(22),
        action_url=samples.link(ACTION_PURPOSES[kind]),
        card_brand="visa",
        card_last4="4242",
        **_FIELDS[kind],
    )
