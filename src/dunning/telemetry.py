"""Counters and a histogram for things that happen in a process (a billing call, an email, a refusal).

Workers have no metrics port (``dunning serve``'s ``/metrics`` is the one place
Prometheus scrapes, see :mod:`dunning.metrics`), so a process cannot keep its
counts in memory: they are added up in Redis, one hash per metric, and the
collector reads them at scrape time. Any number of worker processes on any
number of hosts then add to the same series, and a restart loses nothing.

Recording is best effort: a metric must never fail or slow down the work it
describes, so a Redis error is dropped (logged at debug), each command waits at
most :data:`TIMEOUT_S`, and after an error nothing is tried for
:data:`PAUSE_S` (a frozen or unreachable Redis costs one timeout per pause, not
one per billing call). Nothing is recorded
until a process calls :func:`install` (``setup_broker`` does, for workers, the
scheduler and ``dunning serve``), so tests that build their own broker leave no
metric keys behind.

Label values come from code (operation names, outcomes, notice kinds), never
from input, and are cut to :data:`MAX_LABEL`: the number of series stays bounded.
"""

from __future__ import annotations

import json
import logging
import threading
import time
from collections import Counter
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass

import redis
from prometheus_client.core import CounterMetricFamily, HistogramMetricFamily, Metric

log = logging.getLogger(__name__)

#: Redis key prefix of the metric hashes (outside Dramatiq's ``dramatiq:`` namespace).
PREFIX = "dunning:metrics:"
MAX_LABEL = 40
#: Longest wait of one metric write; the broker's own client has no such limit.
TIMEOUT_S = 0.5
#: After a failed write, metrics are dropped for this long (monotonic seconds).
PAUSE_S = 5.0


@dataclass(frozen=True)
class Spec:
    """One metric family: counter or histogram, its help text and label names."""

    kind: str  # "counter" | "histogram"
    help: str
    labels: tuple[str, ...]
    buckets: tuple[float, ...] = ()


BILLING_SECONDS = "dunning_billing_request_seconds"
BILLING_ERRORS = "dunning_billing_errors"
EMAIL_DELIVERIES = "dunning_email_deliveries"
INGEST_REFUSALS = "dunning_ingest_refusals"

SPECS: dict[str, Spec] = {
    BILLING_SECONDS: Spec(
        "histogram",
        "Billing API requests (each attempt, retries included) by operation: duration in seconds",
        ("operation",),
        (0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0),
    ),
    BILLING_ERRORS: Spec(
        "counter",
        "Billing API requests that failed, by operation and error"
        " (server_error: 5xx or 429, transport: no answer, rejected: 4xx)",
        ("operation", "error"),
    ),
    EMAIL_DELIVERIES: Spec(
        "counter",
        "Outbox email deliveries by kind and outcome"
        " (sent, transient_failure, permanent_failure, unknown, skipped, deferred, superseded)",
        ("kind", "outcome"),
    ),
    INGEST_REFUSALS: Spec(
        "counter",
        "Events refused by POST /events, by reason"
        " (disabled, too_large, bad_signature, unsupported_media_type, invalid_event, broker_unavailable)",
        ("reason",),
    ),
}

_client: redis.Redis | None = None
_paused_until = 0.0
_lock = threading.Lock()


def install(client: redis.Redis | None) -> None:
    """Record this process's metrics in ``client``'s Redis from now on (None: stop recording).

    The writes go through a client of their own to the same server, with short timeouts.
    """
    global _client, _paused_until
    own = None
    if client is not None:
        pool = client.connection_pool
        kwargs = {**pool.connection_kwargs, "socket_timeout": TIMEOUT_S, "socket_connect_timeout": TIMEOUT_S}
        own = redis.Redis(
            connection_pool=redis.ConnectionPool(connection_class=pool.connection_class, **kwargs)
        )
    with _lock:
        _client, _paused_until = own, 0.0


def _writer() -> redis.Redis | None:
    client = _client
    if client is None or time.monotonic() < _paused_until:
        return None
    return client


def _failed(name: str, exc: Exception) -> None:
    global _paused_until
    _paused_until = time.monotonic() + PAUSE_S
    log.debug("metric %s not recorded: %s", name, type(exc).__name__)


def installed() -> redis.Redis | None:
    """The Redis client metrics go to, if any."""
    return _client


def _field(values: tuple[str, ...]) -> str:
    return json.dumps([str(v)[:MAX_LABEL] for v in values], separators=(",", ":"))


_held = threading.local()  # this thread's counts held by :func:`held`, or None


def inc(name: str, *labels: str, amount: int = 1) -> None:
    """Add ``amount`` to the counter ``name`` for these label values."""
    counts: Counter[tuple[str, tuple[str, ...]]] | None = getattr(_held, "counts", None)
    if counts is not None:
        counts[(name, labels)] += amount
        return
    client = _writer()
    if client is None:
        return
    try:
        client.hincrby(PREFIX + name, _field(labels), amount)
    except (redis.RedisError, OSError) as exc:
        _failed(name, exc)


@contextmanager
def held() -> Iterator[None]:
    """Add up this thread's counter increments and write them at the end, in one round trip.

    A mail batch counts each of its deliveries: one ``HINCRBY`` per series instead of one
    per email. Counts held when the process dies are lost, as any unwritten metric is.
    """
    if getattr(_held, "counts", None) is not None:
        yield  # nested: the outer one writes
        return
    counts: Counter[tuple[str, tuple[str, ...]]] = Counter()
    _held.counts = counts
    try:
        yield
    finally:
        _held.counts = None
        client = _writer() if counts else None
        if client is not None:
            try:
                pipe = client.pipeline(transaction=False)
                for (name, labels), amount in counts.items():
                    pipe.hincrby(PREFIX + name, _field(labels), amount)
                pipe.execute()
            except (redis.RedisError, OSError) as exc:
                _failed(next(iter(counts))[0], exc)


def observe(name: str, value: float, *labels: str) -> None:
    """Add one observation of ``value`` to the histogram ``name`` (one round trip)."""
    client = _writer()
    if client is None:
        return
    field = _field(labels)
    bucket = next((b for b in SPECS[name].buckets if value <= b), None)
    try:
        pipe = client.pipeline(transaction=False)
        pipe.hincrby(PREFIX + name, f"b:{'+Inf' if bucket is None else repr(bucket)}:{field}", 1)
        pipe.hincrbyfloat(PREFIX + name, f"sum:{field}", value)
        pipe.hincrby(PREFIX + name, f"count:{field}", 1)
        pipe.execute()
    except (redis.RedisError, OSError) as exc:
        _failed(name, exc)


def billing_call(operation: str, seconds: float, error: str | None) -> None:
    """The billing client's observer: one request's duration, and its error if it failed."""
    observe(BILLING_SECONDS, seconds, operation)
    if error is not None:
        inc(BILLING_ERRORS, operation, error)


def collect(client: redis.Redis) -> Iterator[Metric]:
    """Every family of :data:`SPECS` as read from Redis (empty families included, so names always exist)."""
    for name, spec in SPECS.items():
        raw = {k.decode(): v.decode() for k, v in client.hgetall(PREFIX + name).items()}
        if spec.kind == "counter":
            counter = CounterMetricFamily(name, spec.help, labels=list(spec.labels))
            for field, value in sorted(raw.items()):
                counter.add_metric(json.loads(field), float(value))
            yield counter
        else:
            yield _histogram(name, spec, raw)


def _histogram(name: str, spec: Spec, raw: dict[str, str]) -> HistogramMetricFamily:
    family = HistogramMetricFamily(name, spec.help, labels=list(spec.labels))
    series = sorted({k.split(":", 1)[1] for k in raw if k.startswith("count:")})
    for field in series:
        running = 0.0
        buckets = []
        for bound in (*[repr(b) for b in spec.buckets], "+Inf"):
            running += float(raw.get(f"b:{bound}:{field}", 0))
            buckets.append((bound, running))
        family.add_metric(json.loads(field), buckets, float(raw.get(f"sum:{field}", 0)))
    return family
