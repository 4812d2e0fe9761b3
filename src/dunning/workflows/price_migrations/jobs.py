"""The price-migration jobs: the notice and the reminder (the application is in :mod:`.applying`).

``price_notice`` (key ``price:MIG:SUB:notice``, inserted by ``prices launch``)
and ``price_reminder`` (``price:MIG:SUB:reminder``, inserted by the notice)
look at the facts when they are due, with the member's row locked: a paused
migration makes them wait a day; a canceled one, or a subscription that was
canceled, changed plan, currency, interval or amount, skips the member with
the reason on its timeline. Otherwise the notice fixes the renewal the new
price applies at (from the notice's own time: nobody gets less notice than
promised), writes the email and plans the reminder and the application; the
reminder follows a renewal that moved, then writes its email. Each email's
outbox key is the job's key, so a job run twice writes one email.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from dunning.engine.jobs import Dispatch, finish
from dunning.engine.notices import queue_email
from dunning.engine.registry import JobHandler, Result
from dunning.store.models import Customer, Job
from dunning.store.unit import collecting
from dunning.workflows.price_migrations.applying import run_apply
from dunning.workflows.price_migrations.notices import NOTICE, REMINDER
from dunning.workflows.price_migrations.rules import (
    Terms,
    apply_due,
    job_key,
    reminder_due,
    target,
    why_skip,
)
from dunning.workflows.price_migrations.state import (
    APPLY_JOB,
    NOTICE_JOB,
    REMINDER_JOB,
    add_job,
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


def run_notice(rt: Runtime, job: Job) -> Result:
    """The ``price_notice`` job (see the module doc)."""
    migration_id, sub_id, _ = parts(job)
    sink: list[Dispatch] = []
    with collecting(rt.sessions, sink) as session:
        now = rt.clock.now()
        migration, member, sub = load_for_job(session, job, migration_id, sub_id)
        stopped = gate(session, job, migration, member, now)
        if stopped:
            return stopped, sink
        if member.state != "pending":
            finish(session, job, note=f"member already {member.state}")
            return "already", sink
        terms = Terms.of(migration)
        reason = why_skip(terms, sub, member.current_amount_minor)
        customer = session.get(Customer, member.customer_id)
        if reason is None and customer is None:
            reason = "customer unknown"
        if reason is not None or sub is None or customer is None:
            skip(
                session, migration, member, reason or "subscription unknown", now, cause="the notice came due"
            )
            finish(session, job, status="canceled", note=f"skipped: {reason}")
            return "skipped", sink
        send_after = queue_email(
            session,
            key=job.key,
            kind=NOTICE,
            customer=customer,
            subscription_id=sub_id,
            quiet_hours=rt.policy.for_plan(sub.plan).quiet_hours,
            now=now,
        )
        # The notice counts from when it may leave (after quiet hours), never from before.
        applies_at = target(terms, sub, send_after, now)
        member.state, member.notified_at, member.applies_at = "notified", send_after, applies_at
        member.notice_at = member.notice_at or now
        reminder = reminder_due(applies_at, send_after)
        if reminder is not None:
            add_job(
                session,
                key=job_key(migration_id, sub_id, "reminder"),
                kind=REMINDER_JOB,
                subject=sub_id,
                due_at=reminder,
                now=now,
            )
        add_job(
            session,
            key=job_key(migration_id, sub_id, "apply"),
            kind=APPLY_JOB,
            subject=sub_id,
            due_at=apply_due(applies_at, now),
            now=now,
        )
        quiet = f" for {send_after:%Y-%m-%d %H:%M}Z (quiet hours)" if send_after > now else ""
        note(
            session,
            sub_id,
            migration_id,
            now,
            f"notice queued{quiet}: {member.current_amount_minor} -> {member.new_amount_minor} {terms.currency} "
            f"minor units from {applies_at:%Y-%m-%d %H:%M}Z"
            + (
                f", reminder {reminder:%Y-%m-%d %H:%M}Z"
                if reminder
                else ", no reminder (notice is the reminder)"
            ),
        )
        finish(session, job)
    return "notified", sink


def run_reminder(rt: Runtime, job: Job) -> Result:
    """The ``price_reminder`` job (see the module doc)."""
    migration_id, sub_id, _ = parts(job)
    sink: list[Dispatch] = []
    with collecting(rt.sessions, sink) as session:
        now = rt.clock.now()
        migration, member, sub = load_for_job(session, job, migration_id, sub_id)
        stopped = gate(session, job, migration, member, now)
        if stopped:
            return stopped, sink
        if member.reminded_at is not None or member.state not in ("notified", "deferred"):
            finish(
                session, job, status="canceled" if member.reminded_at is None else "done", note=member.state
            )
            return "not_wanted", sink
        terms = Terms.of(migration)
        reason = why_skip(terms, sub, member.current_amount_minor)
        customer = session.get(Customer, member.customer_id)
        if reason is not None or sub is None or customer is None or member.notified_at is None:
            skip(session, migration, member, reason or "customer unknown", now, cause="the reminder came due")
            finish(session, job, status="canceled", note=f"skipped: {reason}")
            return "skipped", sink
        applies_at = target(terms, sub, member.notified_at, now)
        if applies_at != member.applies_at:
            follow(session, migration, member, applies_at, now, cause="the reminder came due")
        due = reminder_due(applies_at, member.notified_at)
        if due is None:
            finish(session, job, status="canceled", note="no reminder: the notice is the reminder")
            return "not_wanted", sink
        if due > now:
            wait(session, job, due)
            return "rescheduled", sink
        queue_email(
            session,
            key=job.key,
            kind=REMINDER,
            customer=customer,
            subscription_id=sub_id,
            quiet_hours=rt.policy.for_plan(sub.plan).quiet_hours,
            now=now,
        )
        if member.state == "notified":
            member.state = "reminded"
        member.reminded_at = now
        note(session, sub_id, migration_id, now, f"reminder queued: applies at {applies_at:%Y-%m-%d %H:%M}Z")
        finish(session, job)
    return "reminded", sink


#: For the workflow's registration (``Workflow.jobs``).
JOBS: dict[str, JobHandler] = {NOTICE_JOB: run_notice, REMINDER_JOB: run_reminder, APPLY_JOB: run_apply}
