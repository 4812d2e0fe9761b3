"""Dramatiq actors: thin adapters from a message to a service call.

``dramatiq workers`` (or ``dunning worker``) imports this package: it sets up
the broker from the environment and declares every actor.
"""

from dunning.broker import broker
from dunning.logs import install
from workers import ingest, jobs

# Logs name messages by id, never by content (dunning.logs), also under `dramatiq workers`.
install()

__all__ = ["broker", "ingest", "jobs"]
