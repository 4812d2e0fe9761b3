"""One sample notice per lifecycle kind, for previews, the gallery and the start-up check."""

from __future__ import annotations

from typing import Any

from dunning.mail import samples
from dunning.workflows.lifecycle.notices import KINDS, VARIANTS, LifecycleNotice, link_names

_CARD = {"card_brand": "visa", "card_last4": "4242"}
_FACTS: dict[str, dict[str, Any]] = {
    "renewal_notice": {
        "renews_at": samples.iso(31),
        "amount_minor": 49000,
        "currency": "EUR",
        "plan": "Pro",
        "interval": "year",
        "interval_count": 1,
        **_CARD,
    },
    "card_expiring": {
        "expires_at": samples.iso(31, 23),
        "exp_month": 3,
        "exp_year": 2027,
        "renews_at": samples.iso(31),
        "amount_minor": 4900,
        "currency": "EUR",
        **_CARD,
    },
    "annual_offer": {
        "plan": "Pro",
        "amount_minor": 4900,
        "currency": "EUR",
        "annual_price_minor": 49000,
        "saving_minor": 9800,
        "months_free": 2,
    },
    "annual_switch_confirmed": {
        "plan": "Pro",
        "annual_price_minor": 49000,
        "currency": "EUR",
        "effective_at": samples.iso(31),
    },
    "trial_reminder": {
        "trial_ends_at": samples.iso(4),
        "plan": "Pro",
        "amount_minor": 4900,
        "currency": "EUR",
        "interval": "month",
        **_CARD,
    },
    "trial_ended": {
        "trial_ended_at": samples.iso(1),
        "plan": "Pro",
        "amount_minor": 4900,
        "currency": "EUR",
        "next_charge_at": samples.iso(31),
    },
    "upgrade_ending": {
        "upgrade_plan": "Business",
        "revert_to": "Pro",
        "ends_at": samples.iso(4),
        "price_difference_minor": 5000,
        "currency": "EUR",
    },
    "upgrade_reverted": {"upgrade_plan": "Business", "revert_to": "Pro", "ended_at": samples.iso(1)},
}


def sample(kind: str, locale: str = "en") -> LifecycleNotice:
    """A complete notice of ``kind`` (its first variant) to the sample customer; ``KeyError`` for another kind."""
    if kind not in KINDS:
        raise KeyError(kind)
    variant = VARIANTS.get(kind, (None,))[0]
    return LifecycleNotice(
        kind=kind,
        variant=variant,
        customer_name=samples.NAME,
        customer_email=samples.EMAIL,
        locale=locale,
        timezone=samples.TIMEZONE,
        facts=_FACTS[kind],
        links={name: samples.link(name) for name in link_names(kind, variant)},
    )
