"""The ``ingest_event`` actor on queue ``billing_events`` (contract §1)."""

from __future__ import annotations

import logging
from typing import Any

import dramatiq

from dunning.broker.enqueue import send_jobs
from dunning.broker.names import EVENTS_QUEUE, INGEST_ACTOR
from dunning.contract import Event, InvalidEvent, parse_message_args
from dunning.engine.groupcommit import GroupCommit
from dunning.engine.ingest import Outcome, ingest_many
from dunning.runtime import get_runtime

log = logging.getLogger(__name__)

# One per worker process: the threads of a process commit their events together.
_group: GroupCommit[Event, Outcome] = GroupCommit(lambda events: ingest_many(get_runtime(), events))


@dramatiq.actor(
    queue_name=EVENTS_QUEUE,
    actor_name=INGEST_ACTOR,
    # A malformed event fails the same way every time: park it at once, never loop.
    throws=(InvalidEvent,),
    # MissingReference (an event ahead of the customer it names) is retried for ~8 minutes.
    max_retries=8,
    min_backoff=2_000,
    max_backoff=120_000,
)
def ingest_event(*args: Any, **kwargs: Any) -> None:
    """Validate one billing event and apply it (in a group commit with its neighbours).

    Takes ``*args`` so that a message of the wrong shape is refused by our own
    validation (parked at once, naming the problem) rather than by Python's
    call machinery (a TypeError that Dramatiq would retry for minutes).
    """
    event = parse_message_args(args, kwargs)
    outcome, dispatch = _group.submit(event)
    send_jobs(dramatiq.get_broker(), dispatch, mail_batch=get_runtime().tuning.mail_batch)
    log.debug("event %s (%s): %s", event.id, event.type, outcome)
