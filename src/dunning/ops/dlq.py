"""Dead letters for ``dunning dlq``: filtered lists, and requeue and purge recorded in the audit."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import TYPE_CHECKING, Any

from dunning.broker.names import ACTOR_FOR_QUEUE
from dunning.engine.jobs import wall_now
from dunning.ops.audit import record
from dunning.store.db import transaction
from dunning.store.dead_letters import Parked, list_parked, purge, requeue

if TYPE_CHECKING:
    from dunning.runtime import Runtime


@dataclass(frozen=True)
class DlqFilter:
    """What ``dunning dlq list`` keeps; every given criterion must hold."""

    queue: str | None = None
    #: A message's actor, or a parked job's kind (or the actor that runs its queue).
    actor: str | None = None
    #: Substring of the reason, case-insensitive.
    reason: str | None = None
    older_than: timedelta | None = None
    newer_than: timedelta | None = None

    def keeps(self, p: Parked, now: datetime) -> bool:
        """Whether ``p`` passes (ages against wall time ``now``: dead letters carry wall times)."""
        if self.queue is not None and p.queue != self.queue:
            return False
        if self.actor is not None and self.actor not in _actors(p):
            return False
        if self.reason is not None and self.reason.casefold() not in p.reason.casefold():
            return False
        age = now - p.at
        if self.older_than is not None and age < self.older_than:
            return False
        return not (self.newer_than is not None and age > self.newer_than)


def _actors(p: Parked) -> set[str]:
    if p.source == "message":
        return {p.what}
    kind = p.what.split(" ", 1)[0]
    return {kind, ACTOR_FOR_QUEUE.get(p.queue, "")} - {""}


def find(rt: Runtime, filt: DlqFilter, *, include_requeued: bool = False, limit: int = 200) -> list[Parked]:
    """Dead letters passing ``filt``, newest first, at most ``limit``."""
    now = wall_now()
    items = list_parked(rt, include_requeued=include_requeued, limit=100_000)
    return [p for p in items if filt.keeps(p, now)][:limit]


def parked_json(p: Parked) -> dict[str, Any]:
    """One dead letter as JSON."""
    return {
        "ref": p.ref,
        "source": p.source,
        "at": p.at.isoformat(),
        "queue": p.queue,
        "what": p.what,
        "field": p.field,
        "reason": p.reason,
    }


def requeue_audited(rt: Runtime, ref: str, send: Any, *, by: str) -> str:
    """Requeue one dead letter (:func:`dunning.store.dead_letters.requeue`), then record who did it."""
    said = requeue(rt, ref, send)
    with transaction(rt.sessions) as session:
        record(session, by=by, action="dlq.requeue", target=ref, detail=said)
    return said


def purge_audited(rt: Runtime, ref: str | None, *, by: str) -> int:
    """Purge one dead letter or all (``ref`` None), and record who did it and how many went."""
    n = purge(rt, ref)
    with transaction(rt.sessions) as session:
        record(session, by=by, action="dlq.purge", target=ref or "all", detail=f"{n} purged")
    return n
