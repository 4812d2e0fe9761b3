"""Dramatiq middleware, one per module: the one extension point for parking, crash and privacy rules.

- :mod:`.dead_letters`: messages that failed for good are kept in the database (``dunning dlq``).
- :mod:`.heap`: a worker's start-up objects are frozen out of the garbage collector's walks.
- :mod:`.run_alone`: work suspected of killing its worker runs alone (crash recovery).
- :mod:`.tracebacks`: tracebacks stored on the broker carry no exception texts.

The worker's heartbeat is :class:`dunning.broker.liveness.Heartbeat`.
"""

from __future__ import annotations

from dunning.broker.middleware.dead_letters import DeadLetters, Parker
from dunning.broker.middleware.heap import FreezeBootHeap
from dunning.broker.middleware.run_alone import RunAlone
from dunning.broker.middleware.tracebacks import RedactTracebacks

__all__ = ["DeadLetters", "FreezeBootHeap", "Parker", "RedactTracebacks", "RunAlone"]
