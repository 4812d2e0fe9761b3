"""The members' state in the store: load with locks, skip, move and cancel their jobs, complete, auto-pause.

Shared by the jobs, the event handlers and the choice pages, in the caller's
transaction. Every change of a member's state leaves a line on its
subscription's timeline (kind ``price``), naming the migration.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Mapping
from datetime import datetime
from typing import TYPE_CHECKING, Any

from sqlalchemy import func, select, update
from sqlalchemy.orm import Session

from dunning.broker.names import JOBS_QUEUE
from dunning.engine.jobs import finish, wall_now
from dunning.errors import PermanentJobError
from dunning.store.models import Job, PriceMigration, PriceMigrationMember, Subscription
from dunning.store.unit import unit_of
from dunning.workflows.price_migrations.pricing import annual_lock_price
from dunning.workflows.price_migrations.rules import (
    EARLY_CANCEL,
    OPEN_STATES,
    WAIT,
    Terms,
    alert,
    apply_due,
    job_key,
    member_keys,
    reminder_due,
)

if TYPE_CHECKING:
    from dunning.runtime import Runtime

log = logging.getLogger("dunning.price_migrations")

#: Migrations whose members the workers move on (a paused one waits; draft, canceled, completed do not).
LIVE = ("launched", "paused")
#: Job kinds of this workflow.
NOTICE_JOB, REMINDER_JOB, APPLY_JOB = "price_notice", "price_reminder", "price_apply"


def note(session: Session, subscription_id: str, migration_id: str, now: datetime, text: str) -> None:
    """A line on the subscription's timeline about this migration."""
    unit_of(session).add_timeline(
        subscription_id, None, now, "price", f"price migration {migration_id}: {text}"
    )


def annual_price(rt: Runtime, plan: str) -> Callable[[int], int]:
    """The annual-lock price of a monthly amount on ``plan``: the policy's annual offer formula."""
    rules = rt.policy.lifecycle_for(plan).annual_offer
    return lambda monthly_minor: annual_lock_price(monthly_minor, rules)


def load(
    session: Session, migration_id: str, subscription_id: str, *, lock: bool
) -> tuple[PriceMigration | None, PriceMigrationMember | None, Subscription | None]:
    """The migration, the member (row-locked when ``lock``: jobs, events and clicks serialise on it), the subscription."""
    member = session.get(
        PriceMigrationMember,
        (migration_id, subscription_id),
        with_for_update=lock or None,
        populate_existing=True,
    )
    migration = session.get(PriceMigration, migration_id, populate_existing=True)
    sub = session.get(Subscription, subscription_id, populate_existing=True)
    return migration, member, sub


def live_members(session: Session, subscription_id: str) -> list[tuple[PriceMigration, PriceMigrationMember]]:
    """The subscription's members still on their way, in launched or paused migrations (row-locked)."""
    rows = session.execute(
        select(PriceMigrationMember, PriceMigration)
        .join(PriceMigration, PriceMigration.id == PriceMigrationMember.migration_id)
        .where(
            PriceMigrationMember.subscription_id == subscription_id,
            PriceMigrationMember.state.in_(OPEN_STATES),
            PriceMigration.status.in_(LIVE),
        )
        .order_by(PriceMigration.id)
        .with_for_update(of=PriceMigrationMember)
    ).all()
    return [(migration, member) for member, migration in rows]


def call_recorded(session: Session, migration_id: str, subscription_id: str) -> bool:
    """Whether the member's application job has fixed its ``change_plan`` (from then on nothing changes it)."""
    payload = session.execute(
        select(Job.payload).where(Job.key == job_key(migration_id, subscription_id, "apply"))
    ).scalar_one_or_none()
    return bool(payload and payload.get("call"))


def add_job(
    session: Session,
    *,
    key: str,
    kind: str,
    subject: str,
    due_at: datetime,
    now: datetime,
    payload: Mapping[str, Any] | None = None,
) -> None:
    """Insert a job unless its key exists (finished or not): planning it twice plans it once."""
    unit_of(session).add_jobs(
        [
            {
                "key": key,
                "kind": kind,
                "queue": JOBS_QUEUE,
                "subject": subject,
                "due_at": due_at,
                "payload": dict(payload or {}),
            }
        ],
        now=now,
    )


def move_job(session: Session, key: str, due_at: datetime) -> bool:
    """Move a pending job to ``due_at``; False when it is not pending (done, running, canceled, missing)."""
    moved = session.execute(
        update(Job).where(Job.key == key, Job.status == "pending").values(due_at=due_at, retry_at=None)
    ).rowcount
    return bool(moved)


def wait(session: Session, job: Job, due_at: datetime, note_text: str | None = None) -> None:
    """Put a running job back to pending until ``due_at`` (it looks at the facts again then)."""
    session.execute(
        update(Job)
        .where(Job.id == job.id)
        .values(status="pending", due_at=due_at, lease_until=None, retry_at=None, last_error=note_text)
    )


def cancel_jobs(session: Session, migration_id: str, subscription_id: str) -> int:
    """Cancel the member's pending jobs (written ones and those buffered in this transaction)."""
    keys = list(member_keys(migration_id, subscription_id))
    unit = unit_of(session)
    unit.jobs = [j for j in unit.jobs if j["key"] not in keys]
    result = session.execute(
        update(Job)
        .where(Job.key.in_(keys), Job.status == "pending")
        .values(status="canceled", finished_at=wall_now())
    )
    return result.rowcount or 0


def skip(
    session: Session,
    migration: PriceMigration,
    member: PriceMigrationMember,
    reason: str,
    now: datetime,
    *,
    cause: str,
) -> None:
    """The price will not apply to this member: state ``skipped`` with ``reason``, its pending jobs canceled.

    ``cause``: what found out (an event id, a job), for the timeline.
    """
    was = member.state
    member.state, member.reason = "skipped", reason
    canceled = cancel_jobs(session, migration.id, member.subscription_id)
    jobs = f"; {canceled} pending job(s) canceled" if canceled else ""
    note(
        session,
        member.subscription_id,
        migration.id,
        now,
        f"skipped ({reason}) after {cause}, was {was}{jobs}",
    )
    session.flush()
    complete_if_done(session, migration, now)


def complete_if_done(session: Session, migration: PriceMigration, now: datetime) -> bool:
    """Mark a launched migration ``completed`` once none of its members is on its way; returns whether it did.

    One count on the (migration, state) index. A step-up's second call may still be due: it
    runs whatever the migration's status (it is part of what the member chose).
    """
    if migration.status != "launched":
        return False
    left = session.execute(
        select(func.count())
        .select_from(PriceMigrationMember)
        .where(PriceMigrationMember.migration_id == migration.id, PriceMigrationMember.state.in_(OPEN_STATES))
    ).scalar_one()
    if left:
        return False
    migration.status, migration.completed_at = "completed", now
    log.info("price migration %s completed", migration.id)
    return True


def check_alert(session: Session, migration: PriceMigration, now: datetime) -> str | None:
    """Pause a launched migration whose notified members cancel too often; returns the reason when it did.

    Counted after each cancellation within the alert window: members notified so far, and members
    skipped as canceled within ``cancel_alert_days`` of their notice. Paused again at each such
    cancellation while the share stays above the threshold, even after an operator's resume:
    every one is new evidence, and pausing is the careful side.
    """
    if migration.status != "launched":
        return None
    session.flush()
    base = (
        select(func.count())
        .select_from(PriceMigrationMember)
        .where(PriceMigrationMember.migration_id == migration.id)
    )
    notified = session.execute(base.where(PriceMigrationMember.notified_at.is_not(None))).scalar_one()
    early = session.execute(
        base.where(
            PriceMigrationMember.state == "skipped",
            PriceMigrationMember.reason.like(f"{EARLY_CANCEL}%"),
        )
    ).scalar_one()
    reason = alert(Terms.of(migration), notified, early)
    if reason is None:
        return None
    migration.status, migration.paused_at, migration.paused_reason = "paused", now, reason
    log.warning("price migration %s %s", migration.id, reason)
    return reason


def parts(job: Job) -> tuple[str, str, str]:
    """``(migration id, subscription id, what)`` of a job keyed ``price:MIG:SUB:what`` with subject SUB."""
    sub_id = job.subject or ""
    rest = job.key.removeprefix("price:")
    migration_id, _, tail = rest.partition(":")
    if not sub_id or rest == job.key or not migration_id or not tail.startswith(f"{sub_id}:"):
        raise PermanentJobError(f"job {job.id}: a price job needs the key price:MIG:SUB:what and subject SUB")
    return migration_id, sub_id, tail[len(sub_id) + 1 :]


def gate(
    session: Session, job: Job, migration: PriceMigration, member: PriceMigrationMember, now: datetime
) -> str | None:
    """What a migration's status means for a due job: wait (paused), stop (canceled), or None to go on."""
    if migration.status == "paused":
        wait(session, job, now + WAIT, "migration paused")
        return "waiting"
    if migration.status == "canceled":
        if member.state in OPEN_STATES:
            member.state, member.reason = "skipped", "migration canceled"
            note(
                session,
                member.subscription_id,
                migration.id,
                now,
                f"skipped: migration canceled ({job.kind})",
            )
        finish(session, job, status="canceled", note="migration canceled")
        return "canceled"
    if migration.status not in ("launched", "completed"):
        raise PermanentJobError(f"job {job.id}: migration {migration.id} is {migration.status}")
    return None


def load_for_job(
    session: Session, job: Job, migration_id: str, sub_id: str
) -> tuple[PriceMigration, PriceMigrationMember, Subscription | None]:
    """The migration, the locked member and the subscription a job is about (parked if there is no member)."""
    migration, member, sub = load(session, migration_id, sub_id, lock=True)
    if migration is None or member is None:
        raise PermanentJobError(f"job {job.id}: migration {migration_id} has no member {sub_id}")
    return migration, member, sub


def follow(
    session: Session,
    migration: PriceMigration,
    member: PriceMigrationMember,
    applies_at: datetime,
    now: datetime,
    *,
    cause: str,
) -> None:
    """The renewal the price applies at moved: the member, its pending reminder and application follow."""
    before = member.applies_at
    member.applies_at = applies_at
    sub_id = member.subscription_id
    move_job(session, job_key(migration.id, sub_id, "apply"), apply_due(applies_at, now))
    if member.reminded_at is None and member.notified_at is not None:
        due = reminder_due(applies_at, member.notified_at)
        key = job_key(migration.id, sub_id, "reminder")
        if due is not None and not move_job(session, key, max(due, now)):
            add_job(session, key=key, kind=REMINDER_JOB, subject=sub_id, due_at=max(due, now), now=now)
    was = f"{before:%Y-%m-%d %H:%M}Z" if before else "unknown"
    note(
        session,
        sub_id,
        migration.id,
        now,
        f"applies at {applies_at:%Y-%m-%d %H:%M}Z now (was {was}) after {cause}",
    )
