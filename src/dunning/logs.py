"""Logs name ids, never customer data: the redaction every ``dunning`` process applies to its log records.

Customer data (emails, names, free text from producers) would reach the logs
through three doors, all closed here, on the log record itself, so that it holds
whatever logger wrote the record and whatever handler prints it (Dramatiq
configures the logging of its worker processes itself):

- **Messages.** Dramatiq renders a message as ``actor(args, kwargs)``, so its
  worker's "Failed to process message %s ..." would print the whole event. A
  message argument is rendered as ``actor_name[message_id]`` instead.
- **Payload-like arguments** (dicts, nested lists, bytes, models): rendered as
  their type and size. Strings, numbers, dates and lists of them (ids, counts,
  queue names) are kept, and URLs without their userinfo and query.
- **Exception texts.** A traceback keeps its frames and exception types, and the
  text only of the exceptions known to carry ids and codes, not data: ours
  (``dunning.*``, written to that rule), Dramatiq's, and connection errors.
  Anything else (a database error quoting its SQL parameters, an SMTP reply
  quoting the recipient) shows ``<redacted>``.

:func:`install` puts this in place for the whole process; :class:`RedactingFilter`
does the same as a :class:`logging.Filter` for a logging set up by hand.
"""

from __future__ import annotations

import logging
import sys
import threading
import traceback
from collections.abc import Mapping
from datetime import date, datetime, time, timedelta
from decimal import Decimal
from pathlib import PurePath
from types import TracebackType
from typing import Any
from uuid import UUID

_SCALARS = (str, int, float, bool, type(None), date, datetime, time, timedelta, Decimal, PurePath, UUID)
#: Modules whose exceptions are written to carry ids and codes only.
_SAFE_MODULES = ("dunning", "workers", "dramatiq")
#: Connection failures say which host and port, never what was being sent.
_SAFE_EXCEPTIONS: tuple[type[BaseException], ...] = (ConnectionError, TimeoutError)
try:
    import redis.exceptions

    _SAFE_EXCEPTIONS += (redis.exceptions.ConnectionError, redis.exceptions.TimeoutError)
except ImportError:  # pragma: no cover - redis is a dependency
    pass

_MARK = "_dunning_redacting"


class _Shown(str):
    """A stand-in printed the same by ``%s`` and ``%r`` (no quotes around ``<dict of 3>``)."""

    __slots__ = ()

    def __repr__(self) -> str:
        return str(self)


def message_ref(message: Any) -> str:
    """``actor_name[message_id]``: how a Dramatiq message appears in logs."""
    return _Shown(f"{getattr(message, 'actor_name', '?')}[{getattr(message, 'message_id', '?')}]")


def _is_message(value: Any) -> bool:
    from dramatiq import Message
    from dramatiq.broker import MessageProxy

    return isinstance(value, Message | MessageProxy)


def _is_url(value: Any) -> bool:
    try:
        import httpx
    except ImportError:  # pragma: no cover - httpx is a dependency
        return False
    return isinstance(value, httpx.URL)


def exception_text_is_safe(exc: BaseException) -> bool:
    """Whether ``str(exc)`` may be logged: our own exceptions and connection errors only."""
    module = type(exc).__module__ or ""
    if module.split(".", 1)[0] in _SAFE_MODULES:
        return True
    # smtplib's errors are OSErrors that quote the server's reply: only the connection errors pass.
    return isinstance(exc, _SAFE_EXCEPTIONS)


def describe_exception(exc: BaseException) -> str:
    """``module.Type: text``, the text replaced by ``<redacted>`` unless it is known to be safe."""
    cls = type(exc)
    name = (
        cls.__qualname__ if cls.__module__ in ("builtins", None) else f"{cls.__module__}.{cls.__qualname__}"
    )
    try:
        text = str(exc)
    except Exception:  # a broken __str__ must not take the log line with it
        text = "?"
    if not text:
        return name
    return f"{name}: {text}" if exception_text_is_safe(exc) else f"{name}: <redacted>"


def safe_value(value: Any) -> Any:
    """A log argument as it may be printed: messages by id, payloads by type and size."""
    if _is_message(value):
        return message_ref(value)
    if isinstance(value, BaseException):
        return _Shown(value if exception_text_is_safe(value) else f"<{type(value).__name__}: redacted>")
    if _is_url(value):
        # httpx logs every request's URL: scheme, host and path name ids; userinfo and query may not.
        return _Shown(f"{value.scheme}://{value.host}{f':{value.port}' if value.port else ''}{value.path}")
    if isinstance(value, _SCALARS):
        return value
    if isinstance(value, list | tuple | set | frozenset) and all(isinstance(v, _SCALARS) for v in value):
        return value
    size = f" of {len(value)}" if isinstance(value, Mapping | list | tuple | set | frozenset | bytes) else ""
    return _Shown(f"<{type(value).__name__}{size}>")


def access_path(path: str) -> str:
    """A request path as the access log may print it: no customer-link token, no query string.

    A link token is a bearer credential for its customer's page for weeks, and
    a query string may carry anything; the route is what ops need to read.
    """
    path = path.split("?", 1)[0]
    if path.startswith("/l/"):
        return "/l/<token>" + ("/" + path.split("/", 3)[3] if path.count("/") > 2 else "")
    return path


def redacted_traceback(exc: BaseException) -> str:
    """The traceback of ``exc`` and its chain as Python prints it, with exception texts redacted."""
    chain: list[tuple[BaseException, str | None]] = []
    seen: set[int] = set()
    current: BaseException | None = exc
    link: str | None = None
    while current is not None and id(current) not in seen:
        seen.add(id(current))
        chain.append((current, link))
        if current.__cause__ is not None:
            current, link = (
                current.__cause__,
                "The above exception was the direct cause of the following exception:",
            )
        elif current.__context__ is not None and not current.__suppress_context__:
            current, link = (
                current.__context__,
                "During handling of the above exception, another exception occurred:",
            )
        else:
            current = None
    parts: list[str] = []
    for error, joined_by in reversed(chain):
        parts.append(_one_traceback(error, error.__traceback__))
        if joined_by:
            parts.append(f"\n{joined_by}\n\n")
    return "".join(parts).rstrip("\n")


def _one_traceback(exc: BaseException, tb: TracebackType | None) -> str:
    frames = traceback.format_list(traceback.extract_tb(tb)) if tb is not None else []
    head = "Traceback (most recent call last):\n" if frames else ""
    return head + "".join(frames) + describe_exception(exc) + "\n"


def redact_record(record: logging.LogRecord) -> logging.LogRecord:
    """Make ``record`` safe to print (in place); returns it."""
    if getattr(record, _MARK, False):
        return record
    setattr(record, _MARK, True)
    if not isinstance(record.msg, str):
        record.msg = str(safe_value(record.msg))
    args = record.args
    if isinstance(args, Mapping):
        if "%(" in record.msg:  # named placeholders: keep the keys, check the values
            record.args = {k: safe_value(v) for k, v in args.items()}
        else:  # one mapping printed whole ("%s", payload)
            record.args = (safe_value(args),)
    elif args:
        record.args = tuple(safe_value(a) for a in args)
        if record.name == "uvicorn.access" and len(record.args) == 5:
            record.args = (*record.args[:2], access_path(str(record.args[2])), *record.args[3:])
    if record.exc_info and record.exc_info[1] is not None:
        record.exc_text = redacted_traceback(record.exc_info[1])
        record.exc_info = None
    return record


class RedactingFilter(logging.Filter):
    """:func:`redact_record` as a filter, for handlers of a logging configured by hand."""

    def filter(self, record: logging.LogRecord) -> bool:
        redact_record(record)
        return True


def install() -> None:
    """Redact every log record this process creates, whatever logger or handler is involved.

    Done with the log record factory, not a handler filter: Dramatiq adds its own
    handlers in each worker process after this runs. Tracebacks of uncaught
    exceptions (``sys.excepthook``, ``threading.excepthook``), which go to stderr
    with the logs, are redacted the same way. Idempotent; processes forked later
    (Dramatiq's workers) inherit it.
    """
    current = logging.getLogRecordFactory()
    if getattr(current, _MARK, False):
        return

    def factory(*args: Any, **kwargs: Any) -> logging.LogRecord:
        return redact_record(current(*args, **kwargs))

    setattr(factory, _MARK, True)
    logging.setLogRecordFactory(factory)
    sys.excepthook = _uncaught
    threading.excepthook = _uncaught_in_thread


def _uncaught(exc_type: type[BaseException], exc: BaseException, tb: TracebackType | None) -> None:
    if exc.__traceback__ is None:
        exc = exc.with_traceback(tb)
    print(redacted_traceback(exc), file=sys.stderr, flush=True)


def _uncaught_in_thread(args: threading.ExceptHookArgs) -> None:
    if args.exc_type is SystemExit or args.exc_value is None:
        return
    name = args.thread.name if args.thread is not None else threading.get_ident()
    print(f"Exception in thread {name}:", file=sys.stderr)
    _uncaught(args.exc_type, args.exc_value, args.exc_traceback)


def installed() -> bool:
    """Whether :func:`install` has run in this process."""
    return bool(getattr(logging.getLogRecordFactory(), _MARK, False))


__all__ = [
    "RedactingFilter",
    "describe_exception",
    "exception_text_is_safe",
    "install",
    "installed",
    "message_ref",
    "redact_record",
    "redacted_traceback",
    "safe_value",
]
