"""``dunning scheduler --dry-run``: what the next scheduler pass would enqueue, claiming nothing.

The same conditions as :func:`dunning.engine.jobs.claim_due`, read without locks or writes:
due pending jobs not backing off (oldest due first), and claimed jobs whose lease ran out
(which a pass sends again, or releases if their run had started).
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import TYPE_CHECKING, Any

from sqlalchemy import or_, select

from dunning.engine.jobs import wall_now
from dunning.store.models import Job

if TYPE_CHECKING:
    from dunning.runtime import Runtime


@dataclass(frozen=True)
class WouldEnqueue:
    """One job the next pass would send, and why."""

    job_id: int
    kind: str
    key: str
    queue: str
    due_at: datetime
    #: ``due``, or ``lease expired`` (claimed before, its message or worker lost).
    why: str

    def to_json(self) -> dict[str, Any]:
        return {
            "job_id": self.job_id,
            "kind": self.kind,
            "key": self.key,
            "queue": self.queue,
            "due_at": self.due_at.isoformat(),
            "why": self.why,
        }


def preview(rt: Runtime, *, batch: int = 500) -> list[WouldEnqueue]:
    """Up to ``batch`` due jobs, then up to ``batch`` expired leases, as one pass would take them."""
    now, wall = rt.clock.now(), wall_now()
    cols = (Job.id, Job.kind, Job.key, Job.queue, Job.due_at)
    with rt.sessions() as s:
        due = s.execute(
            select(*cols)
            .where(
                Job.status == "pending",
                Job.due_at <= now,
                or_(Job.retry_at.is_(None), Job.retry_at <= wall),
            )
            .order_by(Job.due_at, Job.id)
            .limit(batch)
        ).all()
        expired = s.execute(
            select(*cols)
            .where(Job.status == "claimed", Job.lease_until < wall)
            .order_by(Job.lease_until)
            .limit(batch)
        ).all()
    return [WouldEnqueue(*r, why="due") for r in due] + [
        WouldEnqueue(*r, why="lease expired") for r in expired
    ]
