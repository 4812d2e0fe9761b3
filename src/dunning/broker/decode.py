"""Decoding the bytes fetched from a queue into a Dramatiq message, refusing anything else.

:func:`decode_message` replaces Dramatiq's ``Message.decode`` in our consumer
(:mod:`dunning.broker.consumer`): it raises :class:`NotAMessage`, with the
reason, and nothing else, whatever the bytes.
"""

from __future__ import annotations

import dataclasses
import logging
from typing import Any

from dramatiq import Message

from dunning.contract.untrusted_json import JsonRefused, loads
from dunning.errors import DunningError

log = logging.getLogger(__name__)


class NotAMessage(DunningError):
    """The bytes fetched from a queue are not a Dramatiq message; ``reason`` says why."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


_FIELDS = {f.name: f for f in dataclasses.fields(Message)}
_REQUIRED = [name for name, f in _FIELDS.items() if f.default is f.default_factory is dataclasses.MISSING]
_JSON_KINDS = {list: "array", str: "string", int: "number", float: "number", bool: "boolean"}

#: Largest message a consumer decodes: an event envelope is at most 64 KiB, the wrapper a few hundred bytes.
MAX_MESSAGE_BYTES = 1024 * 1024
#: Longest ``message_id`` / ``queue_name`` / ``actor_name`` (they are stored in ``dead_letters``).
_MAX_NAME = {"message_id": 64, "queue_name": 80, "actor_name": 80}
#: Options that Dramatiq and our middleware read as numbers (a string there breaks a middleware).
_NUMERIC_OPTIONS = ("retries", "max_retries", "min_backoff", "max_backoff", "time_limit", "max_age")
#: Options that only make sense as Python objects (exception classes, a callable): never from JSON.
_CODE_OPTIONS = ("throws", "retry_when")


def escape_bytes(data: bytes, limit: int | None = None) -> str:
    """Printable, unambiguous text of arbitrary bytes: UTF-8 kept, the rest as ``\\xNN``/``\\n``/``\\\\``.

    Safe to store and print to a terminal (no control characters survive).
    """
    text = data[:limit].decode("utf-8", "surrogateescape")
    out = []
    for ch in text:
        code = ord(ch)
        if 0xDC80 <= code <= 0xDCFF:  # a byte that was not UTF-8
            out.append(f"\\x{code - 0xDC00:02x}")
        elif ch == "\\":
            out.append("\\\\")
        elif ch.isprintable():
            out.append(ch)
        else:
            out.append(ch.encode("unicode_escape").decode("ascii"))
    return "".join(out)


def _names(keys: list[str]) -> str:
    shown = ", ".join(repr(escape_bytes(str(k).encode("utf-8", "surrogatepass"), 40)) for k in keys[:5])
    return shown + (f" and {len(keys) - 5} more" if len(keys) > 5 else "")


def _kind(value: Any) -> str:
    return "null" if value is None else _JSON_KINDS.get(type(value), type(value).__name__)


def _wrapper_problem(value: Any) -> str | None:
    """What in a decoded JSON value keeps it from being a message the worker can run and acknowledge."""
    if not isinstance(value, dict):
        return f"JSON {_kind(value)}, not a message object"
    missing = [k for k in _REQUIRED if k not in value]
    unknown = [k for k in value if k not in _FIELDS]
    parts = []
    if missing:
        parts.append(f"missing key(s) {_names(missing)}")
    if unknown:
        parts.append(f"unknown key(s) {_names(unknown)}")
    if parts:
        return "; ".join(parts)
    if not isinstance(value["args"], list):
        return "args is not a list"
    for name, longest in _MAX_NAME.items():
        text = value.get(name)
        if name == "message_id" and name not in value:
            continue  # Dramatiq makes one up
        if not isinstance(text, str):
            return f"{name} is not a string"
        if not text or len(text) > longest or not text.isprintable():
            return f"{name} is not 1 to {longest} printable characters"
    if not isinstance(value["kwargs"], dict):
        return "kwargs is not an object"
    options = value["options"]
    if not isinstance(options, dict):
        return "options is not an object"
    stamp = value.get("message_timestamp", 0)
    if not isinstance(stamp, int) or isinstance(stamp, bool):
        return "message_timestamp is not an integer"
    return _options_problem(options)


def _options_problem(options: dict[str, Any]) -> str | None:
    redis_id = options.get("redis_message_id")
    if not isinstance(redis_id, str) or not redis_id:
        # Acknowledged by this id: without it the message would come back after every restart.
        return "options.redis_message_id is missing or not a string"
    for name in _NUMERIC_OPTIONS:
        number = options.get(name)
        if number is not None and (not isinstance(number, int) or isinstance(number, bool)):
            return f"options.{name} is not an integer"
    for name in _CODE_OPTIONS:
        if name in options:
            return f"options.{name} cannot be set in a message"
    return None


def decode_message(data: bytes) -> Message[Any]:
    """The message in ``data``; :class:`NotAMessage` (and nothing else) if it is not one we can run.

    Replaces Dramatiq's ``Message.decode`` (which raises whatever the JSON decoder
    raised) for Dramatiq's default JSON encoding. Refused: over
    :data:`MAX_MESSAGE_BYTES`, invalid UTF-8 or JSON, nesting deeper than
    :data:`~dunning.contract.untrusted_json.DECODE_MAX_DEPTH`, numbers longer than
    :data:`~dunning.contract.untrusted_json.DECODE_MAX_NUMBER_CHARS`, a wrapper of the
    wrong shape, option values that would break a middleware. The reason never
    repeats the bytes.
    """
    try:
        decoded = _decode(data)
    except Exception as exc:  # a gap in the checks: still refused, never a crashed consumer
        log.error("decoding a message failed unexpectedly: %s", type(exc).__name__)
        raise NotAMessage(f"not decodable ({type(exc).__name__})") from None
    if isinstance(decoded, str):
        raise NotAMessage(decoded)
    return decoded


def _decode(data: bytes) -> Message[Any] | str:
    """The message, or why there is none."""
    if len(data) > MAX_MESSAGE_BYTES:
        return f"{len(data)} bytes, over the {MAX_MESSAGE_BYTES}-byte limit of a message"
    try:
        fields = loads(data)
    except JsonRefused as exc:
        return exc.reason
    problem = _wrapper_problem(fields)
    if problem is not None:
        return problem
    fields["args"] = tuple(fields["args"])
    return Message(**fields)
