"""Buffered writes of one transaction: new facts, cases, jobs, outbox rows and timeline lines.

Appending rows one ORM object at a time costs a statement each and the unit
of work's bookkeeping. The unit buffers plain rows (and the transient objects
of cases opened in the transaction, whose ids it allocates up front) and,
just before the commit, writes them all with one statement
(:func:`dunning.store.bulk.insert_tables`). The ingest path's group commit puts
many events in one transaction, so the same statement then carries the rows of
all of them.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import event, inspect
from sqlalchemy.orm import Session, sessionmaker
from sqlalchemy.orm.attributes import set_committed_value
from sqlalchemy.orm.state import InstanceState

from dunning.engine.jobs import Dispatch, local_worker, wall_now
from dunning.store.bulk import Link, TableRows, allocate_ids, insert_tables
from dunning.store.models import Case, Invoice, Job, Outbox, ProcessedEvent, TimelineEntry

_JOB_DEFAULTS: dict[str, Any] = {
    "claims": 0,
    "runs": 0,
    "crashes": 0,
    "retry_at": None,
    "case_id": None,
    "subject": None,
    "outbox_id": None,
    "payload": None,
    "lease_until": None,
    "finished_at": None,
    "last_error": None,
    "worker_id": None,
}


@dataclass(slots=True)
class NewCase:
    """A case opened in this transaction, before it is written.

    A plain object with the columns of :class:`Case`: the opening decision sets
    a dozen of its attributes, which on an ORM instance would each go through
    attribute instrumentation; the unit writes it once, with its final facts.
    """

    invoice_id: str
    subscription_id: str
    customer_id: str
    plan: str
    amount_minor: int
    currency: str
    status: str
    decline_code: str
    first_decline_code: str
    has_payment_method: bool
    opened_at: datetime
    policy_version: str
    id: int = 0
    needs_new_payment_method: bool = False
    attempts_made: int = 0
    scheduled_retries_made: int = 0
    card_update_retries_used: int = 0
    last_attempt_at: datetime | None = None
    suspended_at: datetime | None = None
    closed_at: datetime | None = None
    outcome: str | None = None
    recovered_minor: int = 0


#: A case as the decision code sees it: stored (ORM) or opened in this transaction.
CaseRow = Case | NewCase

_CASE_COLUMNS = tuple(c.key for c in Case.__table__.columns)


class Unit:
    """The buffered writes of one session's transaction."""

    def __init__(self, lease_s: float) -> None:
        self.lease_s = lease_s
        self.processed_events: list[dict[str, Any]] = []
        self.invoices: list[dict[str, Any]] = []
        # Cases opened in this transaction, written with their final facts at flush: as
        # transient objects they cost no unit-of-work bookkeeping and no INSERT-then-UPDATE.
        self.cases: list[NewCase] = []
        self.jobs: list[dict[str, Any]] = []
        self.outbox: list[dict[str, Any]] = []
        self.timeline: list[dict[str, Any]] = []
        self.dispatch: list[Dispatch] = []
        # Cases created in this transaction whose jobs are not stored yet: cancelling them
        # means filtering the buffer, not an UPDATE.
        self.new_cases: set[int] = set()
        self._case_ids: list[int] = []
        self._top_case_id = 0
        self._cases_with_jobs: set[int | None] = set()
        # Stored ORM rows whose listed columns this unit writes (set-based, in its one
        # statement) instead of the session's flush (one UPDATE per row and column set).
        self.written_through: dict[int, tuple[Any, tuple[str, ...]]] = {}

    # -- buffering ---------------------------------------------------------------

    def reserve_case_ids(self, session: Session, n: int) -> None:
        """Allocate ids for ``n`` cases about to be opened, in one statement."""
        ids = allocate_ids(session, Case.__table__, n, above=self._top_case_id)
        if ids:
            self._case_ids.extend(ids)
            self._top_case_id = max(self._top_case_id, ids[-1])

    def take_case_ids(self, ids: Sequence[int]) -> None:
        """Ids for cases about to be opened, allocated by the caller's own statement (PostgreSQL)."""
        if ids:
            self._case_ids.extend(ids)
            self._top_case_id = max(self._top_case_id, *ids)

    def new_case(self, session: Session, case: NewCase) -> NewCase:
        """Give a transient case its id and write it at flush (whatever its facts are by then)."""
        if not self._case_ids:
            self.reserve_case_ids(session, 1)
        case.id = self._case_ids.pop(0)
        self.cases.append(case)
        self.new_cases.add(case.id)
        return case

    def add_processed_event(self, row: dict[str, Any]) -> None:
        self.processed_events.append(row)

    def add_invoice(self, row: dict[str, Any]) -> None:
        self.invoices.append(row)

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
                # Sent by this process after commit; ``worker_id`` lets the scheduler send it
                # instead if this process dies first (services/workers.py).
                job.update(
                    status="claimed",
                    claims=1,
                    lease_until=wall + timedelta(seconds=self.lease_s),
                    worker_id=local_worker(),
                )
            else:
                job["status"] = "pending"
            self.jobs.append(job)
            self._cases_with_jobs.add(job["case_id"])

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
        if case_id not in self._cases_with_jobs:
            return  # the common case (a case just opened): no need to scan the whole buffer

        def doomed(job: dict[str, Any]) -> bool:
            if job["case_id"] != case_id or job["status"] != "pending" or job["kind"] not in kinds:
                return False
            if scheduled_retries_only:
                return job["payload"] is None and job["key"] not in keep
            return True

        self.jobs = [j for j in self.jobs if not doomed(j)]

    def write_through(self, obj: Any, columns: tuple[str, ...]) -> None:
        """Write ``columns`` of the stored ORM row ``obj`` (keyed by ``id``) with the unit's rows.

        At flush, if any of them changed, all of them are written in the unit's statement and
        the object is told they are stored, so the session's own flush skips them. Only for
        rows this transaction holds locked, or columns nobody else writes meanwhile: the values
        written are the object's, whatever the stored row holds by then.
        """
        known = self.written_through.get(id(obj))
        if known is not None:
            columns = tuple(dict.fromkeys(known[1] + columns))
        self.written_through[id(obj)] = (obj, columns)

    def written_objects(self) -> set[int]:
        """``id()`` of the ORM objects the unit writes itself (:meth:`write_through`)."""
        return set(self.written_through)

    # -- writing -----------------------------------------------------------------

    def buffered(self) -> bool:
        """Whether anything waits to be written."""
        return bool(
            self.processed_events
            or self.invoices
            or self.cases
            or self.jobs
            or self.outbox
            or self.timeline
            or self.written_through
        )

    def _updates(self) -> tuple[list[TableRows], list[tuple[Any, tuple[str, ...]]]]:
        """The rows of :meth:`write_through` objects that changed, by table and columns."""
        by_shape: dict[tuple[Any, tuple[str, ...]], list[dict[str, Any]]] = {}
        done: list[tuple[Any, tuple[str, ...]]] = []
        for obj, columns in self.written_through.values():
            state = inspect(obj)
            if not state.persistent or not any(c in state.committed_state for c in columns):
                continue  # unchanged, or already flushed by the session (an autoflush)
            row = {"id": obj.id, **{c: getattr(obj, c) for c in columns}}
            by_shape.setdefault((state.mapper.local_table, columns), []).append(row)
            # Only the changed ones need telling they are stored (the others have no history).
            done.append((obj, tuple(c for c in state.committed_state if c in columns)))
        self.written_through = {}
        parts = [TableRows(table, rows, update_key="id") for (table, _), rows in by_shape.items()]
        return parts, done

    def flush(self, session: Session) -> None:
        """Write everything buffered, in one statement (called before commit, and by barriers).

        A send job names its email by the outbox key: it takes that row's id, and is
        skipped with it when the email already existed (its send job does too).
        """
        jobs = self.jobs
        due = [j for j in jobs if j["status"] == "claimed"]
        later = [j for j in jobs if j["status"] != "claimed"]
        link = Link(field="outbox_key", parent=Outbox.__tablename__, parent_key="key", column="outbox_id")
        updates, written = self._updates()
        rows = insert_tables(
            session,
            [
                *updates,
                TableRows(ProcessedEvent.__table__, self.processed_events),
                TableRows(Invoice.__table__, self.invoices),
                TableRows(
                    Case.__table__, [{k: getattr(case, k) for k in _CASE_COLUMNS} for case in self.cases]
                ),
                TableRows(Outbox.__table__, self.outbox, on_conflict="key"),
                TableRows(Job.__table__, later, on_conflict="key", link=link),
                TableRows(Job.__table__, due, on_conflict="key", returning=("id", "queue"), link=link),
                TableRows(TimelineEntry.__table__, self.timeline),
            ],
        )
        _stored(session, written)
        self.dispatch.extend(Dispatch(queue, job_id) for job_id, queue in sorted(rows))
        self.processed_events, self.invoices, self.cases = [], [], []
        self.outbox, self.jobs, self.timeline = [], [], []
        self._cases_with_jobs.clear()


def _stored(session: Session, written: list[tuple[Any, tuple[str, ...]]]) -> None:
    """Tell the ORM objects whose changes the unit wrote that those values are stored now.

    An object none of whose other attributes changed is marked clean at once, as the
    session's own flush marks the objects it wrote (``_commit_all_states``): the commit's
    flush then finds the session clean and walks nothing. One with other changes only
    has the written columns committed, and the session's flush writes the rest.
    """
    clean: list[tuple[Any, Any]] = []
    for obj, columns in written:
        state = inspect(obj)
        if len(columns) == len(state.committed_state) and not state.expired_attributes:
            clean.append((state, state.dict))
            continue
        for column in columns:
            set_committed_value(obj, column, getattr(obj, column))
    if clean:
        InstanceState._commit_all_states(clean, session.identity_map)


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
