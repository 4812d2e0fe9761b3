"""A group commit in progress: the engine's part of it, and the parts workflows keep in it.

The threads of a worker process apply their events in one transaction
(:mod:`dunning.engine.ingest`). What the events of a batch will read is loaded
up front, by each workflow that reacts to them (its :class:`BatchPart`), in a
fixed number of statements; an event that could change what was loaded first
runs a *barrier*: every part finishes what it deferred, what the unit of work
buffered is written, and every part forgets what it loaded, so the event
observes the batch's earlier events exactly as if they had been committed.

A part may defer work to the end of the group (:meth:`BatchPart.finish`): the
lifecycle workflow re-plans all the subscriptions a group touched at once, in a
fixed number of statements, instead of once per event.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, Protocol, runtime_checkable

import orjson
from sqlalchemy.orm import Session

from dunning.store.bulk import present_ids, rows_by_ids, select_together
from dunning.store.models import ProcessedEvent
from dunning.store.unit import unit_of

if TYPE_CHECKING:
    from dunning.contract import Event


class BatchPart(Protocol):
    """What one workflow loads for a batch and reads while applying its events."""

    def prefetch(self, session: Session, events: list[Event]) -> None:
        """Load (and lock) what this workflow's handlers will read, in a few statements."""

    def batchable(self, event: Event) -> bool:
        """Whether ``event`` may be applied on what was loaded, without a barrier first."""

    def forget(self) -> None:
        """Drop what was loaded (the barrier wrote everything buffered; rows may have changed)."""

    def finish(self, session: Session) -> None:
        """Do what this part deferred for the events applied so far (before a barrier, and at the end).

        Runs before the unit writes what it buffered, so what it buffers is written too.
        """


@runtime_checkable
class SqlPrefetch(Protocol):
    """What a part may add to :class:`BatchPart` so that its lookups join the engine's one statement.

    On PostgreSQL the engine then loads the batch's processed event ids and every
    such part's facts in one statement (one round trip) instead of one or more
    each; ``prefetch`` is still what runs elsewhere (SQLite).
    """

    def prefetch_sql(self, events: list[Event]) -> tuple[str, tuple[Any, ...]] | None:
        """A parenthesised scalar subquery loading (and locking) what ``prefetch`` would, and its
        parameters (``%s``); None when the batch has nothing for this part."""

    def prefetched(self, session: Session, events: list[Event], found: Any) -> None:
        """Keep what the subquery returned (the same as ``prefetch`` would have loaded)."""


class Batch:
    """``session.info["batch"]`` during a group commit."""

    def __init__(self, parts: dict[str, BatchPart]) -> None:
        self.processed: set[str] = set()
        self.parts = parts
        # Whether the event being applied needed no barrier: only such an event may leave work
        # for :meth:`finish` (one applied after a barrier does it at once, as outside a batch).
        self.batched = False

    def prefetch(self, session: Session, events: list[Event]) -> None:
        """Which events were applied already, and each part's own lookups."""
        ids = sorted({e.id for e in events})
        if session.get_bind().dialect.name != "postgresql":
            self.processed = {r[0] for r in rows_by_ids(session, ProcessedEvent.__table__, ("id",), ids)}
            for part in self.parts.values():
                part.prefetch(session, events)
            return
        # One statement: the processed ids, then the subquery of each part that offers one.
        queries: list[tuple[str, tuple[Any, ...]]] = [present_ids(ProcessedEvent.__table__, ids)]
        joined: list[Any] = []
        for part in self.parts.values():
            query = part.prefetch_sql(events) if isinstance(part, SqlPrefetch) else None
            if query is None:
                part.prefetch(session, events)
            else:
                queries.append(query)
                joined.append(part)
        found = select_together(session, queries)
        self.processed = set(orjson.loads(found[0]) if found[0] else ())
        for part, value in zip(joined, found[1:], strict=True):
            part.prefetched(session, events, value)

    def batchable(self, event: Event) -> bool:
        """True when every part can apply ``event`` without a barrier first (no part: never)."""
        return bool(self.parts) and all(part.batchable(event) for part in self.parts.values())

    def finish(self, session: Session) -> None:
        """Every part's deferred work, in registry order (before a barrier's writes, and before commit)."""
        for part in self.parts.values():
            part.finish(session)


def batch_of(session: Session) -> Batch | None:
    """The batch the session's transaction belongs to, if it is a group commit."""
    return session.info.get("batch")


def barrier(session: Session) -> None:
    """Write what the batch buffered and let every part forget what it may have changed."""
    batch = batch_of(session)
    if batch is None:
        return
    # The deferred work first: the event after the barrier must observe it (and it buffers rows).
    batch.finish(session)
    unit = unit_of(session)
    if unit.buffered():
        unit.flush(session)
        unit.new_cases.clear()  # their jobs are stored now: cancelling them is an UPDATE
    for part in batch.parts.values():
        part.forget()
