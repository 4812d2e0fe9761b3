"""Buffered writes: jobs, outbox rows and timeline lines of one transaction, written at commit.

Appending rows one ORM object at a time costs a statement each (and a multi-row
VALUES is compiled anew every time). The unit buffers them and, just before
the commit, writes each table with one cached ``executemany`` statement. The
ingest path's group commit puts many events in one transaction, so the same
statements then carry the rows of all of them.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import event
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.orm import Session, sessionmaker

from dunning.services.jobs import Dispatch, wall_now
from dunning.store.models import Job, Outbox, TimelineEntry

_JOB_DEFAULTS: dict[str, Any] = {
    "claims": 0,
    "runs": 0,
    "crashes": 0,
    "retry_at": None,
    "case_id": None,
    "outbox_id": None,
    "payload": None,
    "lease_until": None,
    "finished_at": None,
    "last_error": None,
}


class Unit:
    """The buffered writes of one session's transaction."""

    def __init__(self, lease_s: float) -> None:
        self.lease_s = lease_s
        self.jobs: list[dict[str, Any]] = []
        self.outbox: list[dict[str, Any]] = []
        self.timeline: list[dict[str, Any]] = []
        self.dispatch: list[Dispatch] = []
        # Cases created in this transaction: none of their jobs is stored yet, so cancelling
        # means filtering the buffer, not an UPDATE.
        self.new_cases: set[int] = set()

    # -- buffering ---------------------------------------------------------------

    def add_timeline(
        self, subscription_id: str, case_id: int | None, at: datetime, kind: str, detail: str
    ) -> None:
        self.timeline.append(
            {"subscription_id": subscription_id, "case_id": case_id, "at": at, "kind": kind, "detail": detail}
        )

    def add_jobs(self, rows: Sequence[dict[str, Any]], *, now: datetime) -> None:
        """Buffer jobs; those already due go in claimed and are enqueued after commit."""
        wall = wall_now()
        for row in rows:
            job = {**_JOB_DEFAULTS, "created_at": wall, **row}
            if job["due_at"] <= now:
                job.update(status="claimed", claims=1, lease_until=wall + timedelta(seconds=self.lease_s))
            else:
                job["status"] = "pending"
            self.jobs.append(job)

    def add_outbox(self, row: dict[str, Any], send_job: dict[str, Any], *, now: datetime) -> None:
        """Buffer an email and its send job (whose ``outbox_id`` is known only once inserted)."""
        self.outbox.append(row)
        self.add_jobs([{**send_job, "outbox_key": row["key"]}], now=now)

    def cancel(
        self,
        case_id: int,
        kinds: Sequence[str],
        *,
        scheduled_retries_only: bool = False,
        keep: Sequence[str] = (),
    ) -> None:
        """Drop buffered pending jobs the way the matching UPDATE cancels stored ones."""

        def doomed(job: dict[str, Any]) -> bool:
            if job["case_id"] != case_id or job["status"] != "pending" or job["kind"] not in kinds:
                return False
            if scheduled_retries_only:
                return job["payload"] is None and job["key"] not in keep
            return True

        self.jobs = [j for j in self.jobs if not doomed(j)]

    # -- writing -----------------------------------------------------------------

    def flush(self, session: Session) -> None:
        """Write everything buffered (called just before commit)."""
        insert = (postgresql if session.get_bind().dialect.name == "postgresql" else sqlite).insert
        outbox_ids: dict[str, int] = {}
        if self.outbox:
            rows = session.execute(
                insert(Outbox)
                .on_conflict_do_nothing(index_elements=["key"])
                .returning(Outbox.key, Outbox.id, sort_by_parameter_order=True),
                self.outbox,
            ).all()
            outbox_ids = {r.key: r.id for r in rows}
            self.outbox = []
        jobs: list[dict[str, Any]] = []
        for job in self.jobs:
            key = job.pop("outbox_key", None)
            if key is not None:
                if key not in outbox_ids:
                    continue  # the email already existed: its send job does too
                job["outbox_id"] = outbox_ids[key]
            jobs.append(job)
        self.jobs = []
        due = [j for j in jobs if j["status"] == "claimed"]
        later = [j for j in jobs if j["status"] != "claimed"]
        if later:
            session.execute(insert(Job).on_conflict_do_nothing(index_elements=["key"]), later)
        if due:
            rows = session.execute(
                insert(Job)
                .on_conflict_do_nothing(index_elements=["key"])
                .returning(Job.id, Job.queue, sort_by_parameter_order=True),
                due,
            ).all()
            self.dispatch.extend(Dispatch(r.queue, r.id) for r in rows)
        if self.timeline:
            session.execute(insert(TimelineEntry), self.timeline)
            self.timeline = []


def unit_of(session: Session) -> Unit:
    """The unit of the session's current transaction."""
    unit = session.info.get("unit")
    if unit is None:
        unit = session.info["unit"] = Unit(session.info.get("lease_s", 300.0))
    return unit


def dispatch_of(session: Session) -> list[Dispatch]:
    """Messages to send now that the session's transaction has committed."""
    unit = session.info.get("unit")
    return list(unit.dispatch) if unit is not None else []


def install(factory: sessionmaker[Session], *, lease_s: float) -> None:
    """Make sessions from ``factory`` flush their unit before every commit."""
    factory.configure(info={"lease_s": lease_s})

    @event.listens_for(factory, "before_commit")
    def _flush(session: Session) -> None:
        unit = session.info.get("unit")
        if unit is not None:
            unit.flush(session)


@contextmanager
def collecting(factory: sessionmaker[Session], sink: list[Dispatch]) -> Iterator[Session]:
    """A transaction whose after-commit messages are appended to ``sink``.

    ``sink`` is extended on exit, so ``return outcome, sink`` from inside the
    block hands the caller a list that is complete once the commit is done.
    """
    with factory() as session:
        with session.begin():
            yield session
        sink.extend(dispatch_of(session))
