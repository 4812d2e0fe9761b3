"""The lifecycle planner's facts, loaded from the store for many subscriptions at once.

Four statements whatever the number of subscriptions: the subscriptions with
their customers, which of them have a dunning case open, when each was last
offered annual billing, and which lifecycle emails each already has.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Collection, Sequence
from datetime import datetime
from typing import TYPE_CHECKING

from sqlalchemy import func, select
from sqlalchemy.orm import Session

from dunning.store.models import Case, Customer, Outbox, Subscription
from dunning.workflows.lifecycle.facts import Card, SubscriptionFacts, Upgrade
from dunning.workflows.lifecycle.notices import KINDS

if TYPE_CHECKING:
    from dunning.workflows.lifecycle.reads import Found


def subscriptions_of(session: Session, customer_id: str) -> list[str]:
    """The ids of a customer's subscriptions."""
    return list(
        session.execute(select(Subscription.id).where(Subscription.customer_id == customer_id)).scalars()
    )


def load_facts(
    session: Session,
    subscription_ids: Collection[str],
    now: datetime,
    *,
    as_if_unsent: str | None = None,
    rows: Sequence[tuple[Subscription, Customer | None]] | None = None,
    found: Found | None = None,
) -> dict[str, SubscriptionFacts]:
    """The planner's view of each known subscription (unknown ids are left out).

    ``as_if_unsent``: an outbox key to leave out, to ask whether the planner would want that
    email had it not been written yet (an annual offer, once written, makes itself "the last
    offer" and plans the next one instead). ``rows``: the subscriptions with their customers,
    when the caller holds them already. ``found``: the rest, if the caller read it
    (:func:`dunning.workflows.lifecycle.reads.replan_reads`); then no statement at all.
    """
    ids = list(subscription_ids)
    if not ids:
        return {}
    if rows is None:
        result = session.execute(
            select(Subscription, Customer)
            .join(Customer, Customer.id == Subscription.customer_id, isouter=True)
            .where(Subscription.id.in_(ids))
        )
        rows = [(sub, customer) for sub, customer in result]
    if found is not None:
        open_cases, last_offer, sent = found.open_cases, found.last_offer, found.sent
    else:
        open_cases, last_offer, sent = _found(session, ids, as_if_unsent)
    facts: dict[str, SubscriptionFacts] = {}
    for sub, customer in rows:
        facts[sub.id] = facts_of(
            sub,
            customer,
            open_case=sub.id in open_cases,
            last_annual_offer_at=last_offer.get(sub.id),
            sent_keys=frozenset(sent.get(sub.id, ())),
            now=now,
        )
    return facts


def _found(
    session: Session, ids: list[str], as_if_unsent: str | None
) -> tuple[set[str], dict[str, datetime], dict[str, set[str]]]:
    """Open cases, last annual offers and lifecycle emails sent, of ``ids`` (three statements)."""
    # ``closed_at`` is set when a case ends, whatever its outcome.
    open_cases = set(
        session.execute(
            select(Case.subscription_id).where(Case.subscription_id.in_(ids), Case.closed_at.is_(None))
        ).scalars()
    )
    last_offer = dict(
        session.execute(
            select(Outbox.subscription_id, func.max(Outbox.created_at))
            .where(
                Outbox.subscription_id.in_(ids),
                Outbox.kind == "annual_offer",
                Outbox.status.not_in(("skipped", "failed")),
                Outbox.key != (as_if_unsent or ""),
            )
            .group_by(Outbox.subscription_id)
        ).all()
    )
    sent: dict[str, set[str]] = defaultdict(set)
    for sub_id, key in session.execute(
        select(Outbox.subscription_id, Outbox.key).where(
            Outbox.subscription_id.in_(ids),
            Outbox.kind.in_(KINDS),
            Outbox.status != "skipped",
            Outbox.key != (as_if_unsent or ""),
        )
    ):
        sent[sub_id].add(key)
    return open_cases, last_offer, sent


def facts_of(
    sub: Subscription,
    customer: Customer | None,
    *,
    open_case: bool,
    last_annual_offer_at: datetime | None,
    sent_keys: frozenset[str],
    now: datetime,
) -> SubscriptionFacts:
    """One subscription's facts from its rows."""
    card = None
    if customer is not None and customer.pm_present:
        card = Card(
            brand=customer.pm_brand,
            last4=customer.pm_last4,
            exp_month=customer.pm_exp_month,
            exp_year=customer.pm_exp_year,
        )
    upgrade = None
    if sub.upgrade_plan and sub.upgrade_ends_at and sub.upgrade_revert_to:
        upgrade = Upgrade(
            plan=sub.upgrade_plan,
            ends_at=sub.upgrade_ends_at,
            revert_to=sub.upgrade_revert_to,
            seen_at=sub.upgrade_seen_at or now,
        )
    return SubscriptionFacts(
        id=sub.id,
        customer_id=sub.customer_id,
        plan=sub.plan,
        status=sub.status,
        amount_minor=sub.amount_minor,
        currency=sub.currency,
        interval=sub.interval,
        interval_count=sub.interval_count,
        current_period_end=sub.current_period_end,
        trial_end=sub.trial_end,
        cancel_at_period_end=sub.cancel_at_period_end,
        started_at=sub.started_at,
        first_seen_at=sub.first_seen_at or sub.updated_at,
        upgrade=upgrade,
        card=card,
        open_case=open_case,
        last_annual_offer_at=last_annual_offer_at,
        sent_keys=sent_keys,
    )
