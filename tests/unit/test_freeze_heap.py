"""The FreezeBootHeap middleware: only where enabled, once per process."""

from __future__ import annotations

import gc
from collections.abc import Iterator

import pytest

from dunning.broker.middleware.heap import ENV_FLAG, YOUNG_THRESHOLD, FreezeBootHeap


@pytest.fixture
def gc_state() -> Iterator[None]:
    thresholds = gc.get_threshold()
    gc.unfreeze()
    yield
    gc.unfreeze()
    gc.set_threshold(*thresholds)


def test_disabled_by_default_outside_dunning_worker(gc_state: None, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv(ENV_FLAG, raising=False)
    before = gc.get_threshold()
    mw = FreezeBootHeap()
    mw.after_worker_boot(None, None)
    assert not mw.enabled
    assert gc.get_freeze_count() == 0
    assert gc.get_threshold() == before


def test_freezes_the_boot_heap_once_and_raises_the_young_threshold(
    gc_state: None, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv(ENV_FLAG, "1")
    _, middle, old = gc.get_threshold()
    mw = FreezeBootHeap()
    assert mw.enabled
    mw.after_worker_boot(None, None)
    frozen = gc.get_freeze_count()
    assert frozen > 1000  # everything the test process has imported
    assert gc.get_threshold() == (YOUNG_THRESHOLD, middle, old)
    kept = [[] for _ in range(10)]  # tracked objects allocated after boot: a second boot must not freeze them
    mw.after_worker_boot(None, None)
    assert gc.get_freeze_count() == frozen
    assert kept
