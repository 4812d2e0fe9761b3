"""The failed-payment workflow's part of a group commit: what a batch of failures prefetches.

What the batch's ``invoice.payment_failed`` events need is loaded up front in a
few statements (and their invoice and case rows locked); the event handlers
(:mod:`dunning.workflows.failed_payments.handlers`) read it from here instead of asking the
database once per event, including the stored facts every event is checked
against (:mod:`dunning.workflows.failed_payments.consistency`).
"""

from __future__ import annotations

from typing import Any, NamedTuple

import orjson
from sqlalchemy import Row, inspect, select, text
from sqlalchemy.orm import Session

from dunning import contract as c
from dunning.engine.batch import batch_of
from dunning.store.bulk import ANY_OF_JSON, ids_param, rows_by_ids
from dunning.store.models import Case, Customer, Invoice, Subscription
from dunning.store.unit import unit_of

#: The name this workflow registers under (the key of its part of a batch).
WORKFLOW_NAME = "failed_payments"


class CustomerFacts(NamedTuple):
    """What opening a case reads of its customer (a prefetched row, not an ORM object)."""

    id: str
    email: str
    locale: str | None
    timezone: str | None
    pm_present: bool


class SubscriptionFacts(NamedTuple):
    """What opening a case reads of its subscription, and checks the event against."""

    id: str
    plan: str
    status: str
    customer_id: str
    currency: str


class InvoiceFacts(NamedTuple):
    """A stored invoice: its status, and what an event about it must agree with."""

    id: str
    status: str
    subscription_id: str
    amount_minor: int
    currency: str


class PaymentsBatch:
    """The failed-payment workflow's part of a group commit (:mod:`dunning.engine.batch`).

    New cases get ids allocated in one statement and are written with the
    transaction's other rows at commit. Any other event, or a second event
    about an invoice already touched, first runs a barrier that writes what is
    buffered, so it observes the batch's earlier events exactly as if they had
    been committed.
    """

    def __init__(self) -> None:
        self.invoices: dict[str, InvoiceFacts] = {}  # invoices known before the batch
        self.cases_by_invoice: dict[str, Case | None] = {}  # prefetched invoices only
        self.touched_invoices: set[str] = set()
        # Snapshots for opening cases; dropped by the barrier before any event that could change them.
        self.customers: dict[str, CustomerFacts] = {}
        self.subscriptions: dict[str, SubscriptionFacts] = {}
        self.held: list[Any] = []
        # The rows ``subscription.upserted`` events of the batch update (locked; None: not stored
        # yet), as ORM objects: they are changed in place and written by the session's flush.
        # Nothing else writes these tables but through the ORM, so they stay true across barriers.
        self.upserts: dict[str, Subscription | None] = {}
        # Subscriptions an event of the batch changed (or opened a case of) since the last barrier.
        self.touched_subscriptions: set[str] = set()

    def batchable(self, event: c.Event) -> bool:
        """Whether ``event`` can be applied without a barrier first.

        Failures of invoices not touched yet in this batch: they only open cases.
        ``subscription.upserted`` of a prefetched subscription not touched yet, unless it
        cancels it (that closes its open cases, which the batch may hold unwritten).
        """
        if isinstance(event, c.InvoicePaymentFailed):
            return event.data.invoice.id not in self.touched_invoices
        if isinstance(event, c.SubscriptionUpserted):
            sub = event.data.subscription
            row = self.upserts.get(sub.id)
            # A subscription not stored yet is added to the session: its first upsert runs alone.
            return (
                row is not None
                and inspect(row).persistent
                and sub.id not in self.touched_subscriptions
                and sub.status != "canceled"
            )
        return False

    def forget(self) -> None:
        """Drop what the barrier's writes may have changed."""
        for invoice_id in self.touched_invoices:
            self.cases_by_invoice.pop(invoice_id, None)
            self.invoices.pop(invoice_id, None)
        self.touched_invoices.clear()
        self.touched_subscriptions.clear()
        self.customers.clear()
        self.subscriptions.clear()

    def finish(self, session: Session) -> None:
        """Nothing deferred: every event's writes are buffered in the unit as it is applied."""

    def prefetch(self, session: Session, events: list[c.Event]) -> None:
        """Load (and lock) what the batch's events will read, in a fixed number of statements."""
        _prefetch(session, events, self)
        _prefetch_upserts(session, events, self)

    def prefetch_sql(self, events: list[c.Event]) -> tuple[str, tuple[Any, ...]] | None:
        """PostgreSQL: the same lookups as one scalar subquery, for the engine's single statement."""
        invoices = _failed_invoices(events)
        return _lookup_sql(invoices) if invoices else None

    def prefetched(self, session: Session, events: list[c.Event], found: Any) -> None:
        """Keep what :meth:`prefetch_sql`'s subquery returned."""
        _take(session, _failed_invoices(events), found, self)
        _prefetch_upserts(session, events, self)


def payments_batch(session: Session) -> PaymentsBatch | None:
    """This workflow's part of the session's group commit, if it is one."""
    batch = batch_of(session)
    part = batch.parts.get(WORKFLOW_NAME) if batch is not None else None
    return part if isinstance(part, PaymentsBatch) else None


# Every case has its invoice row (both are written when the case opens), so locking the
# invoices in id order also finds the cases to lock; the unique invoice_id of cases
# backs this up (a missed case fails the batch, and each event is then applied alone).
#
# On PostgreSQL the lookups of a batch are one statement (one round trip, one result row,
# parsed by orjson): the invoices locked as above, the subscriptions and customers, and the
# ids of the cases to open (one per invoice without a case).
_PG_PREFETCH = (
    "(WITH inv AS ("
    " SELECT i.id, i.status, i.subscription_id, i.amount_minor, i.currency, c.id AS case_id"
    " FROM invoices i LEFT JOIN cases c ON c.invoice_id = i.id"
    f" WHERE i.id = ANY({ANY_OF_JSON}) ORDER BY i.id FOR UPDATE OF i)"
    " SELECT json_build_array("
    "(SELECT json_agg(json_build_array(id, status, subscription_id, amount_minor, currency, case_id))"
    " FROM inv),"
    f" (SELECT json_agg(json_build_array({', '.join(SubscriptionFacts._fields)}))"
    f" FROM subscriptions WHERE id = ANY({ANY_OF_JSON})),"
    f" (SELECT json_agg(json_build_array({', '.join(CustomerFacts._fields)}))"
    f" FROM customers WHERE id = ANY({ANY_OF_JSON})),"
    " (SELECT json_agg(nextval(pg_get_serial_sequence('cases', 'id')))"
    " FROM generate_series(1, %s - (SELECT count(case_id) FROM inv))))::text)"
)


def _lock_invoices(session: Session, invoice_ids: list[str]) -> list[Row[Any]]:
    """(invoice facts..., case id or None) of the invoices known, locked in id order (SQLite)."""
    # SQLite: the transaction already holds the database's write lock (BEGIN IMMEDIATE).
    conn = session.connection()
    return conn.execute(
        select(
            Invoice.id,
            Invoice.status,
            Invoice.subscription_id,
            Invoice.amount_minor,
            Invoice.currency,
            Case.id,
        )
        .outerjoin(Case, Case.invoice_id == Invoice.id)
        .where(Invoice.id.in_(invoice_ids))
        .order_by(Invoice.id)
    ).all()


def _failed_invoices(events: list[c.Event]) -> dict[str, tuple[str, str]]:
    """(customer, subscription) of each invoice a failure in ``events`` names."""
    invoices: dict[str, tuple[str, str]] = {}
    for e in events:
        if isinstance(e, c.InvoicePaymentFailed):
            inv = e.data.invoice
            invoices[inv.id] = (inv.customer_id, inv.subscription_id)
    return invoices


def _lookup_sql(invoices: dict[str, tuple[str, str]]) -> tuple[str, tuple[Any, ...]]:
    """PostgreSQL: the batch's lookups as one scalar subquery (JSON text), and its parameters."""
    params = (
        ids_param(sorted(invoices)),
        ids_param(sorted({sub for _, sub in invoices.values()})),
        ids_param(sorted({cus for cus, _ in invoices.values()})),
        len(invoices),
    )
    return _PG_PREFETCH, params


def _prefetch(session: Session, events: list[c.Event], batch: PaymentsBatch) -> None:
    invoices = _failed_invoices(events)
    if not invoices:
        return
    if session.get_bind().dialect.name == "postgresql":
        sql, params = _lookup_sql(invoices)
        _take(
            session,
            invoices,
            session.connection().exec_driver_sql(f"SELECT {sql}", params).scalar_one(),
            batch,
        )
        return
    invoice_ids = sorted(invoices)
    subscriptions = rows_by_ids(
        session,
        Subscription.__table__,
        SubscriptionFacts._fields,
        sorted({sub for _, sub in invoices.values()}),
    )
    customers = rows_by_ids(
        session, Customer.__table__, CustomerFacts._fields, sorted({cus for cus, _ in invoices.values()})
    )
    _keep(
        session,
        invoices,
        list(_lock_invoices(session, invoice_ids)),
        list(subscriptions),
        list(customers),
        batch,
    )


#: PostgreSQL: the upserted subscriptions (locked, in id order) with their stored customers, in
#: one fixed statement (an ``IN`` list costs SQLAlchemy more to build than the rows to load).
_PG_UPSERTS = (
    select(Subscription, Customer)
    .outerjoin(Customer, Customer.id == Subscription.customer_id)
    .where(text("subscriptions.id = ANY(ARRAY(SELECT json_array_elements_text(CAST(:ids AS json))))"))
    .order_by(Subscription.id)
    .with_for_update(of=Subscription)
)


def _prefetch_upserts(session: Session, events: list[c.Event], batch: PaymentsBatch) -> None:
    """Load the subscriptions (locked, in id order) and customers the batch's upserts change."""
    subs = {
        e.data.subscription.id: e.data.subscription.customer_id
        for e in events
        if isinstance(e, c.SubscriptionUpserted)
    }
    if not subs:
        return
    batch.upserts.update(dict.fromkeys(subs))
    # Into the session's identity map: the handler's ``session.get`` then finds the customers
    # without a statement (one whose event names another customer is loaded then).
    # ``batch.held`` keeps them alive (the identity map holds objects weakly).
    if session.get_bind().dialect.name == "postgresql":
        for sub, customer in session.execute(_PG_UPSERTS, {"ids": ids_param(sorted(subs))}):
            batch.upserts[sub.id] = sub
            batch.held.append(customer)
        return
    rows = session.execute(
        select(Subscription)
        .where(Subscription.id.in_(sorted(subs)))
        .order_by(Subscription.id)
        .with_for_update()
    ).scalars()
    for row in rows:
        batch.upserts[row.id] = row
    batch.held += (
        session.execute(select(Customer).where(Customer.id.in_(sorted(set(subs.values()))))).scalars().all()
    )


def _take(session: Session, invoices: dict[str, tuple[str, str]], found: str, batch: PaymentsBatch) -> None:
    """Keep what the PostgreSQL subquery returned (:func:`_lookup_sql`)."""
    rows, subscriptions, customers, case_ids = orjson.loads(found)
    _keep(session, invoices, rows or [], subscriptions or [], customers or [], batch, case_ids or [])


def _keep(
    session: Session,
    invoices: dict[str, tuple[str, str]],
    rows: list[Any],
    subscriptions: list[Any],
    customers: list[Any],
    batch: PaymentsBatch,
    new_case_ids: list[int] | None = None,
) -> None:
    """Remember the batch's facts; lock the cases it will update; hold ids for the cases it will open."""
    batch.invoices = {r[0]: InvoiceFacts(*r[:5]) for r in rows}
    case_ids = sorted(r[5] for r in rows if r[5] is not None)
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
    for row in subscriptions:
        batch.subscriptions[row[0]] = SubscriptionFacts(*row)
    for row in customers:
        batch.customers[row[0]] = CustomerFacts(*row)
    unit = unit_of(session)
    if new_case_ids is None:
        unit.reserve_case_ids(session, len(invoices) - len(case_ids))
    else:
        unit.take_case_ids(new_case_ids)
