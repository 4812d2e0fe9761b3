"""Dramatiq actors: thin adapters from a message to a service call.

``dramatiq workers`` (or ``dunning worker``) imports this package: it sets up
the broker from the environment and declares every actor. In the repository it
is the top-level folder ``workers/`` (where people look for actors); the wheel
installs it as ``dunning.workers``, never as a generic top-level ``workers``.
"""

from dunning.broker.setup import setup_broker
from dunning.logs import install

# The one import with a side effect, on purpose: actors bind to the global broker when declared.
broker = setup_broker()

from . import ingest, jobs  # noqa: E402

# Logs name messages by id, never by content (dunning.logs), also under `dramatiq workers`.
install()

__all__ = ["broker", "ingest", "jobs"]
