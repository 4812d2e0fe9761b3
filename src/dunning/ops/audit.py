"""The audit of what operators did: who (``--by``, the OS user by default) and when (wall time)."""

from __future__ import annotations

import getpass
from dataclasses import dataclass
from datetime import datetime
from typing import TYPE_CHECKING, Any

from sqlalchemy import select

from dunning.engine.jobs import wall_now
from dunning.store.ops_models import OpsAudit

if TYPE_CHECKING:
    from sqlalchemy.orm import Session

    from dunning.runtime import Runtime


def default_operator() -> str:
    """The OS user running the command (``getpass.getuser``), or ``unknown`` if there is none."""
    try:
        return getpass.getuser() or "unknown"
    except Exception:  # no login name (a container without a passwd entry): still audited
        return "unknown"


def record(session: Session, *, by: str, action: str, target: str, detail: str | None = None) -> None:
    """Add one audit line, in the caller's transaction (so the action and its record commit together)."""
    session.add(OpsAudit(at=wall_now(), by=by[:255], action=action, target=target[:255], detail=detail))


@dataclass(frozen=True)
class AuditEntry:
    """One line of ``dunning dlq audit``."""

    id: int
    at: datetime
    by: str
    action: str
    target: str
    detail: str | None

    def to_json(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "at": self.at.isoformat(),
            "by": self.by,
            "action": self.action,
            "target": self.target,
            "detail": self.detail,
        }


def list_audit(rt: Runtime, *, limit: int = 200, actions: tuple[str, ...] = ()) -> list[AuditEntry]:
    """The newest audit lines first (only ``actions``, if given)."""
    stmt = select(OpsAudit).order_by(OpsAudit.at.desc(), OpsAudit.id.desc()).limit(limit)
    if actions:
        stmt = stmt.where(OpsAudit.action.in_(actions))
    with rt.sessions() as s:
        return [AuditEntry(a.id, a.at, a.by, a.action, a.target, a.detail) for a in s.execute(stmt).scalars()]
