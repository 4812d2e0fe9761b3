"""Queueing an email in the outbox, for every workflow: one row and its send job, once per key.

The row holds the decision (who, which kind, which wording variant, when it may
leave); the words are rendered when it is sent, from the facts of that moment
(:mod:`dunning.engine.outbox`). The key names what the email announces, so the
same decision taken twice (a duplicate event, a re-run job) writes nothing new.
"""

from __future__ import annotations

from datetime import datetime, time
from typing import Protocol

from sqlalchemy.orm import Session

from dunning.broker.names import MAIL_QUEUE
from dunning.domain.notices import deliver_at
from dunning.mail.message import message_id_for
from dunning.store.unit import unit_of


class Recipient(Protocol):
    """What queuing an email reads of a customer (an ORM row, or a prefetched snapshot)."""

    @property
    def id(self) -> str: ...
    @property
    def email(self) -> str: ...
    @property
    def locale(self) -> str | None: ...
    @property
    def timezone(self) -> str | None: ...


def queue_email(
    session: Session,
    *,
    key: str,
    kind: str,
    customer: Recipient,
    subscription_id: str | None,
    case_id: int | None = None,
    variant: str | None = None,
    quiet_hours: tuple[time, time] | None,
    now: datetime,
) -> datetime:
    """Write an email and its send job in the caller's transaction; returns when it may leave.

    ``quiet_hours``: the recipient's local window in which nothing is sent (the send
    job is due at its end). A key already in the outbox is a no-op.
    """
    send_after = deliver_at(now, customer.timezone, quiet_hours)
    unit_of(session).add_outbox(
        {
            "key": key,
            "kind": kind,
            "case_id": case_id,
            "subscription_id": subscription_id,
            "customer_id": customer.id,
            "to_email": customer.email,
            "locale": customer.locale or "en",
            "variant": variant,
            "subject": None,
            "html": None,
            "text": None,
            "message_id": message_id_for(key),
            "status": "pending",
            "send_after": send_after,
            "created_at": now,
            "sent_at": None,
            "attempts": 0,
            "last_error": None,
        },
        {
            "key": f"send:{key}",
            "kind": "send_email",
            "queue": MAIL_QUEUE,
            "case_id": case_id,
            "subject": subscription_id,
            "due_at": send_after,
            "payload": None,
        },
        now=now,
    )
    return send_after
