"""Group commit: worker threads hand their items to one leader that applies them together.

No timer and no extra thread: the first thread to arrive leads and applies
everything queued; threads that arrive meanwhile wait, and the next batch is
led by one of them. At low load every batch has one item (no added latency);
under load batches grow to the number of busy threads, and one transaction
carries all of them.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Generic, TypeVar

T = TypeVar("T")
R = TypeVar("R")


class _Signal:
    """A one-way wake-up: :meth:`wait` returns once :meth:`set` has been called (any number of times).

    A lock taken at birth and released by ``set``: every event of a group commit
    makes and waits for one, and ``threading.Event`` (a Condition, a lock per
    waiter, a waiter list) costs several times as much.
    """

    __slots__ = ("_lock",)

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._lock.acquire()

    def set(self) -> None:
        # Only the thread that applies a batch (or hands the lead over) sets, one after the other.
        if self._lock.locked():
            self._lock.release()

    def wait(self) -> None:
        self._lock.acquire()


@dataclass
class _Slot(Generic[T, R]):
    item: T
    ready: _Signal = field(default_factory=_Signal)
    result: R | Exception | None = None
    lead: bool = False
    done: bool = False  # applied (its result may be None: an item with nothing to return)


class GroupCommit(Generic[T, R]):
    """Runs ``apply(items) -> results`` on batches of concurrently submitted items."""

    def __init__(self, apply: Callable[[list[T]], Sequence[R | Exception]], *, max_batch: int = 64) -> None:
        self._apply = apply
        self._max_batch = max_batch
        self._lock = threading.Lock()
        self._queue: list[_Slot[T, R]] = []
        self._leading = False
        self.batches = 0
        self.items = 0

    def submit(self, item: T) -> R:
        """Apply ``item`` (with whatever else is waiting) and return its result or raise its error."""
        slot: _Slot[T, R] = _Slot(item)
        with self._lock:
            self._queue.append(slot)
            lead = not self._leading
            if lead:
                self._leading = True
        if not lead:
            slot.ready.wait()
            if not slot.lead:
                return self._unwrap(slot)
        # Lead: apply batches until our own item is done, then hand over, even if this thread
        # is interrupted (a time limit raises inside it): waiting threads must never be orphaned.
        try:
            while True:
                with self._lock:
                    batch = self._queue[: self._max_batch]
                    del self._queue[: self._max_batch]
                if batch:
                    self._run(batch)
                # ``done``, not ``result is not None``: an item whose result is None (an
                # outcome written) kept its thread leading until the queue ran dry.
                if slot.done or not batch:
                    return self._unwrap(slot)
        finally:
            with self._lock:
                if self._queue:
                    heir = self._queue[0]
                    heir.lead = True
                    heir.ready.set()
                else:
                    self._leading = False

    def _run(self, batch: list[_Slot[T, R]]) -> None:
        try:
            results = list(self._apply([s.item for s in batch]))
        except Exception as exc:  # the apply function should not raise; if it does, everyone learns
            results = [exc] * len(batch)
        except BaseException:
            # Interrupted (time limit, shutdown): the batch's fate is unknown to us, so tell every
            # waiter it failed; their messages are retried and event ids make that safe.
            for s in batch:
                s.result, s.lead, s.done = RuntimeError("group commit interrupted"), False, True
                s.ready.set()
            raise
        self.batches += 1
        self.items += len(batch)
        for s, r in zip(batch, results, strict=True):
            s.result = r
            s.lead = False
            s.done = True
            s.ready.set()

    @staticmethod
    def _unwrap(slot: _Slot[T, R]) -> R:
        if isinstance(slot.result, Exception):
            raise slot.result
        return slot.result  # type: ignore[return-value]
