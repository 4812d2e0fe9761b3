"""The ``price_apply`` job: one ``change_plan`` per member, within the 24 hours before the renewal it targets.

Key ``price:MIG:SUB:apply`` (and ``price:MIG:SUB:apply-2`` for the end of a
step-up), which is also the idempotency key of the call. Like every effect
that leaves the building, the call is recorded before it is made: the first
transaction re-checks the facts and, when the member is to be changed now,
stores the exact request in the job's payload; the call is made outside any
transaction; the second transaction marks the member ``applied``. A re-run
(the worker died, the billing API was down) finds the stored request and sends
it again unchanged under the same key, so the billing system applies it once
and nothing in between (a late choice, a moved renewal) can change it. A
choice made after that point is refused by its page.

Before recording, the job waits when it must: the migration is paused (a day),
the notice email has not left yet (a day), a dunning case is open (the member
is ``deferred``, and the job looks again daily or when an invoice is paid; once
the case closes as recovered the price applies at the next renewal that keeps
the notice rule), or the renewal is more than 24 hours away (until 12 hours
before it). A notice that never reached the customer skips the member: nobody's
price rises without the notice promised.
"""

from __future__ import annotations

from dataclasses import replace
from datetime import datetime, timedelta
from typing import TYPE_CHECKING, Any

from sqlalchemy import select, update
from sqlalchemy.orm import Session

from dunning.billing.port import BillingRejected
from dunning.engine.jobs import Dispatch, finish
from dunning.engine.registry import Result
from dunning.errors import PermanentJobError
from dunning.mail.render import format_money
from dunning.store.models import Case, Job, Outbox, PriceMigration, PriceMigrationMember, Subscription
from dunning.store.unit import collecting
from dunning.workflows.price_migrations.pricing import apply_at
from dunning.workflows.price_migrations.rules import (
    NOTIFIED_STATES,
    WAIT,
    PlanChange,
    Terms,
    application,
    apply_due,
    in_window,
    job_key,
    target,
    why_skip,
)
from dunning.workflows.price_migrations.state import (
    APPLY_JOB,
    add_job,
    annual_price,
    complete_if_done,
    follow,
    gate,
    load_for_job,
    note,
    parts,
    skip,
    wait,
)

if TYPE_CHECKING:
    from dunning.runtime import Runtime

#: Case statuses that end a deferral with the price applied at the next renewal.
RECOVERED = "recovered"


def run_apply(rt: Runtime, job: Job) -> Result:
    """The ``price_apply`` job (see the module doc)."""
    migration_id, sub_id, what = parts(job)
    if what not in ("apply", "apply-2"):
        raise PermanentJobError(f"job {job.id}: unknown price application {what!r}")
    sink: list[Dispatch] = []
    with collecting(rt.sessions, sink) as session:
        now = rt.clock.now()
        migration, member, sub = load_for_job(session, job, migration_id, sub_id)
        stored = session.execute(select(Job.payload).where(Job.id == job.id)).scalar_one() or {}
        call = stored.get("call")
        if call is None:
            decided = (
                _decide_step_end(session, job, stored, migration, member, sub, now)
                if what == "apply-2"
                else _decide(rt, session, job, stored, migration, member, sub, now)
            )
            if isinstance(decided, str):
                return decided, sink
            call = decided["call"]
            session.execute(update(Job).where(Job.id == job.id).values(payload=decided))
            stored = decided
    try:
        change = PlanChange.from_payload(call)
    except (KeyError, TypeError, ValueError) as exc:
        raise PermanentJobError(f"job {job.id}: bad recorded call ({type(exc).__name__})") from None
    try:
        rt.billing.change_plan(
            sub_id,
            job.key,
            plan=change.plan,
            amount_minor=change.amount_minor,
            currency=change.currency,
            effective_at=change.effective_at,
            interval=change.interval,
            interval_count=change.interval_count,
        )
    except BillingRejected as exc:
        raise PermanentJobError(f"billing API refused the price change: {exc}") from None
    with collecting(rt.sessions, sink) as session:
        now = rt.clock.now()
        migration, member, _ = load_for_job(session, job, migration_id, sub_id)
        _applied(session, job, what, stored, change, migration, member, now)
    return "applied", sink


def _decide(
    rt: Runtime,
    session: Session,
    job: Job,
    stored: dict[str, Any],
    migration: PriceMigration,
    member: PriceMigrationMember,
    sub: Subscription | None,
    now: datetime,
) -> dict[str, Any] | str:
    """The payload to record (with its ``call``), or the outcome word when nothing is to be called now."""
    stopped = gate(session, job, migration, member, now)
    if stopped:
        return stopped
    if member.state == "applied":
        finish(session, job, note="applied already")
        return "already"
    if member.state not in NOTIFIED_STATES or member.notified_at is None:
        finish(session, job, status="canceled", note=f"member {member.state}")
        return "not_wanted"
    terms = Terms.of(migration)
    reason = why_skip(terms, sub, member.current_amount_minor)
    notice = session.execute(
        select(Outbox.status, Outbox.sent_at).where(
            Outbox.key == job_key(migration.id, member.subscription_id, "notice")
        )
    ).first()
    if reason is None and (notice is None or notice.status in ("failed", "skipped", "unknown")):
        reason = "notice not delivered"
    if reason is not None or sub is None:
        skip(
            session,
            migration,
            member,
            reason or "subscription unknown",
            now,
            cause="the application came due",
        )
        finish(session, job, status="canceled", note=f"skipped: {reason}")
        return "skipped"
    if notice.status != "sent" or notice.sent_at is None:
        wait(session, job, now + WAIT, "notice email not sent yet")
        return "waiting"
    case = session.execute(
        select(Case.status, Case.closed_at)
        .where(Case.subscription_id == sub.id)
        .order_by(Case.opened_at.desc(), Case.id.desc())
        .limit(1)
    ).first()
    if case is not None and case.closed_at is None:
        if member.state != "deferred":
            member.state, member.reason = "deferred", "dunning case open"
            note(
                session,
                sub.id,
                migration.id,
                now,
                "deferred: a dunning case is open; applies after it recovers",
            )
        wait(session, job, now + WAIT, "dunning case open")
        return "deferred"
    if member.state == "deferred":
        if case is None or case.status != RECOVERED:
            outcome = case.status if case is not None else "unknown"
            skip(
                session,
                migration,
                member,
                "dunning case not recovered",
                now,
                cause=f"the case ended {outcome}",
            )
            finish(session, job, status="canceled", note="skipped: dunning case not recovered")
            return "skipped"
        member.state = "reminded" if member.reminded_at is not None else "notified"
        member.reason = None
        note(
            session,
            sub.id,
            migration.id,
            now,
            "dunning case recovered: the price applies at the next renewal",
        )
    # The later of the notice's two times: when it was planned to leave, and when it left.
    notice_at = max(member.notified_at, notice.sent_at)
    applies_at = target(terms, sub, notice_at, now)
    if applies_at != member.applies_at:
        follow(session, migration, member, applies_at, now, cause="the application came due")
    if not in_window(applies_at, now):
        wait(session, job, apply_due(applies_at, now))
        return "rescheduled"
    app = application(
        terms,
        choice=member.choice,
        new_amount_minor=member.new_amount_minor,
        current_amount_minor=member.current_amount_minor,
        applies_at=applies_at,
        sub_interval=sub.interval,
        sub_interval_count=sub.interval_count,
        annual_price=annual_price(rt, terms.plan),
    )
    return {
        **stored,
        "call": app.change.payload(),
        "choice": app.choice,
        "step_end": app.step_end.payload() if app.step_end is not None else None,
    }


def _decide_step_end(
    session: Session,
    job: Job,
    stored: dict[str, Any],
    migration: PriceMigration,
    member: PriceMigrationMember,
    sub: Subscription | None,
    now: datetime,
) -> dict[str, Any] | str:
    """The step-up's end: the full new amount from the renewal the step ends at (after the same checks)."""
    if migration.status == "canceled":
        note(session, member.subscription_id, migration.id, now, "step-up end canceled with the migration")
        finish(session, job, status="canceled", note="migration canceled")
        return "canceled"
    stopped = gate(session, job, migration, member, now)
    if stopped:
        return stopped
    if member.state != "applied":
        raise PermanentJobError(f"job {job.id}: a step-up end for a member that is {member.state}")
    try:
        planned = PlanChange.from_payload(stored["step_end"])
    except (KeyError, TypeError, ValueError) as exc:
        raise PermanentJobError(f"job {job.id}: bad step_end ({type(exc).__name__})") from None
    terms = Terms.of(migration)
    moved = sub is not None and (sub.plan, sub.currency, sub.interval) != (
        terms.plan,
        terms.currency,
        terms.interval,
    )
    if sub is None or sub.status == "canceled" or moved:
        gone = "canceled" if sub is None or sub.status == "canceled" else "plan, currency or interval changed"
        note(
            session,
            member.subscription_id,
            migration.id,
            now,
            f"step-up end not applied: subscription {gone}",
        )
        finish(session, job, status="canceled", note=f"subscription {gone}")
        return "not_wanted"
    end = planned.effective_at
    if end <= now:
        # Late (paused, or an outage): the next renewal after now.
        end = apply_at(
            sub.current_period_end,
            sub.interval,
            sub.interval_count,
            now + timedelta(microseconds=1),
            0,
            now,
            0,
        )
    if not in_window(end, now):
        wait(session, job, apply_due(end, now))
        return "rescheduled"
    return {**stored, "call": replace(planned, effective_at=end).payload()}


def _applied(
    session: Session,
    job: Job,
    what: str,
    stored: dict[str, Any],
    change: PlanChange,
    migration: PriceMigration,
    member: PriceMigrationMember,
    now: datetime,
) -> None:
    """After the call: the member is ``applied`` (a step-up's end is planned), the job done, the timeline told."""
    sub_id = member.subscription_id
    price = format_money(change.amount_minor, change.currency, "en")
    every = f" every {change.interval}" if change.interval else ""
    if what == "apply-2":
        note(
            session,
            sub_id,
            migration.id,
            now,
            f"step-up ended: {change.plan} at {price} from {change.effective_at:%Y-%m-%d}",
        )
        finish(session, job)
        return
    choice = stored.get("choice") or "none"
    member.state, member.applied_at, member.reason = "applied", now, None
    member.applies_at = change.effective_at
    note(
        session,
        sub_id,
        migration.id,
        now,
        f"applied (choice {choice}): {change.plan} at {price}{every} from {change.effective_at:%Y-%m-%d %H:%M}Z "
        f"(change_plan {job.key})",
    )
    if stored.get("step_end"):
        end = PlanChange.from_payload(stored["step_end"])
        add_job(
            session,
            key=job_key(migration.id, sub_id, "apply-2"),
            kind=APPLY_JOB,
            subject=sub_id,
            due_at=apply_due(end.effective_at, now),
            now=now,
            payload={"step_end": stored["step_end"]},
        )
        note(
            session,
            sub_id,
            migration.id,
            now,
            f"step-up ends {end.effective_at:%Y-%m-%d}: then {end.amount_minor} minor units",
        )
    finish(session, job)
    session.flush()
    complete_if_done(session, migration, now)
