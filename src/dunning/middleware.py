"""Dramatiq middleware: the one extension point for parking, poison and privacy rules."""

from __future__ import annotations

import json
import logging
import time
import traceback
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any

import redis
from dramatiq.common import compute_backoff
from dramatiq.middleware import Middleware, Retries, SkipMessage
from dramatiq.middleware.retries import DEFAULT_MAX_BACKOFF

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


class PoisonGuard(Middleware):
    """Stops a message that keeps killing its worker.

    SIGKILL bypasses Dramatiq's retry counter, so such a message would be
    redelivered forever. We count starts that never reached an end in Redis,
    next to the message itself (a key per message, with a TTL), and park the
    message once the count reaches ``max_crashes``.
    """

    def __init__(self, client: redis.Redis, dead_letters: DeadLetters, *, max_crashes: int = 3) -> None:
        self.client = client
        self.dead_letters = dead_letters
        self.max_crashes = max_crashes

    @staticmethod
    def _key(message: Any) -> str:
        return f"dunning:inflight:{message.message_id}"

    def before_process_message(self, broker: Any, message: Any) -> None:
        key = self._key(message)
        pipe = self.client.pipeline()
        pipe.incr(key)
        pipe.expire(key, 7 * 24 * 3600)
        started, _ = pipe.execute()
        if int(started) > self.max_crashes:
            self.client.delete(key)
            message.fail()
            self.dead_letters._park(
                message,
                None,
                f"parked: {int(started) - 1} deliveries died without finishing (worker killed?)",
                "PoisonMessage",
            )
            raise SkipMessage("poison message")

    def after_process_message(
        self, broker: Any, message: Any, *, result: Any = None, exception: Any = None
    ) -> None:
        try:
            self.client.delete(self._key(message))
        except redis.RedisError:
            log.warning("could not clear in-flight marker of %s", message.message_id)

    after_skip_message = after_process_message
