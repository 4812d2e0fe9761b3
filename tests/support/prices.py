"""A launched price migration for the workers' tests, written straight to the store.

What ``dunning prices launch`` leaves behind, kept small: the migration row
(``launched``), one ``pending`` member per subscription and one ``price_notice``
job per member, due now. The workers take it from there.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from sqlalchemy import select

from dunning.store.models import Job, PriceMigration, PriceMigrationMember, Subscription

REASON = "New reporting features and a 24/7 support line"
OFFERS: list[dict[str, Any]] = [
    {"kind": "step_up", "percent": 10, "months": 3},
    {"kind": "annual_lock"},
    {"kind": "downgrade", "plan": "basic", "amount_minor": 3900},
]


def launch(
    world: Any,
    subscriptions: list[str],
    *,
    migration_id: str = "pm_1",
    new_amount_minor: int = 5900,
    notice_days: int = 30,
    grandfather_months: int = 0,
    effective_at: datetime | None = None,
    offers: list[dict[str, Any]] | None = None,
    cancel_alert_percent: int = 5,
) -> str:
    """Launch a migration of plan ``pro`` (EUR, monthly) for ``subscriptions``; returns its id."""
    now = world.rt.clock.now()
    with world.rt.sessions.begin() as s:
        s.add(
            PriceMigration(
                id=migration_id,
                status="launched",
                plan="pro",
                currency="EUR",
                interval="month",
                new_amount_minor=new_amount_minor,
                effective_at=effective_at or now,
                notice_days=notice_days,
                grandfather_months=grandfather_months,
                offers=OFFERS if offers is None else offers,
                reason=REASON,
                guardrail_percent=50,
                cancel_alert_percent=cancel_alert_percent,
                cancel_alert_days=14,
                created_at=now,
                launched_at=now,
            )
        )
        s.flush()
        for sub in s.execute(select(Subscription).where(Subscription.id.in_(subscriptions))).scalars():
            increase = new_amount_minor - sub.amount_minor
            s.add(
                PriceMigrationMember(
                    migration_id=migration_id,
                    subscription_id=sub.id,
                    customer_id=sub.customer_id,
                    current_amount_minor=sub.amount_minor,
                    new_amount_minor=new_amount_minor,
                    increase_minor=increase,
                    increase_bp=increase * 10_000 // sub.amount_minor,
                    above_guardrail=False,
                    state="pending",
                    notice_at=now,
                )
            )
            s.add(
                Job(
                    key=f"price:{migration_id}:{sub.id}:notice",
                    kind="price_notice",
                    queue="dunning",
                    subject=sub.id,
                    due_at=now,
                    payload={},
                    status="pending",
                    claims=0,
                    runs=0,
                    crashes=0,
                    created_at=datetime.now(UTC),
                )
            )
    world.settle()
    return migration_id


def member(world: Any, sub: str = "sub_1", migration_id: str = "pm_1") -> PriceMigrationMember:
    with world.rt.sessions() as s:
        found = s.get(PriceMigrationMember, (migration_id, sub))
        assert found is not None
        return found


def migration(world: Any, migration_id: str = "pm_1") -> PriceMigration:
    with world.rt.sessions() as s:
        found = s.get(PriceMigration, migration_id)
        assert found is not None
        return found


def set_status(world: Any, status: str, migration_id: str = "pm_1") -> None:
    """What ``prices pause`` / ``resume`` do to the row (the workers read nothing else)."""
    with world.rt.sessions.begin() as s:
        row = s.get(PriceMigration, migration_id)
        assert row is not None
        row.status = status
        if status == "launched":
            row.paused_reason = None


def change_plan_calls(world: Any, sub: str = "sub_1") -> list[Any]:
    """The ``change_plan`` requests the sandbox received for ``sub`` (replays included)."""
    return [c for c in world.sandbox.state.calls() if c.path == f"/subscriptions/{sub}/change_plan"]


def price_mails(world: Any, kind: str, to: str = "cus_1@example.com") -> list[Any]:
    return [m for m in world.smtp.messages if to in m.rcpt_tos and m["X-Dunning-Kind"] == kind]


def text_of(mail: Any) -> str:
    return str(mail.message.get_body(("plain",)).get_content())
