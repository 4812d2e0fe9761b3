"""Reconcile wanted jobs with pending ones: what a planner says should exist becomes the job table.

A workflow that plans from facts (the lifecycle notices, price migrations) does
not keep a diary of what it scheduled: on every fact change it hands the engine
the full set of jobs it wants for some subjects, and the engine, in the
caller's transaction,

- inserts the wanted jobs that are missing (the job key is UNIQUE: a job
  already there, pending or finished, is left alone, so a duplicate event or a
  second scheduler adds nothing and a notice already sent is not sent again);
- cancels the pending jobs of that kind for those subjects whose keys are no
  longer wanted (a moved date makes a new key; the old one goes);
- moves a pending job whose key is still wanted to the time now wanted;
- brings back a canceled job whose key is wanted again (a trial extended, then
  the extension withdrawn; an offer held while a payment was collected, then
  released), at the time now wanted.

Set-based: one SELECT, one INSERT and at most one UPDATE per call, however
many subjects it covers (plus one UPDATE per revived or moved job, which is rare;
on PostgreSQL the cancels and the moves are one statement, :func:`cancel_and_move`).
"""

from __future__ import annotations

from collections.abc import Collection, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, NamedTuple

import orjson
from sqlalchemy import select, update
from sqlalchemy.orm import Session

from dunning.engine.jobs import wall_now
from dunning.store.bulk import ANY_OF_JSON, ids_param
from dunning.store.models import Job
from dunning.store.unit import unit_of


@dataclass(frozen=True, slots=True)
class WantedJob:
    """A job a planner wants to exist."""

    key: str
    subject: str
    due_at: datetime
    payload: Mapping[str, Any] = field(default_factory=dict)


class StoredJob(NamedTuple):
    """A stored job as reconcile reads it."""

    key: str
    subject: str | None
    status: str
    due_at: datetime


@dataclass(frozen=True, slots=True)
class Reconciled:
    """What a reconcile changed: the jobs it added, and the keys (with subjects) it canceled."""

    added: list[WantedJob]
    canceled: list[tuple[str, str]]


def reconcile(
    session: Session,
    *,
    kind: str,
    queue: str,
    subjects: Collection[str],
    wanted: Sequence[WantedJob],
    now: datetime,
    stored: Sequence[StoredJob] | None = None,
) -> Reconciled:
    """Make the pending ``kind`` jobs of ``subjects`` be exactly ``wanted`` (see the module doc).

    ``wanted`` jobs must belong to ``subjects``. Jobs due now are claimed and sent after
    commit, like every job the unit writes. ``stored``: the stored ``kind`` jobs of
    ``subjects``, if the caller read them already in this transaction (with its own reads).
    """
    if not subjects:
        return Reconciled([], [])
    by_key = {job.key: job for job in wanted}
    unit = unit_of(session)
    wanted_subjects = set(subjects)
    # Jobs this transaction planned already (two fact changes in one group commit) count as
    # stored; those no longer wanted are dropped from the buffer instead of canceled.
    buffered = {
        job["key"] for job in unit.jobs if job["kind"] == kind and job.get("subject") in wanted_subjects
    }
    if buffered - by_key.keys():
        unit.jobs = [job for job in unit.jobs if job["key"] not in buffered or job["key"] in by_key]
    if stored is None:
        stored = [
            StoredJob(*row)
            for row in session.execute(
                select(Job.key, Job.subject, Job.status, Job.due_at).where(
                    Job.kind == kind, Job.subject.in_(list(subjects))
                )
            )
        ]
    known = {row.key for row in stored} | buffered
    # In key order: the caller's timeline lines then do not depend on where the rows lie on disk.
    doomed = sorted(
        (row.key, row.subject) for row in stored if row.status == "pending" and row.key not in by_key
    )
    added = [job for key, job in by_key.items() if key not in known]
    revived = [by_key[row.key] for row in stored if row.status == "canceled" and row.key in by_key]
    # A wanted job whose time moved (a renewal moved within the same day keeps its key).
    moved = [
        by_key[row.key]
        for row in stored
        if row.status == "pending" and row.key in by_key and row.due_at != by_key[row.key].due_at
    ]
    if (doomed or moved) and _without_orm_jobs(session):
        cancel_and_move(session, [key for key, _ in doomed], moved)
    else:
        if doomed:
            session.execute(
                update(Job)
                .where(Job.key.in_([key for key, _ in doomed]), Job.status == "pending")
                .values(status="canceled", finished_at=wall_now())
            )
        for job in moved:  # one statement each
            session.execute(
                update(Job).where(Job.key == job.key, Job.status == "pending").values(due_at=job.due_at)
            )
    for job in revived:  # rare: one statement each
        session.execute(
            update(Job)
            .where(Job.key == job.key, Job.status == "canceled")
            .values(
                status="pending",
                due_at=job.due_at,
                payload=dict(job.payload),
                finished_at=None,
                last_error=None,
            )
        )
    if added:
        unit.add_jobs(
            [
                {
                    "key": job.key,
                    "kind": kind,
                    "queue": queue,
                    "subject": job.subject,
                    "due_at": job.due_at,
                    "payload": dict(job.payload),
                }
                for job in added
            ],
            now=now,
        )
    return Reconciled(added + revived, doomed)


def _without_orm_jobs(session: Session) -> bool:
    """PostgreSQL, and no job loaded as an ORM object: the set-based UPDATE need not refresh any.

    (The ingest path never loads one; a job runner does, and keeps the ORM's UPDATE, which
    brings the objects it holds up to date.)
    """
    if session.get_bind().dialect.name != "postgresql":
        return False
    return not any(key[0] is Job for key in session.identity_map)


#: PostgreSQL: cancel the pending jobs of some keys and move others, in one statement whose text
#: never changes (prepared once per connection; an ``IN`` list is a new statement for every
#: length, and the ORM's bulk UPDATE costs the client several times the round trip). The two
#: sets of keys are disjoint (a moved job is wanted, a canceled one is not).
#:
#: ``(status = 'pending') IS TRUE`` is ``status = 'pending'`` (the column is NOT NULL) that the
#: planner cannot match to the partial index ``ix_jobs_pending_due``: with statistics that do
#: not yet know how many jobs are pending (a table that grew since the last ANALYZE) it ANDed
#: that whole index with the key's, reading every pending job (0.6-5 ms per statement, 12,000
#: pending jobs) to update three. The keys are unique: their index alone finds the rows.
_CANCEL_AND_MOVE = (
    "WITH c AS (UPDATE jobs SET status = 'canceled', finished_at = %s"
    f" WHERE key = ANY({ANY_OF_JSON}) AND (status = 'pending') IS TRUE),"
    " m AS (UPDATE jobs AS u SET due_at = r.due_at"
    " FROM json_to_recordset(%s::json) AS r(key text, due_at timestamptz)"
    f" WHERE u.key = r.key AND u.key = ANY({ANY_OF_JSON}) AND (u.status = 'pending') IS TRUE)"
    " SELECT 1"
)


def cancel_and_move(session: Session, doomed: Sequence[str], moved: Sequence[WantedJob]) -> None:
    """Cancel the pending jobs ``doomed`` and set the due time of the pending ``moved`` ones (PostgreSQL).

    The same rows and values as the ORM's ``UPDATE … WHERE key IN (…) AND status = 'pending'``
    and one ``UPDATE`` per moved job, in one round trip.
    """
    moves = orjson.dumps([{"key": j.key, "due_at": j.due_at} for j in moved]).decode()
    session.connection().exec_driver_sql(
        _CANCEL_AND_MOVE, (wall_now(), ids_param(doomed), moves, ids_param([j.key for j in moved]))
    )
