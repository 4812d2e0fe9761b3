"""Dramatiq's Redis broker with one change, in its consumer: bytes that are not a message are refused.

Bytes on a queue that are not a Dramatiq message (not UTF-8, not JSON, not a
message object, or a message field of the wrong type) are refused in the
consumer, before any middleware could see them. Dramatiq's own consumer
raises on them, dropping the good messages it fetched in the same batch until
the worker restarts, and the bytes come back after every restart. Ours parks
them in ``dead_letters`` (``dunning dlq``), acknowledges them, and carries on
with the rest of the batch.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import logging
import time
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any

import redis
from dramatiq import Message
from dramatiq.broker import MessageProxy
from dramatiq.brokers.redis import RedisBroker, _RedisConsumer
from dramatiq.common import compute_backoff
from dramatiq.errors import ConnectionClosed, DecodeError

from dunning.services.dlq import NOT_A_MESSAGE

log = logging.getLogger(__name__)

#: How much of such bytes the dead letter keeps (escaped); Redis keeps all of them if parking fails.
PAYLOAD_BYTES = 4096


class NotAMessage(Exception):
    """The bytes fetched from a queue are not a Dramatiq message; ``reason`` says why."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


_FIELDS = {f.name: f for f in dataclasses.fields(Message)}
_REQUIRED = [name for name, f in _FIELDS.items() if f.default is f.default_factory is dataclasses.MISSING]
_JSON_KINDS = {list: "array", str: "string", int: "number", float: "number", bool: "boolean"}


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
    shown = ", ".join(repr(escape_bytes(str(k).encode(), 40)) for k in keys[:5])
    return shown + (f" and {len(keys) - 5} more" if len(keys) > 5 else "")


def why_not_a_message(data: bytes) -> str:
    """Why bytes that Dramatiq could not decode are not a message, without repeating their content."""
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as exc:
        return f"invalid UTF-8 at byte {exc.start}"
    try:
        value = json.loads(text)
    except json.JSONDecodeError as exc:
        return f"invalid JSON at byte {len(text[: exc.pos].encode())}"
    if not isinstance(value, dict):
        kind = "null" if value is None else _JSON_KINDS.get(type(value), type(value).__name__)
        return f"JSON {kind}, not a message object"
    missing = [k for k in _REQUIRED if k not in value]
    unknown = [k for k in value if k not in _FIELDS]
    parts = []
    if missing:
        parts.append(f"missing key(s) {_names(missing)}")
    if unknown:
        parts.append(f"unknown key(s) {_names(unknown)}")
    if not parts and not isinstance(value.get("args"), list):
        parts.append("args is not a list")
    return "; ".join(parts) or "not decodable by Dramatiq"


def _shape_problem(message: Message[Any]) -> str | None:
    """What in a decoded message would break the consumer, the routing or the acknowledgement."""
    for name in ("queue_name", "actor_name", "message_id"):
        if not isinstance(getattr(message, name), str):
            return f"{name} is not a string"
    if not isinstance(message.kwargs, dict):
        return "kwargs is not an object"
    if not isinstance(message.options, dict):
        return "options is not an object"
    stamp = message.message_timestamp
    if not isinstance(stamp, int) or isinstance(stamp, bool):
        return "message_timestamp is not an integer"
    return None


def decode_message(data: bytes) -> Message[Any]:
    """Dramatiq's ``Message.decode``, plus the field types the worker relies on; NotAMessage if not."""
    try:
        message = Message.decode(data)
    except DecodeError:
        raise NotAMessage(why_not_a_message(data)) from None
    problem = _shape_problem(message)
    if problem is not None:
        raise NotAMessage(problem)
    return message


def _column_id(redis_id: bytes) -> str:
    """The Redis id as ``dead_letters.message_id`` (64 characters at most, still unique)."""
    text = escape_bytes(redis_id)
    if len(text) <= 64:
        return text
    return text[:47] + "~" + hashlib.sha256(redis_id).hexdigest()[:16]


#: The id, among the ones this consumer fetched and has not acknowledged, whose stored body is ARGV[1].
_FIND_FETCHED = """
for _, id in ipairs(redis.call("smembers", KEYS[1])) do
    if redis.call("hget", KEYS[2], id) == ARGV[1] then
        return id
    end
end
return false
"""


class RefusingRedisConsumer(_RedisConsumer):
    """Dramatiq's Redis consumer, except that bytes that are not a message are parked, not raised.

    ``__next__`` is Dramatiq 2.2's, with :func:`decode_message` in place of
    ``Message.decode``. Dramatiq's fetch returns bodies without their Redis ids,
    so a refused body's id is looked up in this worker's set of fetched ids.
    """

    broker: DunningRedisBroker

    def __next__(self) -> MessageProxy | None:
        try:
            while True:
                try:
                    data = self.message_cache.pop(0)
                except IndexError:
                    # Prefetch up to the limit; without messages, long-poll up to the idle timeout.
                    messages = []
                    if self.outstanding_message_count < self.prefetch:
                        self.message_cache = messages = self.broker.do_fetch(
                            self.queue_name, self.prefetch - self.outstanding_message_count
                        )
                    if not messages:
                        self.misses, backoff_ms = compute_backoff(self.misses, max_backoff=self.timeout)
                        time.sleep(backoff_ms / 1000)
                        return None
                    continue
                if data is None:  # an id whose body is gone (Dramatiq logs the same)
                    self.logger.warning(
                        "Found 'None' message in message cache for queue %r.", self.queue_name
                    )
                    continue
                self.misses = 0
                try:
                    message = decode_message(data)
                except NotAMessage as exc:
                    self.refuse(data, exc.reason)
                    continue
                self.queued_message_ids.add(message.message_id)
                return MessageProxy(message)
        except redis.ConnectionError as e:
            raise ConnectionClosed(e) from None

    def refuse(self, data: bytes, reason: str) -> None:
        """Park bytes that are not a message and acknowledge them; if parking fails, dead-letter them."""
        broker = self.broker
        ns = broker.namespace
        redis_id = broker.find_fetched(
            keys=[f"{ns}:__acks__.{broker.broker_id}.{self.queue_name}", f"{ns}:{self.queue_name}.msgs"],
            args=[data],
        )
        if redis_id is None:
            # No longer ours (deleted by hand, or taken back from a worker thought dead): whoever
            # fetches it next parks it. Nothing to acknowledge here.
            log.warning("queue %s: bytes that are not a message (%s), already gone", self.queue_name, reason)
            return
        row = {
            "message_id": _column_id(redis_id),
            "queue": self.queue_name,
            "actor": "(not a message)",
            "payload": escape_bytes(data, PAYLOAD_BYTES)
            + (f" [first {PAYLOAD_BYTES} of {len(data)} bytes]" if len(data) > PAYLOAD_BYTES else ""),
            "field": "message",
            "reason": f"not a Dramatiq message: {reason}",
            "error_type": NOT_A_MESSAGE,
            "parked_at": datetime.now(UTC),
        }
        try:
            broker.park(row)
        except Exception:
            # Kept whole in Dramatiq's dead-letter set (`dead (broker)` in `dunning queues`) instead.
            log.exception("queue %s: could not park %s in the database", self.queue_name, row["message_id"])
            broker.do_nack(self.queue_name, redis_id)
            return
        broker.do_ack(self.queue_name, redis_id)
        log.warning("queue %s: parked %s, %s", self.queue_name, row["message_id"], row["reason"])


class DunningRedisBroker(RedisBroker):
    """Dramatiq's Redis broker whose consumers park bytes that are not a message (``park(row)``)."""

    def __init__(self, *, park: Callable[[dict[str, Any]], None], **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.park = park
        self.find_fetched = self.client.register_script(_FIND_FETCHED)

    @property
    def consumer_class(self) -> type[RefusingRedisConsumer]:
        return RefusingRedisConsumer
