"""What ``dunning calendar`` shows: the planner's notices due in the next days, on today's facts."""

from __future__ import annotations

from datetime import timedelta
from typing import TYPE_CHECKING, Any
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from sqlalchemy.orm import Session

from dunning.domain.notices import deliver_at
from dunning.store.models import Customer
from dunning.workflows.lifecycle.loading import load_facts, subscriptions_of
from dunning.workflows.lifecycle.planner import calendar

if TYPE_CHECKING:
    from dunning.runtime import Runtime


def _zone(name: str | None) -> str:
    try:
        ZoneInfo(name or "UTC")
    except (ZoneInfoNotFoundError, ValueError):
        return "UTC"
    return name or "UTC"


def upcoming(
    rt: Runtime, session: Session, *, subscription: str | None, customer: str | None, days: int
) -> tuple[bool, list[dict[str, Any]]]:
    """``(found, entries)``: the notices due in ``[now, now + days]``, soonest first, as plain data.

    Notices already written to the outbox are left out (they are in ``dunning emails``);
    one due at once (late knowledge) shows as due now.
    """
    now = rt.clock.now()
    ids = [subscription] if subscription else subscriptions_of(session, customer or "")
    facts = load_facts(session, ids, now)
    entries: list[dict[str, Any]] = []
    for sub in facts.values():
        owner = session.get(Customer, sub.customer_id)
        zone = _zone(owner.timezone if owner else None)
        for notice in calendar(sub, rt.policy.lifecycle_for(sub.plan), now, days):
            if notice.key in sub.sent_keys:
                continue
            due = max(notice.due_at, now)
            # What the customer sees: quiet hours hold a notice due at night until morning.
            leaves = deliver_at(due, zone, rt.policy.for_plan(sub.plan).quiet_hours)
            entries.append(
                {
                    "subscription_id": sub.id,
                    "kind": notice.kind,
                    "variant": notice.variant,
                    "key": notice.key,
                    "due_at": due.isoformat(),
                    "due_local": due.astimezone(ZoneInfo(zone)).strftime("%Y-%m-%d %H:%M"),
                    "sends_at": leaves.isoformat(),
                    "sends_local": leaves.astimezone(ZoneInfo(zone)).strftime("%Y-%m-%d %H:%M"),
                    "timezone": zone,
                    "now": notice.due_at <= now,
                    "announced_at": notice.announced_at.isoformat(),
                    "reason": notice.reason,
                }
            )
    entries.sort(key=lambda e: (e["due_at"], e["subscription_id"], e["key"]))
    limit = (now + timedelta(days=days)).isoformat()
    return bool(facts), [e for e in entries if e["due_at"] <= limit]


def upcoming_for_subscription(
    rt: Runtime, session: Session, subscription_id: str, days: int
) -> list[dict[str, Any]]:
    """:func:`upcoming` for one subscription (the registry's ``Workflow.upcoming``)."""
    return upcoming(rt, session, subscription=subscription_id, customer=None, days=days)[1]
