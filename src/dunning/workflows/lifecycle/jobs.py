"""The lifecycle notice job: when a notice comes due, plan again and write the email only if still wanted.

Events can be lost or arrive out of order; the facts at the time a notice is due
are what decide it. A notice the planner no longer returns ends as skipped with
the reason on the subscription's timeline; one it now plans later (a trial
extended between the last event and now) waits for its new time.
"""

from __future__ import annotations

from datetime import datetime
from typing import TYPE_CHECKING

from sqlalchemy import update
from sqlalchemy.orm import Session

from dunning.engine.jobs import Dispatch, finish
from dunning.engine.notices import queue_email
from dunning.engine.registry import Result
from dunning.errors import PermanentJobError
from dunning.store.models import Customer, Job, Outbox
from dunning.store.unit import collecting, unit_of
from dunning.workflows.lifecycle.explain import why_not
from dunning.workflows.lifecycle.planning import JOB_KIND, PLANNED_KINDS, replan, wanted_notice

if TYPE_CHECKING:
    from dunning.runtime import Runtime


def run_notice(rt: Runtime, job: Job) -> Result:
    """The ``lifecycle_notice`` job (see the module doc)."""
    if not job.subject or not job.payload or "key" not in job.payload:
        raise PermanentJobError(f"job {job.id}: a lifecycle notice needs a subject and payload.key")
    key = str(job.payload["key"])
    sink: list[Dispatch] = []
    with collecting(rt.sessions, sink) as session:
        now = rt.clock.now()
        notice, sub = wanted_notice(rt, session, job.subject, key, now)
        unit = unit_of(session)
        if notice is None:
            reason = why_not(key, sub, now)
            unit.add_timeline(
                job.subject, None, now, "notice", f"{key.split(':', 1)[0]} skipped when due: {reason} ({key})"
            )
            # Canceled, not done: if the planner wants this notice again (an offer held while a
            # payment was collected), the next reconcile brings the job back.
            finish(session, job, status="canceled", note=f"skipped: {reason}")
            return "skipped", sink
        if notice.due_at > now:
            session.execute(
                update(Job)
                .where(Job.id == job.id)
                .values(status="pending", due_at=notice.due_at, lease_until=None)
            )
            unit.add_timeline(
                job.subject,
                None,
                now,
                "notice",
                f"{notice.kind} moved to {notice.due_at:%Y-%m-%d %H:%M}Z: {notice.reason}",
            )
            return "rescheduled", sink
        customer = session.get(Customer, notice.customer_id)
        if customer is None:
            raise PermanentJobError(f"job {job.id}: customer {notice.customer_id} not found")
        send_after = queue_email(
            session,
            key=notice.key,
            kind=notice.kind,
            customer=customer,
            subscription_id=job.subject,
            variant=notice.variant,
            quiet_hours=rt.policy.for_plan(sub.plan if sub else None).quiet_hours,
            now=now,
        )
        quiet = f" for {send_after:%Y-%m-%d %H:%M}Z (quiet hours)" if send_after > now else ""
        unit.add_timeline(job.subject, None, now, "email", f"{notice.kind} queued{quiet}: {notice.reason}")
        finish(session, job)
        # What was just written is a fact for the planner (an offer sent plans the next one in
        # 180 days): write it, then plan again.
        unit.flush(session)
        replan(rt, session, [job.subject], now, cause=f"{notice.kind} queued")
    return "queued", sink


def stale(rt: Runtime, session: Session, outbox: Outbox, now: datetime) -> str | None:
    """Why a lifecycle email due now is no longer true (None: send it), written on the timeline.

    An email held by quiet hours is checked again as it leaves: a renewal notice for a
    subscription canceled overnight is dropped. Kinds the planner does not plan (the
    confirmation of a choice the customer made) are always still true.
    """
    if outbox.kind not in PLANNED_KINDS or not outbox.subscription_id:
        return None
    notice, sub = wanted_notice(rt, session, outbox.subscription_id, outbox.key, now)
    if notice is not None:
        return None
    reason = why_not(outbox.key, sub, now)
    unit_of(session).add_timeline(
        outbox.subscription_id, None, now, "email", f"{outbox.kind} dropped: {reason}"
    )
    return reason


JOBS = {JOB_KIND: run_notice}
