"""``dunning pause`` / ``dunning resume``: hold the sending of notice kinds, then let them go.

The state is in the database (``paused_kinds``), read by every send
(:mod:`dunning.engine.pauses`), so it holds across every worker and restart.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import TYPE_CHECKING

from sqlalchemy import delete, select, update

from dunning.engine.jobs import wall_now
from dunning.engine.pauses import ALL_KINDS, HELD_PREFIX, hold, paused
from dunning.engine.registry import workflows
from dunning.ops.audit import record
from dunning.store.db import dialect_insert, transaction
from dunning.store.models import Job, Outbox
from dunning.store.ops_models import PausedKind

if TYPE_CHECKING:
    from dunning.runtime import Runtime

__all__ = ["HELD_PREFIX", "Pause", "hold", "notice_kinds", "pause", "paused", "paused_kinds", "resume"]


def notice_kinds() -> list[str]:
    """Every notice kind a workflow writes (what ``dunning pause`` accepts, besides ``all``)."""
    return sorted({k for w in workflows() for k in w.notice_kinds})


def _kind(kind: str) -> str:
    if kind == "all":
        return ALL_KINDS
    if kind not in notice_kinds():
        raise ValueError(f"unknown notice kind {kind!r}; kinds are all, {', '.join(notice_kinds())}")
    return kind


@dataclass(frozen=True)
class Pause:
    """A kind on hold (``all`` for every kind), since when and by whom."""

    kind: str
    since: datetime
    by: str


def paused_kinds(rt: Runtime) -> list[Pause]:
    """What is on hold now."""
    with rt.sessions() as s:
        rows = s.execute(select(PausedKind).order_by(PausedKind.kind)).scalars()
        return [Pause("all" if r.kind == ALL_KINDS else r.kind, r.paused_at, r.paused_by) for r in rows]


def pause(rt: Runtime, kind: str, *, by: str) -> bool:
    """Hold ``kind`` (or ``all``); False if it already was. ValueError for an unknown kind."""
    key = _kind(kind)
    with transaction(rt.sessions) as session:
        insert = dialect_insert(session)
        done = session.execute(
            insert(PausedKind)
            .values(kind=key, paused_at=wall_now(), paused_by=by[:255])
            .on_conflict_do_nothing(index_elements=["kind"])
            .returning(PausedKind.kind)
        ).first()
        if done:
            record(session, by=by, action="pause", target=kind)
    return done is not None


def resume(rt: Runtime, kind: str, *, by: str) -> tuple[bool, int]:
    """Free ``kind`` (``all`` frees every pause); held sends no longer paused become due now.

    Returns (whether anything was paused, held sends released).
    """
    key = _kind(kind)
    now = rt.clock.now()
    with transaction(rt.sessions) as session:
        stmt = delete(PausedKind)
        if key != ALL_KINDS:
            stmt = stmt.where(PausedKind.kind == key)
        freed = session.execute(stmt).rowcount or 0
        held = session.execute(
            select(Job.id, Outbox.kind)
            .join(Outbox, Outbox.id == Job.outbox_id)
            .where(Job.status == "pending", Job.last_error.like(f"{HELD_PREFIX}%"))
        ).all()
        still = {k for k in {r.kind for r in held} if paused(session, k)}
        ids = [r.id for r in held if r.kind not in still]
        released = 0
        if ids:
            released = (
                session.execute(
                    update(Job)
                    .where(Job.id.in_(ids), Job.status == "pending")
                    .values(due_at=now, last_error=None)
                ).rowcount
                or 0
            )
        if freed or released:
            record(session, by=by, action="resume", target=kind, detail=f"{released} held sends released")
    return bool(freed), released
