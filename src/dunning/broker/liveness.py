"""The worker process's side of crash recovery: its heartbeat, and running suspect work alone.

- :class:`Heartbeat` (Dramatiq middleware) gives each worker process its own
  id, writes its ``workers`` row every ``Tuning.heartbeat_s`` from a thread of
  its own (so a process whose actors are all busy, or slow, still beats), and
  keeps Dramatiq's own heartbeat of the process fresh for the same reason.
  The scheduler releases a dead worker's work when the beats stop
  (:mod:`dunning.engine.workers`, :mod:`dunning.broker.reclaim`).
- :data:`RUN_LOCK` lets a run be alone in its process: ordinary runs share it,
  a run marked ``alone`` (work that was in flight when a worker died) takes it
  exclusively, so that if the process dies during that run, the run is the
  cause (``RunAlone`` in :mod:`dunning.broker.middleware` takes it).
"""

from __future__ import annotations

import logging
import os
import socket
import threading
from typing import Any
from uuid import uuid4

from dramatiq.middleware import Middleware

from dunning.broker.names import EVENTS_QUEUE
from dunning.engine.jobs import local_worker, set_local_worker

log = logging.getLogger(__name__)

#: Message option: run this message alone in its worker process.
ALONE_OPTION = "dunning_alone"
#: Message option (messages without a job row): alone runs of this message that died.
CRASHES_OPTION = "dunning_crashes"


def alone_marker(worker_id: str) -> str:
    """Redis key naming the message a worker runs alone right now (``"<queue> <redis id>"``)."""
    return f"dunning:alone:{worker_id}"


class RunLock:
    """Shared by ordinary runs, exclusive for a run that must be alone; a waiting alone run goes first.

    Waits poll every half second rather than block for good, so that a thread
    interrupted meanwhile (shutdown) is never stuck in a C-level wait.
    """

    def __init__(self) -> None:
        # Every message takes and gives back a shared hold: those go through the bare lock (no
        # Python-level Condition methods); the condition on the same lock serves the waits.
        self._lock = threading.Lock()
        self._cond = threading.Condition(self._lock)
        self._shared = 0
        self._exclusive = False
        self._waiting = 0

    def acquire_shared(self) -> None:
        with self._lock:
            while self._exclusive or self._waiting:
                self._cond.wait(0.5)
            self._shared += 1

    def release_shared(self) -> None:
        with self._lock:
            self._shared -= 1
            # Only an alone run waits for the shared holds to end.
            if not self._shared and self._waiting:
                self._cond.notify_all()

    def acquire_exclusive(self) -> None:
        with self._cond:
            self._waiting += 1
            try:
                while self._exclusive or self._shared:
                    self._cond.wait(0.5)
            finally:
                self._waiting -= 1
            self._exclusive = True

    def release_exclusive(self) -> None:
        with self._cond:
            self._exclusive = False
            self._cond.notify_all()

    def state(self) -> tuple[int, bool, int]:
        """(shared holders, exclusive held, exclusive waiters), for tests and debugging."""
        with self._cond:
            return self._shared, self._exclusive, self._waiting


RUN_LOCK = RunLock()
_local = threading.local()


def current_worker_id() -> str | None:
    """This process's worker id (its ``workers`` row), None outside a worker."""
    return local_worker()


def running_alone() -> bool:
    """Whether the current thread's run holds the run lock exclusively."""
    return bool(getattr(_local, "alone", False))


def set_running_alone(alone: bool) -> None:
    """Record on the current thread whether its run is alone (``RunAlone`` does)."""
    _local.alone = alone


class Heartbeat(Middleware):
    """Registers the worker process and beats for it until it has stopped cleanly."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._beating: dict[int, tuple[threading.Event, threading.Thread | None]] = {}

    def before_worker_boot(self, broker: Any, worker: Any) -> None:
        with self._lock:
            if not self._beating:
                # Its own id per process: ``dunning worker`` builds the broker before Dramatiq
                # forks the pool, so every process of the pool would otherwise share the parent's
                # id, and with it one set of fetched messages (which the scheduler must be able to
                # give back per process). Not while another worker of this process runs on it
                # (tests do that): its fetched messages are recorded under the current id.
                broker.broker_id = str(uuid4())
            self._beating[id(worker)] = (threading.Event(), None)
        self._beat(broker, broker.broker_id, first=True)
        set_local_worker(broker.broker_id)  # once its row exists: runs and jobs it creates name it

    def after_worker_boot(self, broker: Any, worker: Any) -> None:
        with self._lock:
            stop, _ = self._beating[id(worker)]
            thread = threading.Thread(
                target=self._run, args=(broker, broker.broker_id, stop), name="dunning-heartbeat", daemon=True
            )
            self._beating[id(worker)] = (stop, thread)
        thread.start()

    def after_worker_shutdown(self, broker: Any, worker: Any) -> None:
        # Every run has finished and every prefetched message was given back: nothing to recover.
        with self._lock:
            stop, thread = self._beating.pop(id(worker), (None, None))
            if not self._beating:
                set_local_worker(None)
        if stop is not None:
            stop.set()
        if thread is not None:
            thread.join(5)
        worker_id = broker.broker_id
        try:
            from dunning.engine.workers import retire
            from dunning.runtime import get_runtime
            from dunning.store.db import transaction

            with transaction(get_runtime().sessions) as session:
                retire(session, worker_id)
        except Exception:
            log.warning("worker %s: could not remove its heartbeat row", worker_id, exc_info=True)

    def _run(self, broker: Any, worker_id: str, stop: threading.Event) -> None:
        from dunning.runtime import get_runtime

        interval = get_runtime().tuning.heartbeat_s
        while not stop.wait(interval):
            self._beat(broker, worker_id)

    def _beat(self, broker: Any, worker_id: str, *, first: bool = False) -> None:
        from dunning.engine.workers import beat
        from dunning.runtime import get_runtime
        from dunning.store.db import transaction

        try:
            with transaction(get_runtime().sessions) as session:
                beat(session, worker_id, host=socket.gethostname(), pid=os.getpid())
        except Exception:
            # Logged, and tried again at the next beat: a database outage stops the work too.
            log.warning("worker %s: heartbeat not recorded", worker_id, exc_info=first)
        try:
            # Dramatiq's own heartbeat for this process (its dispatch script records one with
            # every command, and this command does nothing else): a live process whose threads
            # are all busy must never have its fetched messages handed to another worker.
            broker.do_heartbeat(EVENTS_QUEUE)
        except Exception:
            log.warning("worker %s: broker heartbeat not recorded", worker_id, exc_info=first)
