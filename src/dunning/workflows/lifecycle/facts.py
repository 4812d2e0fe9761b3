"""What the planner knows about one subscription: plain frozen values, no database, no clock."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime


@dataclass(frozen=True, slots=True, kw_only=True)
class Card:
    """The payment method on file, as far as the notices need it."""

    brand: str | None
    last4: str | None
    exp_month: int | None
    exp_year: int | None

    def expires_at(self) -> datetime | None:
        """The first instant (UTC) the card no longer works: the start of the month after its expiry month.

        None when the billing system did not tell us the expiry (or told us a month that does not exist).
        """
        if self.exp_month is None or self.exp_year is None or not 1 <= self.exp_month <= 12:
            return None
        if self.exp_month == 12:
            return datetime(self.exp_year + 1, 1, 1, tzinfo=UTC)
        return datetime(self.exp_year, self.exp_month + 1, 1, tzinfo=UTC)


@dataclass(frozen=True, slots=True, kw_only=True)
class Upgrade:
    """A temporary upgrade (a taste of a higher tier) that reverts to ``revert_to`` at ``ends_at``."""

    plan: str
    ends_at: datetime
    revert_to: str
    seen_at: datetime  # when we first saw this upgrade: the start of the taste as far as we know


@dataclass(frozen=True, slots=True, kw_only=True)
class SubscriptionFacts:
    """Everything the planner reads about one subscription (all datetimes aware, UTC)."""

    id: str
    customer_id: str
    plan: str
    status: str  # trialing, active, past_due, unpaid, canceled, incomplete, paused
    amount_minor: int
    currency: str
    interval: str  # day, week, month, year
    interval_count: int
    current_period_end: datetime
    trial_end: datetime | None
    cancel_at_period_end: bool
    started_at: datetime | None
    first_seen_at: datetime
    upgrade: Upgrade | None
    card: Card | None  # None: no payment method on file (customer.pm_present False)
    open_case: bool  # a failed-payment case is open for this subscription
    last_annual_offer_at: datetime | None  # when the last annual_offer was sent (outbox)
    sent_keys: frozenset[str]  # keys of lifecycle notices already in the outbox for this subscription

    @property
    def tenure_start(self) -> datetime:
        """Since when the customer has been subscribed, as far as we know."""
        return self.started_at or self.first_seen_at
