"""The lifecycle part of ``dunning demo``'s customer base: renewals, trials, expiring cards, upgrades, offers.

Pure and seeded like :mod:`.demo_scenario`, but with its own random stream and
its own ids (``cus_L00001``/``sub_L00001``), so the failed-payment story of a
seed stays exactly what it was. Nobody here fails a payment: these subscribers
exercise the lifecycle notices only.

Every time is on the demo's 6-hour grid (``start`` + a multiple of 6 hours),
so an event's ``occurred_at`` is the simulated time at which the demo sends it.

Action kinds besides those of :mod:`.demo_scenario`:

- ``renewal``: the billing system renewed a subscription at ``at``; ``data`` is the
  renewed subscription as a monthly one. The runner asks the billing sandbox first:
  a subscription switched to yearly billing renews as a yearly one.
- ``accept_offer``: the customer opens the annual offer's email and confirms it.
"""

from __future__ import annotations

import math
import random
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

from dunning.devtools.demo_scenario import CURRENCY, PEOPLE, ZONES, Action

STEP = timedelta(hours=6)
DAY = timedelta(days=1)
#: The subscribers of each group per demo subscription (a few dozen each for the default 300).
GROUP_SHARE = 1 / 15
#: Monthly plans of the lifecycle subscribers: plan -> amount (minor units, EUR and USD alike).
MONTHLY = {"starter": 900, "pro": 4900}
TEAM_YEARLY = 49000


@dataclass(frozen=True)
class LifecycleStory:
    """The lifecycle subscribers' actions, and how many subscribers each group has."""

    actions: list[Action]
    groups: dict[str, int]


def group_size(subscriptions: int) -> int:
    """Subscribers per lifecycle group for a demo of ``subscriptions``: at least 2, so every outcome occurs."""
    return max(2, round(subscriptions * GROUP_SHARE))


def _on_grid(start: datetime, at: datetime) -> datetime:
    """The first time on the demo's 6-hour grid at or after ``at``."""
    steps = math.ceil((at - start) / STEP)
    return start + STEP * max(0, steps)


def _between(rng: random.Random, start: datetime, lo: datetime, hi: datetime) -> datetime:
    """A grid time in ``[lo, hi]`` (``lo`` rounded up to the grid; ``lo`` itself if the range is empty)."""
    first = _on_grid(start, lo)
    steps = int((hi - first) / STEP)
    return first + STEP * rng.randint(0, max(0, steps))


def _iso(at: datetime) -> str:
    return at.isoformat().replace("+00:00", "Z")


class _Builder:
    """Accumulates the actions of one seeded story."""

    def __init__(self, seed: int, start: datetime) -> None:
        # A stream of its own: the failed-payment story (random.Random(seed)) is untouched.
        self.rng = random.Random(seed * 7919 + 1)
        self.start = start
        self.actions: list[Action] = []
        self.count = 0

    def customer(self, *, card: bool) -> tuple[str, str, str, dict[str, Any]]:
        """A new customer: ``(customer id, subscription id, currency, payment method)``.

        Every customer is known from the start, also those whose trial begins later (they signed up
        first): the demo sends a step's customers before its other events and waits for them, so
        customers spread over the weeks would cost a wait each.
        """
        self.count += 1
        n, rng = self.count, self.rng
        locale = rng.choice(("en", "en", "en", "fr", "de"))
        first, last = rng.choice(PEOPLE[locale][0]), rng.choice(PEOPLE[locale][1])
        cid, sid = f"cus_L{n:05d}", f"sub_L{n:05d}"
        ascii_first = first.lower().encode("ascii", "ignore").decode() or "c"
        ascii_last = last.encode("ascii", "ignore").decode().lower() or "x"
        self.add(
            self.start,
            "customer",
            {
                "id": cid,
                "email": f"{ascii_first}.{ascii_last}.l{n}@example.com",
                "name": f"{first} {last}",
                "locale": locale,
                "timezone": rng.choice(ZONES[locale]),
            },
        )
        method = self.card(exp_year=self.start.year + rng.randint(2, 5)) if card else {"present": False}
        return cid, sid, CURRENCY[locale], method

    def card(self, *, exp_year: int, exp_month: int | None = None) -> dict[str, Any]:
        """A card on file, valid until the end of ``exp_month``/``exp_year``."""
        return {
            "present": True,
            "brand": self.rng.choice(["visa", "mastercard", "amex"]),
            "last4": f"{self.rng.randrange(10000):04d}",
            "exp_month": exp_month or self.rng.randint(1, 12),
            "exp_year": exp_year,
        }

    def add(self, at: datetime, kind: str, data: dict[str, Any]) -> None:
        self.actions.append(Action(at, kind, data))


def _subscription(
    sid: str, cid: str, plan: str, amount: int, currency: str, period_end: datetime, **more: Any
) -> dict[str, Any]:
    return {
        "id": sid,
        "customer_id": cid,
        "plan": plan,
        "status": "active",
        "amount_minor": amount,
        "currency": currency,
        "interval": "month",
        "current_period_end": _iso(period_end),
        **more,
    }


def _annual(b: _Builder, n: int, days: int) -> None:
    """Yearly subscribers renewing inside the window: renewal notices 30 and 7 days before."""
    start, rng = b.start, b.rng
    for _ in range(n):
        cid, sid, currency, card = b.customer(card=True)
        renews = _between(rng, start, start + DAY * min(8, days), start + DAY * max(8, days - 1))
        sub = _subscription(
            sid,
            cid,
            "team",
            TEAM_YEARLY,
            currency,
            renews,
            interval="year",
            started_at=_iso(renews - timedelta(days=365 * rng.randint(1, 3))),
            payment_method=card,
        )
        b.add(start, "subscription", sub)
        b.add(renews, "renewal", {**sub, "current_period_end": _iso(renews + timedelta(days=365))})


def _trials(b: _Builder, n: int, days: int, *, card: bool) -> None:
    """Trials ending inside the window; the billing system reports each outcome at ``trial_end``.

    With a card, most convert (one in eight is canceled instead). Without one, a third add a card
    during the trial and convert; the others lapse (canceled at the end).
    """
    start, rng = b.start, b.rng
    for i in range(n):
        length = rng.choice((7, 14, 14, 21))
        begins = _between(rng, start, start, start + DAY * max(0, days - length - 2))
        cid, sid, currency, method = b.customer(card=card)
        ends = begins + DAY * length
        plan = rng.choice(tuple(MONTHLY))
        trial = _subscription(
            sid,
            cid,
            plan,
            MONTHLY[plan],
            currency,
            ends,
            status="trialing",
            trial_end=_iso(ends),
            started_at=_iso(begins),
            payment_method=method,
        )
        b.add(begins, "subscription", trial)
        converts = i % 8 != 7 if card else i % 3 == 0
        if not card and converts:
            method = b.card(exp_year=start.year + rng.randint(2, 5))
            added = _between(rng, start, begins + DAY, ends - DAY)
            b.add(added, "card_update", {"customer_id": cid, "payment_method": method})
        outcome = {**trial, "payment_method": method}
        if converts:
            outcome.update(status="active", current_period_end=_iso(ends + timedelta(days=30)))
        else:
            outcome.update(status="canceled")
        b.add(ends, "subscription", outcome)


def _expiring_cards(b: _Builder, n: int) -> None:
    """Cards that expire before the next renewal; half the owners update theirs after the notice."""
    start, rng = b.start, b.rng
    # The first month end at least 9 days ahead: its 7-day notice falls inside the story.
    soon = start + DAY * 9
    expires = datetime(soon.year + soon.month // 12, soon.month % 12 + 1, 1, tzinfo=UTC)
    last_month = expires - DAY
    for i in range(n):
        cid, sid, currency, _ = b.customer(card=True)
        card = b.card(exp_year=last_month.year, exp_month=last_month.month)
        renews = _on_grid(start, expires) + STEP * rng.randint(4, 28)
        plan = rng.choice(tuple(MONTHLY))
        sub = _subscription(sid, cid, plan, MONTHLY[plan], currency, renews, payment_method=card)
        b.add(start, "subscription", sub)
        if i % 2:
            continue  # does nothing: the card expires (its renewal is not part of the story)
        # After the first notice (30 days before, or at once when learned later) has gone out.
        first_notice = max(start, expires - timedelta(days=30))
        updated = _between(rng, start, first_notice + DAY, expires - DAY)
        new_card = {**b.card(exp_year=last_month.year + 3), "brand": card["brand"]}
        b.add(updated, "card_update", {"customer_id": cid, "payment_method": new_card})
        # Without payment_method (optional: unchanged), like a billing system that reports only what changed.
        renewed = {k: v for k, v in sub.items() if k != "payment_method"}
        b.add(renews, "renewal", {**renewed, "current_period_end": _iso(renews + timedelta(days=30))})


def _upgrades(b: _Builder, n: int) -> None:
    """7- and 14-day tastes of Pro for Starter subscribers; a third keep Pro, the others revert."""
    start, rng = b.start, b.rng
    for i in range(n):
        cid, sid, currency, card = b.customer(card=True)
        renews = start + STEP * rng.randint(4 * 21, 4 * 30)  # after every taste has ended
        sub = _subscription(sid, cid, "starter", MONTHLY["starter"], currency, renews, payment_method=card)
        b.add(start, "subscription", sub)
        begins = start + STEP * rng.randint(2, 4 * 6)
        ends = begins + DAY * (7 if i % 2 else 14)
        upgrade = {"plan": "pro", "ends_at": _iso(ends), "revert_to": "starter"}
        b.add(begins, "subscription", {**sub, "temporary_upgrade": upgrade})
        if i % 3 == 0:  # upgrades for real before the taste ends
            final = {**sub, "plan": "pro", "amount_minor": MONTHLY["pro"]}
            b.add(ends - STEP * rng.randint(2, 8), "subscription", final)
        else:  # the billing system reverts the plan when the taste ends
            final = sub
            b.add(ends, "subscription", sub)
        b.add(renews, "renewal", {**final, "current_period_end": _iso(renews + timedelta(days=30))})


def _long_tenure(b: _Builder, n: int, days: int) -> None:
    """Monthly subscribers of 4 to 30 months: the annual offer goes at once; two in five accept it."""
    start, rng = b.start, b.rng
    for i in range(n):
        cid, sid, currency, card = b.customer(card=True)
        plan = rng.choice(tuple(MONTHLY))
        renews = start + STEP * rng.randint(4 * 8, 4 * 28)
        began = start - timedelta(days=rng.randint(4 * 30, 30 * 30))
        sub = _subscription(
            sid, cid, plan, MONTHLY[plan], currency, renews, started_at=_iso(began), payment_method=card
        )
        b.add(start, "subscription", sub)
        if i % 5 in (0, 3):
            # A day or more after the offer went out, and two days before the renewal that the
            # switch takes effect at, so the billing system knows of the switch when it renews.
            accepts = _between(rng, start, start + DAY, min(renews, start + DAY * days) - 2 * DAY)
            b.add(accepts, "accept_offer", {"subscription_id": sid, "customer_id": cid})
        b.add(renews, "renewal", {**sub, "current_period_end": _iso(renews + timedelta(days=30))})


def build_lifecycle(*, seed: int, subscriptions: int, days: int, start: datetime) -> LifecycleStory:
    """The lifecycle subscribers of a demo of ``subscriptions`` over ``days`` days from ``start``.

    ``start`` must be on the demo's grid (the simulated clock at the first step). Actions are sorted
    by time (stable: a group's actions at the same time keep their order).
    """
    b = _Builder(seed, start)
    n = group_size(subscriptions)
    # Trials send the most emails (three reminders and an outcome): half a group with a card, half without.
    trials = max(2, n // 2)
    _annual(b, n, days)
    _trials(b, trials, days, card=True)
    _trials(b, trials, days, card=False)
    _expiring_cards(b, n)
    _upgrades(b, n)
    _long_tenure(b, n, days)
    groups = {
        "annual": n,
        "trials_card": trials,
        "trials_no_card": trials,
        "expiring_cards": n,
        "temporary_upgrades": n,
        "long_tenure": n,
    }
    return LifecycleStory(sorted(b.actions, key=lambda a: a.at), groups)
