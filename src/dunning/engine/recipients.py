"""What we know about a recipient address: unsubscribed from prompts, bouncing. Reads and writes.

Both lists are keyed by the address in lower case (mailbox providers treat ``Ada@`` and
``ada@`` as one mailbox). Suppression is permanent; a bounce lasts until a
``customer.upserted`` changes the customer's email (:func:`email_changed`).
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

from sqlalchemy import delete, select
from sqlalchemy.orm import Session

from dunning.engine.send_facts import address_key, facts_of
from dunning.store.mail_models import MailBounce, MailSuppression


def suppression(session: Session, address: str) -> MailSuppression | None:
    """The address's unsubscribe record, or None."""
    facts = facts_of(session)
    if facts is not None and (key := address_key(address)) in facts.addresses:
        return facts.suppressions.get(key)  # loaded for a batch of sends (none found: None)
    return session.get(MailSuppression, address_key(address))


def suppress(
    session: Session, *, address: str, customer_id: str, outbox_id: int | None, now: datetime
) -> bool:
    """Record that ``address`` wants no more prompts; False if it already said so (a second click)."""
    if suppression(session, address) is not None:
        return False
    session.add(
        MailSuppression(
            address=address_key(address), customer_id=customer_id, outbox_id=outbox_id, created_at=now
        )
    )
    return True


def bounce(session: Session, address: str) -> MailBounce | None:
    """The address's bounce record, or None."""
    facts = facts_of(session)
    if facts is not None and (key := address_key(address)) in facts.addresses:
        return facts.bounces.get(key)  # loaded for a batch of sends (none found: None)
    return session.get(MailBounce, address_key(address))


def record_bounce(
    session: Session,
    *,
    address: str,
    customer_id: str,
    code: int | None,
    detail: str,
    kind: str,
    message_id: str,
    now: datetime,
) -> None:
    """Mark ``address`` as bouncing (the latest refusal wins)."""
    row = bounce(session, address)
    if row is None:
        row = MailBounce(address=address_key(address))
        session.add(row)
    row.customer_id, row.code, row.detail = customer_id, code, detail[:500]
    row.kind, row.message_id, row.bounced_at = kind, message_id, now


def email_changed(session: Session, customer_id: str, old: str | None, new: str) -> int:
    """A ``customer.upserted`` changed the customer's email: their bounces no longer apply.

    Called by the handler that stores the customer (one statement, only on an actual
    change). Returns how many bounce records were lifted.
    """
    if old is None or address_key(old) == address_key(new):
        return 0
    return session.execute(delete(MailBounce).where(MailBounce.customer_id == customer_id)).rowcount or 0


@dataclass(frozen=True)
class BounceRow:
    """One bouncing address, for ``dunning emails bounces``."""

    address: str
    customer_id: str
    code: int | None
    kind: str
    message_id: str
    bounced_at: datetime
    detail: str


def list_bounces(session: Session) -> list[BounceRow]:
    """Every bouncing address, the latest first."""
    rows = session.execute(select(MailBounce).order_by(MailBounce.bounced_at.desc(), MailBounce.address))
    return [
        BounceRow(r.address, r.customer_id, r.code, r.kind, r.message_id, r.bounced_at, r.detail)
        for r in rows.scalars()
    ]
