"""The ``RedactTracebacks`` middleware: tracebacks stored on the broker carry no customer data.

Dramatiq's stock :class:`~dramatiq.middleware.Retries` stores the formatted
traceback of a failure in ``message.options["traceback"]`` before it enqueues
the retry (or before the message is dead-lettered), and exception texts can
quote customer data. Instead of a copy of ``Retries``, this middleware uses two
public hooks: its ``after_process_message`` keeps the exception (it must come
*after* ``Retries`` in the middleware list, because Dramatiq runs after-hooks
in reverse order), and ``before_enqueue`` / ``before_nack`` replace the text
with :func:`dunning.logs.redacted_traceback` of that exception (frames and
exception types; texts only of our own exceptions).
"""

from __future__ import annotations

import threading
from typing import Any

from dramatiq.middleware import Middleware

from dunning.logs import redacted_traceback


class RedactTracebacks(Middleware):
    """Rewrites ``options["traceback"]`` as it leaves the worker (retry or dead letter)."""

    def __init__(self) -> None:
        self._last = threading.local()  # the exception of this thread's current message, if any

    def after_process_message(
        self, broker: Any, message: Any, *, result: Any = None, exception: Any = None
    ) -> None:
        self._last.exception = exception

    def _redact(self, message: Any) -> None:
        exception = getattr(self._last, "exception", None)
        if exception is not None and "traceback" in message.options:
            message.options["traceback"] = redacted_traceback(exception)

    def before_enqueue(self, broker: Any, message: Any, delay: Any) -> None:
        self._redact(message)

    def before_nack(self, broker: Any, message: Any) -> None:
        self._redact(message)
