"""Dramatiq actors: thin adapters from a message to a service call.

``dramatiq workers`` (or ``dunning worker``) imports this package: it sets up
the broker from the environment and declares every actor.
"""

from dunning.broker.setup import setup_broker
from dunning.logs import install

# The one import with a side effect, on purpose: actors bind to the global broker when declared.
broker = setup_broker()

from workers import ingest, jobs  # noqa: E402

# Logs name messages by id, never by content (dunning.logs), also under `dramatiq workers`.
install()

__all__ = ["broker", "ingest", "jobs"]
