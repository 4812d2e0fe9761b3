"""Running one scheduled job: the handlers behind the ``run_job`` and ``deliver_email`` actors.

Each handler follows the same rule: effects that leave the building (a charge,
a billing call, an email) are recorded before they are made, made outside any
transaction, and their outcome is committed together with the job's end.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import TYPE_CHECKING

from sqlalchemy import select, update

from dunning.billing.port import BillingRejected, BillingUnavailable, InvoiceState, PayOutcome, PayResult
from dunning.errors import DunningError
from dunning.mail.message import build_message
from dunning.mail.render import RenderedEmail
from dunning.mail.sending import AmbiguousSendError, PermanentSendError, TransientSendError
from dunning.services.jobs import Dispatch, finish, retry_later, start
from dunning.store.db import transaction
from dunning.store.models import Case, ChargeAttempt, Job, Outbox, Subscription
from dunning.store.unit import collecting
from dunning.workflows.failed_payments import policy as policy_cases
from dunning.workflows.failed_payments.cases import apply_decision, facts_of, record, render_outbox

if TYPE_CHECKING:
    from dunning.runtime import Runtime

log = logging.getLogger(__name__)

Result = tuple[str, list[Dispatch]]


class PermanentJobError(DunningError):
    """Retrying will not help (the billing API refused the request itself): park the job."""


def run_job(rt: Runtime, job_id: int, *, worker_id: str | None = None, alone: bool = False) -> Result:
    """Run a claimed job once. Returns an outcome word and messages to send after commit.

    ``worker_id``: the worker process running it (its heartbeat row), recorded on the job so
    that the scheduler can send the job again as soon as that worker dies. ``alone``: the run
    is alone in its process, the only way a job marked ``alone`` may start.
    """
    with transaction(rt.sessions) as session:
        job = start(session, job_id, run_lease_s=rt.tuning.run_lease_s, worker_id=worker_id, alone=alone)
        if job is None:
            return "not_runnable", []
        session.expunge(job)
    handler = _HANDLERS.get(job.kind)
    try:
        if handler is None:
            raise PermanentJobError(f"unknown job kind {job.kind!r}")
        return handler(rt, job)
    except PermanentJobError as exc:
        with transaction(rt.sessions) as session:
            finish(session, job, status="dead", note=f"parked: {exc}")
        log.error("job %s parked: %s", job.id, exc)
        return "dead", []
    except (BillingUnavailable, TransientSendError) as exc:
        # An outage, not a bug: back off (capped) for as long as it lasts. Each run
        # re-checks the policy, so work that went stale meanwhile is dropped, not done late.
        return _later(rt, job, f"{type(exc).__name__}: {exc}", outage=True), []
    except Exception as exc:
        # Unexpected (a bug, the database going away): back off, and park after max_runs.
        log.exception("job %s failed", job.id)
        try:
            return _later(rt, job, f"{type(exc).__name__}"), []
        except Exception:
            # The database itself is down: the lease expires and the scheduler tries again.
            raise exc from None


def _later(rt: Runtime, job: Job, error: str, *, outage: bool = False) -> str:
    with transaction(rt.sessions) as session:
        fresh = session.get(Job, job.id, populate_existing=True)
        assert fresh is not None
        return retry_later(
            session,
            fresh,
            error=error,
            backoff_base_s=rt.tuning.backoff_base_s,
            backoff_max_s=rt.tuning.backoff_max_s,
            max_runs=None if outage else rt.tuning.max_runs,
        )


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
            return _later(
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


class _Superseded(Exception):
    """Another run reached the point of no return first; this one must not send."""


def _send_email(rt: Runtime, job: Job) -> Result:
    """Deliver one outbox email, at most once.

    ``pending`` -> ``sending`` is committed at the sender's point of no return (for
    SMTP: after the server's 354, before the body's final dot). A run that dies
    before it leaves the row ``pending`` and the next run sends it; a run that dies
    after it leaves ``sending``, which nobody can resolve without the mail server's
    log, so the next run parks it as ``unknown`` for ops instead of risking a
    second copy in the customer's inbox.
    """
    with transaction(rt.sessions) as session:
        outbox = session.get(Outbox, job.outbox_id, with_for_update=True, populate_existing=True)
        if outbox is None:
            raise PermanentJobError(f"outbox row {job.outbox_id} not found")
        if outbox.status in ("sent", "failed", "skipped", "unknown"):
            finish(session, job)
            return "already_" + outbox.status, []
        if outbox.status == "sending":
            outbox.status = "unknown"
            note = (
                f"parked: delivery of {outbox.message_id} is unknown (the worker died after handing it to "
                "the mail server); check the server's log, then `dunning dlq requeue` to resend or purge"
            )
            outbox.last_error = note
            finish(session, job, status="dead", note=note)
            return "unknown", []
        case = session.get(Case, outbox.case_id) if outbox.case_id else None
        if (
            case is not None
            and outbox.kind in _ONLY_WHILE_UNPAID
            and case.status not in ("open", "suspended")
        ):
            outbox.status = "skipped"
            record(
                session,
                case.subscription_id,
                case.id,
                rt.clock.now(),
                "email",
                f"{outbox.kind} dropped: case {case.status}",
            )
            finish(session, job)
            return "skipped", []
        render_outbox(rt, session, outbox, now=rt.clock.now())
        outbox.attempts += 1
        message = build_message(
            RenderedEmail(subject=outbox.subject, html=outbox.html, text=outbox.text),
            to=outbox.to_email,
            sender=rt.settings.mail_from,
            message_id=outbox.message_id,
            headers={"X-Dunning-Notice": outbox.key, "X-Dunning-Kind": outbox.kind},
            date=outbox.send_after,
        )
        outbox_id = outbox.id

    marked = False

    def commit_point() -> None:
        # Called again when the sender retries after a definite refusal (e.g. 451 to
        # the body): the row is already ours.
        nonlocal marked
        if marked:
            return
        with transaction(rt.sessions) as session:
            moved = session.execute(
                update(Outbox)
                .where(Outbox.id == outbox_id, Outbox.status == "pending")
                .values(status="sending")
            ).rowcount
        if not moved:
            raise _Superseded()
        marked = True

    def settle(status: str, error: str | None) -> None:
        with transaction(rt.sessions) as session:
            row = session.get(Outbox, outbox_id, populate_existing=True)
            assert row is not None
            row.status, row.last_error = status, error
            if status == "sent":
                row.sent_at = rt.clock.now()
            if status != "pending":
                finish(session, job, status="dead" if status == "unknown" else "done", note=error)

    try:
        rt.sender.send(message, commit_point=commit_point)
    except _Superseded:
        with transaction(rt.sessions) as session:
            finish(session, job, note="another run sent it")
        return "superseded", []
    except TransientSendError as exc:
        settle("pending", str(exc)[:500])
        raise
    except PermanentSendError as exc:
        settle("failed", f"permanent SMTP failure: {exc}"[:500])
        return "failed", []
    except AmbiguousSendError as exc:
        settle("unknown", f"parked: {exc}; check the mail server's log, then requeue or purge"[:500])
        return "unknown", []
    settle("sent", None)
    return "sent", []


_HANDLERS: dict[str, Callable[[Runtime, Job], Result]] = {
    "retry": _retry,
    "notice": _simple(_notice),
    "suspend": _simple(_suspend),
    "end": _simple(_end),
    "billing": _billing,
    "send_email": _send_email,
}
