"""Applying billing events: facts into the store, cases opened, updated or closed."""

from __future__ import annotations

from datetime import datetime
from typing import TYPE_CHECKING, Any, NamedTuple

from sqlalchemy import Row, select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from dunning import contract as c
from dunning.domain import cases as policy_cases
from dunning.domain.cases import TERMINAL
from dunning.services.cases import apply_decision, facts_of, record
from dunning.services.jobs import Dispatch
from dunning.services.unit import NewCase, collecting, dispatch_of, unit_of
from dunning.store.bulk import rows_by_ids
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


class _Batch:
    """A group commit in progress (``session.info["batch"]``).

    What the batch's ``invoice.payment_failed`` events need is loaded up front
    in a few statements (and their invoice and case rows locked); new cases get
    ids allocated in one statement and are written with the transaction's other
    rows at commit. Any other event, or a second event about an invoice already
    touched, first runs a barrier that writes what is buffered, so it observes
    the batch's earlier events exactly as if they had been committed.
    """

    def __init__(self) -> None:
        self.processed: set[str] = set()
        self.invoice_status: dict[str, str] = {}  # invoices known before the batch
        self.cases_by_invoice: dict[str, Case | None] = {}  # prefetched invoices only
        self.touched_invoices: set[str] = set()
        # Snapshots for opening cases; dropped by the barrier before any event that could change them.
        self.customers: dict[str, CustomerFacts] = {}
        self.subscriptions: dict[str, SubscriptionFacts] = {}
        self.held: list[Any] = []


def _batch(session: Session) -> _Batch | None:
    return session.info.get("batch")


def _barrier(session: Session) -> None:
    batch = _batch(session)
    if batch is None:
        return
    unit = unit_of(session)
    if unit.buffered():
        unit.flush(session)
        unit.new_cases.clear()  # their jobs are stored now: cancelling them is an UPDATE
    for invoice_id in batch.touched_invoices:
        batch.cases_by_invoice.pop(invoice_id, None)
        batch.invoice_status.pop(invoice_id, None)
    batch.touched_invoices.clear()
    batch.customers.clear()
    batch.subscriptions.clear()


class CustomerFacts(NamedTuple):
    """What opening a case reads of its customer (a prefetched row, not an ORM object)."""

    id: str
    email: str
    locale: str | None
    timezone: str | None
    pm_present: bool


class SubscriptionFacts(NamedTuple):
    """What opening a case reads of its subscription."""

    id: str
    plan: str
    status: str


# Every case has its invoice row (both are written when the case opens), so locking the
# invoices in id order also finds the cases to lock; the unique invoice_id of cases
# backs this up (a missed case fails the batch, and each event is then applied alone).
_PG_INVOICES = (
    "SELECT i.id, i.status, c.id FROM invoices i LEFT JOIN cases c ON c.invoice_id = i.id"
    " WHERE i.id = ANY(%s) ORDER BY i.id FOR UPDATE OF i"
)


def _lock_invoices(session: Session, invoice_ids: list[str]) -> list[Row[Any]]:
    """(invoice id, status, case id or None) of the invoices known, locked in id order."""
    conn = session.connection()
    if conn.dialect.name == "postgresql":
        return conn.exec_driver_sql(_PG_INVOICES, (invoice_ids,)).all()
    # SQLite: the transaction already holds the database's write lock (BEGIN IMMEDIATE).
    return conn.execute(
        select(Invoice.id, Invoice.status, Case.id)
        .outerjoin(Case, Case.invoice_id == Invoice.id)
        .where(Invoice.id.in_(invoice_ids))
        .order_by(Invoice.id)
    ).all()


def _prefetch(session: Session, events: list[c.Event], batch: _Batch) -> None:
    invoices: dict[str, tuple[str, str]] = {}
    for e in events:
        if isinstance(e, c.InvoicePaymentFailed):
            inv = e.data.invoice
            invoices[inv.id] = (inv.customer_id, inv.subscription_id)
    batch.processed = {
        r[0] for r in rows_by_ids(session, ProcessedEvent.__table__, ("id",), sorted({e.id for e in events}))
    }
    if not invoices:
        return
    rows = _lock_invoices(session, sorted(invoices))
    batch.invoice_status = {r[0]: r[1] for r in rows}
    case_ids = sorted(r[2] for r in rows if r[2] is not None)
    batch.cases_by_invoice = dict.fromkeys(invoices)
    if case_ids:
        # ``batch.held`` keeps strong references: the session's identity map is weak.
        cases = list(
            session.execute(
                select(Case).where(Case.id.in_(case_ids)).order_by(Case.id).with_for_update()
            ).scalars()
        )
        batch.held += cases
        for case in cases:
            batch.cases_by_invoice[case.invoice_id] = case
    # Plain rows: opening a case only reads them. Any other event first runs a barrier,
    # which drops them, so an event that changes a customer is seen by the ones after it.
    for row in rows_by_ids(
        session,
        Subscription.__table__,
        SubscriptionFacts._fields,
        sorted({sub for _, sub in invoices.values()}),
    ):
        batch.subscriptions[row[0]] = SubscriptionFacts(*row)
    for row in rows_by_ids(
        session, Customer.__table__, CustomerFacts._fields, sorted({cus for cus, _ in invoices.values()})
    ):
        batch.customers[row[0]] = CustomerFacts(*row)
    unit_of(session).reserve_case_ids(session, len(invoices) - len(case_ids))


Outcome = tuple[str, list[Dispatch]]


def ingest_many(rt: Runtime, events: list[c.Event]) -> list[Outcome | Exception]:
    """Apply several events in one transaction (group commit); one result per event, in order.

    If the batch fails as a whole (an event refers to something unknown, a
    concurrent duplicate, a deadlock), each event is applied again in its own
    transaction, so every message gets its own verdict.
    """
    if len(events) == 1:
        try:
            return [ingest(rt, events[0])]
        except Exception as exc:
            return [exc]
    sink: list[Dispatch] = []
    try:
        outcomes: list[str] = []
        with collecting(rt.sessions, sink) as session:
            batch = session.info["batch"] = _Batch()
            _prefetch(session, events, batch)
            seen: set[str] = set()
            for event in events:
                if event.id in seen:
                    outcomes.append("duplicate")
                    continue
                seen.add(event.id)
                outcome, _ = apply_event(rt, session, event)
                outcomes.append(outcome)
        # The messages to send after commit travel with the first result.
        return [(outcome, sink if i == 0 else []) for i, outcome in enumerate(outcomes)]
    except Exception:
        results: list[Outcome | Exception] = []
        for event in events:
            try:
                results.append(ingest(rt, event))
            except Exception as exc:
                results.append(exc)
        return results


def apply_event(rt: Runtime, session: Session, event: c.Event) -> tuple[str, list[Dispatch]]:
    """Apply one validated event in the caller's transaction.

    Returns an outcome word (for logs and metrics) and messages to send after
    commit. A redelivered event id is a no-op; the UNIQUE primary key of
    ``processed_events`` settles a race between two deliveries at commit.
    """
    batch = _batch(session)
    if batch is not None:
        if not isinstance(event, c.InvoicePaymentFailed) or event.data.invoice.id in batch.touched_invoices:
            _barrier(session)
        if event.id in batch.processed:
            return "duplicate", []
    elif session.get(ProcessedEvent, event.id) is not None:
        return "duplicate", []
    now = rt.clock.now()
    unit_of(session).add_processed_event(
        {"id": event.id, "type": event.type, "occurred_at": event.occurred_at, "processed_at": now}
    )
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
    batch = _batch(session)
    existing: Case | None
    if batch is not None and inv.id in batch.cases_by_invoice:
        invoice_status = batch.invoice_status.get(inv.id)
        existing = batch.cases_by_invoice[inv.id]
    else:
        invoice = session.get(Invoice, inv.id, with_for_update=True)
        invoice_status = invoice.status if invoice is not None else None
        existing = None
        if invoice_status != "paid":
            existing = session.execute(
                select(Case).where(Case.invoice_id == inv.id).with_for_update()
            ).scalar_one_or_none()
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
        decision = policy_cases.on_repeat_failure(
            facts_of(existing), rt.policy.for_plan(existing.plan), now, decline_code=event.data.decline_code
        )
        return "case_updated", apply_decision(rt, session, existing, decision, now=now).dispatch
    customer = (batch.customers.get(inv.customer_id) if batch else None) or session.get(
        Customer, inv.customer_id
    )
    if customer is None:
        raise MissingReference("data.invoice.customer_id", "unknown customer; send customer.upserted first")
    subscription = (batch.subscriptions.get(inv.subscription_id) if batch else None) or session.get(
        Subscription, inv.subscription_id
    )
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
