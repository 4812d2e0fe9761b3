"""Planning in a transaction: run the pure planner for some subscriptions and reconcile their jobs.

Called by every fact change the lifecycle workflow reacts to (one event, or a
set of subscriptions) and, through :func:`wanted_notice`, by the notice job and
the outbox when a notice comes due: the same planner, on the facts of the moment.
"""

from __future__ import annotations

from collections.abc import Collection, Mapping, Sequence
from datetime import datetime
from typing import TYPE_CHECKING

from sqlalchemy.orm import Session

from dunning.broker.names import JOBS_QUEUE
from dunning.engine.reconcile import WantedJob, reconcile
from dunning.store.models import Customer, Subscription
from dunning.store.unit import unit_of
from dunning.workflows.lifecycle.explain import kind_of, why_not
from dunning.workflows.lifecycle.facts import SubscriptionFacts
from dunning.workflows.lifecycle.loading import load_facts
from dunning.workflows.lifecycle.planner import PlannedNotice, plan_notices
from dunning.workflows.lifecycle.reads import replan_reads

if TYPE_CHECKING:
    from dunning.runtime import Runtime

#: Kinds the planner plans (the others confirm a choice the customer made and are never stale).
PLANNED_KINDS = (
    "renewal_notice",
    "card_expiring",
    "annual_offer",
    "trial_reminder",
    "trial_ended",
    "upgrade_ending",
    "upgrade_reverted",
)

#: The job that re-plans and, if its notice is still wanted, writes the email.
JOB_KIND = "lifecycle_notice"


def job_key(notice_key: str) -> str:
    """The job key of a notice (the notice key is also its outbox key)."""
    return f"lc:{notice_key}"


def plan_for(rt: Runtime, sub: SubscriptionFacts, now: datetime) -> list[PlannedNotice]:
    """The notices ``sub`` should get, under its plan's policy."""
    return plan_notices(sub, rt.policy.lifecycle_for(sub.plan), now)


def replan(
    rt: Runtime, session: Session, subscription_ids: Collection[str], now: datetime, *, cause: str
) -> int:
    """Make the pending notice jobs of these subscriptions what the planner says; returns changes made.

    Notices already written to the outbox need no job; a notice whose job exists (pending or
    finished) is left alone; pending jobs no longer planned are canceled, with the reason on
    the subscription's timeline.
    """
    return replan_each(rt, session, dict.fromkeys(subscription_ids, cause), now)


def replan_each(
    rt: Runtime,
    session: Session,
    causes: Mapping[str, str],
    now: datetime,
    *,
    rows: Sequence[tuple[Subscription, Customer | None]] | None = None,
) -> int:
    """:func:`replan` for many subscriptions, each with its own cause, in one go.

    One load of the facts and one reconcile whatever the number of subscriptions: the
    group commit re-plans every subscription its events touched this way, once, at its end.
    ``rows``: the subscriptions and their customers, if the caller holds them (:func:`load_facts`).
    """
    ids = sorted(causes)
    if not ids:
        return 0
    if session.get_bind().dialect.name == "postgresql":
        # The reads beside the rows, and the reconcile's, in one statement.
        found, stored = replan_reads(session, ids, JOB_KIND)
        facts = load_facts(session, ids, now, rows=rows, found=found)
    else:
        facts, stored = load_facts(session, ids, now, rows=rows), None
    wanted: list[WantedJob] = []
    planned: dict[str, PlannedNotice] = {}
    for sub in facts.values():
        for notice in plan_for(rt, sub, now):
            if notice.key in sub.sent_keys:
                continue
            planned[job_key(notice.key)] = notice
            wanted.append(
                WantedJob(
                    key=job_key(notice.key),
                    subject=sub.id,
                    due_at=notice.due_at,
                    payload={"key": notice.key, "kind": notice.kind},
                )
            )
    result = reconcile(
        session, kind=JOB_KIND, queue=JOBS_QUEUE, subjects=ids, wanted=wanted, now=now, stored=stored
    )
    unit = unit_of(session)
    for job in result.added:
        notice = planned[job.key]
        when = "now" if notice.due_at <= now else f"for {notice.due_at:%Y-%m-%d %H:%M}Z"
        unit.add_timeline(job.subject, None, now, "notice", f"{notice.kind} planned {when}: {notice.reason}")
    for key, subject in result.canceled:
        reason = why_not(key, facts.get(subject), now)
        unit.add_timeline(
            subject,
            None,
            now,
            "notice",
            f"{kind_of(key)} canceled after {causes[subject]}: {reason} ({key.removeprefix('lc:')})",
        )
    return len(result.added) + len(result.canceled)


def wanted_notice(
    rt: Runtime, session: Session, subscription_id: str, key: str, now: datetime
) -> tuple[PlannedNotice | None, SubscriptionFacts | None]:
    """The notice ``key`` if the planner still wants it now, and the facts it was planned from.

    Asked as if the email were not written yet: when it is due, when it leaves, when it is rendered.
    """
    sub = load_facts(session, [subscription_id], now, as_if_unsent=key).get(subscription_id)
    if sub is None:
        return None, None
    return next((n for n in plan_for(rt, sub, now) if n.key == key), None), sub
