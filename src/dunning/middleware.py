"""Dramatiq middleware: the one extension point for parking, poison and privacy rules."""

from __future__ import annotations

import json
import logging
import threading
import time
import traceback
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any

from dramatiq.common import compute_backoff
from dramatiq.middleware import Middleware, Retries
from dramatiq.middleware.retries import DEFAULT_MAX_BACKOFF

from dunning.liveness import ALONE_OPTION, RUN_LOCK, alone_marker, running_alone, set_running_alone
from dunning.queues import EVENTS_QUEUE

log = logging.getLogger(__name__)


def redacted_traceback(exc: BaseException) -> str:
    """Frames and exception types only: exception texts can carry customer data."""
    frames = traceback.extract_tb(exc.__traceback__, limit=30)
    lines = [f'  File "{f.filename}", line {f.lineno}, in {f.name}' for f in frames]
    return (
        "Traceback (most recent call last):\n"
        + "\n".join(lines)
        + f"\n{type(exc).__module__}.{type(exc).__name__}: <redacted>"
    )


class RedactingRetries(Retries):
    """Dramatiq's retries, but the traceback stored on the broker carries no exception text.

    Same options and semantics as :class:`dramatiq.middleware.Retries`; only
    ``message.options["traceback"]`` differs.
    """

    def after_process_message(
        self, broker: Any, message: Any, *, result: Any = None, exception: Any = None
    ) -> None:
        if exception is None:
            return
        actor = broker.get_actor(message.actor_name)
        throws = message.options.get("throws") or actor.options.get("throws")
        if throws and isinstance(exception, throws):
            message.fail()
            return
        retries = message.options.setdefault("retries", 0)
        message.options["retries"] += 1
        message.options["traceback"] = redacted_traceback(exception)
        message.options["requeue_timestamp"] = int(time.time() * 1000)
        max_retries = message.options.get("max_retries", actor.options.get("max_retries", self.max_retries))
        retry_when = actor.options.get("retry_when", self.retry_when)
        if (retry_when is not None and not retry_when(retries, exception)) or (
            retry_when is None and max_retries is not None and retries >= max_retries
        ):
            log.warning("Retries exceeded for message %r.", message.message_id)
            message.fail()
            return
        min_backoff = message.options.get("min_backoff", actor.options.get("min_backoff", self.min_backoff))
        max_backoff = message.options.get("max_backoff", actor.options.get("max_backoff", self.max_backoff))
        _, delay = compute_backoff(
            retries, factor=min_backoff, max_backoff=min(max_backoff, DEFAULT_MAX_BACKOFF)
        )
        broker.enqueue(message, delay=delay)


Parker = Callable[[dict[str, Any]], None]


def describe_failure(exc: BaseException | None) -> tuple[str | None, str, str]:
    """(field, reason, error type) of a failure, safe to store and show to ops."""
    if exc is None:
        return None, "unknown failure", "Unknown"
    field = getattr(exc, "field", None)
    reason = getattr(exc, "reason", None)
    if reason is None:
        # Only our own exceptions are known to carry no customer data in their text.
        module = type(exc).__module__
        reason = (
            str(exc) if module.startswith("dunning") else f"{type(exc).__name__} (details in worker logs)"
        )
    return field, str(reason)[:1000], type(exc).__name__


class DeadLetters(Middleware):
    """Keeps every message that failed for good in the database, with its reason.

    Dramatiq's own dead-letter set expires after 7 days and has no requeue
    command; ops list and requeue from the table instead (``dunning dlq``).
    Must sit before Retries in the middleware list, so that its after-hook
    runs after Retries has decided the message failed.
    """

    def __init__(self, park: Parker) -> None:
        self.park = park

    def after_process_message(
        self, broker: Any, message: Any, *, result: Any = None, exception: Any = None
    ) -> None:
        if exception is None or not message.failed:
            return
        field, reason, error_type = describe_failure(exception)
        self._park(message, field, reason, error_type)

    def before_nack(self, broker: Any, message: Any) -> None:
        # A message for an actor this worker does not know never reaches the process hooks.
        exc = getattr(message, "_exception", None)
        if type(exc).__name__ == "ActorNotFound":
            self._park(
                message,
                "actor_name",
                f"no actor named {str(message.actor_name)[:80]!r} on this worker",
                "ActorNotFound",
            )

    def _park(self, message: Any, field: str | None, reason: str, error_type: str) -> None:
        original = {
            "queue_name": message.queue_name,
            "actor_name": message.actor_name,
            "args": list(message.args),
            "kwargs": dict(message.kwargs),
            "message_id": message.message_id,
        }
        try:
            self.park(
                {
                    "message_id": message.message_id,
                    "queue": message.queue_name,
                    "actor": message.actor_name,
                    "payload": json.dumps(original, separators=(",", ":")),
                    "field": field,
                    "reason": reason,
                    "error_type": error_type,
                    "parked_at": datetime.now(UTC),
                }
            )
        except Exception:
            # The message still lands in Dramatiq's own dead-letter set; nothing is lost.
            log.exception("could not park message %s in the database", message.message_id)


class RunAlone(Middleware):
    """Runs a message marked ``alone`` by itself in its worker process; ordinary messages share.

    Work that was in flight when a worker died is marked to run alone next time
    (the scheduler does it: :mod:`dunning.services.workers` for jobs,
    :mod:`dunning.reclaim` for messages without a job row). Alone, a run that
    dies with its process is the cause of that death, and only such deaths are
    counted toward parking it as poison. Must come first in the middleware
    list: the wait for the lock happens before any other hook, so it does not
    count against the time limit.

    For messages without a job row, the message run alone is named in Redis
    (:func:`dunning.liveness.alone_marker`) for the scheduler to count if the
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
