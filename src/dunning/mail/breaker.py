"""A circuit breaker for the mail server: stop hammering a server that is down.

After ``threshold`` consecutive transient failures the circuit opens: sends fail
at once (as transient, so the jobs back off and come back) without opening a
connection. After ``cooldown_s`` one trial send is let through (half-open); its
success closes the circuit, its failure opens it again for another cooldown.
One breaker per process: each worker process finds out for itself.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable

from dunning.errors import DunningError


class CircuitOpen(DunningError):
    """The breaker refused the call without trying."""


class CircuitBreaker:
    """Consecutive-failure breaker with a cooldown and a single half-open trial."""

    def __init__(
        self, threshold: int = 5, cooldown_s: float = 30.0, clock: Callable[[], float] = time.monotonic
    ) -> None:
        self.threshold = threshold
        self.cooldown_s = cooldown_s
        self._clock = clock
        self._lock = threading.Lock()
        self._failures = 0
        self._opened_at: float | None = None
        self._trial_running = False
        self.rejected = 0  # calls refused while open, for metrics and tests

    @property
    def state(self) -> str:
        with self._lock:
            if self._opened_at is None:
                return "closed"
            return "half-open" if self._clock() - self._opened_at >= self.cooldown_s else "open"

    def before(self) -> None:
        """Raise :class:`CircuitOpen` unless a call may go ahead now."""
        with self._lock:
            if self._opened_at is None:
                return
            if self._clock() - self._opened_at >= self.cooldown_s and not self._trial_running:
                self._trial_running = True  # exactly one trial while half-open
                return
            self.rejected += 1
            raise CircuitOpen()

    def success(self) -> None:
        with self._lock:
            self._failures = 0
            self._opened_at = None
            self._trial_running = False

    def failure(self) -> None:
        with self._lock:
            self._failures += 1
            if self._trial_running or self._failures >= self.threshold:
                self._opened_at = self._clock()
            self._trial_running = False
