"""What the price-migration workers decide, pure: no database, no broker, no billing calls.

The jobs and handlers load the facts (the migration's terms, the member, the
subscription as stored now) and ask these functions what they mean: whether
the member must be skipped and why, which renewal the new price applies at,
when the reminder and the application are due, and exactly which
``change_plan`` the member's choice leads to. The date arithmetic itself is
:func:`~dunning.workflows.price_migrations.pricing.apply_at` (one formula for
the preview and the workers).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any, Protocol

from dunning.workflows.price_migrations.pricing import apply_at, step_up_price

#: Member states still on their way (the others are final).
OPEN_STATES = ("pending", "notified", "reminded", "deferred")
#: Member states after the notice went out, before the price applied.
NOTIFIED_STATES = ("notified", "reminded", "deferred")
#: Subscription statuses a price still applies to (the ones ``prices plan`` selects).
CHARGING = ("active", "past_due", "trialing")
#: Offers a migration may make (``PriceMigration.offers[].kind``), and the choices a customer may record.
OFFER_KINDS = ("step_up", "annual_lock", "downgrade")
#: ``none``: the customer said "keep my plan at the new price" (useful to undo another choice).
CHOICES = (*OFFER_KINDS, "none")

#: The application runs this long before the renewal it targets (inside the 24 hours the issue allows,
#: with room for an outage of a few hours to be retried before the renewal passes).
APPLY_LEAD = timedelta(hours=12)
#: ... and never earlier than this before it.
APPLY_WINDOW = timedelta(hours=24)
#: The reminder goes this long before the new price applies.
REMINDER_BEFORE = timedelta(days=7)
#: A job that must wait (migration paused, dunning case open, notice not delivered yet) looks again after this.
WAIT = timedelta(days=1)
#: The prefix of the reason of a member who canceled within the alert window (counted by the auto-pause).
EARLY_CANCEL = "canceled within "


class SubscriptionFacts(Protocol):
    """What the rules read of a subscription (the stored row)."""

    plan: str
    status: str
    amount_minor: int
    currency: str
    interval: str
    interval_count: int
    current_period_end: datetime
    cancel_at_period_end: bool


@dataclass(frozen=True, slots=True)
class Terms:
    """A migration's terms, as the workers read them (from a ``PriceMigration`` row)."""

    id: str
    plan: str
    currency: str
    interval: str
    new_amount_minor: int
    effective_at: datetime
    notice_days: int
    grandfather_months: int
    offers: tuple[Mapping[str, Any], ...]
    reason: str
    cancel_alert_percent: int = 5
    cancel_alert_days: int = 14

    @classmethod
    def of(cls, row: Any) -> Terms:
        """The terms of a ``PriceMigration`` row (or anything with the same attributes)."""
        return cls(
            id=row.id,
            plan=row.plan,
            currency=row.currency,
            interval=row.interval,
            new_amount_minor=row.new_amount_minor,
            effective_at=row.effective_at,
            notice_days=row.notice_days,
            grandfather_months=row.grandfather_months,
            offers=tuple(o for o in (row.offers or ()) if isinstance(o, Mapping)),
            reason=row.reason,
            cancel_alert_percent=row.cancel_alert_percent,
            cancel_alert_days=row.cancel_alert_days,
        )

    def offer(self, kind: str) -> Mapping[str, Any] | None:
        """The migration's offer of ``kind`` (the first, if the terms name it twice), or None."""
        return next((o for o in self.offers if o.get("kind") == kind), None)


def why_skip(terms: Terms, sub: SubscriptionFacts | None, current_amount_minor: int) -> str | None:
    """Why the new price must not apply to this subscription any more (None: it still applies).

    Short, fixed phrases: ``prices status`` counts members by them. A subscription whose
    amount changed since the migration was planned is skipped too: the increase the operator
    previewed (and checked against the guardrail) is not the one it would get.
    """
    if sub is None:
        return "subscription unknown"
    if sub.status == "canceled" or sub.cancel_at_period_end:
        return "canceled"
    if sub.status not in CHARGING:
        return f"subscription {sub.status}"
    if sub.plan != terms.plan:
        return "plan changed"
    if sub.currency != terms.currency:
        return "currency changed"
    if sub.interval != terms.interval:
        return "interval changed"
    if sub.amount_minor != current_amount_minor:
        return "amount changed"
    return None


def cancel_reason(terms: Terms, notified_at: datetime | None, now: datetime) -> str:
    """The skip reason of a member whose subscription was canceled (or set to end) at ``now``.

    A cancellation within ``cancel_alert_days`` of the notice is the one the auto-pause counts.
    """
    if notified_at is None:
        return "canceled before the notice"
    if now - notified_at <= timedelta(days=terms.cancel_alert_days):
        return f"{EARLY_CANCEL}{terms.cancel_alert_days} days of the notice"
    return "canceled"


def alert(terms: Terms, notified: int, early_cancels: int) -> str | None:
    """The auto-pause's reason when early cancellations exceed the threshold share of notified members."""
    if notified <= 0 or early_cancels * 100 <= terms.cancel_alert_percent * notified:
        return None
    share = early_cancels * 100 / notified
    return (
        f"auto-paused: {early_cancels} of {notified} notified subscribers ({share:.1f}%) canceled within "
        f"{terms.cancel_alert_days} days of their notice, above the {terms.cancel_alert_percent}% alert threshold"
    )


def target(terms: Terms, sub: SubscriptionFacts, notice_at: datetime, now: datetime) -> datetime:
    """The renewal the new price applies at, for a notice sent at ``notice_at``, as seen at ``now``.

    The first renewal on or after ``effective + grandfather months`` that is at least
    ``notice_days`` after the notice; and a renewal already past (the billing system has not told
    us of the next one yet, or the application waited) is no renewal to apply at: the next one is.
    """
    found = apply_at(
        sub.current_period_end,
        sub.interval,
        sub.interval_count,
        terms.effective_at,
        terms.grandfather_months,
        notice_at,
        terms.notice_days,
    )
    if found > now:
        return found
    # Every other bound is already met by ``found`` <= now: only "after now" is left to add.
    return apply_at(
        sub.current_period_end,
        sub.interval,
        sub.interval_count,
        now + timedelta(microseconds=1),
        0,
        notice_at,
        terms.notice_days,
    )


def apply_due(applies_at: datetime, now: datetime) -> datetime:
    """When the application job should run: ``APPLY_LEAD`` before the renewal, or now if that has passed."""
    return max(now, applies_at - APPLY_LEAD)


def in_window(applies_at: datetime, now: datetime) -> bool:
    """Whether ``change_plan`` for the renewal at ``applies_at`` may be made now (the 24 hours before it)."""
    return applies_at - APPLY_WINDOW <= now < applies_at


def reminder_due(applies_at: datetime, notified_at: datetime) -> datetime | None:
    """When the reminder goes (7 days before the new price), or None when that is not after the notice.

    With the shortest notice allowed (7 days) the notice itself is the reminder.
    """
    due = applies_at - REMINDER_BEFORE
    return due if due > notified_at else None


def choices_offered(terms: Terms, sub_interval: str, sub_interval_count: int) -> tuple[str, ...]:
    """The choices a member of this migration may make, in the order of the terms (``none`` last).

    The annual lock is for monthly billing only (a yearly subscription has nothing to switch).
    No offers, no choices: the notice only informs.
    """
    kinds: list[str] = []
    for offer in terms.offers:
        kind = offer.get("kind")
        if kind not in OFFER_KINDS or kind in kinds:
            continue
        if kind == "annual_lock" and (sub_interval, sub_interval_count) != ("month", 1):
            continue
        kinds.append(str(kind))
    return (*kinds, "none") if kinds else ()


@dataclass(frozen=True, slots=True)
class PlanChange:
    """One ``change_plan`` call: what the billing system is asked to bill from ``effective_at``."""

    plan: str
    amount_minor: int
    currency: str
    effective_at: datetime
    interval: str | None = None
    interval_count: int | None = None

    def payload(self) -> dict[str, Any]:
        """As stored in the job before the call (JSON), so that a re-run sends exactly the same request."""
        return {
            "plan": self.plan,
            "amount_minor": self.amount_minor,
            "currency": self.currency,
            "effective_at": self.effective_at.isoformat(),
            "interval": self.interval,
            "interval_count": self.interval_count,
        }

    @classmethod
    def from_payload(cls, data: Mapping[str, Any]) -> PlanChange:
        """The call a job recorded (raises KeyError / ValueError / TypeError on a bad payload)."""
        interval = data.get("interval")
        count = data.get("interval_count")
        return cls(
            plan=str(data["plan"]),
            amount_minor=int(data["amount_minor"]),
            currency=str(data["currency"]),
            effective_at=datetime.fromisoformat(str(data["effective_at"])),
            interval=str(interval) if interval is not None else None,
            interval_count=int(count) if count is not None else None,
        )


@dataclass(frozen=True, slots=True)
class Application:
    """What applying the migration to one member means: the call, and the step-up's end if any."""

    change: PlanChange
    choice: str  # the choice applied (``none`` when the member made none)
    step_end: PlanChange | None = None  # the step-up's second call: the full new price from its end


def offer_prices(
    terms: Terms,
    new_amount_minor: int,
    current_amount_minor: int,
    annual_price: Callable[[int], int],
) -> dict[str, dict[str, Any]]:
    """Each offer's terms as a customer reads them: amounts in minor units, months, plan."""
    prices: dict[str, dict[str, Any]] = {}
    for kind in OFFER_KINDS:
        offer = terms.offer(kind)
        if offer is None:
            continue
        if kind == "step_up":
            percent, months = int(offer["percent"]), int(offer["months"])
            prices[kind] = {
                "amount_minor": step_up_price(new_amount_minor, percent, terms.currency),
                "percent": percent,
                "months": months,
            }
        elif kind == "annual_lock":
            prices[kind] = {"amount_minor": annual_price(current_amount_minor)}
        else:
            prices[kind] = {"plan": str(offer["plan"]), "amount_minor": int(offer["amount_minor"])}
    return prices


def application(
    terms: Terms,
    *,
    choice: str | None,
    new_amount_minor: int,
    current_amount_minor: int,
    applies_at: datetime,
    sub_interval: str,
    sub_interval_count: int,
    annual_price: Callable[[int], int],
) -> Application:
    """The ``change_plan`` the member's choice leads to at ``applies_at``.

    No choice (or ``none``, or a choice whose offer the terms no longer make): the new amount.
    ``step_up``: the discounted amount now, and the full new amount from the renewal ``months``
    months later. ``annual_lock``: yearly billing at the current amount x 12 less the policy's
    annual discount. ``downgrade``: the offer's plan at its amount.
    """
    prices = offer_prices(terms, new_amount_minor, current_amount_minor, annual_price)
    offered = choices_offered(terms, sub_interval, sub_interval_count)
    chosen = choice if choice in offered and choice in prices else "none"
    base = PlanChange(terms.plan, new_amount_minor, terms.currency, applies_at)
    if chosen == "step_up":
        months = int(prices[chosen]["months"])
        end = apply_at(applies_at, sub_interval, sub_interval_count, applies_at, months, applies_at, 0)
        return Application(
            PlanChange(terms.plan, int(prices[chosen]["amount_minor"]), terms.currency, applies_at),
            chosen,
            step_end=PlanChange(terms.plan, new_amount_minor, terms.currency, end),
        )
    if chosen == "annual_lock":
        return Application(
            PlanChange(
                terms.plan, int(prices[chosen]["amount_minor"]), terms.currency, applies_at, "year", 1
            ),
            chosen,
        )
    if chosen == "downgrade":
        return Application(
            PlanChange(
                str(prices[chosen]["plan"]), int(prices[chosen]["amount_minor"]), terms.currency, applies_at
            ),
            chosen,
        )
    return Application(base, "none")


def job_key(migration_id: str, subscription_id: str, what: str) -> str:
    """``price:MIG:SUB:notice|reminder|apply|apply-2``: the job's key, and its email's or call's key too."""
    return f"price:{migration_id}:{subscription_id}:{what}"


def member_keys(migration_id: str, subscription_id: str) -> Sequence[str]:
    """Every job key a member may have."""
    return [job_key(migration_id, subscription_id, w) for w in ("notice", "reminder", "apply", "apply-2")]
