"""The ``DeadLetters`` middleware: every message that failed for good is kept in the database, with its reason."""

from __future__ import annotations

import json
import logging
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any

from dramatiq.middleware import Middleware

from dunning.broker.unparked import stash
from dunning.errors import describe_failure

log = logging.getLogger(__name__)

Parker = Callable[[dict[str, Any]], None]


def parked_payload(message: Any) -> str:
    """What a dead letter keeps of a message: enough for ``dunning dlq requeue`` to send it again."""
    original = {
        "queue_name": message.queue_name,
        "actor_name": message.actor_name,
        "args": list(message.args),
        "kwargs": dict(message.kwargs),
        "message_id": message.message_id,
    }
    return json.dumps(original, separators=(",", ":"))


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
        self._park(broker, message, field, reason, error_type)

    def before_nack(self, broker: Any, message: Any) -> None:
        # A message for an actor this worker does not know never reaches the process hooks.
        exc = getattr(message, "_exception", None)
        if type(exc).__name__ == "ActorNotFound":
            self._park(
                broker,
                message,
                "actor_name",
                f"no actor named {str(message.actor_name)[:80]!r} on this worker",
                "ActorNotFound",
            )

    def _park(self, broker: Any, message: Any, field: str | None, reason: str, error_type: str) -> None:
        row = {
            "message_id": message.message_id,
            "queue": message.queue_name,
            "actor": message.actor_name,
            "payload": parked_payload(message),
            "field": field,
            "reason": reason,
            "error_type": error_type,
            "parked_at": datetime.now(UTC),
        }
        try:
            self.park(row)
        except Exception:
            # The message still lands in Dramatiq's own dead-letter set, without its reason: the
            # row waits in Redis and the scheduler writes it once the database is back.
            log.exception("could not park message %s in the database", message.message_id)
            client = getattr(broker, "client", None)
            if client is not None:
                stash(client, row)
