"""What the send decisions of one batch read, loaded up front in a few statements.

:mod:`dunning.engine.outbox_batch` starts many ``send_email`` jobs in one
transaction. Each email's decision (:func:`dunning.engine.outbox.should_send`)
asks whether its kind is paused, whether its address bounced or unsubscribed,
and what its address was sent lately: alone, a query each, most of them finding
nothing (which the session's identity map cannot remember). Here they are
loaded for the whole batch, and :func:`dunning.engine.pauses.paused`,
:func:`dunning.engine.recipients.bounce` / ``suppression`` and
``dunning.engine.delivery._history`` answer from them for the addresses covered.

Reading them first, then deciding each email, is what concurrent transactions
(one per email, as before) could see too: an email's decision never sees the
uncommitted decisions of its batch-mates, exactly as it would not see another
thread's. Nothing in the batch writes what is loaded here (bounces and
unsubscribes are written by other transactions).
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import TYPE_CHECKING, Any

from sqlalchemy import and_, bindparam, literal_column, or_, select, union_all

from dunning.store.mail_models import MailBounce, MailSuppression
from dunning.store.models import Outbox
from dunning.store.ops_models import PausedKind

if TYPE_CHECKING:
    from sqlalchemy.orm import Session

_KEY = "send_facts"
#: How far back the caps look (the same as :mod:`dunning.engine.delivery`).
LOOKBACK = timedelta(days=8)
#: Pending rows due up to this much after the load are loaded too: an email decided a little
#: later than the load sees what is due at its own ``now``.
_AHEAD = timedelta(minutes=10)
DELIVERED = ("sent", "sending", "unknown")


@dataclass
class SendFacts:
    """The loaded facts; ``addresses`` (lower case) and ``to_emails`` (as stored) say what they cover."""

    loaded_at: datetime
    paused: frozenset[str]
    addresses: frozenset[str] = frozenset()
    bounces: dict[str, MailBounce] = field(default_factory=dict)
    suppressions: dict[str, MailSuppression] = field(default_factory=dict)
    to_emails: frozenset[str] = frozenset()
    history: dict[str, list[Any]] = field(default_factory=dict)

    def covers_history(self, to_email: str, now: datetime) -> bool:
        """Whether :meth:`recent` answers for ``to_email`` at ``now`` (else: query it)."""
        return to_email in self.to_emails and self.loaded_at <= now <= self.loaded_at + _AHEAD

    def recent(self, to_email: str, not_id: int, now: datetime) -> list[Any]:
        """The rows ``delivery._history`` would select at ``now``: delivered lately, or pending and due."""
        since = now - LOOKBACK
        return [
            r
            for r in self.history.get(to_email, ())
            if r.id != not_id
            and (
                (r.status in DELIVERED and r.send_after >= since)
                or (r.status == "pending" and r.send_after <= now)
            )
        ]


# Built once (constructing a statement costs about as much as running it). Paused kinds,
# bounced and unsubscribed addresses in one statement: almost always only its first part
# finds anything (paused kinds are few; bounces and unsubscribes are rare).
_FLAGS = union_all(
    select(literal_column("'p'"), PausedKind.kind),
    select(literal_column("'b'"), MailBounce.address).where(
        MailBounce.address.in_(bindparam("keys", expanding=True))
    ),
    select(literal_column("'s'"), MailSuppression.address).where(
        MailSuppression.address.in_(bindparam("keys", expanding=True))
    ),
)
#: Recent and due emails of some addresses (``emails``): sent since ``since``, pending until ``until``.
HISTORY = select(
    Outbox.id,
    Outbox.to_email,
    Outbox.kind,
    Outbox.variant,
    Outbox.status,
    Outbox.sent_at,
    Outbox.send_after,
    Outbox.case_id,
).where(
    Outbox.to_email.in_(bindparam("emails", expanding=True)),
    or_(
        and_(
            Outbox.status.in_(DELIVERED),
            Outbox.send_after >= bindparam("since", type_=Outbox.send_after.type),
        ),
        and_(
            Outbox.status == "pending", Outbox.send_after <= bindparam("until", type_=Outbox.send_after.type)
        ),
    ),
)


def facts_of(session: Session) -> SendFacts | None:
    """The facts loaded for the session's transaction, if it decides a batch of sends."""
    return session.info.get(_KEY)


def address_key(address: str) -> str:
    """The key of an address in the bounce and unsubscribe lists (:mod:`.recipients` uses it too)."""
    return address.strip().lower()


def load(session: Session, to_emails: Iterable[str], now: datetime) -> SendFacts:
    """Load the facts for emails to ``to_emails`` decided from ``now`` on, and keep them on the session."""
    emails = sorted(set(to_emails))
    keys = sorted({address_key(a) for a in emails})
    found: dict[str, list[str]] = {"p": [], "b": [], "s": []}
    for flag, value in session.execute(_FLAGS, {"keys": keys}):
        found[flag].append(value)
    facts = SendFacts(
        loaded_at=now,
        paused=frozenset(found["p"]),
        addresses=frozenset(keys),
        to_emails=frozenset(emails),
    )
    for address in found["b"]:
        if (bounce := session.get(MailBounce, address)) is not None:
            facts.bounces[address] = bounce
    for address in found["s"]:
        if (unsubscribed := session.get(MailSuppression, address)) is not None:
            facts.suppressions[address] = unsubscribed
    if emails:
        params = {"emails": emails, "since": now - LOOKBACK, "until": now + _AHEAD}
        for r in session.execute(HISTORY, params):
            facts.history.setdefault(r.to_email, []).append(r)
    session.info[_KEY] = facts
    return facts
