"""One sample email per price-migration kind, for previews, the gallery and the start-up check."""

from __future__ import annotations

from typing import Any

from dunning.mail import samples
from dunning.workflows.price_migrations.notices import CONFIRMED, KINDS, LINK_NAMES, PriceNotice

_FACTS: dict[str, Any] = {
    "plan": "Pro",
    "currency": "EUR",
    "interval": "month",
    "interval_count": 1,
    "old_amount_minor": 4900,
    "new_amount_minor": 5900,
    "applies_at": samples.iso(31),
    "reason": "New reporting and a 24/7 support line",
    "choice": None,
    "offers": {
        "step_up": {"amount_minor": 5310, "percent": 10, "months": 3},
        "annual_lock": {"amount_minor": 49000},
        "downgrade": {"plan": "Basic", "amount_minor": 3900},
    },
}


def sample(kind: str, locale: str = "en") -> PriceNotice:
    """A complete email of ``kind`` to the sample customer, every choice offered; ``KeyError`` for another kind."""
    if kind not in KINDS:
        raise KeyError(kind)
    # No choice made yet (notice, reminder); the confirmation confirms the step-up.
    choice = "step_up" if kind == CONFIRMED else None
    names = ("manage",) if kind == CONFIRMED else LINK_NAMES
    return PriceNotice(
        kind=kind,
        customer_name=samples.NAME,
        customer_email=samples.EMAIL,
        locale=locale,
        timezone=samples.TIMEZONE,
        facts={**_FACTS, "choice": choice},
        links={name: samples.link(name) for name in names},
    )
