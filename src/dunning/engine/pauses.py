"""Notice kinds on hold (``dunning pause``): their sends wait, and go when resumed.

An email send whose kind is paused is not failed and not dropped: its job goes back to
``pending``, due again :data:`HOLD_RECHECK` later (business time), marked with
:data:`HELD_PREFIX`. ``dunning resume`` makes the held sends of the kinds it frees due at
once; each then checks, as every send does, whether its notice is still true (a held
reminder for an invoice paid meanwhile is dropped, not sent late).
"""

from __future__ import annotations

from datetime import datetime, timedelta
from typing import TYPE_CHECKING

from sqlalchemy import or_, select, update

from dunning.engine.send_facts import facts_of
from dunning.store.models import Job
from dunning.store.ops_models import PausedKind

if TYPE_CHECKING:
    from sqlalchemy.orm import Session

#: ``paused_kinds.kind`` that holds every notice kind.
ALL_KINDS = "*"
#: ``jobs.last_error`` of a send on hold begins with this.
HELD_PREFIX = "held: "
#: A held send looks again this long after (business time), should it miss its resume.
HOLD_RECHECK = timedelta(hours=1)


def paused(session: Session, kind: str) -> bool:
    """Whether notices of ``kind`` are on hold (by their own pause, or by ``all``)."""
    facts = facts_of(session)
    if facts is not None:  # a batch of sends loaded the paused kinds once for all of them
        return kind in facts.paused or ALL_KINDS in facts.paused
    found = session.execute(
        select(PausedKind.kind).where(or_(PausedKind.kind == kind, PausedKind.kind == ALL_KINDS)).limit(1)
    ).first()
    return found is not None


def hold(session: Session, job: Job, kind: str, now: datetime) -> None:
    """Put a claimed send back to ``pending`` without counting the run (it did not fail)."""
    session.execute(
        update(Job)
        .where(Job.id == job.id)
        .values(
            status="pending",
            due_at=now + HOLD_RECHECK,
            lease_until=None,
            retry_at=None,
            claims=Job.claims - 1,
            runs=Job.runs - 1,
            last_error=f"{HELD_PREFIX}notices of kind {kind} are paused",
        )
    )
