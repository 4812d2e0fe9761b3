"""The handler of each billing event type: facts into the store, cases opened, updated or closed.

Each handler runs in the caller's transaction (one event, or a group commit:
:mod:`dunning.engine.batch`). Before it writes anything, a handler
checks the event against the facts already stored
(:mod:`dunning.workflows.failed_payments.consistency`) and refuses one that contradicts them.
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import datetime
from typing import TYPE_CHECKING

from sqlalchemy import select
from sqlalchemy.orm import Session

from dunning import contract as c
from dunning.engine import recipients
from dunning.engine.jobs import Dispatch
from dunning.errors import DunningError
from dunning.store.models import Case, Customer, Invoice, Subscription
from dunning.store.unit import NewCase, unit_of
from dunning.workflows.failed_payments import policy as policy_cases
from dunning.workflows.failed_payments.batch import InvoiceFacts, payments_batch
from dunning.workflows.failed_payments.cases import apply_decision, facts_of, record
from dunning.workflows.failed_payments.consistency import (
    Conflict,
    invoice_conflict,
    owner_conflict,
    subscription_conflict,
)
from dunning.workflows.failed_payments.policy import TERMINAL

if TYPE_CHECKING:
    from dunning.runtime import Runtime


class MissingReference(DunningError):
    """The event refers to something we have not heard of yet (events can arrive out of order).

    Retried with backoff; parked with this reason if it never resolves.
    """

    def __init__(self, field: str, reason: str) -> None:
        self.field = field
        self.reason = reason
        super().__init__(f"{field}: {reason}")


class InconsistentEvent(c.InvalidEvent):
    """A valid event that contradicts what we stored (another amount, currency, owner or invoice).

    Refused like an invalid event (the actor ``throws`` it: parked at once, never
    retried, since a retry would meet the same facts). It is raised before the
    event writes anything and its id is not recorded as processed, so once the
    facts are corrected ``dunning dlq requeue`` applies it for real.
    """

    def __init__(self, conflict: Conflict, *, event_id: str) -> None:
        super().__init__(conflict.field, conflict.reason, event_id=event_id)


def _refuse(conflict: Conflict | None, event: c.Event) -> None:
    if conflict is not None:
        raise InconsistentEvent(conflict, event_id=event.id)


def _open_cases(session: Session, **where: str) -> list[Case]:
    stmt = select(Case).where(Case.status.not_in([s.value for s in TERMINAL]))
    for column, value in where.items():
        stmt = stmt.where(getattr(Case, column) == value)
    return list(session.execute(stmt.order_by(Case.id).with_for_update()).scalars())


#: What a group commit writes of a subscription an upsert changed (all but the key).
SUBSCRIPTION_COLUMNS = tuple(c.key for c in Subscription.__table__.columns if c.key != "id")
#: What :func:`_set_payment_method` writes.
PM_COLUMNS = ("pm_source_at", "pm_present", "pm_brand", "pm_last4", "pm_exp_month", "pm_exp_year")


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
    recipients.email_changed(session, data.id, row.email, data.email)  # lifts the old address's bounce
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
    batch = payments_batch(session)
    if batch is not None and data.id in batch.upserts:
        row = batch.upserts[data.id]  # prefetched for the batch, locked
    else:
        row = session.get(Subscription, data.id, with_for_update=True)
    if batch is not None:
        # The next event about it runs a barrier first; failures read it from the session, not
        # from the batch's snapshots, which may now be stale.
        batch.touched_subscriptions.add(data.id)
        batch.subscriptions.pop(data.id, None)
        batch.customers.pop(data.customer_id, None)
    if row is None:
        row = Subscription(id=data.id, access="active")
        session.add(row)
        if batch is not None:
            batch.upserts[data.id] = row
    elif _stale(row.source_at, event.occurred_at):
        record(session, data.id, None, now, "event", f"older subscription.upserted ignored ({event.id})")
        return "stale", []
    elif (row.customer_id, row.currency) != (data.customer_id, data.currency):
        # The billing system is the source of truth, and this is how ops correct a wrong owner or
        # currency (then requeue what was refused for it); cases already open keep their customer.
        record(
            session,
            data.id,
            None,
            now,
            "event",
            f"subscription.upserted changed customer/currency from {row.customer_id}/{row.currency}"
            f" to {data.customer_id}/{data.currency} ({event.id})",
        )
    if batch is not None:
        # The group's subscription rows (locked) in one statement with its other writes.
        unit_of(session).write_through(row, SUBSCRIPTION_COLUMNS)
    row.source_at = event.occurred_at
    row.customer_id, row.plan, row.status = data.customer_id, data.plan, data.status
    row.amount_minor, row.currency, row.interval = data.amount_minor, data.currency, data.interval
    row.interval_count, row.current_period_end = data.interval_count, data.current_period_end
    row.trial_end, row.cancel_at_period_end = data.trial_end, data.cancel_at_period_end
    row.updated_at = now
    card = data.payment_method
    if card is not None and _set_payment_method(customer, card, event.occurred_at) and batch is not None:
        # Only the card's columns: the customer row is not locked, its profile is not ours to write.
        unit_of(session).write_through(customer, PM_COLUMNS)
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
    batch = payments_batch(session)
    known: Invoice | InvoiceFacts | None
    existing: Case | None
    if batch is not None and inv.id in batch.cases_by_invoice:
        known = batch.invoices.get(inv.id)
        existing = batch.cases_by_invoice[inv.id]
    else:
        known = session.get(Invoice, inv.id, with_for_update=True)
        existing = None
        if known is None or known.status != "paid":
            existing = session.execute(
                select(Case).where(Case.invoice_id == inv.id).with_for_update()
            ).scalar_one_or_none()
    invoice_status = known.status if known is not None else None
    if known is not None:
        # Before anything else, even for a paid invoice: another amount or subscription is not this invoice.
        _refuse(
            invoice_conflict(
                known,
                subscription_id=inv.subscription_id,
                amount_minor=inv.amount_minor,
                currency=inv.currency,
            ),
            event,
        )
    if invoice_status == "paid":
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
    if existing is not None:
        _refuse(
            owner_conflict(
                existing.customer_id, subscription_id=existing.subscription_id, customer_id=inv.customer_id
            ),
            event,
        )
        decision = policy_cases.on_repeat_failure(
            facts_of(existing), rt.policy.for_plan(existing.plan), now, decline_code=event.data.decline_code
        )
        return "case_updated", apply_decision(rt, session, existing, decision, now=now).dispatch
    subscription = (batch.subscriptions.get(inv.subscription_id) if batch else None) or session.get(
        Subscription, inv.subscription_id
    )
    if subscription is not None:
        # A failure naming another customer would email that customer about a subscription
        # that is not theirs (and grace would suspend the owner's).
        _refuse(
            subscription_conflict(subscription, customer_id=inv.customer_id, currency=inv.currency), event
        )
    customer = (batch.customers.get(inv.customer_id) if batch else None) or session.get(
        Customer, inv.customer_id
    )
    if customer is None:
        raise MissingReference("data.invoice.customer_id", "unknown customer; send customer.upserted first")
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
    unit = unit_of(session)
    if invoice_status is None:
        unit.add_invoice(
            {
                "id": inv.id,
                "subscription_id": inv.subscription_id,
                "amount_minor": inv.amount_minor,
                "currency": inv.currency,
                "status": "open",
                "paid_at": None,
            }
        )
    policy = rt.policy.for_plan(subscription.plan)
    # Written once by the unit, with the facts the opening decision gives it.
    case = unit.new_case(
        session,
        NewCase(
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
        ),
    )
    if batch is not None:
        # The next event about this invoice, or any other kind of event, first runs a barrier:
        # it writes this case and drops the prefetched facts about the invoice.
        batch.touched_invoices.add(inv.id)
        batch.touched_subscriptions.add(inv.subscription_id)
    decision = policy_cases.open_case(
        policy,
        now,
        case_key=str(case.id),
        decline_code=event.data.decline_code,
        has_payment_method=customer.pm_present,
    )
    apply_decision(rt, session, case, decision, now=now, customer=customer)
    return "case_opened", []


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
    else:
        # A payment of another amount, currency or subscription does not pay this invoice
        # (nor close its case): refused before anything is written.
        _refuse(
            invoice_conflict(
                invoice,
                subscription_id=inv.subscription_id,
                amount_minor=inv.amount_minor,
                currency=inv.currency,
            ),
            event,
        )
    invoice.status, invoice.paid_at = "paid", now
    case = session.execute(
        select(Case).where(Case.invoice_id == inv.id).with_for_update()
    ).scalar_one_or_none()
    if case is None or case.status in {s.value for s in TERMINAL}:
        return "invoice_paid", []
    decision = policy_cases.recover(facts_of(case), now, reason="invoice paid")
    applied = apply_decision(
        rt, session, case, decision, now=now, outcome="paid", recovered_minor=inv.amount_minor
    )
    return "case_recovered", applied.dispatch


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


#: The handler of each event type.
HANDLERS: dict[str, Callable[[Runtime, Session, c.Event, datetime], tuple[str, list[Dispatch]]]] = {
    "customer.upserted": _customer_upserted,
    "subscription.upserted": _subscription_upserted,
    "invoice.payment_failed": _payment_failed,
    "invoice.paid": _invoice_paid,
    "payment_method.updated": _payment_method_updated,
    "subscription.canceled": _subscription_canceled,
}
