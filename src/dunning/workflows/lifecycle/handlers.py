"""The lifecycle workflow's event handlers: keep its own facts, then re-plan the subscriptions touched.

They run after the failed-payment workflow's handler of the same event, in the
same transaction (:data:`dunning.workflows.all.WORKFLOWS` order): that handler
stores the subscription, customer and payment method, and refuses what
contradicts stored facts before anything is written. These store what only the
lifecycle notices need (tenure, temporary upgrades) and reconcile the notice jobs.

``invoice.payment_failed`` is not here on purpose: a case opening holds offers
and upgrade prompts, and the notice job re-checks that when it comes due, so the
hot path of failed payments pays nothing for lifecycle notices.
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import datetime
from typing import TYPE_CHECKING

from sqlalchemy.orm import Session

from dunning import contract as c
from dunning.engine.jobs import Dispatch
from dunning.store.models import Invoice, Subscription
from dunning.workflows.lifecycle.batch import lifecycle_batch
from dunning.workflows.lifecycle.loading import subscriptions_of
from dunning.workflows.lifecycle.planning import replan

if TYPE_CHECKING:
    from dunning.runtime import Runtime

Handler = Callable[["Runtime", Session, c.Event, datetime], tuple[str, list[Dispatch]]]


def _subscription_upserted(
    rt: Runtime, session: Session, event: c.Event, now: datetime
) -> tuple[str, list[Dispatch]]:
    assert isinstance(event, c.SubscriptionUpserted)
    data = event.data.subscription
    row = session.get(Subscription, data.id)
    if row is None or row.source_at != event.occurred_at:
        return "stale", []  # an older event: the failed-payment handler kept the newer facts
    row.first_seen_at = row.first_seen_at or now
    row.started_at = data.started_at or row.started_at
    upgrade = data.temporary_upgrade
    if upgrade is None and row.upgrade_ends_at is not None and row.upgrade_ends_at <= event.occurred_at:
        pass  # the taste ran its course: kept, so that the "it has reverted" note still goes
    elif upgrade is None:
        # Removed before its end (made permanent, or withdrawn): its prompts are canceled.
        row.upgrade_plan = row.upgrade_ends_at = row.upgrade_revert_to = row.upgrade_seen_at = None
    else:
        if (row.upgrade_plan, row.upgrade_ends_at) != (upgrade.plan, upgrade.ends_at):
            # A new taste (or a new end): its length counts from when we heard of it.
            row.upgrade_seen_at = now
        row.upgrade_plan, row.upgrade_ends_at, row.upgrade_revert_to = (
            upgrade.plan,
            upgrade.ends_at,
            upgrade.revert_to,
        )
    cause = f"subscription.upserted {event.id}"
    part = lifecycle_batch(session)
    if part is not None:
        part.defer(rt, data.id, now, cause=cause)  # re-planned with the group's others, at its end
    else:
        replan(rt, session, [data.id], now, cause=cause)
    return "subscription", []


def _customer_changed(
    rt: Runtime, session: Session, event: c.Event, now: datetime
) -> tuple[str, list[Dispatch]]:
    if isinstance(event, c.CustomerUpserted):
        customer_id = event.data.customer.id
    else:
        assert isinstance(event, c.PaymentMethodUpdated)
        customer_id = event.data.customer_id
    replan(rt, session, subscriptions_of(session, customer_id), now, cause=f"{event.type} {event.id}")
    return "customer", []


def _subscription_canceled(
    rt: Runtime, session: Session, event: c.Event, now: datetime
) -> tuple[str, list[Dispatch]]:
    assert isinstance(event, c.SubscriptionCanceled)
    replan(rt, session, [event.data.subscription_id], now, cause=f"subscription.canceled {event.id}")
    return "subscription_canceled", []


def _invoice_paid(rt: Runtime, session: Session, event: c.Event, now: datetime) -> tuple[str, list[Dispatch]]:
    # A paid invoice may close a dunning case, which releases held offers and upgrade prompts.
    assert isinstance(event, c.InvoicePaid)
    invoice = session.get(Invoice, event.data.invoice.id)
    subscription_id = invoice.subscription_id if invoice is not None else event.data.invoice.subscription_id
    replan(rt, session, [subscription_id], now, cause=f"invoice.paid {event.id}")
    return "invoice_paid", []


#: The handler of each event type this workflow reacts to.
HANDLERS: dict[str, Handler] = {
    "subscription.upserted": _subscription_upserted,
    "customer.upserted": _customer_changed,
    "payment_method.updated": _customer_changed,
    "subscription.canceled": _subscription_canceled,
    "invoice.paid": _invoice_paid,
}
