"""Sending one outbox email, at most once: the engine's ``send_email`` job, for every workflow.

The workflow that wrote the notice says whether it is still true now
(:attr:`~dunning.engine.registry.Workflow.stale`) and fills its words from
the facts of this moment (:attr:`~dunning.engine.registry.Workflow.render_notice`);
this module owns the delivery and its point of no return.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from sqlalchemy import update

from dunning import telemetry
from dunning.engine import delivery
from dunning.engine.jobs import finish
from dunning.engine.pauses import hold, paused
from dunning.engine.registry import Result, notice_owner
from dunning.errors import PermanentJobError
from dunning.mail.message import KIND_HEADER, NOTICE_HEADER, build_message
from dunning.mail.render import RenderedEmail
from dunning.mail.sending import AmbiguousSendError, PermanentSendError, TransientSendError
from dunning.store.db import transaction
from dunning.store.models import Job, Outbox

if TYPE_CHECKING:
    from email.message import EmailMessage

    from dunning.runtime import Runtime
    from dunning.settings import Settings


def outbox_message(
    settings: Settings,
    outbox: Outbox,
    *,
    headers: dict[str, str] | None = None,
    to_name: str | None = None,
) -> EmailMessage:
    """The email of a rendered outbox row, as :func:`send_email` hands it to the sender.

    ``dunning emails preview`` builds its sample through here too, so a preview is what a customer gets.
    ``headers``: more headers (a prompt's List-Unsubscribe); ``to_name``: the customer's name for ``To:``.
    """
    reply_to = {"Reply-To": settings.mail_reply_to} if settings.mail_reply_to else {}
    return build_message(
        RenderedEmail(subject=outbox.subject or "", html=outbox.html or "", text=outbox.text or ""),
        to=outbox.to_email,
        sender=settings.mail_from,
        message_id=outbox.message_id,
        headers={NOTICE_HEADER: outbox.key, KIND_HEADER: outbox.kind, **reply_to, **(headers or {})},
        date=outbox.send_after,
        to_name=to_name,
    )


class _Superseded(Exception):
    """Another run reached the point of no return first; this one must not send."""


def send_email(rt: Runtime, job: Job) -> Result:
    """Deliver one outbox email, at most once.

    ``pending`` -> ``sending`` is committed at the sender's point of no return (for
    SMTP: after the server's 354, before the body's final dot). A run that dies
    before it leaves the row ``pending`` and the next run sends it; a run that dies
    after it leaves ``sending``, which nobody can resolve without the mail server's
    log, so the next run parks it as ``unknown`` for ops instead of risking a
    second copy in the customer's inbox.
    """
    with transaction(rt.sessions) as session:
        outbox = session.get(Outbox, job.outbox_id, with_for_update=True, populate_existing=True)
        if outbox is None:
            raise PermanentJobError(f"outbox row {job.outbox_id} not found")
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
            raise PermanentJobError(
                f"outbox row {outbox.id}: no workflow writes notices of kind {outbox.kind!r}"
            )
        if owner.stale is not None and owner.stale(rt, session, outbox, rt.clock.now()) is not None:
            outbox.status = "skipped"
            finish(session, job)
            telemetry.inc(telemetry.EMAIL_DELIVERIES, outbox.kind, "skipped")
            return "skipped", []
        if (held := delivery.hold(rt, session, outbox, job, rt.clock.now())) is not None:
            telemetry.inc(telemetry.EMAIL_DELIVERIES, outbox.kind, held)
            return held, []
        if owner.render_notice is None:
            raise PermanentJobError(f"outbox row {outbox.id}: workflow {owner.name} renders no notices")
        owner.render_notice(rt, session, outbox, rt.clock.now())
        outbox.attempts += 1
        message = outbox_message(
            rt.settings,
            outbox,
            headers=delivery.headers(rt, outbox, rt.clock.now()),
            to_name=delivery.recipient_name(session, outbox),
        )
        outbox_id, kind = outbox.id, outbox.kind

    marked = False

    def commit_point() -> None:
        # Called again when the sender retries after a definite refusal (e.g. 451 to
        # the body): the row is already ours.
        nonlocal marked
        if marked:
            return
        with transaction(rt.sessions) as session:
            moved = session.execute(
                update(Outbox)
                .where(Outbox.id == outbox_id, Outbox.status == "pending")
                .values(status="sending")
            ).rowcount
        if not moved:
            raise _Superseded()
        marked = True

    def settle(status: str, error: str | None) -> None:
        with transaction(rt.sessions) as session:
            row = session.get(Outbox, outbox_id, populate_existing=True)
            assert row is not None
            row.status, row.last_error = status, error
            if status == "sent":
                row.sent_at = rt.clock.now()
            if status != "pending":
                finish(session, job, status="dead" if status == "unknown" else "done", note=error)

    try:
        rt.sender.send(message, commit_point=commit_point)
    except _Superseded:
        with transaction(rt.sessions) as session:
            finish(session, job, note="another run sent it")
        telemetry.inc(telemetry.EMAIL_DELIVERIES, kind, "superseded")
        return "superseded", []
    except TransientSendError as exc:
        settle("pending", str(exc)[:500])
        telemetry.inc(telemetry.EMAIL_DELIVERIES, kind, "transient_failure")
        raise
    except PermanentSendError as exc:
        settle("failed", f"permanent SMTP failure: {exc}"[:500])
        telemetry.inc(telemetry.EMAIL_DELIVERIES, kind, "permanent_failure")
        delivery.bounced(rt, outbox_id, exc)
        return "failed", []
    except AmbiguousSendError as exc:
        settle("unknown", f"parked: {exc}; check the mail server's log, then requeue or purge"[:500])
        telemetry.inc(telemetry.EMAIL_DELIVERIES, kind, "unknown")
        return "unknown", []
    settle("sent", None)
    telemetry.inc(telemetry.EMAIL_DELIVERIES, kind, "sent")
    return "sent", []
