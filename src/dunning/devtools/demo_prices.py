"""The price-migration part of ``dunning demo``'s customer base: one small migration, start to finish.

Pure and seeded like :mod:`.demo_lifecycle`, with a random stream and ids of its own
(``cus_P00001``/``sub_P00001``), so the failed-payment and lifecycle stories of a seed stay
exactly what they were. A group of monthly subscribers on the ``legacy`` plan in EUR, whose
renewals are spread over the first 30 days; at the start the operator plans and launches a
migration to a higher price (:func:`migration_options`: what ``dunning prices plan`` is given).
With 14 days' notice, a renewal in the first two weeks comes too soon: that subscriber's
price applies at the next one, a month later, still inside the default 46 days.

Nobody here fails a payment. Some subscribers answer the notice: one or two choose the
step-up, one moves to the cheaper plan, and one cancels after the notice, more than 14 days
after it (an earlier cancellation would count towards the migration's auto-pause).

Action kinds besides those of :mod:`.demo_scenario` and :mod:`.demo_lifecycle`:

- ``price_launch``: the operator plans and launches the migration; ``data`` holds the
  ``dunning prices plan`` options (strings, as typed), run once the step's events have settled.
- ``price_choice``: the customer opens the notice's link for ``data["offer"]`` and confirms it.
"""

from __future__ import annotations

import random
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from dunning.devtools.demo_scenario import PEOPLE, ZONES, Action
from dunning.workflows.price_migrations.pricing import add_months

STEP = timedelta(hours=6)
DAY = timedelta(days=1)
#: The migration's plan, currency and prices (minor units): +20 %.
PLAN, CURRENCY, CURRENT_MINOR, NEW_MINOR = "legacy", "EUR", 2000, 2400
NOTICE_DAYS = 14
#: The offers, as ``--offer`` takes them: 10 % off the new price for 3 months, or Starter at €9.00.
OFFERS = ("step-up:10:3", "downgrade:starter:900")
REASON = "Hosting and support cost more; the Legacy price has not changed since 2022."
#: Subscribers per demo subscription (15 for the default 300), at least :data:`MIN_GROUP`.
GROUP_SHARE = 1 / 20
#: Enough for every outcome: a step-up, a downgrade, a cancellation, and one who does nothing.
MIN_GROUP = 4


@dataclass(frozen=True)
class PriceStory:
    """The price-migration subscribers' actions, and what each subscriber does (``sub id -> role``)."""

    actions: list[Action]
    roles: dict[str, str]


def price_group_size(subscriptions: int) -> int:
    """Subscribers on the legacy plan for a demo of ``subscriptions``."""
    return max(MIN_GROUP, round(subscriptions * GROUP_SHARE))


def migration_options(start: datetime) -> dict[str, Any]:
    """The ``dunning prices plan`` options of the demo's migration (keyed like the terms file).

    Effective the day after the start; the notice (14 days, below the policy's 30, so given
    explicitly), no grandfathering and the default guardrail (50 %) are those of the command.
    """
    return {
        "plan": PLAN,
        "currency": CURRENCY,
        "new_amount": str(NEW_MINOR),
        "effective": (start + DAY).date().isoformat(),
        "notice_days": str(NOTICE_DAYS),
        "grandfather_months": "0",
        "offers": list(OFFERS),
        "reason": REASON,
    }


def command_line(options: dict[str, Any]) -> str:
    """The same migration as the operator would type it (for the demo's opening lines)."""
    words = ["dunning prices plan"]
    for key, value in options.items():
        flag = "--offer" if key == "offers" else "--" + key.replace("_", "-")
        for one in value if isinstance(value, list) else [value]:
            words.append(f'{flag} "{one}"' if " " in one else f"{flag} {one}")
    return " ".join(words)


def _roles(n: int) -> list[str]:
    """Who does what: a step-up, a downgrade, a cancellation, a second step-up in a larger group."""
    roles = ["step_up", "downgrade", "cancel"] + ["none"] * (n - 3)
    if n >= 8:
        roles[4] = "step_up"
    return roles


def _iso(at: datetime) -> str:
    return at.isoformat().replace("+00:00", "Z")


def build_prices(*, seed: int, subscriptions: int, days: int, start: datetime) -> PriceStory:
    """The legacy-plan subscribers of a demo of ``subscriptions`` over ``days`` days from ``start``.

    ``start`` must be on the demo's 6-hour grid; every action is too. Sorted by time (stable).
    """
    # A stream of its own: the failed-payment (seed) and lifecycle (seed * 7919 + 1) stories are untouched.
    rng = random.Random(seed * 7919 + 2)
    end = start + timedelta(days=days)
    actions = [Action(start, "price_launch", migration_options(start))]
    roles: dict[str, str] = {}
    for n, role in enumerate(_roles(price_group_size(subscriptions)), start=1):
        cid, sid = f"cus_P{n:05d}", f"sub_P{n:05d}"
        roles[sid] = role
        locale = rng.choice(("en", "fr", "de"))
        first, last = rng.choice(PEOPLE[locale][0]), rng.choice(PEOPLE[locale][1])
        ascii_first = first.lower().encode("ascii", "ignore").decode() or "c"
        ascii_last = last.encode("ascii", "ignore").decode().lower() or "x"
        customer = {
            "id": cid,
            "email": f"{ascii_first}.{ascii_last}.p{n}@example.com",
            "name": f"{first} {last}",
            "locale": locale,
            "timezone": rng.choice(ZONES[locale]),
        }
        actions.append(Action(start, "customer", customer))
        # The canceler renews late enough to cancel after the alert window and before the price applies.
        renews = start + STEP * rng.randint(4 * (20 if role == "cancel" else 2), 4 * 30)
        card = {
            "present": True,
            "brand": rng.choice(["visa", "mastercard", "amex"]),
            "last4": f"{rng.randrange(10000):04d}",
            "exp_month": rng.randint(1, 12),
            "exp_year": start.year + rng.randint(2, 5),  # no card_expiring notice in the story
        }
        sub = {
            "id": sid,
            "customer_id": cid,
            "plan": PLAN,
            "status": "active",
            "amount_minor": CURRENT_MINOR,
            "currency": CURRENCY,
            "interval": "month",
            "current_period_end": _iso(renews),
            "payment_method": card,
        }
        actions.append(Action(start, "subscription", sub))
        stops = end
        if role == "cancel":
            stops = start + STEP * rng.randint(4 * (NOTICE_DAYS + 2), int((renews - start) / STEP) - 4 * 2)
            reason = "customer canceled after the price notice"
            actions.append(Action(stops, "cancel", {"subscription_id": sid, "reason": reason}))
        elif role != "none":
            # A day or more after the notice, long before the earliest renewal the price may apply at.
            chooses = start + STEP * rng.randint(4, 4 * 3)
            actions.append(Action(chooses, "price_choice", {"subscription_id": sid, "offer": role}))
        # Without payment_method (unchanged), like a billing system reporting only what changed.
        renewed = {k: v for k, v in sub.items() if k != "payment_method"}
        # Months counted from the first renewal, as billing systems do (the 31st, Feb 28, Mar 31).
        k = 0
        while (at := add_months(renews, k)) < stops:
            following = _iso(add_months(renews, k + 1))
            actions.append(Action(at, "renewal", {**renewed, "current_period_end": following}))
            k += 1
    return PriceStory(sorted(actions, key=lambda a: a.at), roles)
