"""Filling a lifecycle email's words when it leaves, from the facts of that moment."""

from __future__ import annotations

from datetime import datetime, timedelta
from typing import TYPE_CHECKING

from sqlalchemy.orm import Session

from dunning.engine.links import subscription_subject
from dunning.store.models import Customer, Outbox
from dunning.workflows.lifecycle.annual_switch import confirmation_facts
from dunning.workflows.lifecycle.notices import LINK_PURPOSES, LifecycleNotice, link_names
from dunning.workflows.lifecycle.planning import wanted_notice

if TYPE_CHECKING:
    from dunning.runtime import Runtime


def render_outbox(rt: Runtime, session: Session, outbox: Outbox, now: datetime) -> None:
    """Fill an outbox row's subject and bodies (once: a re-send repeats the same words)."""
    if outbox.subject is not None:
        return
    customer = session.get(Customer, outbox.customer_id)
    if customer is None or not outbox.subscription_id:
        raise LookupError(f"outbox row {outbox.id}: customer or subscription missing")
    notice, _ = wanted_notice(rt, session, outbox.subscription_id, outbox.key, now)
    if notice is not None:
        facts, variant = dict(notice.facts), notice.variant
    else:
        # Not planned: the confirmation of a choice states the choice as it was made (its job).
        confirmed = confirmation_facts(session, outbox)
        if confirmed is None:
            raise LookupError(f"outbox row {outbox.id}: no planned notice or confirmed choice behind it")
        facts, variant = confirmed, outbox.variant
    ttl = timedelta(days=rt.tuning.link_ttl_days)
    links = {
        name: rt.links.url(
            purpose=LINK_PURPOSES[name],
            customer=customer.id,
            subject=subscription_subject(outbox.subscription_id),
            now=now,
            ttl=ttl,
        )
        for name in link_names(outbox.kind, variant)
    }
    rendered = rt.renderer.render(
        LifecycleNotice(
            kind=outbox.kind,
            variant=variant,
            customer_name=customer.name,
            customer_email=customer.email,
            locale=customer.locale or "en",
            timezone=customer.timezone or "UTC",
            facts=facts,
            links=links,
        )
    )
    outbox.subject, outbox.html, outbox.text = rendered.subject, rendered.html, rendered.text
