"""Dead letters: refused or abandoned messages, and parked jobs, for ops to inspect and requeue."""

from __future__ import annotations

import json
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

from sqlalchemy import delete, select, update

from dunning.errors import DunningError
from dunning.store.db import dialect_insert, transaction
from dunning.store.models import DeadLetter, Job, Outbox

if TYPE_CHECKING:
    from dunning.runtime import Runtime

#: ``error_type`` of bytes a worker fetched that were not a Dramatiq message (parked by the broker's
#: consumer, :mod:`dunning.broker`): the payload is those bytes, escaped, and cannot be re-sent.
NOT_A_MESSAGE = "NotAMessage"


class CannotRequeue(DunningError, ValueError):
    """A parked message that cannot be sent again; the text (one line) says why and what to do."""


def park(rt: Runtime, row: dict[str, Any]) -> None:
    """Keep a failed message (once per message id: a re-park updates the reason)."""
    with transaction(rt.sessions) as session:
        insert = dialect_insert(session)
        stmt = insert(DeadLetter).values(**row, requeued_at=None)
        stmt = stmt.on_conflict_do_update(
            index_elements=["message_id"],
            set_={
                "reason": row["reason"],
                "field": row["field"],
                "parked_at": row["parked_at"],
                "requeued_at": None,
            },
        )
        session.execute(stmt)


@dataclass(frozen=True)
class Parked:
    """One line of ``dunning dlq list``: a dead message (``m<id>``) or a dead job (``j<id>``)."""

    ref: str
    source: str
    queue: str
    what: str
    field: str | None
    reason: str
    at: datetime
    payload: str | None


def list_parked(rt: Runtime, *, include_requeued: bool = False, limit: int = 200) -> list[Parked]:
    """Dead messages and dead jobs, newest first."""
    with rt.sessions() as session:
        stmt = select(DeadLetter).order_by(DeadLetter.parked_at.desc()).limit(limit)
        if not include_requeued:
            stmt = stmt.where(DeadLetter.requeued_at.is_(None))
        items = [
            Parked(f"m{d.id}", "message", d.queue, d.actor, d.field, d.reason, d.parked_at, d.payload)
            for d in session.execute(stmt).scalars()
        ]
        jobs = session.execute(
            select(Job).where(Job.status == "dead").order_by(Job.finished_at.desc()).limit(limit)
        ).scalars()
        items += [
            Parked(
                f"j{j.id}",
                "job",
                j.queue,
                f"{j.kind} {j.key}",
                None,
                j.last_error or "",
                j.finished_at or j.created_at,
                json.dumps(j.payload) if j.payload else None,
            )
            for j in jobs
        ]
    return sorted(items, key=lambda p: p.at, reverse=True)[:limit]


def get_parked(rt: Runtime, ref: str) -> Parked:
    """One parked item by reference (``m12`` or ``j34``); KeyError if there is none."""
    for item in list_parked(rt, include_requeued=True, limit=100_000):
        if item.ref == ref:
            return item
    raise KeyError(ref)


def requeue(rt: Runtime, ref: str, send: Any) -> str:
    """Put a parked item back: a message is re-sent as is, a job goes back to pending.

    ``send(queue, actor, args, kwargs)`` enqueues a message (the CLI passes the broker's).
    """
    kind, ident = ref[:1], int(ref[1:])
    with transaction(rt.sessions) as session:
        if kind == "m":
            dead = session.get(DeadLetter, ident, with_for_update=True)
            if dead is None:
                raise KeyError(ref)
            original = _resendable(ref, dead)
            send(original["queue_name"], original["actor_name"], original["args"], original["kwargs"])
            dead.requeued_at = datetime.now(UTC)
            return f"message {dead.message_id} re-sent to {dead.queue}"
        if kind == "j":
            result = session.execute(
                update(Job)
                .where(Job.id == ident, Job.status == "dead")
                .values(
                    status="pending",
                    claims=0,
                    runs=0,
                    crashes=0,
                    retry_at=None,
                    lease_until=None,
                    last_error=None,
                )
            )
            if not result.rowcount:
                raise KeyError(ref)
            job = session.get(Job, ident)
            if job is not None and job.outbox_id is not None:
                # Ops decided to resend an email whose delivery was unknown.
                session.execute(
                    update(Outbox)
                    .where(Outbox.id == job.outbox_id, Outbox.status.in_(("unknown", "sending")))
                    .values(status="pending")
                )
            return f"job {ident} back to pending"
    raise KeyError(ref)


def _resendable(ref: str, dead: DeadLetter) -> dict[str, Any]:
    """The original message of a dead letter, if it is one that can be sent again."""
    if dead.error_type == NOT_A_MESSAGE:
        raise CannotRequeue(
            f"{ref} cannot be requeued, it is {dead.reason} (nothing to re-send): "
            f"fix its producer, then `dunning dlq purge {ref}`"
        )
    try:
        original = json.loads(dead.payload)
    except ValueError:
        original = None
    if not (
        isinstance(original, dict)
        and isinstance(original.get("queue_name"), str)
        and isinstance(original.get("actor_name"), str)
        and isinstance(original.get("args"), list)
        and isinstance(original.get("kwargs"), dict)
    ):
        raise CannotRequeue(f"{ref} cannot be requeued: its payload is not a message to re-send")
    return original


def purge(rt: Runtime, ref: str | None = None) -> int:
    """Delete parked messages (one, or all); dead jobs are marked canceled, not deleted."""
    with transaction(rt.sessions) as session:
        if ref is None:
            n = session.execute(delete(DeadLetter)).rowcount or 0
            n += (
                session.execute(update(Job).where(Job.status == "dead").values(status="canceled")).rowcount
                or 0
            )
            return n
        kind, ident = ref[:1], int(ref[1:])
        if kind == "m":
            return session.execute(delete(DeadLetter).where(DeadLetter.id == ident)).rowcount or 0
        return (
            session.execute(
                update(Job).where(Job.id == ident, Job.status == "dead").values(status="canceled")
            ).rowcount
            or 0
        )
