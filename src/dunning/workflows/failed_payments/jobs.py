"""The failed-payment workflow's jobs: retries (charges), notices, suspension, end, billing calls.

Registered in :mod:`dunning.workflows.failed_payments.workflow`; the engine's
runner (:mod:`dunning.engine.runner`) calls them and owns their failures.
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import datetime
from typing import TYPE_CHECKING

from sqlalchemy import select
from sqlalchemy.orm import Session

from dunning.billing.port import BillingRejected, InvoiceState, PayOutcome, PayResult
from dunning.engine.jobs import Dispatch, finish
from dunning.engine.registry import JobHandler, Result
from dunning.engine.runner import later
from dunning.errors import PermanentJobError
from dunning.store.db import transaction
from dunning.store.models import Case, ChargeAttempt, Job, Outbox, Subscription
from dunning.store.unit import collecting
from dunning.workflows.failed_payments import policy as policy_cases
from dunning.workflows.failed_payments.cases import apply_decision, facts_of, record

if TYPE_CHECKING:
    from dunning.runtime import Runtime


def _case(session, job: Job) -> Case:  # type: ignore[no-untyped-def]
    case = session.get(Case, job.case_id, with_for_update=True, populate_existing=True)
    if case is None:
        raise PermanentJobError(f"case {job.case_id} not found")
    return case


def _simple(
    decide: Callable[[Runtime, Case, Job], policy_cases.Decision],
) -> Callable[[Runtime, Job], Result]:
    """A job whose whole effect is one decision (notices, suspension, end)."""

    def handler(rt: Runtime, job: Job) -> Result:
        sink: list[Dispatch] = []
        with collecting(rt.sessions, sink) as session:
            case = _case(session, job)
            decision = decide(rt, case, job)
            apply_decision(rt, session, case, decision, now=rt.clock.now())
            finish(session, job)
        return ("acted" if decision.changed else "noop"), sink

    return handler


def _notice(rt: Runtime, case: Case, job: Job) -> policy_cases.Decision:
    step = job.key.rsplit(":", 1)[-1]
    return policy_cases.on_notice_due(
        facts_of(case), rt.policy.for_plan(case.plan), rt.clock.now(), step=step
    )


def _suspend(rt: Runtime, case: Case, job: Job) -> policy_cases.Decision:
    return policy_cases.on_suspend_due(
        facts_of(case), rt.policy.for_plan(case.plan), rt.clock.now(), case_key=str(case.id)
    )


def _end(rt: Runtime, case: Case, job: Job) -> policy_cases.Decision:
    return policy_cases.on_end_due(facts_of(case), rt.policy.for_plan(case.plan), rt.clock.now())


def _retry(rt: Runtime, job: Job) -> Result:
    manual = bool(job.payload and job.payload.get("manual"))
    dispatch: list[Dispatch] = []  # filled as each transaction commits
    # Two rounds at most: the first may only settle an earlier attempt whose outcome was lost.
    for _ in range(2):
        with collecting(rt.sessions, dispatch) as session:
            case = _case(session, job)
            now = rt.clock.now()
            attempt = session.execute(
                select(ChargeAttempt)
                .where(ChargeAttempt.case_id == case.id, ChargeAttempt.status.in_(("pending", "unknown")))
                .order_by(ChargeAttempt.attempt_no.desc())
                .limit(1)
            ).scalar_one_or_none()
            inherited = attempt is not None
            if attempt is None:
                decision = policy_cases.on_retry_due(
                    facts_of(case), rt.policy.for_plan(case.plan), now, case_key=str(case.id), manual=manual
                )
                if not decision.charge:
                    apply_decision(rt, session, case, decision, now=now)
                    finish(session, job)
                    return "skipped", dispatch
                case.attempts_made += 1
                attempt = ChargeAttempt(
                    case_id=case.id,
                    invoice_id=case.invoice_id,
                    attempt_no=case.attempts_made,
                    job_id=job.id,
                    # Stable across redeliveries and days: the product keeps the key, not the process.
                    idempotency_key=f"dunning:{case.invoice_id}:attempt-{case.attempts_made}",
                    trigger="card_update" if manual else "schedule",
                    status="pending",
                    requested_at=now,
                )
                session.add(attempt)
                record(
                    session,
                    case.subscription_id,
                    case.id,
                    now,
                    "charge",
                    f"retry {attempt.attempt_no}: charging",
                )
            session.flush()
            attempt_id, key, invoice_id = attempt.id, attempt.idempotency_key, case.invoice_id
        result = _charge(rt, invoice_id, key, reconcile=inherited)
        if result.outcome is PayOutcome.UNKNOWN:
            with collecting(rt.sessions, dispatch) as session:
                row = session.get(ChargeAttempt, attempt_id, populate_existing=True)
                assert row is not None
                if row.status == "pending":
                    row.status = "unknown"
            return later(
                rt, job, "charge outcome unknown; will reconcile before anything else", outage=True
            ), dispatch
        with collecting(rt.sessions, dispatch) as session:
            case = _case(session, job)
            row = session.get(ChargeAttempt, attempt_id, with_for_update=True, populate_existing=True)
            assert row is not None
            now = rt.clock.now()
            if row.status in ("succeeded", "failed"):
                finish(session, job)  # another run settled it meanwhile
                return "already_settled", dispatch
            succeeded = result.outcome is PayOutcome.SUCCEEDED
            row.status = "succeeded" if succeeded else "failed"
            row.decline_code = None if succeeded else (result.decline_code or "generic_decline")
            row.completed_at = now
            was_manual = row.trigger == "card_update"
            decision = policy_cases.on_charge_result(
                facts_of(case),
                rt.policy.for_plan(case.plan),
                now,
                case_key=str(case.id),
                succeeded=succeeded,
                decline_code=row.decline_code,
                manual=was_manual,
            )
            outcome = "card_update" if was_manual else "retry"
            if succeeded and result.already_paid:
                # The billing API refused the charge: the invoice was paid by other means
                # before its invoice.paid event reached us. Recovered, but not by us.
                outcome = "paid"
                record(
                    session, case.subscription_id, case.id, now, "charge", "invoice already paid elsewhere"
                )
            apply_decision(rt, session, case, decision, now=now, outcome=outcome)
            own = row.job_id == job.id
            if own or decision.facts.terminal:
                finish(session, job)
                return ("recovered" if succeeded else "declined"), dispatch
        # We settled someone else's attempt and our own retry is still to do.
    with collecting(rt.sessions, dispatch) as session:
        finish(session, job, note="settled an earlier attempt only")
    return "settled_previous", dispatch


def _charge(rt: Runtime, invoice_id: str, key: str, *, reconcile: bool) -> PayResult:
    """Charge under ``key``; an attempt whose answer was lost is reconciled first."""
    try:
        if reconcile and rt.billing.invoice_state(invoice_id) is InvoiceState.PAID:
            return PayResult(PayOutcome.SUCCEEDED, detail="reconciled: invoice already paid")
        return rt.billing.pay_invoice(invoice_id, key)
    except BillingRejected as exc:
        raise PermanentJobError(f"billing API refused the charge: {exc}") from None


_ACCESS_AFTER = {"suspend": "suspended", "reinstate": "active", "cancel": "canceled", "downgrade": "active"}


def _billing(rt: Runtime, job: Job) -> Result:
    payload = job.payload or {}
    action = str(payload.get("action"))
    sub_id = str(payload.get("subscription_id"))
    key = f"dunning:{action}:{job.case_id}"
    try:
        if action == "suspend":
            rt.billing.suspend(sub_id, key)
        elif action == "reinstate":
            rt.billing.reinstate(sub_id, key)
        elif action == "cancel":
            rt.billing.cancel(sub_id, key, reason="non-payment")
        elif action == "downgrade":
            rt.billing.change_plan(
                sub_id,
                key,
                plan=str(payload["plan"]),
                amount_minor=int(payload.get("amount_minor") or 0),
                currency=str(payload["currency"]),
                effective_at=rt.clock.now(),
            )
        else:
            raise PermanentJobError(f"unknown billing action {action!r}")
    except BillingRejected as exc:
        raise PermanentJobError(f"billing API refused {action}: {exc}") from None
    with transaction(rt.sessions) as session:
        now = rt.clock.now()
        sub = session.get(Subscription, sub_id, with_for_update=True)
        if sub is not None:
            sub.access = _ACCESS_AFTER[action]
            if action == "downgrade":
                sub.plan = str(payload["plan"])
                sub.amount_minor = int(payload.get("amount_minor") or 0)
            if action == "cancel":
                sub.status = "canceled"
        record(session, sub_id, job.case_id, now, "billing", f"billing system: {action} done")
        finish(session, job)
    return action, []


# Notices that stop being true once a case is settled; sending them late would mislead.
_ONLY_WHILE_UNPAID = frozenset({"payment_failed", "payment_reminder", "final_notice", "access_suspended"})


def stale(rt: Runtime, session: Session, outbox: Outbox, now: datetime) -> str | None:
    """Why a notice due now is no longer true (its case is settled), or None to send it.

    A dropped notice is written on the case's timeline with the reason.
    """
    case = session.get(Case, outbox.case_id) if outbox.case_id else None
    if case is None or outbox.kind not in _ONLY_WHILE_UNPAID or case.status in ("open", "suspended"):
        return None
    reason = f"case {case.status}"
    record(session, case.subscription_id, case.id, now, "email", f"{outbox.kind} dropped: {reason}")
    return reason


JOBS: dict[str, JobHandler] = {
    "retry": _retry,
    "notice": _simple(_notice),
    "suspend": _simple(_suspend),
    "end": _simple(_end),
    "billing": _billing,
}
