"""Crash recovery rules, as pure functions of heartbeats, runs and a wall clock.

Which workers are dead, which runs they stranded, and what a run that died
means for its job or message. The scheduler loads the facts (``workers`` and
``jobs`` rows, the messages a dead worker had fetched from Redis), asks these
functions, and writes the answers. Nothing here does I/O.
"""

from __future__ import annotations

from collections.abc import Collection, Iterable
from dataclasses import dataclass
from datetime import datetime, timedelta


@dataclass(frozen=True)
class Beat:
    """A worker process's last heartbeat (wall time)."""

    worker_id: str
    at: datetime


@dataclass(frozen=True)
class Run:
    """What the job table says about a job that is claimed (sent to the workers)."""

    job_id: int
    #: The worker answerable for the current claim: the one running it (recorded when a run
    #: starts), or, for a job created already due (``runs == 0``), the one whose transaction
    #: created it and that sends its message after commit. None when the scheduler sent it.
    worker_id: str | None
    claims: int  # deliveries sent
    runs: int  # deliveries that started
    alone: bool  # only an alone run may start it
    crashes: int  # alone runs that died

    @property
    def started(self) -> bool:
        """A run started since the job was last sent and has not ended (the job is still claimed).

        The worker id says so (a run records it when it starts; sending the job again clears
        it). ``runs < claims`` does not say the opposite: a delivery can be sent again while
        an older copy is still on its way, and that copy may be the one that starts. Without
        a worker id (a run outside any registered worker) ``runs >= claims`` is all we know.
        """
        return self.runs >= self.claims or (self.worker_id is not None and self.runs > 0)

    @property
    def unsent(self) -> bool:
        """Created already due by a worker that was to send its message after commit, never started."""
        return self.worker_id is not None and self.runs == 0


def dead_workers(beats: Iterable[Beat], *, now: datetime, dead_after_s: float) -> list[str]:
    """Workers whose last heartbeat is ``dead_after_s`` or more before ``now``, oldest first.

    A live worker beats every ``Tuning.heartbeat_s`` from a thread of its own,
    whatever its actors are doing, so silence means the process is gone (or
    frozen whole, which the at-least-once rules already have to survive).
    """
    limit = now - timedelta(seconds=dead_after_s)
    return [b.worker_id for b in sorted(beats, key=lambda b: b.at) if b.at <= limit]


def stranded(runs: Iterable[Run], dead: Collection[str]) -> list[Run]:
    """The started, unfinished runs of dead workers: to release now rather than at their lease."""
    return [r for r in runs if r.started and r.worker_id is not None and r.worker_id in dead]


def unsent(runs: Iterable[Run], dead: Collection[str]) -> list[Run]:
    """Jobs a dead worker created already due and may have died before sending: to send now."""
    return [r for r in runs if r.unsent and r.worker_id in dead]


def stranded_runs(
    runs: Iterable[Run], beats: Iterable[Beat], *, now: datetime, dead_after_s: float
) -> list[Run]:
    """Runs to release at ``now``, given every worker's last heartbeat.

    A run whose worker has no heartbeat row at all is left to its lease: the row
    is deleted only once its worker has been recovered (or stopped cleanly),
    and a worker that comes back from a freeze writes its row again.
    """
    return stranded(runs, set(dead_workers(beats, now=now, dead_after_s=dead_after_s)))


@dataclass(frozen=True)
class Verdict:
    """What to do with work whose run died: send it again (alone from now on), or park it."""

    park: bool
    alone: bool
    crashes: int


def after_death(*, ran_alone: bool, crashes: int, max_crashes: int) -> Verdict:
    """The one crash rule, for jobs and for messages alike.

    A run that died beside other work proves nothing: any of them, or a kill
    from outside, may have been the cause. So the work is only marked to run
    alone next time, without counting. A run that died alone is counted, and
    the work is parked once ``max_crashes`` alone runs died.
    """
    if not ran_alone:
        return Verdict(park=False, alone=True, crashes=crashes)
    counted = crashes + 1
    return Verdict(park=counted >= max_crashes, alone=True, crashes=counted)
