"""The planner's answer (:class:`PlannedNotice`) and the rules every kind shares.

``offset_series`` is the late-knowledge rule for notices sent some days before an announced time
(renewal, card expiry, trial end, upgrade end); ``single_due`` is the rule for one notice at a time
of its own (trial outcome, upgrade reverted, annual offer). Keys name the announced fact, never
``now``, so planning twice gives the same keys and a moved date gives new ones.
"""

from __future__ import annotations

import hashlib
from calendar import monthrange
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Literal

from dunning.workflows.lifecycle.facts import SubscriptionFacts

FactValue = str | int | None
How = Literal["scheduled", "late", "sent"]

# Statuses under which the billing system will charge at current_period_end.
CHARGING = frozenset({"active", "past_due", "unpaid"})

_LONG_PART = 64  # ids longer than this are shortened in keys, so a key stays within 200 characters


@dataclass(frozen=True, slots=True, kw_only=True)
class PlannedNotice:
    """One notice that should exist: its key (also the outbox key), when it is due, and why."""

    key: str
    kind: str
    subscription_id: str
    customer_id: str
    due_at: datetime
    announced_at: datetime  # the time the notice announces; due_at <= announced_at
    variant: str | None
    reason: str  # one line, naming the policy key
    facts: dict[str, FactValue]  # JSON-able values the email states


def iso(at: datetime) -> str:
    """An aware datetime as ISO-8601 in UTC (``2027-01-13T00:00:00+00:00``)."""
    return at.astimezone(UTC).isoformat()


def day(at: datetime) -> str:
    """The UTC date of an instant, as used in keys (``2027-01-13``)."""
    return at.astimezone(UTC).date().isoformat()


def stamp(at: datetime) -> str:
    """An instant for a reason line, to the minute (``2027-01-13 09:30 UTC``)."""
    return at.astimezone(UTC).strftime("%Y-%m-%d %H:%M UTC")


def key_part(value: str) -> str:
    """An id as a key component: itself, or for very long ids a prefix plus a digest (still unique)."""
    if len(value) <= _LONG_PART:
        return value
    return f"{value[:40]}~{hashlib.sha256(value.encode()).hexdigest()[:20]}"


def add_months(at: datetime, months: int) -> datetime:
    """``at`` plus whole calendar months; the day is clamped to the month's end (Jan 31 + 1 = Feb 28/29)."""
    index = at.year * 12 + (at.month - 1) + months
    year, month0 = divmod(index, 12)
    return at.replace(year=year, month=month0 + 1, day=min(at.day, monthrange(year, month0 + 1)[1]))


def card_facts(sub: SubscriptionFacts) -> dict[str, FactValue]:
    """The card phrase's values: brand and last four, None when no card is on file."""
    card = sub.card
    return {"card_brand": card.brand if card else None, "card_last4": card.last4 if card else None}


def single_due(
    key: str, natural_due: datetime, now: datetime, sent_keys: frozenset[str]
) -> tuple[datetime, How]:
    """When a one-off notice is due: at its time, or at once when that is past and it was not sent yet."""
    if natural_due >= now:
        return natural_due, "scheduled"
    if key in sent_keys:
        return natural_due, "sent"
    return now, "late"


def offset_series(
    *,
    sub: SubscriptionFacts,
    kind: str,
    key_prefix: str,
    announced_at: datetime,
    offsets_days: tuple[int, ...],
    now: datetime,
    what: str,
    policy_key: str,
    facts: Mapping[str, FactValue],
    variant: str | None = None,
    not_before: datetime | None = None,
) -> list[PlannedNotice]:
    """The notices of one series: ``offsets_days`` (descending) days before ``announced_at``.

    - Offsets due before ``not_before`` are dropped (a trial reminder due before the trial started).
    - Future offsets are due at their time.
    - Past offsets already in ``sub.sent_keys`` stay wanted at their original time (never canceled).
    - Of the past offsets not sent, only the latest is wanted, at ``now`` ("at once"), and only while
      ``now`` is before ``announced_at`` and no key of this series with that offset or a smaller one
      was sent: never a notice after the event it announces, never two late ones.
    """
    rows: list[tuple[int, datetime, How, datetime]] = []
    late: list[tuple[int, datetime]] = []
    for offset in offsets_days:
        due = announced_at - timedelta(days=offset)
        if not_before is not None and due < not_before:
            continue
        key = f"{key_prefix}:{offset}d"
        if due >= now:
            rows.append((offset, due, "scheduled", due))
        elif key in sub.sent_keys:
            rows.append((offset, due, "sent", due))
        else:
            late.append((offset, due))
    if late and now < announced_at:
        offset, due = min(late)  # the smallest offset is the latest one
        sent_since = any(f"{key_prefix}:{o}d" in sub.sent_keys for o in offsets_days if o <= offset)
        if not sent_since:
            rows.append((offset, now, "late", due))
    notices = []
    for offset, due_at, how, original in sorted(rows, key=lambda r: -r[0]):
        reason = f"{what}: {offset} day{'' if offset == 1 else 's'} before"
        if how == "late":
            reason += f" (due {stamp(original)}), learned late: at once"
        elif how == "sent":
            reason += ", already sent"
        notices.append(
            PlannedNotice(
                key=f"{key_prefix}:{offset}d",
                kind=kind,
                subscription_id=sub.id,
                customer_id=sub.customer_id,
                due_at=due_at,
                announced_at=announced_at,
                variant=variant,
                reason=f"{reason} ({policy_key})",
                facts=dict(facts),
            )
        )
    return notices
