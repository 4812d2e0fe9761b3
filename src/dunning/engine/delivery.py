"""Send-time checks and headers of an outbox email: bounces, unsubscribes, caps, List-Unsubscribe.

:func:`dunning.engine.outbox.send_email` calls, in its transaction, :func:`hold` once the
workflow said the email is still true (an email held here is not rendered), then
:func:`headers` and :func:`recipient_name` to build the message, and :func:`bounced` when
the mail server refused it for good. The decisions are :mod:`dunning.domain.emails`; this
module loads their facts and writes their outcome: the outbox row, its job, and a line on
the subscription's timeline saying why.
"""

from __future__ import annotations

from datetime import datetime, timedelta
from typing import TYPE_CHECKING, Any

from sqlalchemy import update

from dunning.domain.emails import PROMPT, TRANSACTIONAL, Defer, Drop, Mail, decide
from dunning.engine.links import UNSUBSCRIBE, outbox_subject
from dunning.engine.recipients import bounce, record_bounce, suppression
from dunning.engine.registry import mail_kind
from dunning.engine.send_facts import HISTORY, LOOKBACK, facts_of
from dunning.mail.message import LIST_UNSUBSCRIBE, LIST_UNSUBSCRIBE_POST, ONE_CLICK
from dunning.store.db import transaction
from dunning.store.models import Customer, Job, Outbox
from dunning.store.unit import unit_of

if TYPE_CHECKING:
    from sqlalchemy.orm import Session

    from dunning.mail.sending import PermanentSendError
    from dunning.runtime import Runtime

#: How long an unsubscribe link works: mail clients offer the button on old emails too.
UNSUBSCRIBE_TTL = timedelta(days=730)
#: How far back the caps look (a week, and a day of slack for a recipient far from UTC).
_LOOKBACK = LOOKBACK


def hold(rt: Runtime, session: Session, outbox: Outbox, job: Job, now: datetime) -> str | None:
    """Skip or defer the email if it must not leave now; the job's outcome word, or None to send.

    In order: a bouncing address gets nothing; an unsubscribed address gets no prompts;
    then the caps and coalescing of :func:`dunning.domain.emails.decide`. A skipped email
    ends ``skipped`` with its job done; a deferred one stays ``pending`` with its job due
    again later. Either way the reason is on the outbox row and the timeline.
    """
    bounced = bounce(session, outbox.to_email)
    if bounced is not None:
        return _skip(
            session,
            outbox,
            job,
            now,
            f"the address bounced on {bounced.bounced_at:%Y-%m-%d} (SMTP {bounced.code or '5xx'}); "
            "nothing is sent to it until the customer's email changes",
        )
    kind = mail_kind(outbox.kind, outbox.variant)
    if kind.mail_class == TRANSACTIONAL:
        return None
    if kind.mail_class == PROMPT:
        unsubscribed = suppression(session, outbox.to_email)
        if unsubscribed is not None:
            return _skip(
                session,
                outbox,
                job,
                now,
                f"the recipient unsubscribed from offers on {unsubscribed.created_at:%Y-%m-%d}",
            )
    customer = session.get(Customer, outbox.customer_id)
    sent, due = _history(session, outbox, now)
    decision = decide(
        Mail(outbox.id, outbox.kind, kind, now, outbox.case_id),
        sent=sent,
        due=due,
        caps=rt.policy.emails,
        timezone=customer.timezone if customer is not None else None,
        quiet_hours=rt.policy.default.quiet_hours,
        now=now,
    )
    if isinstance(decision, Drop):
        return _skip(session, outbox, job, now, decision.reason)
    if isinstance(decision, Defer):
        _defer(session, outbox, job, now, decision.until, decision.reason)
        return "deferred"
    return None


def headers(rt: Runtime, outbox: Outbox, now: datetime) -> dict[str, str]:
    """The headers a prompt adds: List-Unsubscribe and List-Unsubscribe-Post (none for other kinds).

    The unsubscribe link is a customer link signed like every other
    (:class:`~dunning.engine.links.LinkSigner`), purpose ``unsubscribe``, about this email.
    (``Reply-To`` comes from the settings, in :func:`dunning.engine.outbox.outbox_message`.)
    """
    extra: dict[str, str] = {}
    if mail_kind(outbox.kind, outbox.variant).mail_class == PROMPT:
        token = rt.links.token(
            purpose=UNSUBSCRIBE,
            customer=outbox.customer_id,
            subject=outbox_subject(outbox.id),
            expires_at=now + UNSUBSCRIBE_TTL,
        )
        extra[LIST_UNSUBSCRIBE] = f"<{rt.links.public_url}/unsubscribe/{token}>"
        extra[LIST_UNSUBSCRIBE_POST] = ONE_CLICK
    return extra


def recipient_name(session: Session, outbox: Outbox) -> str | None:
    """The customer's name for the ``To:`` display name (the row is usually loaded already)."""
    customer = session.get(Customer, outbox.customer_id)
    return customer.name if customer is not None else None


def bounced(rt: Runtime, outbox_id: int, exc: PermanentSendError) -> None:
    """The server refused the email for good: mark its address as bouncing, say so on the timeline."""
    now = rt.clock.now()
    with transaction(rt.sessions) as session:
        row = session.get(Outbox, outbox_id)
        if row is None:
            return
        record_bounce(
            session,
            address=row.to_email,
            customer_id=row.customer_id,
            code=exc.code,
            detail=str(exc),
            kind=row.kind,
            message_id=row.message_id,
            now=now,
        )
        if row.subscription_id:
            unit_of(session).add_timeline(
                row.subscription_id,
                row.case_id,
                now,
                "email",
                f"{row.kind} refused by the mail server ({exc.smtp_reply()}): the address is marked "
                "as bouncing, and gets no more email until the customer's email changes",
            )


def refused(rt: Runtime, outbox_id: int, exc: PermanentSendError) -> None:
    """The server refused this message, not the address (content, policy): say so on the timeline."""
    now = rt.clock.now()
    with transaction(rt.sessions) as session:
        row = session.get(Outbox, outbox_id)
        if row is not None and row.subscription_id:
            unit_of(session).add_timeline(
                row.subscription_id,
                row.case_id,
                now,
                "email",
                f"{row.kind} refused by the mail server ({exc.smtp_reply()}): the message, not the"
                " address; later emails to it still go",
            )


def _history(session: Session, outbox: Outbox, now: datetime) -> tuple[list[Mail], list[Mail]]:
    """What this address was sent lately, and what else is due for it now (not this email)."""
    facts = facts_of(session)
    if facts is not None and facts.covers_history(outbox.to_email, now):
        rows = facts.recent(outbox.to_email, outbox.id, now)  # loaded for a batch of sends
    else:
        rows = _query_history(session, outbox, now)
    sent, due = [], []
    for r in rows:
        kind = mail_kind(r.kind, r.variant)
        if r.status == "pending":
            due.append(Mail(r.id, r.kind, kind, r.send_after, r.case_id))
        else:
            sent.append(Mail(r.id, r.kind, kind, r.sent_at or r.send_after, r.case_id))
    return sent, due


def _query_history(session: Session, outbox: Outbox, now: datetime) -> list[Any]:
    # The batch's statement for one address: what it sent lately and what else is due now.
    params = {"emails": [outbox.to_email], "since": now - _LOOKBACK, "until": now}
    return [r for r in session.execute(HISTORY, params) if r.id != outbox.id]


def _skip(session: Session, outbox: Outbox, job: Job, now: datetime, reason: str) -> str:
    from dunning.engine.jobs import finish

    outbox.status, outbox.last_error = "skipped", reason[:500]
    _timeline(session, outbox, now, f"{outbox.kind} not sent: {reason}")
    finish(session, job, note=reason[:500])
    return "skipped"


def _defer(session: Session, outbox: Outbox, job: Job, now: datetime, until: datetime, reason: str) -> None:
    outbox.send_after, outbox.last_error = until, reason[:500]
    _timeline(session, outbox, now, f"{outbox.kind} deferred to {until:%Y-%m-%d %H:%M} UTC: {reason}")
    session.execute(
        update(Job)
        .where(Job.id == job.id)
        .values(status="pending", due_at=until, retry_at=None, lease_until=None, last_error=reason[:500])
    )


def _timeline(session: Session, outbox: Outbox, now: datetime, detail: str) -> None:
    if outbox.subscription_id:
        unit_of(session).add_timeline(outbox.subscription_id, outbox.case_id, now, "email", detail)
