"""Filling a price-migration email's words when it leaves, and dropping one that is no longer true.

The outbox key names the migration and the subscription
(``price:MIG:SUB:notice|reminder``, ``price:MIG:SUB:choice:OFFER:WHEN``); the
words come from the migration and the member as they stand when the email
leaves: a renewal that moved since the notice was decided is the date the
email states.
"""

from __future__ import annotations

from datetime import datetime, timedelta
from typing import TYPE_CHECKING, Any

from sqlalchemy.orm import Session

from dunning.engine.links import MANAGE_ACCOUNT, PRICE_CHOICE, price_subject, subscription_subject
from dunning.store.models import Customer, Outbox, PriceMigration, PriceMigrationMember, Subscription
from dunning.workflows.price_migrations.notices import CONFIRMED, NOTICE, REMINDER, PriceNotice
from dunning.workflows.price_migrations.rules import Terms, choices_offered, offer_prices
from dunning.workflows.price_migrations.state import annual_price, load, note

if TYPE_CHECKING:
    from dunning.runtime import Runtime

_PREFIX = "price:"


def migration_of(key: str, subscription_id: str) -> str | None:
    """The migration id in a job or outbox key of this workflow about ``subscription_id`` (None: not ours)."""
    if not key.startswith(_PREFIX):
        return None
    migration_id, _, rest = key[len(_PREFIX) :].partition(":")
    return migration_id if migration_id and rest.startswith(f"{subscription_id}:") else None


def confirmed_choice(key: str, migration_id: str, subscription_id: str) -> str | None:
    """The choice a confirmation email's key names (``price:MIG:SUB:choice:OFFER:WHEN``)."""
    rest = key.removeprefix(f"{_PREFIX}{migration_id}:{subscription_id}:")
    what, _, tail = rest.partition(":")
    if what != "choice":
        return None
    return tail.partition(":")[0] or None


def email_facts(
    rt: Runtime,
    migration: PriceMigration,
    member: PriceMigrationMember,
    sub: Subscription | None,
    *,
    choice: str | None,
) -> tuple[dict[str, Any], tuple[str, ...]]:
    """The facts of a price email (``PriceNotice.facts``), and the choices the member may make."""
    terms = Terms.of(migration)
    interval = sub.interval if sub is not None else terms.interval
    count = sub.interval_count if sub is not None else 1
    offered = choices_offered(terms, interval, count)
    prices = offer_prices(
        terms,
        member.new_amount_minor,
        member.current_amount_minor,
        annual_price(rt, terms.plan),
    )
    applies_at = member.applies_at
    facts = {
        "plan": terms.plan,
        "currency": terms.currency,
        "interval": interval,
        "interval_count": count,
        "old_amount_minor": member.current_amount_minor,
        "new_amount_minor": member.new_amount_minor,
        "applies_at": applies_at.isoformat() if applies_at is not None else None,
        "reason": terms.reason,
        "choice": choice,
        "offers": {kind: value for kind, value in prices.items() if kind in offered},
    }
    return facts, offered


def link_ttl(rt: Runtime, member: PriceMigrationMember, now: datetime) -> timedelta:
    """Choice links are good until the price applies (choices can change until then), and a day more."""
    ttl = timedelta(days=rt.tuning.link_ttl_days)
    if member.applies_at is not None:
        ttl = max(ttl, member.applies_at - now + timedelta(days=1))
    return ttl


def render_outbox(rt: Runtime, session: Session, outbox: Outbox, now: datetime) -> None:
    """Fill an outbox row's subject and bodies (once: a re-send repeats the same words)."""
    if outbox.subject is not None:
        return
    sub_id = outbox.subscription_id or ""
    migration_id = migration_of(outbox.key, sub_id)
    customer = session.get(Customer, outbox.customer_id)
    if migration_id is None or customer is None:
        raise LookupError(f"outbox row {outbox.id}: not a price-migration email, or its customer is missing")
    migration, member, sub = load(session, migration_id, sub_id, lock=False)
    if migration is None or member is None:
        raise LookupError(f"outbox row {outbox.id}: migration {migration_id} or its member is missing")
    if outbox.kind == CONFIRMED:
        choice = confirmed_choice(outbox.key, migration_id, sub_id)
    else:
        choice = member.choice if outbox.kind == REMINDER else None
    facts, offered = email_facts(rt, migration, member, sub, choice=choice)
    ttl = link_ttl(rt, member, now)
    links = {
        "manage": rt.links.url(
            purpose=MANAGE_ACCOUNT,
            customer=customer.id,
            subject=subscription_subject(sub_id),
            now=now,
            ttl=ttl,
        )
    }
    if outbox.kind != CONFIRMED:
        for offer in offered:
            if offer == choice:
                continue  # the choice already made needs no link
            links[offer] = rt.links.url(
                purpose=PRICE_CHOICE,
                customer=customer.id,
                subject=price_subject(migration_id, sub_id, offer),
                now=now,
                ttl=ttl,
            )
    rendered = rt.renderer.render(
        PriceNotice(
            kind=outbox.kind,
            customer_name=customer.name,
            customer_email=customer.email,
            locale=customer.locale or "en",
            timezone=customer.timezone or "UTC",
            facts=facts,
            links=links,
        )
    )
    outbox.subject, outbox.html, outbox.text = rendered.subject, rendered.html, rendered.text


def stale(rt: Runtime, session: Session, outbox: Outbox, now: datetime) -> str | None:
    """Why a price email due now is no longer true (None: send it), written on the timeline.

    A notice or reminder for a member skipped since (canceled, plan changed) or of a canceled
    migration; a reminder once the price applied; a confirmation of a choice changed since.
    """
    sub_id = outbox.subscription_id or ""
    migration_id = migration_of(outbox.key, sub_id)
    if migration_id is None:
        return None
    migration, member, _ = load(session, migration_id, sub_id, lock=False)
    reason: str | None = None
    if migration is None or member is None:
        reason = "migration unknown"
    elif migration.status == "canceled":
        reason = "migration canceled"
    elif member.state in ("skipped", "excluded"):
        reason = f"member {member.state} ({member.reason or 'no reason given'})"
    elif outbox.kind == REMINDER and member.state == "applied":
        reason = "the price applied already"
    elif outbox.kind == CONFIRMED and member.choice != confirmed_choice(outbox.key, migration_id, sub_id):
        reason = f"the choice changed since (now {member.choice})"
    if reason is not None and outbox.kind in (NOTICE, REMINDER, CONFIRMED):
        note(session, sub_id, migration_id, now, f"{outbox.kind} dropped: {reason}")
    return reason
