"""The lifecycle workflow's part of a group commit: re-plan the subscriptions touched, once, at the end.

Outside a group commit a fact change re-plans its subscription at once
(:func:`dunning.workflows.lifecycle.planning.replan`: the facts in four
statements, then a reconcile). In a group commit a ``subscription.upserted``
applied without a barrier only records its subscription (with the event as the
cause); :meth:`LifecycleBatch.finish` re-plans all of them in one go, just
before the group's writes or before the next barrier, so any event that could
observe the notice jobs (a barrier event) sees them as if each had been
re-planned at once.

A failure for a subscription waiting to be re-planned would open a case the
re-plan must not see yet (it holds offers): that failure runs a barrier first.
"""

from __future__ import annotations

from collections.abc import Collection
from datetime import datetime
from typing import TYPE_CHECKING

from sqlalchemy.orm import Session
from sqlalchemy.orm.util import identity_key

from dunning import contract as c
from dunning.engine.batch import batch_of
from dunning.store.models import Customer, Subscription
from dunning.store.unit import unit_of
from dunning.workflows.lifecycle.planning import replan_each

if TYPE_CHECKING:
    from dunning.runtime import Runtime

#: The name this workflow registers under (the key of its part of a batch).
WORKFLOW_NAME = "lifecycle"


class LifecycleBatch:
    """The lifecycle workflow's part of a group commit (:mod:`dunning.engine.batch`)."""

    def __init__(self) -> None:
        # Subscription id -> the cause of its re-plan (the last event that touched it).
        self.pending: dict[str, str] = {}
        self.now: datetime | None = None  # the latest of the pending events' times
        self.rt: Runtime | None = None

    def prefetch(self, session: Session, events: list[c.Event]) -> None:
        """Nothing to load ahead: the re-plan loads the facts of all its subscriptions at once."""

    def batchable(self, event: c.Event) -> bool:
        """Everything but an event about a subscription waiting to be re-planned."""
        if isinstance(event, c.InvoicePaymentFailed):
            return event.data.invoice.subscription_id not in self.pending
        if isinstance(event, c.SubscriptionUpserted):
            return event.data.subscription.id not in self.pending
        return True

    def forget(self) -> None:
        """Nothing loaded to drop (:meth:`finish` ran before the barrier's writes)."""

    def defer(self, rt: Runtime, subscription_id: str, now: datetime, *, cause: str) -> None:
        """Re-plan ``subscription_id`` at :meth:`finish` instead of now."""
        self.rt = rt
        self.pending[subscription_id] = cause
        self.now = now if self.now is None else max(self.now, now)

    def finish(self, session: Session) -> None:
        """Re-plan every pending subscription: one load of facts and one reconcile for all."""
        if not self.pending:
            return
        assert self.rt is not None and self.now is not None
        pending, now = self.pending, self.now
        self.pending, self.now = {}, None
        rows = _held_rows(session, pending)
        if rows is None:
            replan_each(self.rt, session, pending, now)
            return
        # The only unwritten changes are the ones the unit writes itself (the upserted rows,
        # which are read from the session here): no need for the session to flush them first,
        # one UPDATE per row, before the re-plan's reads.
        with session.no_autoflush:
            replan_each(self.rt, session, pending, now, rows=rows)


def _held_rows(session: Session, ids: Collection[str]) -> list[tuple[Subscription, Customer | None]] | None:
    """The subscriptions and customers the session holds, if every change it holds is the unit's to write.

    None when the session holds other unwritten changes (they must be flushed before the
    re-plan reads the store) or does not hold every row.
    """
    written = unit_of(session).written_objects()
    if session.new or session.deleted or any(id(obj) not in written for obj in session.dirty):
        return None
    rows: list[tuple[Subscription, Customer | None]] = []
    for sub_id in sorted(ids):
        sub = session.identity_map.get(identity_key(Subscription, sub_id))
        if not isinstance(sub, Subscription):
            return None
        customer = session.identity_map.get(identity_key(Customer, sub.customer_id))
        if not isinstance(customer, Customer):
            return None
        rows.append((sub, customer))
    return rows


def lifecycle_batch(session: Session) -> LifecycleBatch | None:
    """This workflow's part of the session's group commit, if the event being applied may defer work.

    None outside a group commit, and for an event applied after a barrier (it re-plans at
    once, as it would alone).
    """
    batch = batch_of(session)
    if batch is None or not batch.batched:
        return None
    part = batch.parts.get(WORKFLOW_NAME)
    return part if isinstance(part, LifecycleBatch) else None
