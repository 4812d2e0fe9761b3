"""The scheduler: claims due jobs from the database and enqueues them, and recovers dead workers.

Several schedulers may run at once on PostgreSQL (``FOR UPDATE SKIP LOCKED``);
there is no lock to release, so a scheduler that dies leaves nothing behind
but leases that expire.

Crash recovery: on each pass (at most every half second) the scheduler looks
for worker processes whose heartbeat stopped ``Tuning.worker_dead_after_s``
ago, sends their unfinished runs again (:mod:`dunning.engine.workers`) and
puts the messages they had fetched back on their queues
(:mod:`dunning.broker.reclaim`). The leases are the backstop for what no heartbeat
tells (a worker that never registered, a run that hangs in a live worker).
"""

from __future__ import annotations

import logging
import threading
import time
from dataclasses import dataclass, fields

import dramatiq
from dramatiq.brokers.redis import RedisBroker
from sqlalchemy.exc import DBAPIError
from tenacity import RetryCallState, Retrying, retry_if_exception, wait_exponential

from dunning.broker.enqueue import send_jobs
from dunning.engine.jobs import claim_due
from dunning.runtime import Runtime
from dunning.store.db import transaction

log = logging.getLogger(__name__)

#: Seconds between two looks at the heartbeats (the passes themselves may be more frequent).
RECOVERY_EVERY_S = 0.5


@dataclass
class TickResult:
    enqueued: int
    parked: int
    #: Leases that ran out (the backstop): on started runs, and on deliveries that never started.
    expired_started: int = 0
    expired_unstarted: int = 0
    #: Dead workers recovered, their runs sent again, and the messages they had fetched given back.
    workers_recovered: int = 0
    runs_released: int = 0
    messages_given_back: int = 0
    #: Dead letters kept in Redis while the database was down, now written to the table.
    dead_letters_written: int = 0

    def add(self, other: TickResult) -> None:
        """Add ``other``'s counts to this one (totals over many passes)."""
        for f in fields(self):
            setattr(self, f.name, getattr(self, f.name) + getattr(other, f.name))


def tick(rt: Runtime, broker: dramatiq.Broker, *, batch: int = 500, recover: bool = True) -> TickResult:
    """One pass: claim up to ``batch`` due jobs (and expired leases), commit, enqueue; then recover.

    ``recover=False`` skips the heartbeats (``run_forever`` does until it has
    seen the database for long enough to judge them).
    """
    now = rt.clock.now()
    with transaction(rt.sessions) as session:
        claimed = claim_due(
            session,
            now=now,
            batch=batch,
            queue_lease_s=rt.tuning.queue_lease_s,
            max_crashes=rt.tuning.max_crashes,
        )
    # After commit: if we die here, the leases bring these jobs back.
    sent = send_jobs(broker, claimed.dispatch, mail_batch=rt.tuning.mail_batch)
    result = TickResult(sent, claimed.parked, claimed.expired_started, claimed.expired_unstarted)
    if isinstance(broker, RedisBroker):
        result.dead_letters_written = write_unparked(rt, broker)
    if recover:
        result.add(recover_dead_workers(rt, broker))
    if result.parked:
        log.warning("parked %d jobs that kept killing their workers", result.parked)
    return result


def write_unparked(rt: Runtime, broker: RedisBroker) -> int:
    """Write the dead letters that waited in Redis for the database (:mod:`dunning.broker.unparked`).

    A failure here never stops the pass: the rows stay in Redis for the next one.
    """
    from dunning.broker.unparked import drain
    from dunning.store.dead_letters import park

    try:
        return drain(broker.client, lambda row: park(rt, row))
    except Exception as exc:
        log.warning("dead letters kept in Redis not written yet (%s)", type(exc).__name__)
        return 0


def recover_dead_workers(rt: Runtime, broker: dramatiq.Broker) -> TickResult:
    """Send again the runs of workers whose heartbeat stopped, and give back what they fetched."""
    from dunning.broker.reclaim import reclaim
    from dunning.engine.workers import find_dead, release_runs_of, retire
    from dunning.store.dead_letters import park

    result = TickResult(0, 0)
    with transaction(rt.sessions) as session:
        dead = find_dead(session, dead_after_s=rt.tuning.worker_dead_after_s)
        if not dead:
            return result
        released = release_runs_of(
            session, dead, max_crashes=rt.tuning.max_crashes, queue_lease_s=rt.tuning.queue_lease_s
        )
    result.runs_released = send_jobs(broker, released.dispatch, mail_batch=rt.tuning.mail_batch)
    result.enqueued += result.runs_released
    result.parked += released.parked
    for worker_id in dead:
        if isinstance(broker, RedisBroker):
            back = reclaim(
                broker, worker_id, max_crashes=rt.tuning.max_crashes, park=lambda row: park(rt, row)
            )
            result.messages_given_back += back.requeued
        # Only once everything it held is back: a pass that fails before this one does it again.
        with transaction(rt.sessions) as session:
            retire(session, worker_id)
        result.workers_recovered += 1
    log.warning(
        "%d dead workers recovered: %d runs sent again, %d fetched messages given back",
        len(dead),
        result.runs_released,
        result.messages_given_back,
    )
    return result


def _outage(exc: BaseException) -> bool:
    """The database or Redis is unreachable (redis.ConnectionError is an OSError via ConnectionError)."""
    return isinstance(exc, DBAPIError | OSError | ConnectionError) or type(exc).__module__.startswith("redis")


def run_forever(
    rt: Runtime,
    broker: dramatiq.Broker,
    *,
    poll_s: float = 0.5,
    batch: int = 500,
    stop: threading.Event | None = None,
    totals: TickResult | None = None,
) -> None:
    """Poll until ``stop`` is set; survives database and broker outages.

    Heartbeats are judged only once this scheduler has reached the database
    without a failure for ``worker_dead_after_s``: after an outage (or at
    start), workers need that long to write theirs again, and silence during
    the outage proves nothing. ``totals``, if given, accumulates every pass.
    """
    stop = stop or threading.Event()
    total = 0
    last_report = time.monotonic()
    healthy_since: float | None = None
    last_recovery = 0.0

    def outage(state: RetryCallState) -> None:
        nonlocal healthy_since
        healthy_since = None  # heartbeats written during an outage could not reach us: judge none
        exc = state.outcome.exception() if state.outcome else None
        what = "broker unavailable" if type(exc).__module__.startswith("redis") else "scheduler tick failed"
        wait = state.next_action.sleep if state.next_action else 0.0
        log.warning("%s (%s); retrying in %.1fs", what, type(exc).__name__, wait)

    # An outage (database or Redis unreachable) backs off, doubling up to 30 s, for as long
    # as it lasts; anything else is a bug and stops the scheduler.
    retrying = Retrying(
        retry=retry_if_exception(_outage),
        wait=wait_exponential(multiplier=poll_s, min=poll_s, max=30.0),
        stop=lambda _state: stop.is_set(),
        sleep=stop.wait,
        before_sleep=outage,
        reraise=True,
    )

    def attempt() -> TickResult:
        # Decided at each attempt: a retry after an outage must not judge heartbeats yet.
        nonlocal healthy_since, last_recovery
        clock = time.monotonic()
        if healthy_since is None:
            healthy_since = clock
        recover = (
            clock - healthy_since >= rt.tuning.worker_dead_after_s
            and clock - last_recovery >= RECOVERY_EVERY_S
        )
        result = tick(rt, broker, batch=batch, recover=recover)
        if recover:
            last_recovery = clock
        return result

    while not stop.is_set():
        try:
            result = retrying(attempt)
        except Exception as exc:
            if stop.is_set() and _outage(exc):
                break  # asked to stop during an outage
            raise
        if totals is not None:
            totals.add(result)
        total += result.enqueued
        if time.monotonic() - last_report > 60:
            log.info("scheduler: %d jobs enqueued in the last minute", total)
            total, last_report = 0, time.monotonic()
        if result.enqueued < batch:
            stop.wait(poll_s)
