"""What we copy or mirror of Dramatiq's internals, pinned against the installed Dramatiq.

A minor release may change a private method or a key layout without notice;
these tests fail first, and say what to re-check.
"""

from __future__ import annotations

import hashlib
import inspect

import dramatiq
from dramatiq.brokers.redis import RedisBroker, _RedisConsumer

#: sha256 of ``inspect.getsource(_RedisConsumer.__next__)`` in Dramatiq 2.2.1.
CONSUMER_NEXT_SHA256 = "b8245bc4ab8044d67d72216baca5e5be0d07fccce15c443a5887b6397c9906e1"


def test_dramatiq_is_the_pinned_minor_version() -> None:
    assert dramatiq.__version__.startswith("2.2."), dramatiq.__version__


def test_the_consumer_method_we_copied_is_unchanged() -> None:
    source = inspect.getsource(_RedisConsumer.__next__)
    assert hashlib.sha256(source.encode()).hexdigest() == CONSUMER_NEXT_SHA256, (
        "Dramatiq's _RedisConsumer.__next__ changed: re-check the copy in "
        "dunning.broker.consumer.RefusingRedisConsumer.__next__, then update this hash"
    )


def test_our_consumer_still_overrides_the_one_we_copied() -> None:
    from dunning.broker.consumer import DunningRedisBroker, RefusingRedisConsumer

    assert issubclass(RefusingRedisConsumer, _RedisConsumer)
    assert "__next__" in vars(RefusingRedisConsumer)
    assert issubclass(DunningRedisBroker, RedisBroker)
