"""Sending one outbox email, at most once: the engine's ``send_email`` job, for every workflow.

The workflow that wrote the notice says whether it is still true now
(:attr:`~dunning.engine.registry.Workflow.stale`) and fills its words from
the facts of this moment (:attr:`~dunning.engine.registry.Workflow.render_notice`);
this module owns the delivery and its point of no return.

Per email: the job's start, the row's lock, :func:`should_send` (the one place
that decides whether a row goes out) and the rendering share one transaction
(:func:`prepare_email`, called by the runner); the ``sending`` mark at the
email's own 354 and the outcome are group-committed with other threads'
(:mod:`.outbox_commits` explains why each email still has its own point of no
return); SMTP connections are pooled (:mod:`dunning.mail.pool`).
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import TYPE_CHECKING, Any

from dunning import telemetry
from dunning.engine import delivery
from dunning.engine.jobs import finish
from dunning.engine.outbox_commits import mark_sending, settle
from dunning.engine.pauses import hold, paused
from dunning.engine.registry import Result, notice_owner
from dunning.errors import PermanentJobError
from dunning.mail.message import KIND_HEADER, NOTICE_HEADER, build_message
from dunning.mail.render import RenderedEmail
from dunning.mail.sending import AmbiguousSendError, PermanentSendError, TransientSendError
from dunning.mail.wire import wire_message
from dunning.store.db import transaction
from dunning.store.models import Job, Outbox

if TYPE_CHECKING:
    from email.message import EmailMessage

    from sqlalchemy.orm import Session

    from dunning.runtime import Runtime
    from dunning.settings import Settings


def _headers(settings: Settings, outbox: Outbox, extra: dict[str, str] | None) -> dict[str, str]:
    reply_to = {"Reply-To": settings.mail_reply_to} if settings.mail_reply_to else {}
    return {NOTICE_HEADER: outbox.key, KIND_HEADER: outbox.kind, **reply_to, **(extra or {})}


def outbox_message(
    settings: Settings,
    outbox: Outbox,
    *,
    headers: dict[str, str] | None = None,
    to_name: str | None = None,
) -> EmailMessage:
    """The email of a rendered outbox row, as :func:`deliver` hands it to the sender.

    ``dunning emails preview`` builds its sample through here too, so a preview is what a customer gets.
    ``headers``: more headers (a prompt's List-Unsubscribe); ``to_name``: the customer's name for ``To:``.
    """
    return build_message(
        RenderedEmail(subject=outbox.subject or "", html=outbox.html or "", text=outbox.text or ""),
        to=outbox.to_email,
        sender=settings.mail_from,
        message_id=outbox.message_id,
        headers=_headers(settings, outbox, headers),
        date=outbox.send_after,
        to_name=to_name,
    )


class _Superseded(Exception):
    """Another run reached the point of no return first; this one must not send."""


def should_send(rt: Runtime, session: Session, outbox: Outbox, job: Job) -> Result | None:
    """Whether this row is to be sent now: None to send it, else the outcome, already written.

    Runs in the transaction that holds the row's lock; a row it turns down has its
    status and its job finished here. Checks made at send time belong here.
    """
    if outbox.status in ("sent", "failed", "skipped", "unknown"):
        finish(session, job)
        return "already_" + outbox.status, []
    if outbox.status == "sending":
        outbox.status = "unknown"
        note = (
            f"parked: delivery of {outbox.message_id} is unknown (the worker died after handing it to "
            "the mail server); check the server's log, then `dunning dlq requeue` to resend or purge"
        )
        outbox.last_error = note
        finish(session, job, status="dead", note=note)
        return "unknown", []
    if paused(session, outbox.kind):
        # On hold (``dunning pause``): back to pending, sent once resumed if still true then.
        hold(session, job, outbox.kind, rt.clock.now())
        return "held", []
    owner = notice_owner(outbox.kind)
    if owner is None:
        raise PermanentJobError(f"outbox row {outbox.id}: no workflow writes notices of kind {outbox.kind!r}")
    if owner.stale is not None and owner.stale(rt, session, outbox, rt.clock.now()) is not None:
        outbox.status = "skipped"
        finish(session, job)
        telemetry.inc(telemetry.EMAIL_DELIVERIES, outbox.kind, "skipped")
        return "skipped", []
    # The recipient's side: bounced, unsubscribed from prompts, or over a cap (skipped or deferred).
    if (held := delivery.hold(rt, session, outbox, job, rt.clock.now())) is not None:
        telemetry.inc(telemetry.EMAIL_DELIVERIES, outbox.kind, held)
        return held, []
    if owner.render_notice is None:
        raise PermanentJobError(f"outbox row {outbox.id}: workflow {owner.name} renders no notices")
    return None


@dataclass(frozen=True)
class Ready:
    """A row decided and rendered, to be sent: what the delivery needs once its transaction is over."""

    outbox_id: int
    kind: str
    rendered: RenderedEmail
    to: str
    to_name: str | None
    message_id: str
    headers: dict[str, str]
    date: datetime | None


def prepare_email(rt: Runtime, session: Session, job: Job) -> Ready | Result:
    """Lock the row, decide (:func:`should_send`), render it once and count the attempt.

    Runs in the caller's transaction: :func:`send_email`'s own, or the one that
    starts the job (:func:`dunning.engine.runner.run_job`), saving a transaction.
    """
    outbox = session.get(Outbox, job.outbox_id, with_for_update=True, populate_existing=True)
    if outbox is None:
        raise PermanentJobError(f"outbox row {job.outbox_id} not found")
    return prepare_row(rt, session, job, outbox)


def prepare_row(
    rt: Runtime, session: Session, job: Job, outbox: Outbox, *, count_attempt: bool = True
) -> Ready | Result:
    """:func:`prepare_email` for a row its caller has locked already (a batch locks many in one statement).

    ``count_attempt=False``: the caller counts the attempt itself (a batch, in one statement).
    """
    decided = should_send(rt, session, outbox, job)
    if decided is not None:
        return decided
    owner = notice_owner(outbox.kind)
    assert owner is not None and owner.render_notice is not None  # should_send checked both
    owner.render_notice(rt, session, outbox, rt.clock.now())  # once: a filled row keeps its words
    if count_attempt:
        outbox.attempts += 1
    return Ready(
        outbox_id=outbox.id,
        kind=outbox.kind,
        rendered=RenderedEmail(subject=outbox.subject, html=outbox.html, text=outbox.text),
        to=outbox.to_email,
        to_name=delivery.recipient_name(session, outbox),
        message_id=outbox.message_id,
        headers=_headers(rt.settings, outbox, delivery.headers(rt, outbox, rt.clock.now())),
        date=outbox.send_after,
    )


def send_email(rt: Runtime, job: Job) -> Result:
    """Deliver one outbox email, at most once (the job handler; :func:`deliver` does the sending)."""
    with transaction(rt.sessions) as session:
        ready = prepare_email(rt, session, job)
    return ready if isinstance(ready, tuple) else deliver(rt, job, ready)


def _message_args(rt: Runtime, ready: Ready) -> dict[str, Any]:
    """What ``wire_message`` and ``build_message`` both take besides the rendered email."""
    return {
        "to": ready.to,
        "sender": rt.settings.mail_from,
        "message_id": ready.message_id,
        "headers": ready.headers,
        "date": ready.date,
        "to_name": ready.to_name,
    }


def deliver(rt: Runtime, job: Job, ready: Ready) -> Result:
    """Send a prepared row, at most once, and commit its outcome with its job's end.

    ``pending`` -> ``sending`` is committed at the sender's point of no return (for
    SMTP: after the server's 354, before the body's final dot). A run that dies
    before it leaves the row ``pending`` and the next run sends it; a run that dies
    after it leaves ``sending``, which nobody can resolve without the mail server's
    log, so the next run parks it as ``unknown`` for ops instead of risking a
    second copy in the customer's inbox. The mark and the outcome are committed
    together with other threads' (:mod:`.outbox_commits`, which says why that keeps
    each email's own point of no return).
    """
    # Built outside any transaction: no row lock is held while the message is assembled. The
    # SMTP sender takes the bytes written directly (the same bytes, a fraction of the CPU).
    send_wire = getattr(rt.sender, "send_wire", None)
    args = _message_args(rt, ready)
    wire = wire_message(ready.rendered, **args) if send_wire is not None else None
    message = build_message(ready.rendered, **args) if wire is None else None
    outbox_id, kind = ready.outbox_id, ready.kind
    marked = False

    def commit_point() -> None:
        # Called again when the sender retries after a definite refusal (e.g. 451 to
        # the body): the row is already ours.
        nonlocal marked
        if marked:
            return
        if not mark_sending(rt, outbox_id):
            raise _Superseded()
        marked = True

    try:
        if wire is not None:
            send_wire(wire, commit_point=commit_point)
        else:
            assert message is not None
            rt.sender.send(message, commit_point=commit_point)
    except _Superseded:
        with transaction(rt.sessions) as session:
            finish(session, job, note="another run sent it")
        telemetry.inc(telemetry.EMAIL_DELIVERIES, kind, "superseded")
        return "superseded", []
    except TransientSendError as exc:
        settle(rt, outbox_id, job.id, "pending", str(exc)[:500], owned=marked)
        telemetry.inc(telemetry.EMAIL_DELIVERIES, kind, "transient_failure")
        raise
    except PermanentSendError as exc:
        settle(rt, outbox_id, job.id, "failed", f"permanent SMTP failure: {exc}"[:500], owned=marked)
        telemetry.inc(telemetry.EMAIL_DELIVERIES, kind, "permanent_failure")
        if exc.about_address:
            delivery.bounced(rt, outbox_id, exc)
        else:
            delivery.refused(rt, outbox_id, exc)
        return "failed", []
    except AmbiguousSendError as exc:
        note = f"parked: {exc}; check the mail server's log, then requeue or purge"[:500]
        settle(rt, outbox_id, job.id, "unknown", note, owned=marked)
        telemetry.inc(telemetry.EMAIL_DELIVERIES, kind, "unknown")
        return "unknown", []
    settle(rt, outbox_id, job.id, "sent", None, owned=marked)
    telemetry.inc(telemetry.EMAIL_DELIVERIES, kind, "sent")
    return "sent", []
