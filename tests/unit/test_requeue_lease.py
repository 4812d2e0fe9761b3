"""The lease of a job enqueued again grows with the deliveries that never started."""

from __future__ import annotations

from dunning.engine.jobs import MAX_LEASE_DOUBLINGS, requeue_lease_s


def test_first_loss_keeps_the_lease_then_each_unstarted_delivery_doubles_it() -> None:
    assert [requeue_lease_s(300, n) for n in (1, 2, 3, 4)] == [300, 600, 1200, 2400]


def test_the_lease_is_capped() -> None:
    assert requeue_lease_s(300, 50) == 300 * 2**MAX_LEASE_DOUBLINGS


def test_a_delivery_that_started_and_died_does_not_count() -> None:
    # runs == claims: the last delivery started (and its worker died): no backlog to back off from.
    assert requeue_lease_s(5, 0) == 5
