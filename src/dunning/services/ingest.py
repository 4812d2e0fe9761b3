"""Applying billing events: facts into the store, cases opened, updated or closed."""

from __future__ import annotations

from datetime import datetime
from typing import TYPE_CHECKING

from sqlalchemy import select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from dunning import contract as c
from dunning.domain import cases as policy_cases
from dunning.domain.cases import TERMINAL
from dunning.services.cases import apply_decision, facts_of, record
from dunning.services.jobs import Dispatch
from dunning.services.unit import dispatch_of
from dunning.store.db import transaction
from dunning.store.models import Case, Customer, Invoice, ProcessedEvent, Subscription

if TYPE_CHECKING:
    from dunning.runtime import Runtime


class MissingReference(Exception):
    """The event refers to something we have not heard of yet (events can arrive out of order).

    Retried with backoff; parked with this reason if it never resolves.
    """

    def __init__(self, field: str, reason: str) -> None:
        self.field = field
        self.reason = reason
        super().__init__(f"{field}: {reason}")


def _open_cases(session: Session, **where: str) -> list[Case]:
    stmt = select(Case).where(Case.status.not_in([s.value for s in TERMINAL]))
    for column, value in where.items():
        stmt = stmt.where(getattr(Case, column) == value)
    return list(session.execute(stmt.order_by(Case.id).with_for_update()).scalars())


def ingest(rt: Runtime, event: c.Event) -> tuple[str, list[Dispatch]]:
    """Apply an event in its own transaction; a concurrent duplicate delivery is a no-op."""
    try:
        with transaction(rt.sessions) as session:
            outcome, _ = apply_event(rt, session, event)
        return outcome, dispatch_of(session)
    except IntegrityError:
        # Two deliveries of one event raced; the other one committed first.
        with rt.sessions() as session:
            if session.get(ProcessedEvent, event.id) is not None:
                return "duplicate", []
        raise


def apply_event(rt: Runtime, session: Session, event: c.Event) -> tuple[str, list[Dispatch]]:
    """Apply one validated event in the caller's transaction.

    Returns an outcome word (for logs and metrics) and messages to send after
    commit. A redelivered event id is a no-op; the UNIQUE primary key of
    ``processed_events`` settles a race between two deliveries at commit.
    """
    if session.get(ProcessedEvent, event.id) is not None:
        return "duplicate", []
    now = rt.clock.now()
    session.add(ProcessedEvent(id=event.id, type=event.type, occurred_at=event.occurred_at, processed_at=now))
    handler = _HANDLERS[event.type]
    return handler(rt, session, event, now)


def _stale(source_at: datetime | None, occurred_at: datetime) -> bool:
    """Whether an event is older than the one that last wrote the row."""
    return source_at is not None and occurred_at < source_at


def _set_payment_method(customer: Customer, pm: c.PaymentMethod, occurred_at: datetime) -> bool:
    """Apply a payment method unless a newer one is already recorded; returns whether it applied."""
    if _stale(customer.pm_source_at, occurred_at):
        return False
    customer.pm_source_at = occurred_at
    customer.pm_present = pm.present
    customer.pm_brand = pm.brand if pm.present else None
    customer.pm_last4 = pm.last4 if pm.present else None
    customer.pm_exp_month = pm.exp_month if pm.present else None
    customer.pm_exp_year = pm.exp_year if pm.present else None
    return True


def _customer_upserted(
    rt: Runtime, session: Session, event: c.Event, now: datetime
) -> tuple[str, list[Dispatch]]:
    assert isinstance(event, c.CustomerUpserted)
    data = event.data.customer
    row = session.get(Customer, data.id, with_for_update=True)
    if row is None:
        row = Customer(id=data.id, pm_present=False)
        session.add(row)
    elif _stale(row.source_at, event.occurred_at):
        return "stale", []
    row.email, row.name, row.locale, row.timezone = data.email, data.name, data.locale, data.timezone
    row.source_at = event.occurred_at
    row.updated_at = now
    return "customer", []


def _subscription_upserted(
    rt: Runtime, session: Session, event: c.Event, now: datetime
) -> tuple[str, list[Dispatch]]:
    assert isinstance(event, c.SubscriptionUpserted)
    data = event.data.subscription
    customer = session.get(Customer, data.customer_id)
    if customer is None:
        # Out of order (parallel consumers): without the customer we would drop the payment method.
        raise MissingReference(
            "data.subscription.customer_id", "unknown customer; send customer.upserted first"
        )
    row = session.get(Subscription, data.id, with_for_update=True)
    if row is None:
        row = Subscription(id=data.id, access="active")
        session.add(row)
    elif _stale(row.source_at, event.occurred_at):
        record(session, data.id, None, now, "event", f"older subscription.upserted ignored ({event.id})")
        return "stale", []
    row.source_at = event.occurred_at
    row.customer_id, row.plan, row.status = data.customer_id, data.plan, data.status
    row.amount_minor, row.currency, row.interval = data.amount_minor, data.currency, data.interval
    row.interval_count, row.current_period_end = data.interval_count, data.current_period_end
    row.trial_end, row.cancel_at_period_end = data.trial_end, data.cancel_at_period_end
    row.updated_at = now
    if data.payment_method is not None:
        _set_payment_method(customer, data.payment_method, event.occurred_at)
    dispatch: list[Dispatch] = []
    if data.status == "canceled":
        for case in _open_cases(session, subscription_id=data.id):
            decision = policy_cases.on_subscription_canceled(facts_of(case), now, reason="status canceled")
            dispatch += apply_decision(rt, session, case, decision, now=now).dispatch
    return "subscription", dispatch


def _payment_failed(
    rt: Runtime, session: Session, event: c.Event, now: datetime
) -> tuple[str, list[Dispatch]]:
    assert isinstance(event, c.InvoicePaymentFailed)
    inv = event.data.invoice
    invoice = session.get(Invoice, inv.id, with_for_update=True)
    if invoice is not None and invoice.status == "paid":
        # A late failure for an invoice already paid: opening a case would send a
        # "payment failed" email about a renewal that went through.
        record(
            session,
            inv.subscription_id,
            None,
            now,
            "event",
            f"late failure for paid invoice {inv.id} ignored",
        )
        return "ignored_paid", []
    existing = session.execute(
        select(Case).where(Case.invoice_id == inv.id).with_for_update()
    ).scalar_one_or_none()
    if existing is not None:
        decision = policy_cases.on_repeat_failure(
            facts_of(existing), rt.policy.for_plan(existing.plan), now, decline_code=event.data.decline_code
        )
        return "case_updated", apply_decision(rt, session, existing, decision, now=now).dispatch
    customer = session.get(Customer, inv.customer_id)
    if customer is None:
        raise MissingReference("data.invoice.customer_id", "unknown customer; send customer.upserted first")
    subscription = session.get(Subscription, inv.subscription_id)
    if subscription is None:
        raise MissingReference(
            "data.invoice.subscription_id", "unknown subscription; send subscription.upserted first"
        )
    if subscription.status == "canceled":
        record(
            session,
            subscription.id,
            None,
            now,
            "event",
            f"failure for canceled subscription ignored ({inv.id})",
        )
        return "ignored_canceled", []
    if invoice is None:
        session.add(
            Invoice(
                id=inv.id,
                subscription_id=inv.subscription_id,
                amount_minor=inv.amount_minor,
                currency=inv.currency,
                status="open",
            )
        )
    policy = rt.policy.for_plan(subscription.plan)
    case = Case(
        invoice_id=inv.id,
        subscription_id=inv.subscription_id,
        customer_id=inv.customer_id,
        plan=subscription.plan,
        amount_minor=inv.amount_minor,
        currency=inv.currency,
        status="open",
        decline_code=event.data.decline_code,
        first_decline_code=event.data.decline_code,
        has_payment_method=customer.pm_present,
        opened_at=now,
        policy_version=rt.policy.version,
        attempts_made=0,
        scheduled_retries_made=0,
        card_update_retries_used=0,
        recovered_minor=0,
    )
    session.add(case)
    session.flush()
    decision = policy_cases.open_case(
        policy,
        now,
        case_key=str(case.id),
        decline_code=event.data.decline_code,
        has_payment_method=customer.pm_present,
    )
    return "case_opened", apply_decision(rt, session, case, decision, now=now).dispatch


def _invoice_paid(rt: Runtime, session: Session, event: c.Event, now: datetime) -> tuple[str, list[Dispatch]]:
    assert isinstance(event, c.InvoicePaid)
    inv = event.data.invoice
    invoice = session.get(Invoice, inv.id, with_for_update=True)
    if invoice is None:
        invoice = Invoice(
            id=inv.id,
            subscription_id=inv.subscription_id,
            amount_minor=inv.amount_minor,
            currency=inv.currency,
        )
        session.add(invoice)
    invoice.status, invoice.paid_at = "paid", now
    case = session.execute(
        select(Case).where(Case.invoice_id == inv.id).with_for_update()
    ).scalar_one_or_none()
    if case is None or case.status in {s.value for s in TERMINAL}:
        return "invoice_paid", []
    decision = policy_cases.recover(facts_of(case), now, reason="invoice paid")
    return "case_recovered", apply_decision(rt, session, case, decision, now=now, outcome="paid").dispatch


def _payment_method_updated(
    rt: Runtime, session: Session, event: c.Event, now: datetime
) -> tuple[str, list[Dispatch]]:
    assert isinstance(event, c.PaymentMethodUpdated)
    customer = session.get(Customer, event.data.customer_id, with_for_update=True)
    if customer is None:
        raise MissingReference("data.customer_id", "unknown customer; send customer.upserted first")
    if not _set_payment_method(customer, event.data.payment_method, event.occurred_at):
        return "stale", []
    customer.updated_at = now
    dispatch: list[Dispatch] = []
    for case in _open_cases(session, customer_id=customer.id):
        decision = policy_cases.on_payment_method_updated(
            facts_of(case),
            rt.policy.for_plan(case.plan),
            now,
            case_key=str(case.id),
            present=event.data.payment_method.present,
        )
        dispatch += apply_decision(rt, session, case, decision, now=now).dispatch
    return "payment_method", dispatch


def _subscription_canceled(
    rt: Runtime, session: Session, event: c.Event, now: datetime
) -> tuple[str, list[Dispatch]]:
    assert isinstance(event, c.SubscriptionCanceled)
    sub = session.get(Subscription, event.data.subscription_id, with_for_update=True)
    if sub is not None:
        sub.status, sub.updated_at = "canceled", now
    dispatch: list[Dispatch] = []
    for case in _open_cases(session, subscription_id=event.data.subscription_id):
        decision = policy_cases.on_subscription_canceled(facts_of(case), now, reason=event.data.reason)
        dispatch += apply_decision(rt, session, case, decision, now=now).dispatch
    return "subscription_canceled", dispatch


_HANDLERS = {
    "customer.upserted": _customer_upserted,
    "subscription.upserted": _subscription_upserted,
    "invoice.payment_failed": _payment_failed,
    "invoice.paid": _invoice_paid,
    "payment_method.updated": _payment_method_updated,
    "subscription.canceled": _subscription_canceled,
}
