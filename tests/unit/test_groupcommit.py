"""Group commit: every item gets its own result, batches form under concurrency, errors stay per item."""

from __future__ import annotations

import threading
import time

import pytest

from dunning.engine.groupcommit import GroupCommit


def test_each_item_gets_its_own_result_and_batches_form_under_load() -> None:
    calls: list[list[int]] = []
    gate = threading.Event()

    def apply(items: list[int]) -> list[int | Exception]:
        if not calls:
            gate.wait(2)  # hold the first batch so the others queue up behind it
        calls.append(items)
        return [ValueError(f"odd {i}") if i % 2 else i * 10 for i in items]

    group: GroupCommit[int, int] = GroupCommit(apply)
    results: dict[int, object] = {}

    def work(i: int) -> None:
        try:
            results[i] = group.submit(i)
        except ValueError as exc:
            results[i] = str(exc)

    threads = [threading.Thread(target=work, args=(i,)) for i in range(20)]
    for t in threads:
        t.start()
        time.sleep(0.005)
    gate.set()
    for t in threads:
        t.join(5)
    assert results == {i: (f"odd {i}" if i % 2 else i * 10) for i in range(20)}
    assert sum(len(c) for c in calls) == 20
    assert max(len(c) for c in calls) > 1  # the waiting threads were applied together
    assert group.items == 20


def test_alone_an_item_is_applied_at_once() -> None:
    group: GroupCommit[str, str] = GroupCommit(lambda items: [s.upper() for s in items])
    assert group.submit("a") == "A"
    assert group.batches == 1


def test_an_apply_that_raises_fails_every_item_of_its_batch_but_not_later_ones() -> None:
    state = {"n": 0}

    def apply(items: list[int]) -> list[int]:
        state["n"] += 1
        if state["n"] == 1:
            raise RuntimeError("boom")
        return items

    group: GroupCommit[int, int] = GroupCommit(apply)
    with pytest.raises(RuntimeError):
        group.submit(1)
    assert group.submit(2) == 2


def test_a_leader_whose_item_returns_none_goes_on_once_its_own_item_is_applied() -> None:
    # Outcomes are written with no result (None): their leader must not keep leading for later
    # arrivals, or its own thread (an email's) waits as long as other threads keep coming.
    gate = threading.Event()
    applied_by: list[tuple[list[int], str]] = []

    def apply(items: list[int]) -> list[None]:
        if not applied_by:
            gate.wait(5)  # the leader's own batch: the others queue up behind it
        applied_by.append((items, threading.current_thread().name))
        return [None] * len(items)

    group: GroupCommit[int, None] = GroupCommit(apply)
    leader = threading.Thread(target=group.submit, args=(0,), name="leader")
    leader.start()
    while group._leading is False:  # the leader holds its batch open
        time.sleep(0.001)
    others = [threading.Thread(target=group.submit, args=(i,), name=f"t{i}") for i in range(1, 6)]
    for t in others:
        t.start()
    while len(group._queue) < 5:
        time.sleep(0.001)
    gate.set()
    for t in [leader, *others]:
        t.join(5)
    assert applied_by[0] == ([0], "leader")
    assert sorted(i for items, _ in applied_by[1:] for i in items) == [1, 2, 3, 4, 5]
    assert all(name != "leader" for _, name in applied_by[1:]), applied_by
