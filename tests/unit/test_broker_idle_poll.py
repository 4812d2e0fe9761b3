"""DUNNING_BROKER_IDLE_POLL_MS caps how long a consumer on an empty queue waits before asking Redis again."""

from __future__ import annotations

import pytest

from dunning.broker.setup import build_broker

# No server needed: the client connects on its first command, and building consumers sends none.
URL = "redis://127.0.0.1:1/0"


def test_unset_keeps_dramatiqs_idle_backoff(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("DUNNING_BROKER_IDLE_POLL_MS", raising=False)
    broker = build_broker(URL)
    assert broker.idle_poll_ms is None
    assert broker.consume("dunning", prefetch=2, timeout=1000).timeout == 1000


def test_set_caps_the_consumers_backoff(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("DUNNING_BROKER_IDLE_POLL_MS", "50")
    broker = build_broker(URL)
    consumer = broker.consume("dunning", prefetch=2, timeout=1000)
    assert (consumer.timeout, consumer.prefetch, consumer.queue_name) == (50, 2, "dunning")
    # A worker timeout already shorter stays as it is.
    assert broker.consume("mail", timeout=20).timeout == 20
