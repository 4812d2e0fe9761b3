"""Dramatiq's Redis broker with one change, in its consumer: bytes that are not a message are refused.

Bytes on a queue that are not a Dramatiq message we can run (not UTF-8, not
JSON, nested too deep, a number too long, not a message object, a message
field or option of the wrong type) are refused in the consumer, before any
middleware could see them. Dramatiq's own consumer raises on them, whatever
the exception (``ValueError`` for an integer of 5,000 digits,
``RecursionError`` for deep nesting), dropping the good messages it fetched
in the same batch until the worker restarts, and the bytes come back after
every restart. Ours parks them in ``dead_letters`` (``dunning dlq``) with
their bytes and the reason, acknowledges them, and carries on with the rest
of the batch. :func:`decode_message` raises :class:`NotAMessage` and nothing
else, whatever the bytes.
"""

from __future__ import annotations

import hashlib
import logging
import re
import time
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any

import redis
from dramatiq.broker import MessageProxy
from dramatiq.brokers.redis import RedisBroker, _RedisConsumer
from dramatiq.common import compute_backoff
from dramatiq.errors import ConnectionClosed

from dunning.broker.decode import NotAMessage, decode_message, escape_bytes
from dunning.broker.unparked import stash
from dunning.store.dead_letters import NOT_A_MESSAGE

log = logging.getLogger(__name__)

#: How much of such bytes the dead letter keeps (escaped); Redis keeps all of them if parking fails.
PAYLOAD_BYTES = 4096


#: ``options.redis_message_id`` as it appears in a message's bytes (printable ASCII, no escapes).
_CLAIMED_ID = re.compile(rb'"redis_message_id"\s*:\s*"([\x20-\x21\x23-\x5b\x5d-\x7e]{1,200})"')
#: The reason for a message that claims another Redis id than it was queued under.
WRONG_REDIS_ID = (
    "options.redis_message_id is not the id the message was queued under "
    "(it must equal the HSET field and the list entry)"
)


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


#: For each ARGV, whether it is a member of the set KEYS[1]: SMISMEMBER by hand, for Redis before 6.2.
_MEMBERS = """
local found = {}
for i, id in ipairs(ARGV) do
    found[i] = redis.call("sismember", KEYS[1], id)
end
return found
"""


class RefusingRedisConsumer(_RedisConsumer):
    """Dramatiq's Redis consumer, except that bytes that are not a message are parked, not raised.

    ``__next__`` is Dramatiq 2.2's, with :func:`decode_message` in place of
    ``Message.decode``. Dramatiq's fetch returns bodies without their Redis ids,
    so a refused body's id is looked up in this worker's set of fetched ids.

    This copy of a private method is the one that cannot be avoided: Dramatiq
    decodes inside ``__next__`` and offers no hook before it (a middleware never
    sees bytes that do not decode). So Dramatiq is pinned to 2.2.x in
    ``pyproject.toml``, and ``tests/unit/test_dramatiq_pins.py`` fails when the
    installed original of ``__next__`` changes, naming this class to re-check.
    """

    broker: DunningRedisBroker
    #: The ``redis_message_id`` options of the last fetch that are ids this consumer really fetched.
    _ours: frozenset[str] = frozenset()

    def fetched_ids(self, bodies: list[bytes | None]) -> frozenset[str]:
        """The ids that the fetched bodies claim (``options.redis_message_id``) and that are in our acks set.

        Dramatiq acknowledges a message by the id it claims. One that claims another id
        than it was queued under (a producer bug) would be acknowledged by the wrong id:
        its own would stay in the acks set, and come back after every worker restart.
        One command per fetch, not per message (a pipeline of one SISMEMBER per claim cost
        the client about as much as the message's own acknowledgement). The scan
        of the bytes is only a fast path: a claim it misses or misreads (an escaped id, the
        same key inside the event) is checked again, exactly, by :meth:`is_ours`.
        """
        claims = [m.group(1).decode("ascii") for b in bodies if b and (m := _CLAIMED_ID.search(b))]
        if not claims:
            return frozenset()
        key = f"{self.broker.namespace}:__acks__.{self.broker.broker_id}.{self.queue_name}"
        found = self.broker.members_of(key, claims)
        return frozenset(claim for claim, member in zip(claims, found, strict=True) if member)

    def is_ours(self, claimed: str) -> bool:
        """Whether ``claimed`` is an id in this consumer's acks set (the exact check of one message)."""
        key = f"{self.broker.namespace}:__acks__.{self.broker.broker_id}.{self.queue_name}"
        return bool(self.broker.client.sismember(key, claimed))

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
                        if messages:
                            self._ours = self.fetched_ids(messages)
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
                claimed = message.options["redis_message_id"]
                if claimed not in self._ours and not self.is_ours(claimed):
                    self.refuse(data, WRONG_REDIS_ID)
                    continue
                self.queued_message_ids.add(message.message_id)
                return MessageProxy(message)
        except redis.ConnectionError as e:
            raise ConnectionClosed(e) from None

    def close(self) -> None:
        """Give back the fetched messages no worker thread was handed, then close.

        Dramatiq's Redis consumer prefetches (twice the worker threads) into a
        cache that a clean shutdown neither runs nor requeues: the ids stay in this
        process's acks set. Our heartbeat row is removed at that shutdown, so the
        scheduler no longer knows the process, and the messages waited for
        Dramatiq's maintenance pass (by chance, after ``heartbeat_timeout``) or,
        for a job, its lease: minutes, at the end of a quiet run (what the crash
        test sometimes waited out after a sibling's SIGKILL stopped a pool).
        These messages never started, so giving them back cannot run anything twice.
        """
        leftover, self.message_cache = self.message_cache, []
        ids: list[str] = []
        for data in leftover:
            if data is None:
                continue
            try:
                ids.append(decode_message(data).options["redis_message_id"])
            except (NotAMessage, KeyError):
                continue  # bytes that are not a message: whoever fetches them after maintenance parks them
        if ids:
            try:
                # Dramatiq's own requeue: only ids still in our acks set go back (SREM, then RPUSH).
                self.broker.do_requeue(self.queue_name, *ids)
                log.info("queue %s: gave back %d fetched messages at shutdown", self.queue_name, len(ids))
            except redis.ConnectionError:
                log.warning("queue %s: could not give back %d fetched messages", self.queue_name, len(ids))
        super().close()

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
            # Kept whole in Dramatiq's dead-letter set (`dead (broker)` in `dunning queues`), and the
            # row waits in Redis until the scheduler can write it (dunning.broker.unparked).
            log.exception("queue %s: could not park %s in the database", self.queue_name, row["message_id"])
            stash(broker.client, row)
            broker.do_nack(self.queue_name, redis_id)
            return
        broker.do_ack(self.queue_name, redis_id)
        log.warning("queue %s: parked %s, %s", self.queue_name, row["message_id"], row["reason"])


class DunningRedisBroker(RedisBroker):
    """Dramatiq's Redis broker whose consumers park bytes that are not a message (``park(row)``).

    ``idle_poll_ms``, when set, caps how long a consumer whose queue was empty waits before asking
    Redis again (Dramatiq backs off up to the worker's timeout, 1 s): the demo's short simulated
    steps, each a chain of queues, would otherwise wait on idle consumers most of the time.
    """

    def __init__(
        self, *, park: Callable[[dict[str, Any]], None], idle_poll_ms: int | None = None, **kwargs: Any
    ) -> None:
        super().__init__(**kwargs)
        self.park = park
        self.idle_poll_ms = idle_poll_ms
        self.find_fetched = self.client.register_script(_FIND_FETCHED)
        self.members = self.client.register_script(_MEMBERS)
        #: Whether the server has SMISMEMBER (Redis >= 6.2); None until the first check asks it.
        self.has_smismember: bool | None = None

    def members_of(self, key: str, ids: list[str]) -> list[Any]:
        """For each of ``ids``, whether it is a member of the set ``key`` (truthy or not; one command).

        SMISMEMBER where the server has it (Redis >= 6.2, cheaper on both sides than a
        script), else a Lua loop. The version is asked once; racing threads agree.
        """
        if self.has_smismember is None:
            version = re.match(r"(\d+)\.(\d+)", str(self.client.info("server").get("redis_version")))
            self.has_smismember = version is not None and (int(version[1]), int(version[2])) >= (6, 2)
        if self.has_smismember:
            return list(self.client.smismember(key, ids))
        return list(self.members(keys=[key], args=ids))

    @property
    def consumer_class(self) -> type[RefusingRedisConsumer]:
        return RefusingRedisConsumer

    def consume(self, queue_name: str, prefetch: int = 1, timeout: int = 5000) -> RefusingRedisConsumer:
        """A consumer of ``queue_name``; its idle backoff is at most ``idle_poll_ms`` when that is set."""
        if self.idle_poll_ms is not None:
            timeout = min(timeout, self.idle_poll_ms)
        return self.consumer_class(self, queue_name, prefetch, timeout)
