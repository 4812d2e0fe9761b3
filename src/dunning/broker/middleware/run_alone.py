"""The ``RunAlone`` middleware: work suspected of killing its worker runs by itself, so a death convicts it."""

from __future__ import annotations

import logging
import threading
from typing import Any

from dramatiq.middleware import Middleware

from dunning.broker.liveness import ALONE_OPTION, RUN_LOCK, alone_marker, running_alone, set_running_alone
from dunning.broker.names import EVENTS_QUEUE

log = logging.getLogger(__name__)


class RunAlone(Middleware):
    """Runs a message marked ``alone`` by itself in its worker process; ordinary messages share.

    Work that was in flight when a worker died is marked to run alone next time
    (the scheduler does it: :mod:`dunning.engine.workers` for jobs,
    :mod:`dunning.broker.reclaim` for messages without a job row). Alone, a run that
    dies with its process is the cause of that death, and only such deaths are
    counted toward parking it as poison. Must come first in the middleware
    list: the wait for the lock happens before any other hook, so it does not
    count against the time limit.

    For messages without a job row, the message run alone is named in Redis
    (:func:`dunning.broker.liveness.alone_marker`) for the scheduler to count if the
    process dies; jobs record the run on their row instead.
    """

    def __init__(self) -> None:
        self._held = threading.local()  # what this thread's current message took: the lock, or nothing

    def before_process_message(self, broker: Any, message: Any) -> None:
        if message.options.get(ALONE_OPTION):
            RUN_LOCK.acquire_exclusive()
            set_running_alone(True)
            if message.queue_name == EVENTS_QUEUE:
                try:
                    broker.client.set(
                        alone_marker(broker.broker_id),
                        f"{message.queue_name} {message.options.get('redis_message_id')}",
                        ex=24 * 3600,
                    )
                except Exception:
                    log.warning("could not name alone run of %s", message.message_id)
        else:
            RUN_LOCK.acquire_shared()
            set_running_alone(False)
        self._held.lock = "alone" if running_alone() else "shared"

    def after_process_message(
        self, broker: Any, message: Any, *, result: Any = None, exception: Any = None
    ) -> None:
        # Also called when an earlier before-hook failed: release only what this message took.
        held = getattr(self._held, "lock", None)
        self._held.lock = None
        if held == "shared":
            RUN_LOCK.release_shared()
        elif held == "alone":
            set_running_alone(False)
            if message.queue_name == EVENTS_QUEUE:
                try:
                    broker.client.delete(alone_marker(broker.broker_id))
                except Exception:
                    log.warning("could not clear alone run of %s", message.message_id)
            RUN_LOCK.release_exclusive()

    after_skip_message = after_process_message
