"""Tables of what operators do: notice kinds on hold (``dunning pause``) and the audit of their actions.

Kept apart from :mod:`.models` (imported at its end, so ``Base.metadata`` holds them).
"""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import Integer, String, Text
from sqlalchemy.orm import Mapped, mapped_column

from dunning.store.models import Base, UtcDateTime


class PausedKind(Base):
    """A notice kind whose sending is on hold (``dunning pause``); ``*`` holds every kind."""

    __tablename__ = "paused_kinds"

    kind: Mapped[str] = mapped_column(String(40), primary_key=True)
    paused_at: Mapped[datetime] = mapped_column(UtcDateTime)  # wall time
    paused_by: Mapped[str] = mapped_column(String(255))


class OpsAudit(Base):
    """What an operator did (requeue, purge, pause, resume), who did it and when (wall time)."""

    __tablename__ = "ops_audit"

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    at: Mapped[datetime] = mapped_column(UtcDateTime, index=True)
    by: Mapped[str] = mapped_column(String(255))
    action: Mapped[str] = mapped_column(String(40))
    target: Mapped[str] = mapped_column(String(255))
    detail: Mapped[str | None] = mapped_column(Text)
