"""The mail circuit breaker: opens after consecutive failures, one trial when half-open."""

from __future__ import annotations

import pytest

from dunning.mail.breaker import CircuitBreaker, CircuitOpen


class Clock:
    def __init__(self) -> None:
        self.t = 0.0

    def __call__(self) -> float:
        return self.t


def test_opens_after_threshold_and_refuses_without_trying() -> None:
    clock = Clock()
    b = CircuitBreaker(threshold=3, cooldown_s=10, clock=clock)
    for _ in range(2):
        b.before()
        b.failure()
    assert b.state == "closed"
    b.before()
    b.failure()
    assert b.state == "open"
    with pytest.raises(CircuitOpen):
        b.before()
    assert b.rejected == 1


def test_half_open_lets_one_trial_through_and_success_closes() -> None:
    clock = Clock()
    b = CircuitBreaker(threshold=1, cooldown_s=10, clock=clock)
    b.before()
    b.failure()
    clock.t = 10.5
    assert b.state == "half-open"
    b.before()  # the trial
    with pytest.raises(CircuitOpen):
        b.before()  # a second caller while the trial runs
    b.success()
    assert b.state == "closed"
    b.before()


def test_failed_trial_reopens_for_a_full_cooldown() -> None:
    clock = Clock()
    b = CircuitBreaker(threshold=5, cooldown_s=10, clock=clock)
    for _ in range(5):
        b.failure()
    clock.t = 11
    b.before()
    b.failure()
    clock.t = 20
    assert b.state == "open"
    with pytest.raises(CircuitOpen):
        b.before()
    clock.t = 21.5
    b.before()


def test_success_resets_the_failure_count() -> None:
    b = CircuitBreaker(threshold=2, cooldown_s=10, clock=Clock())
    b.failure()
    b.success()
    b.failure()
    assert b.state == "closed"
