"""An operator's hand on a running migration: pause, resume, cancel (set-based, like launch).

Each returns ``(changed, message)``: asking for the state a migration is already in
changes nothing and says so (a runbook may repeat a step); a transition that makes no
sense (resuming a canceled migration) is a :class:`Refused` and writes nothing.
"""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import func, select, update
from sqlalchemy.orm import Session

from dunning.engine.jobs import wall_now
from dunning.errors import Refused
from dunning.store.models import Job, PriceMigrationMember
from dunning.workflows.price_migrations.members import get
from dunning.workflows.price_migrations.sql import statement

#: Member states that may still change (the others are final).
OPEN_STATES = ("pending", "notified", "reminded", "deferred")
#: Of those, the subscribers who were told of the new price.
TOLD_STATES = ("notified", "reminded", "deferred")


def pause(session: Session, migration_id: str, *, now: datetime) -> tuple[bool, str]:
    """Stop sending and applying (due jobs wait) until :func:`resume`."""
    migration = get(session, migration_id)
    if migration.status == "paused":
        return False, f"{migration_id} is already paused ({migration.paused_reason or 'no reason given'})"
    if migration.status != "launched":
        raise Refused(
            "ID", f"migration {migration_id} is {migration.status}: only a launched migration can be paused"
        )
    migration.status = "paused"
    migration.paused_at = now
    migration.paused_reason = "paused by an operator"
    return (
        True,
        f"paused {migration_id}: no notice is sent and no price applied until `dunning prices resume`",
    )


def resume(session: Session, migration_id: str, *, now: datetime) -> tuple[bool, str]:
    """Let a paused migration go on (whoever paused it: an operator or the cancellation alert)."""
    migration = get(session, migration_id)
    if migration.status == "launched":
        return False, f"{migration_id} is not paused: nothing to resume"
    if migration.status == "canceled":
        raise Refused("ID", f"migration {migration_id} is canceled: it cannot be resumed (plan a new one)")
    if migration.status != "paused":
        raise Refused(
            "ID", f"migration {migration_id} is {migration.status}: only a paused migration can be resumed"
        )
    was = migration.paused_reason or "paused"
    migration.status = "launched"
    migration.paused_at = None
    migration.paused_reason = None
    return True, f"resumed {migration_id} (it was {was}); waiting work runs at its next turn"


def cancel(session: Session, migration_id: str, *, now: datetime) -> tuple[bool, str]:
    """Cancel what is not applied yet: members keep their price, pending price jobs are canceled.

    Prices already applied stay applied (undoing them would be another price change).
    """
    migration = get(session, migration_id)
    if migration.status == "canceled":
        return False, f"{migration_id} is already canceled"
    if migration.status == "completed":
        raise Refused(
            "ID", f"migration {migration_id} is completed: every price was applied, nothing to cancel"
        )
    m = PriceMigrationMember
    applied = (
        session.scalar(select(func.count()).where(m.migration_id == migration_id, m.state == "applied")) or 0
    )
    told = (
        session.scalar(select(func.count()).where(m.migration_id == migration_id, m.state.in_(TOLD_STATES)))
        or 0
    )
    states = ", ".join(f"'{s}'" for s in TOLD_STATES)
    session.execute(
        statement(
            f"""
            INSERT INTO timeline (subscription_id, case_id, at, kind, detail)
            SELECT subscription_id, NULL, :now, 'price', :detail
            FROM price_migration_members WHERE migration_id = :mid AND state IN ({states})
            """
        ),
        {
            "mid": migration_id,
            "now": now,
            "detail": f"price migration {migration_id} canceled: the price stays",
        },
    )
    kept = session.execute(
        update(m)
        .where(m.migration_id == migration_id, m.state.in_(OPEN_STATES))
        .values(state="skipped", reason="migration canceled")
    ).rowcount
    jobs = session.execute(
        update(Job)
        .where(Job.status == "pending", Job.key.startswith(f"price:{migration_id}:", autoescape=True))
        .values(status="canceled", finished_at=wall_now(), last_error="price migration canceled")
    ).rowcount
    was = migration.status
    migration.status = "canceled"
    migration.canceled_at = now
    parts = [f"canceled {migration_id} (was {was})"]
    if applied:
        parts.append(
            f"{_n(applied, 'price')} already applied {'stays' if applied == 1 else 'stay'} applied; "
            "only what was not applied is canceled"
        )
    parts.append(f"{_n(kept, 'subscriber')} keep their current price ({_n(jobs, 'pending job')} canceled)")
    if told:
        parts.append(f"{told:,} of them had been told of the new price")
    return True, "; ".join(parts)


def _n(count: int, noun: str) -> str:
    return f"{count:,} {noun}" + ("" if count == 1 else "s")
