"""Applying billing events: one at a time, or many in one transaction (group commit)."""

from __future__ import annotations

from typing import TYPE_CHECKING

from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from dunning import contract as c
from dunning.contract import InvalidEvent
from dunning.engine.batch import Batch, barrier, batch_of
from dunning.engine.jobs import Dispatch
from dunning.engine.registry import batch_parts, event_handlers
from dunning.store.db import transaction
from dunning.store.models import ProcessedEvent
from dunning.store.unit import collecting, dispatch_of, unit_of

if TYPE_CHECKING:
    from dunning.runtime import Runtime

__all__ = ["Outcome", "apply_event", "ingest", "ingest_many"]


def ingest(rt: Runtime, event: c.Event) -> tuple[str, list[Dispatch]]:
    """Apply an event in its own transaction; a concurrent duplicate delivery is a no-op."""
    try:
        with transaction(rt.sessions) as session:
            outcome, _ = apply_event(rt, session, event)
        return outcome, dispatch_of(session)
    except IntegrityError:
        # Two deliveries of one event raced; the other one committed first.
        with rt.sessions() as session:
            if session.get(ProcessedEvent, event.id) is not None:
                return "duplicate", []
        raise


Outcome = tuple[str, list[Dispatch]]


def ingest_many(rt: Runtime, events: list[c.Event]) -> list[Outcome | Exception]:
    """Apply several events in one transaction (group commit); one result per event, in order.

    If the batch fails as a whole (an event refers to something unknown, a
    concurrent duplicate, a deadlock), each event is applied again in its own
    transaction, so every message gets its own verdict. A batch of one takes
    the batched path too: its few fixed lookups cost less than the single path's
    ORM loads, one statement each.
    """
    sink: list[Dispatch] = []
    try:
        outcomes: list[str | InvalidEvent] = []
        with collecting(rt.sessions, sink) as session:
            batch = session.info["batch"] = Batch(batch_parts())
            batch.prefetch(session, events)
            seen: set[str] = set()
            for event in events:
                if event.id in seen:
                    outcomes.append("duplicate")
                    continue
                try:
                    outcome, _ = apply_event(rt, session, event)
                except InvalidEvent as exc:
                    # A refusal (e.g. the event contradicts stored facts) is raised before the
                    # event wrote anything: the others commit, this one is parked.
                    outcomes.append(exc)
                    continue
                seen.add(event.id)
                outcomes.append(outcome)
            # What the parts deferred (e.g. re-planning the subscriptions touched), once for the group.
            batch.finish(session)
        # The messages to send after commit travel with the first result that is not a refusal.
        results: list[Outcome | Exception] = []
        for outcome in outcomes:
            if isinstance(outcome, Exception):
                results.append(outcome)
            else:
                results.append((outcome, sink))
                sink = []
        return results
    except Exception:
        alone: list[Outcome | Exception] = []
        for event in events:
            try:
                alone.append(ingest(rt, event))
            except Exception as exc:
                alone.append(exc)
        return alone


def apply_event(rt: Runtime, session: Session, event: c.Event) -> tuple[str, list[Dispatch]]:
    """Apply one validated event in the caller's transaction.

    Returns an outcome word (for logs and metrics) and messages to send after
    commit. A redelivered event id is a no-op; the UNIQUE primary key of
    ``processed_events`` settles a race between two deliveries at commit.
    """
    batch = batch_of(session)
    if batch is not None:
        batch.batched = batch.batchable(event)
        if not batch.batched:
            barrier(session)
        if event.id in batch.processed:
            return "duplicate", []
    elif session.get(ProcessedEvent, event.id) is not None:
        return "duplicate", []
    now = rt.clock.now()
    # Recorded after the handler: an event it refuses (InconsistentEvent) leaves no trace,
    # so a requeue once the facts are fixed is applied rather than skipped as a duplicate.
    handlers = event_handlers(event.type)
    if not handlers:
        raise InvalidEvent("type", f"no workflow reacts to {event.type!r}", event_id=event.id)
    outcome, dispatch = handlers[0](rt, session, event, now)
    for handler in handlers[1:]:
        dispatch = dispatch + handler(rt, session, event, now)[1]
    unit_of(session).add_processed_event(
        {"id": event.id, "type": event.type, "occurred_at": event.occurred_at, "processed_at": now}
    )
    return outcome, dispatch
