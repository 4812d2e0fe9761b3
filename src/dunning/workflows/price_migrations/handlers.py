"""The price-migration workflow's event handlers: facts that change before a new price applies.

They run after the failed-payment and lifecycle handlers of the same event, in
the same transaction (:data:`dunning.workflows.all.WORKFLOWS` order): the
subscription row already holds the event's facts. For each member of a
launched or paused migration that is still on its way (one indexed query; none
for most subscriptions):

- canceled (or set to end at the period's end), another plan, currency,
  interval or amount: the member is ``skipped`` with the reason on its
  timeline and its pending jobs are canceled; a cancellation within the alert
  window of the notice may pause the migration (:func:`.state.check_alert`);
- a renewal that moved: the renewal the price applies at is worked out again
  from the notice's time, and the pending reminder and application move with it;
- ``invoice.paid`` for a deferred member: its application job looks again now
  (the case may have closed as recovered).

The jobs re-check all of this when they come due, so a lost event costs
nothing but timeliness.
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import datetime
from typing import TYPE_CHECKING

from sqlalchemy.orm import Session

from dunning import contract as c
from dunning.engine.jobs import Dispatch
from dunning.store.models import Invoice, Subscription
from dunning.workflows.price_migrations.batch import prices_batch
from dunning.workflows.price_migrations.rules import (
    EARLY_CANCEL,
    Terms,
    cancel_reason,
    job_key,
    target,
    why_skip,
)
from dunning.workflows.price_migrations.state import (
    call_recorded,
    check_alert,
    follow,
    live_members,
    move_job,
    note,
    skip,
)

if TYPE_CHECKING:
    from dunning.runtime import Runtime

Handler = Callable[["Runtime", Session, c.Event, datetime], tuple[str, list[Dispatch]]]


def react(session: Session, subscription_id: str, now: datetime, *, cause: str) -> int:
    """Bring the subscription's live members in line with its stored facts; returns how many changed."""
    members = live_members(session, subscription_id)
    if not members:
        return 0
    sub = session.get(Subscription, subscription_id)
    changed = 0
    for migration, member in members:
        if call_recorded(session, migration.id, subscription_id):
            continue  # the application is on its way to the billing system: the job finishes it
        terms = Terms.of(migration)
        reason = why_skip(terms, sub, member.current_amount_minor)
        if reason == "canceled":
            reason = cancel_reason(terms, member.notified_at, now)
        if reason is not None:
            skip(session, migration, member, reason, now, cause=cause)
            changed += 1
            if reason.startswith(EARLY_CANCEL):
                paused = check_alert(session, migration, now)
                if paused:
                    note(session, subscription_id, migration.id, now, f"migration {paused}")
            continue
        if sub is None or member.notified_at is None or member.state == "deferred":
            continue  # not notified yet: the notice works the date out when it goes
        applies_at = target(terms, sub, member.notified_at, now)
        if applies_at != member.applies_at:
            follow(session, migration, member, applies_at, now, cause=cause)
            changed += 1
    return changed


def _subscription_upserted(
    rt: Runtime, session: Session, event: c.Event, now: datetime
) -> tuple[str, list[Dispatch]]:
    assert isinstance(event, c.SubscriptionUpserted)
    row = session.get(Subscription, event.data.subscription.id)
    if row is None or row.source_at != event.occurred_at:
        return "stale", []  # an older event: the failed-payment handler kept the newer facts
    part = prices_batch(session)
    if part is not None and part.quiet(row.id):
        return "subscription", []  # no member on its way: nothing to react to (asked once per batch)
    react(session, row.id, now, cause=f"subscription.upserted {event.id}")
    return "subscription", []


def _subscription_canceled(
    rt: Runtime, session: Session, event: c.Event, now: datetime
) -> tuple[str, list[Dispatch]]:
    assert isinstance(event, c.SubscriptionCanceled)
    react(session, event.data.subscription_id, now, cause=f"subscription.canceled {event.id}")
    return "subscription_canceled", []


def _invoice_paid(rt: Runtime, session: Session, event: c.Event, now: datetime) -> tuple[str, list[Dispatch]]:
    assert isinstance(event, c.InvoicePaid)
    invoice = session.get(Invoice, event.data.invoice.id)
    sub_id = invoice.subscription_id if invoice is not None else event.data.invoice.subscription_id
    for migration, member in live_members(session, sub_id):
        if member.state == "deferred" and move_job(session, job_key(migration.id, sub_id, "apply"), now):
            note(session, sub_id, migration.id, now, f"application looks again after invoice.paid {event.id}")
    return "invoice_paid", []


#: The handler of each event type this workflow reacts to.
HANDLERS: dict[str, Handler] = {
    "subscription.upserted": _subscription_upserted,
    "subscription.canceled": _subscription_canceled,
    "invoice.paid": _invoice_paid,
}
