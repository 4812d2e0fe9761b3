"""The ``FreezeBootHeap`` middleware: a worker process's start-up objects are kept out of the GC's way.

A booted worker holds a few hundred thousand long-lived objects (SQLAlchemy's
mappers and compiled caches, pydantic's validators, Jinja2's templates, the
policy). CPython's full collections walk all of them, although none ever
becomes garbage: one full collection took 0.08-0.16 s of a worker's CPU in the
lifecycle ingest benchmark. ``gc.freeze()`` after boot moves them to a
permanent generation that collections ignore, and a larger first-generation
threshold makes the young collections, which the ORM's short-lived objects
trigger, rarer (every 10,000 net allocations instead of 700). Only in the
processes ``dunning worker`` starts (``DUNNING_FREEZE_HEAP``): a test process
that boots many workers keeps the interpreter's defaults.
"""

from __future__ import annotations

import gc
import logging
import os
from typing import Any

from dramatiq.middleware import Middleware

log = logging.getLogger(__name__)

#: Set by ``dunning worker`` for the worker processes it starts.
ENV_FLAG = "DUNNING_FREEZE_HEAP"
#: Allocations between young collections (CPython: 700); the older generations keep their ratios.
YOUNG_THRESHOLD = 10_000


class FreezeBootHeap(Middleware):
    """After the worker process has booted: collect once, freeze what is left, collect the young less often."""

    def __init__(self, *, enabled: bool | None = None) -> None:
        self.enabled = os.environ.get(ENV_FLAG) == "1" if enabled is None else enabled
        self.frozen = False

    def after_worker_boot(self, broker: Any, worker: Any) -> None:
        if not self.enabled or self.frozen:
            return
        self.frozen = True  # once per process, however many workers it boots
        gc.collect()
        gc.freeze()
        _, middle, old = gc.get_threshold()
        gc.set_threshold(YOUNG_THRESHOLD, middle, old)
        log.debug("froze %d start-up objects; young GC threshold %d", gc.get_freeze_count(), YOUNG_THRESHOLD)
