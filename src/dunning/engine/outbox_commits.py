"""The two writes around each delivery, group-committed across a worker process's threads.

:func:`dunning.engine.outbox.send_email` writes twice per email once it has
decided to send: ``pending -> sending`` at the point of no return, and the
outcome (``sent`` and the job done, or why not) after the server's answer.
Alone, each is a transaction of one small statement, and its fixed cost
(session, BEGIN, COMMIT, a round trip each) was a third of a delivery's CPU.
The threads of a worker hand them to :class:`~dunning.engine.groupcommit.GroupCommit`,
the same leader-follower pattern as the ingest path: whoever arrives first
commits everything waiting, in one transaction with one statement per kind
of write. Marks and outcomes share one group commit: a transaction carries
the marks of the threads at their 354 and the outcomes of those past their
250 alike, and each thread still goes on only once its own write is committed.

Why batching the ``sending`` mark keeps every email's own point of no return:
a thread submits its row only when *its* connection is at *its* 354, and
waits for the commit before writing *its* final dot. A batch therefore holds
only rows whose messages are each at their own point of no return, and each
row is marked ``sending`` before its own body is finished, never on behalf of
a message still in MAIL or RCPT. If the batch's commit fails, every thread in
it gets the error and closes its connection before the dot, so none of those
messages is delivered and every row stays ``pending``: the same as one
failed commit alone. The outcome is also one transaction for many rows; a
worker that dies before it commits leaves those rows ``sending``, and the
next run of each parks it ``unknown`` exactly as before. Batching widens that
window by the wait for the leader's commit (a few milliseconds), never the
set of outcomes.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import TYPE_CHECKING, Any

from sqlalchemy import bindparam, or_

from dunning.engine.groupcommit import GroupCommit
from dunning.engine.jobs import wall_now
from dunning.store.models import Job, Outbox

if TYPE_CHECKING:
    from sqlalchemy.engine import Connection

    from dunning.runtime import Runtime


@dataclass(frozen=True)
class Mark:
    """Move one row from ``pending`` to ``sending``; its message is at its point of no return."""

    rt: Runtime
    outbox_id: int


@dataclass(frozen=True)
class Settle:
    """Record one delivery's outcome; every status but ``pending`` also finishes its job."""

    rt: Runtime
    outbox_id: int
    job_id: int
    status: str  # sent, failed, unknown, or pending (a transient failure: the job backs off)
    error: str | None
    at: datetime  # business time of the outcome (``sent_at``)
    owned: bool = True  # this run marked the row ``sending``: False for a failure before its 354


Item = Mark | Settle

# Core on a bare connection: no ORM session, identity map or unit of work for a few UPDATEs.
_OUTBOX = Outbox.__table__
_JOBS = Job.__table__


def _by_runtime(items: Sequence[Item]) -> Iterator[tuple[Runtime, list[int]]]:
    """Indexes of the items, grouped by runtime (one database each; in production there is one)."""
    groups: dict[int, tuple[Runtime, list[int]]] = {}
    for i, item in enumerate(items):
        groups.setdefault(id(item.rt), (item.rt, []))[1].append(i)
    yield from groups.values()


_MARK = (
    _OUTBOX.update()
    .where(_OUTBOX.c.id.in_(bindparam("b_ids", expanding=True)), _OUTBOX.c.status == "pending")
    .values(status="sending")
    .returning(_OUTBOX.c.id)
)


# PostgreSQL: the ids as one array literal, not an IN list expanded into a parameter each, run
# on the transaction's own DBAPI cursor (see _pg).
_MARK_PG = (
    "UPDATE outbox SET status = 'sending' WHERE id = ANY(%s::integer[]) AND status = 'pending' RETURNING id"
)


def _pg(conn: Connection, sql: str, params: Any) -> list[Any]:
    """Run ``sql`` on the DBAPI cursor of ``conn``'s transaction; its rows (if it returns any).

    For the two fixed statements of every group commit: SQLAlchemy's execution (statement
    cache, execution context, result metadata) cost several times what psycopg does. A
    failure still ends the transaction through ``conn`` (its rollback, and the pool's
    invalidation of a dead connection, are SQLAlchemy's as for any statement).
    """
    cursor = conn.connection.cursor()
    try:
        cursor.execute(sql, params)
        return cursor.fetchall() if cursor.description is not None else []
    finally:
        cursor.close()


def _array(values: Any) -> str:
    """A PostgreSQL array literal of ints (no quoting needed), sent as one text parameter."""
    return "{" + ",".join(str(int(v)) for v in values) + "}"


def _mark(conn: Connection, items: list[Mark]) -> list[bool]:
    """``pending -> sending`` for every row in one statement; True where this run moved it."""
    ids = sorted({item.outbox_id for item in items})
    if conn.dialect.name == "postgresql":
        moved = {row[0] for row in _pg(conn, _MARK_PG, (_array(ids),))}
    else:
        moved = set(conn.execute(_MARK, {"b_ids": ids}).scalars())
    results = []
    for item in items:
        # Two runs of one row in one batch cannot both own it: the first does.
        results.append(item.outbox_id in moved)
        moved.discard(item.outbox_id)
    return results


# An outcome is written only over the state its own run left the row in. A run that marked the
# row owns it while it is ``sending`` (or ``unknown``: another run took it for dead and parked
# it); a run that failed before its 354 never owned it, and may only record its failure over a
# row still ``pending``. Unconditional, a stale run's outcome could overwrite another run's:
# with two runs of one job (a queue lease ran out while the message waited), one failing fast
# (the circuit open) and one delivering, the failed run's "pending" landed after the other's
# "sent" and the email went out a second time.
# (``or_`` of equalities, not ``in_``: a literal IN list is an "expanding" parameter, which
# executemany refuses.)
_OWNED_STATUSES = ("sending", "unknown")
# A delivery that happened may always be recorded over any unfinished state (a sender that
# never calls the commit point delivers from ``pending``), never over another outcome.
_UNFINISHED_STATUSES = ("pending", *_OWNED_STATUSES)
_OWNED = or_(*(_OUTBOX.c.status == status for status in _OWNED_STATUSES))
_UNFINISHED = or_(*(_OUTBOX.c.status == status for status in _UNFINISHED_STATUSES))

# Core statements run as executemany (psycopg pipelines them: one round trip): the ORM's bulk
# UPDATE by primary key did the same with twice the client CPU.
_SENT = (
    _OUTBOX.update()
    .where(_OUTBOX.c.id == bindparam("b_id"), _UNFINISHED)
    .values(status="sent", last_error=None, sent_at=bindparam("b_at"))
)
_NOT_SENT = (
    _OUTBOX.update()
    .where(_OUTBOX.c.id == bindparam("b_id"), _OWNED)
    .values(status=bindparam("b_status"), last_error=bindparam("b_error"))
)
_NOT_SENT_UNOWNED = (
    _OUTBOX.update()
    .where(_OUTBOX.c.id == bindparam("b_id"), _OUTBOX.c.status == "pending")
    .values(status=bindparam("b_status"), last_error=bindparam("b_error"))
)
# As jobs.finish(): an unknown delivery parks its job for ops, anything else is done.
_FINISH = (
    _JOBS.update()
    .where(_JOBS.c.id == bindparam("b_id"))
    .values(
        status=bindparam("b_status"),
        finished_at=bindparam("b_at"),
        lease_until=None,
        last_error=bindparam("b_error"),
    )
)


# PostgreSQL: every delivered email of a batch, its row and its job, in one statement (the two
# executemany UPDATEs it replaces were a fifth of a mail worker's CPU). The data-modifying CTE
# runs to completion whether or not the outer UPDATE reads it.
_SENT_AND_DONE_PG = (
    "WITH v AS (SELECT * FROM unnest(%(oids)s::integer[], %(ats)s::timestamptz[], %(jids)s::bigint[])"
    " AS v(oid, at, jid)),"
    " o AS (UPDATE outbox SET status = 'sent', last_error = NULL, sent_at = v.at FROM v"
    f" WHERE outbox.id = v.oid AND outbox.status IN ({', '.join(repr(s) for s in _UNFINISHED_STATUSES)}))"
    " UPDATE jobs SET status = 'done', finished_at = %(wall)s, lease_until = NULL, last_error = NULL"
    " FROM v WHERE jobs.id = v.jid"
)


def _aware(at: datetime) -> datetime:
    if at.tzinfo is None:
        raise ValueError("naive datetime given to a UTC column")  # as UtcDateTime refuses it
    return at


def _settle(conn: Connection, batch: list[Settle]) -> None:
    """Every outcome: one executemany per statement (on PostgreSQL, one statement for the sent ones)."""
    wall = wall_now()
    if conn.dialect.name == "postgresql" and any(s.status == "sent" for s in batch):
        sent_ones = [s for s in batch if s.status == "sent"]
        # Array literals as text: psycopg's list adaptation (a type lookup per element) cost more
        # than the statement's own execution. Ids are ints and times aware datetimes: no quoting.
        params = {
            "oids": _array(s.outbox_id for s in sent_ones),
            "ats": "{" + ",".join(f'"{_aware(s.at).isoformat()}"' for s in sent_ones) + "}",
            "jids": _array(s.job_id for s in sent_ones),
            "wall": wall,
        }
        _pg(conn, _SENT_AND_DONE_PG, params)
        batch = [s for s in batch if s.status != "sent"]
    sent = [{"b_id": s.outbox_id, "b_at": s.at} for s in batch if s.status == "sent"]
    other: list[dict[str, Any]] = []
    unowned: list[dict[str, Any]] = []
    for s in batch:
        if s.status != "sent":
            (other if s.owned else unowned).append(
                {"b_id": s.outbox_id, "b_status": s.status, "b_error": s.error}
            )
    done = [
        {
            "b_id": s.job_id,
            "b_status": "dead" if s.status == "unknown" else "done",
            "b_at": wall,
            "b_error": s.error,
        }
        for s in batch
        if s.status != "pending"
    ]
    for statement, rows in ((_SENT, sent), (_NOT_SENT, other), (_NOT_SENT_UNOWNED, unowned), (_FINISH, done)):
        if rows:
            conn.execute(statement, rows)


def _write_many(items: list[Mark | Settle]) -> list[bool | Exception | None]:
    """The marks, then the outcomes, in one transaction per database.

    Marks first: a second run's mark of a row settled in the same batch then finds it
    ``sending`` (marked by the first run's earlier commit), as it would alone.
    """
    results: list[bool | Exception | None] = [None] * len(items)
    for rt, indexes in _by_runtime(items):
        marks = [(i, m) for i in indexes if isinstance(m := items[i], Mark)]
        settles = [s for i in indexes if isinstance(s := items[i], Settle)]
        try:
            with rt.engine.begin() as conn:
                moved = _mark(conn, [m for _, m in marks]) if marks else []
                if settles:
                    _settle(conn, settles)
        except Exception as exc:
            for i in indexes:
                results[i] = exc
            continue
        for (i, _), ours in zip(marks, moved, strict=True):
            results[i] = ours
    return results


# One group commit for both: a transaction carries the marks of threads at their 354 and the
# outcomes of threads past their 250 alike, each still committed before its caller goes on.
_writes: GroupCommit[Mark | Settle, bool | None] = GroupCommit(_write_many)


def mark_sending(rt: Runtime, outbox_id: int) -> bool:
    """Commit ``pending -> sending`` for one row (with whatever other threads are marking); False: not ours."""
    return bool(_writes.submit(Mark(rt, outbox_id)))


def settle(
    rt: Runtime, outbox_id: int, job_id: int, status: str, error: str | None, *, owned: bool = True
) -> None:
    """Commit one delivery's outcome (with whatever other threads are settling).

    ``owned``: this run marked the row ``sending`` (:func:`mark_sending`); False for a failure
    before its point of no return. Either way the row is written only if it is still in the
    state this run left it (see ``_OWNED``): a stale run never overwrites another's outcome.
    """
    _writes.submit(Settle(rt, outbox_id, job_id, status, error, rt.clock.now(), owned))
