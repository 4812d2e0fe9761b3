"""The scheduler: claims due jobs from the database and enqueues them.

Several schedulers may run at once on PostgreSQL (``FOR UPDATE SKIP LOCKED``);
there is no lock to release, so a scheduler that dies leaves nothing behind
but leases that expire.
"""

from __future__ import annotations

import logging
import threading
import time
from dataclasses import dataclass

import dramatiq
from sqlalchemy.exc import DBAPIError

from dunning.dispatch import send_jobs
from dunning.runtime import Runtime
from dunning.services.jobs import claim_due
from dunning.store.db import transaction

log = logging.getLogger(__name__)


@dataclass
class TickResult:
    enqueued: int
    parked: int


def tick(rt: Runtime, broker: dramatiq.Broker, *, batch: int = 500) -> TickResult:
    """One pass: claim up to ``batch`` due jobs (and expired leases), commit, enqueue."""
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
    sent = send_jobs(broker, claimed.dispatch)
    if claimed.parked:
        log.warning("parked %d jobs that kept killing their workers", claimed.parked)
    return TickResult(sent, claimed.parked)


def run_forever(
    rt: Runtime,
    broker: dramatiq.Broker,
    *,
    poll_s: float = 0.5,
    batch: int = 500,
    stop: threading.Event | None = None,
) -> None:
    """Poll until ``stop`` is set; survives database and broker outages."""
    stop = stop or threading.Event()
    backoff = poll_s
    total = 0
    last_report = time.monotonic()
    while not stop.is_set():
        try:
            result = tick(rt, broker, batch=batch)
            backoff = poll_s
        except (DBAPIError, OSError, ConnectionError) as exc:
            # Includes redis.ConnectionError (an OSError subclass via ConnectionError).
            log.warning("scheduler tick failed (%s); retrying in %.1fs", type(exc).__name__, backoff)
            stop.wait(backoff)
            backoff = min(backoff * 2, 30.0)
            continue
        except Exception as exc:
            if type(exc).__module__.startswith("redis"):
                log.warning("broker unavailable (%s); retrying in %.1fs", type(exc).__name__, backoff)
                stop.wait(backoff)
                backoff = min(backoff * 2, 30.0)
                continue
            raise
        total += result.enqueued
        if time.monotonic() - last_report > 60:
            log.info("scheduler: %d jobs enqueued in the last minute", total)
            total, last_report = 0, time.monotonic()
        if result.enqueued < batch:
            stop.wait(poll_s)
