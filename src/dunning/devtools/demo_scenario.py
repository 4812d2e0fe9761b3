"""A simulated customer base for ``dunning demo``: who fails, how, and what they do about it.

Pure and seeded: the same seed gives the same story. The mix of decline codes
roughly follows public figures on card declines for subscriptions (insufficient
funds dominates; a few percent are hard declines).
"""

from __future__ import annotations

import random
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

DECLINE_MIX: tuple[tuple[str, float], ...] = (
    ("insufficient_funds", 0.44),
    ("do_not_honor", 0.10),
    ("generic_decline", 0.10),
    ("processing_error", 0.07),
    ("expired_card", 0.13),
    ("authentication_required", 0.04),
    ("stolen_card", 0.04),
    ("lost_card", 0.03),
    ("fraudulent", 0.02),
    ("card_velocity_exceeded", 0.03),
)

PLANS: tuple[tuple[str, str, int, float], ...] = (
    # plan, interval, amount (minor units of the customer's currency), share
    ("starter", "month", 900, 0.45),
    ("pro", "month", 4900, 0.40),
    ("team", "year", 49000, 0.15),
)

PEOPLE = {
    "en": (
        ["Ava", "Liam", "Noah", "Emma", "Olivia", "Mason", "Sophia", "Lucas"],
        ["Smith", "Jones", "Brown", "Taylor", "Wilson", "Clark"],
    ),
    "fr": (
        ["Camille", "Léa", "Hugo", "Chloé", "Louis", "Manon", "Jules", "Inès"],
        ["Martin", "Bernard", "Dubois", "Thomas", "Robert", "Petit"],
    ),
    "de": (
        ["Lena", "Jonas", "Mia", "Felix", "Hannah", "Paul", "Lea", "Ben"],
        ["Müller", "Schmidt", "Schneider", "Fischer", "Weber", "Wagner"],
    ),
}
ZONES = {
    "en": ["America/New_York", "America/Los_Angeles", "Europe/London", "Australia/Sydney"],
    "fr": ["Europe/Paris", "America/Montreal"],
    "de": ["Europe/Berlin", "Europe/Vienna", "Europe/Zurich"],
}
CURRENCY = {"en": "USD", "fr": "EUR", "de": "EUR"}

DEMO_POLICY = """\
# Policy used by `dunning demo`: the built-in defaults, and Pro customers who
# do not pay are moved to Starter instead of being canceled (a downgrade keeps them).
version = "demo-1"

[defaults]
retry_days = [1, 3, 5, 7, 12]
grace_days = 14
reminder_days = [6]
final_notice_days_before = 2
end_after_days = 7
end_action = "cancel"

[plans.pro]
end_action = "downgrade"
downgrade_plan = "starter"
downgrade_amount_minor = 900

# Lifecycle notices use the built-in defaults; these monthly list prices let a
# temporary upgrade's prompt say what keeping Pro costs more a month.
[prices.starter]
EUR = 900
USD = 900

[prices.pro]
EUR = 4900
USD = 4900
"""


@dataclass(frozen=True)
class Action:
    """Something the billing system or a customer does at a time."""

    at: datetime
    kind: str  # customer | subscription | fail | card_update | paid | cancel
    data: dict[str, Any] = field(default_factory=dict)


@dataclass
class Scenario:
    actions: list[Action]
    subscriptions: int
    failures: int


def _pick(rng: random.Random, weighted: tuple[tuple[Any, float], ...]) -> Any:
    x = rng.random() * sum(w for _, w in weighted)
    for value, w in weighted:
        x -= w
        if x <= 0:
            return value
    return weighted[-1][0]


def build_scenario(*, seed: int, subscriptions: int, days: int, start: datetime) -> Scenario:
    """The story of ``subscriptions`` subscribers over ``days`` days."""
    rng = random.Random(seed)
    actions: list[Action] = []
    failures = 0
    fail_window = max(1, min(days - 1, int(days * 0.45)))
    for i in range(subscriptions):
        locale = _pick(rng, (("en", 0.6), ("fr", 0.2), ("de", 0.2)))
        first, last = rng.choice(PEOPLE[locale][0]), rng.choice(PEOPLE[locale][1])
        cid, sid = f"cus_{i:05d}", f"sub_{i:05d}"
        has_card = rng.random() > 0.04
        card = {
            "present": True,
            "brand": rng.choice(["visa", "mastercard", "amex"]),
            "last4": f"{rng.randrange(10000):04d}",
            "exp_month": rng.randint(1, 12),
            "exp_year": rng.randint(2026, 2031),
        }
        plan, interval, amount = _pick(rng, tuple(((p, iv, a), s) for p, iv, a, s in PLANS))
        currency = CURRENCY[locale]
        ascii_last = last.encode("ascii", "ignore").decode().lower() or "x"
        actions.append(
            Action(
                start,
                "customer",
                {
                    "id": cid,
                    "email": f"{first.lower().encode('ascii', 'ignore').decode() or 'c'}.{ascii_last}.{i}@example.com",
                    "name": f"{first} {last}",
                    "locale": locale,
                    "timezone": rng.choice(ZONES[locale]),
                },
            )
        )
        actions.append(
            Action(
                start,
                "subscription",
                {
                    "id": sid,
                    "customer_id": cid,
                    "plan": plan,
                    "status": "active",
                    "amount_minor": amount,
                    "currency": currency,
                    "interval": interval,
                    "current_period_end": (start + timedelta(days=rng.randint(1, 28))).isoformat(),
                    "payment_method": card if has_card else {"present": False},
                },
            )
        )
        if rng.random() > 0.4:
            continue
        failures += 1
        fail_at = start + timedelta(hours=6 * rng.randrange(1, fail_window * 4))
        code = _pick(rng, DECLINE_MIX) if has_card else "no_payment_method"
        inv = f"in_{i:05d}"
        actions.append(
            Action(
                fail_at,
                "fail",
                {
                    "invoice_id": inv,
                    "subscription_id": sid,
                    "customer_id": cid,
                    "amount_minor": amount,
                    "currency": currency,
                    "decline_code": code,
                },
            )
        )
        hard = code in (
            "expired_card",
            "stolen_card",
            "lost_card",
            "fraudulent",
            "authentication_required",
            "no_payment_method",
        )
        roll = rng.random()
        if roll < (0.55 if hard else 0.15):
            when = fail_at + timedelta(hours=rng.randrange(6, 24 * 17))
            actions.append(
                Action(
                    when,
                    "card_update",
                    {
                        "customer_id": cid,
                        "payment_method": {**card, "present": True, "last4": f"{rng.randrange(10000):04d}"},
                    },
                )
            )
        elif roll < (0.60 if hard else 0.20):
            actions.append(
                Action(
                    fail_at + timedelta(hours=rng.randrange(24, 24 * 9)),
                    "paid",
                    {"invoice_id": inv, "subscription_id": sid, "amount_minor": amount, "currency": currency},
                )
            )
        elif roll < (0.64 if hard else 0.24):
            actions.append(
                Action(
                    fail_at + timedelta(hours=rng.randrange(24, 24 * 12)),
                    "cancel",
                    {"subscription_id": sid, "reason": "customer canceled"},
                )
            )
    actions.sort(key=lambda a: a.at)
    return Scenario(actions, subscriptions, failures)
