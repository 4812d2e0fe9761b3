"""Tracebacks Dramatiq stores on the broker with a retry carry no exception text.

(A message out of retries goes to Dramatiq's dead-letter set with the body it
was enqueued with, so no traceback reaches Redis that way.)"""

from __future__ import annotations

import json
import time
from typing import Any

import dramatiq
import pytest
from dramatiq.brokers.redis import RedisBroker
from dramatiq.middleware import Retries

from dunning.broker.middleware import RedactTracebacks

pytestmark = pytest.mark.integration

SECRET = "jane.doe@example.com"


def _stored_options(broker: RedisBroker, key: str) -> list[dict[str, Any]]:
    return [json.loads(body)["options"] for body in broker.client.hvals(key)]


def _wait_for(check: Any, timeout: float = 30.0) -> Any:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        found = check()
        if found:
            return found
        time.sleep(0.05)
    raise AssertionError("timed out")


def test_stored_traceback_names_the_frames_and_type_but_not_the_text(redis_server) -> None:
    # Stock Retries, with our middleware after it (Dramatiq runs after-hooks in reverse).
    broker = RedisBroker(url=redis_server.url, middleware=[Retries(), RedactTracebacks()])
    broker.client.flushall()
    queue = "redact_probe"

    @dramatiq.actor(broker=broker, queue_name=queue, max_retries=1, min_backoff=600_000)
    def fails(customer: str) -> None:
        raise ValueError(f"could not bill {customer}")

    fails.send(SECRET)
    worker = dramatiq.Worker(broker, worker_threads=1, worker_timeout=100)
    worker.start()
    try:
        # The retry waits in the delay queue, its traceback in its options.
        [options] = _wait_for(lambda: _stored_options(broker, f"dramatiq:{queue}.DQ.msgs"))
    finally:
        worker.stop()
        broker.close()
    traceback = options["traceback"]
    assert "in fails" in traceback  # the frames stay
    assert traceback.endswith("ValueError: <redacted>")  # the type stays, the text does not
    assert SECRET not in traceback


def test_the_product_broker_redacts_after_stock_retries() -> None:
    from dunning.broker.setup import build_broker

    broker = build_broker("redis://127.0.0.1:1/0")  # builds only: nothing connects
    kinds = [type(m) for m in broker.middleware]
    assert Retries in kinds and RedactTracebacks in kinds
    assert kinds.index(RedactTracebacks) > kinds.index(Retries)
