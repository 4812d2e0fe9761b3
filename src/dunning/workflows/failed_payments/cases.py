"""Persisting case decisions: facts back to the row, jobs, notices, billing calls, timeline."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import TYPE_CHECKING

from sqlalchemy.orm import Session

from dunning.broker.names import JOBS_QUEUE
from dunning.domain.policy import PlanPolicy
from dunning.engine.jobs import Dispatch, cancel_case_jobs, cancel_scheduled_retries
from dunning.engine.links import case_subject
from dunning.engine.notices import Recipient, queue_email
from dunning.store.models import Case, Customer, Outbox
from dunning.store.unit import CaseRow, unit_of
from dunning.workflows.failed_payments.notices import ACTION_PURPOSES, NoticeContext
from dunning.workflows.failed_payments.policy import (
    CaseFacts,
    CaseStatus,
    Decision,
    JobKind,
    Notice,
    NoticeKind,
    next_retry_at,
    suspend_at,
)

if TYPE_CHECKING:
    from dunning.runtime import Runtime

# Kinds a closed case no longer needs; emails already decided and billing calls still go out.
CANCELABLE = (JobKind.RETRY.value, JobKind.NOTICE.value, JobKind.SUSPEND.value, JobKind.END.value)

# How a terminal status is reported.
OUTCOME_FOR_STATUS = {
    CaseStatus.CANCELED: "canceled",
    CaseStatus.DOWNGRADED: "downgraded",
    CaseStatus.CLOSED: "subscription_canceled",
}


def facts_of(case: CaseRow) -> CaseFacts:
    """The policy's view of a case row."""
    return CaseFacts(
        status=CaseStatus(case.status),
        opened_at=case.opened_at,
        decline_code=case.decline_code,
        has_payment_method=case.has_payment_method,
        needs_new_payment_method=case.needs_new_payment_method,
        attempts_made=case.attempts_made,
        scheduled_retries_made=case.scheduled_retries_made,
        card_update_retries_used=case.card_update_retries_used,
        last_attempt_at=case.last_attempt_at,
        suspended_at=case.suspended_at,
    )


def _store_facts(case: CaseRow, facts: CaseFacts) -> None:
    case.status = facts.status.value
    case.decline_code = facts.decline_code
    case.has_payment_method = facts.has_payment_method
    case.needs_new_payment_method = facts.needs_new_payment_method
    case.attempts_made = facts.attempts_made
    case.scheduled_retries_made = facts.scheduled_retries_made
    case.card_update_retries_used = facts.card_update_retries_used
    case.last_attempt_at = facts.last_attempt_at
    case.suspended_at = facts.suspended_at


@dataclass
class Applied:
    """What a decision left to do after commit."""

    dispatch: list[Dispatch] = field(default_factory=list)


def record(
    session: Session, subscription_id: str, case_id: int | None, at: datetime, kind: str, detail: str
) -> None:
    """Add a line to a subscription's timeline (written with the transaction's other rows)."""
    unit_of(session).add_timeline(subscription_id, case_id, at, kind, detail)


def apply_decision(
    rt: Runtime,
    session: Session,
    case: CaseRow,
    decision: Decision,
    *,
    now: datetime,
    outcome: str | None = None,
    customer: Recipient | None = None,
    recovered_minor: int | None = None,
) -> Applied:
    """Persist a decision about ``case`` in the current transaction.

    ``customer``: the case's customer when the caller has it at hand (else it is looked up
    if the decision sends a notice). ``recovered_minor``: what was actually paid, in the
    case's currency, when the decision recovers the case on a payment we were told about
    (``invoice.paid``, checked against the invoice); our own charges collect the invoice's amount.
    """
    policy = rt.policy.for_plan(case.plan)
    before = CaseStatus(case.status)
    _store_facts(case, decision.facts)
    after = decision.facts.status
    applied = Applied()
    if after != before and decision.facts.terminal:
        case.closed_at = now
        if after is CaseStatus.RECOVERED:
            case.outcome = outcome or "retry"
            case.recovered_minor = case.amount_minor if recovered_minor is None else recovered_minor
        else:
            case.outcome = OUTCOME_FOR_STATUS.get(after, after.value)
    for line in decision.timeline:
        record(session, case.subscription_id, case.id, now, "dunning", line)
    unit = unit_of(session)
    stored = case.id not in unit.new_cases  # a case opened in this transaction has no stored jobs
    if decision.cancel_pending_jobs:
        if stored:
            cancel_case_jobs(session, case.id, CANCELABLE)
        unit.cancel(case.id, CANCELABLE)
    else:
        planned = [job.key for job in decision.jobs if job.kind is JobKind.RETRY and not job.manual]
        if planned:
            # At most one scheduled retry pending per case: a new plan replaces the old one.
            if stored:
                cancel_scheduled_retries(session, case.id, keep=planned)
            unit.cancel(case.id, (JobKind.RETRY.value,), scheduled_retries_only=True, keep=planned)
    job_rows = [
        {
            "key": job.key,
            "kind": job.kind.value,
            "queue": JOBS_QUEUE,
            "case_id": case.id,
            "due_at": job.due_at,
            "payload": {"manual": True} if job.manual else None,
        }
        for job in decision.jobs
    ]
    for action in decision.billing:
        payload: dict[str, object] = {"action": action.value, "subscription_id": case.subscription_id}
        if action.value == "downgrade":
            payload.update(
                plan=policy.downgrade_plan,
                amount_minor=policy.downgrade_amount_minor or 0,
                currency=case.currency,
            )
        job_rows.append(
            {
                "key": f"billing:{action.value}:{case.id}",
                "kind": "billing",
                "queue": JOBS_QUEUE,
                "case_id": case.id,
                "due_at": now,
                "payload": payload,
            }
        )
    if decision.notices and customer is None:
        customer = session.get(Customer, case.customer_id)
    for notice in decision.notices:
        write_notice(rt, session, case, customer, notice, policy, now=now)
    unit.add_jobs(job_rows, now=now)
    return applied


def notice_context(
    rt: Runtime, case: Case, customer: Customer, notice: Notice, policy: PlanPolicy, *, now: datetime
) -> NoticeContext:
    """The facts an email is written from."""
    facts = facts_of(case)
    cut = case.suspended_at or suspend_at(facts, policy)
    end_at = cut + policy.end_after
    return NoticeContext(
        kind=notice.kind.value,
        customer_name=customer.name,
        customer_email=customer.email,
        locale=customer.locale or "en",
        timezone=customer.timezone or "UTC",
        plan=case.plan,
        amount_minor=case.amount_minor,
        currency=case.currency,
        decline_class=notice.variant if notice.kind.value in _FAILURE_KINDS else None,
        decline_reason=case.decline_code,
        next_retry_at=next_retry_at(facts, policy),
        suspend_at=cut,
        end_at=end_at,
        end_action=policy.end_action,
        downgrade_plan=policy.downgrade_plan,
        downgrade_amount_minor=policy.downgrade_amount_minor,
        was_suspended=notice.variant == "was_suspended",
        action_url=rt.links.url(
            purpose=ACTION_PURPOSES[notice.kind.value],
            customer=customer.id,
            subject=case_subject(case.id),
            now=now,
            ttl=timedelta(days=rt.tuning.link_ttl_days),
        ),
        card_brand=customer.pm_brand,
        card_last4=customer.pm_last4,
    )


_FAILURE_KINDS = frozenset({"payment_failed", "payment_reminder", "final_notice"})


def write_notice(
    rt: Runtime,
    session: Session,
    case: CaseRow,
    customer: Recipient | None,
    notice: Notice,
    policy: PlanPolicy,
    *,
    now: datetime,
) -> None:
    """Queue a notice in the outbox with its send job (idempotent on the notice key).

    The words are rendered when it is sent (:func:`render_outbox`), from the facts
    of that moment: an email held back by quiet hours still names the right dates.
    """
    key = f"{notice.kind.value}:{case.id}:{notice.step}"
    if customer is None:
        record(
            session,
            case.subscription_id,
            case.id,
            now,
            "email",
            f"{notice.kind.value} not sent: customer unknown",
        )
        return
    send_after = queue_email(
        session,
        key=key,
        kind=notice.kind.value,
        customer=customer,
        subscription_id=case.subscription_id,
        case_id=case.id,
        variant=notice.variant,
        quiet_hours=policy.quiet_hours,
        now=now,
    )
    quiet = f" for {send_after:%Y-%m-%d %H:%M}Z (quiet hours)" if send_after > now else ""
    record(session, case.subscription_id, case.id, now, "email", f"{notice.kind.value} queued{quiet}")


def render_outbox(rt: Runtime, session: Session, outbox: Outbox, now: datetime) -> None:
    """Fill an outbox row's subject and bodies (once: a re-send repeats the same words)."""
    if outbox.subject is not None:
        return
    case = session.get(Case, outbox.case_id)
    customer = session.get(Customer, outbox.customer_id)
    if case is None or customer is None:
        raise LookupError(f"outbox row {outbox.id}: case or customer missing")
    step = outbox.key.rsplit(":", 1)[-1]
    notice = Notice(NoticeKind(outbox.kind), step, outbox.variant)
    rendered = rt.renderer.render(
        notice_context(rt, case, customer, notice, rt.policy.for_plan(case.plan), now=now)
    )
    outbox.subject, outbox.html, outbox.text = rendered.subject, rendered.html, rendered.text
