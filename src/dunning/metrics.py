"""Prometheus metrics for ops, computed from the database and Redis at scrape time.

Computing at scrape time (a custom collector) instead of counting in each worker
process means one endpoint (``dunning serve``'s ``/metrics``) sees the whole
system, workers need no metrics port, and restarts never reset a counter. What
only a process sees as it happens (billing call latency and errors, email
delivery outcomes, ingest refusals) is counted in Redis by :mod:`dunning.telemetry`
and read back here. Every label set is bounded (queues, statuses, currencies,
kinds, operations). The alert rules in ``deploy/prometheus/alerts.yml`` use these names.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from typing import TYPE_CHECKING

import redis
from prometheus_client import CollectorRegistry
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector
from sqlalchemy import func, select
from sqlalchemy.orm import Session

from dunning import telemetry
from dunning.broker.ages import oldest_ready_ages
from dunning.engine.jobs import wall_now
from dunning.http.stripe_webhook import STRIPE_WEBHOOKS
from dunning.mail.locales import fallback_label
from dunning.ops import queue_depths
from dunning.store.models import (
    Case,
    ChargeAttempt,
    DeadLetter,
    Job,
    Outbox,
    PriceMigration,
    PriceMigrationMember,
    Worker,
)

if TYPE_CHECKING:
    from dunning.runtime import Runtime


class DunningCollector(Collector):
    """Queue depths, the schedule, dead letters, cases and revenue, emails."""

    def __init__(self, rt: Runtime, client: redis.Redis) -> None:
        self.rt = rt
        self.client = client

    def collect(self) -> Iterator[Metric]:
        depth = GaugeMetricFamily(
            "dunning_queue_messages", "Messages on the broker", labels=["queue", "state"]
        )
        for q in queue_depths(self.client):
            depth.add_metric([q.name, "ready"], q.ready)
            depth.add_metric([q.name, "delayed"], q.delayed)
            depth.add_metric([q.name, "dead"], q.dead)
        yield depth
        age = GaugeMetricFamily(
            "dunning_queue_oldest_message_age_seconds",
            "How long the oldest ready message of each queue has waited (0 when the queue is empty)",
            labels=["queue"],
        )
        for queue, seconds in oldest_ready_ages(self.client, int(time.time() * 1000)).items():
            age.add_metric([queue], seconds)
        yield age
        yield from telemetry.collect(self.client)
        now = self.rt.clock.now()
        with self.rt.sessions() as s:
            jobs = GaugeMetricFamily("dunning_jobs", "Scheduled jobs by state", labels=["kind", "status"])
            for kind, status, n in s.execute(
                select(Job.kind, Job.status, func.count()).group_by(Job.kind, Job.status)
            ):
                jobs.add_metric([kind, status], n)
            yield jobs
            oldest = s.execute(
                select(func.min(Job.due_at)).where(Job.status == "pending", Job.due_at <= now)
            ).scalar()
            lag = (now - oldest).total_seconds() if oldest else 0.0
            yield GaugeMetricFamily(
                "dunning_oldest_due_job_seconds",
                "How long the oldest due job has waited (0 when none is due)",
                value=lag,
            )
            # The same figure under the name the alerts and the dashboard use: how far the
            # scheduler is behind the schedule (business time).
            yield GaugeMetricFamily(
                "dunning_scheduler_lag_seconds",
                "Scheduler lag: how long the oldest due job has waited to be enqueued (0 when none is due)",
                value=lag,
            )
            yield _workers(s, self.rt.tuning.worker_dead_after_s)
            waiting = s.execute(
                select(func.count())
                .select_from(Job)
                .where(Job.status == "claimed", Job.claims - Job.runs > 1)
            ).scalar_one()
            yield GaugeMetricFamily(
                "dunning_jobs_enqueued_again_unstarted",
                "Claimed jobs enqueued more than once without a worker starting them: messages lost,"
                " or a queue backlog longer than the queue lease (each copy backs the next lease off)",
                value=waiting,
            )
            refused = s.execute(
                select(func.count()).select_from(DeadLetter).where(DeadLetter.requeued_at.is_(None))
            ).scalar_one()
            yield GaugeMetricFamily(
                "dunning_dead_letters", "Refused or abandoned messages awaiting ops", value=refused
            )
            cases = GaugeMetricFamily("dunning_cases", "Dunning cases by status", labels=["status"])
            recovered = GaugeMetricFamily(
                "dunning_recovered_minor", "Revenue recovered, minor units", labels=["currency"]
            )
            for status, n in s.execute(select(Case.status, func.count()).group_by(Case.status)):
                cases.add_metric([status], n)
            for currency, total in s.execute(
                select(Case.currency, func.coalesce(func.sum(Case.recovered_minor), 0)).group_by(
                    Case.currency
                )
            ):
                recovered.add_metric([currency], float(total))
            yield cases
            yield recovered
            charges = GaugeMetricFamily(
                "dunning_charge_attempts", "Charge attempts by outcome", labels=["status"]
            )
            for status, n in s.execute(
                select(ChargeAttempt.status, func.count()).group_by(ChargeAttempt.status)
            ):
                charges.add_metric([status], n)
            yield charges
            emails = GaugeMetricFamily(
                "dunning_emails", "Outbox emails by kind and status", labels=["kind", "status"]
            )
            for kind, status, n in s.execute(
                select(Outbox.kind, Outbox.status, func.count()).group_by(Outbox.kind, Outbox.status)
            ):
                emails.add_metric([kind, status], n)
            yield emails
            yield _locale_fallbacks(s)
            yield from _price_migrations(s)


def _locale_fallbacks(s: Session) -> Metric:
    """Emails sent in English because the customer's locale names a language we do not ship.

    Counted from the outbox (one row per email, kept) like the other email
    figures, so every worker's renders are seen and restarts reset nothing. The
    label is the requested language only (``ja`` for ``ja-JP``) or ``invalid``:
    bounded, whatever customers' profiles hold. A region of a shipped language
    (``pt-BR``) and an empty locale are not fallbacks.
    """
    fallbacks = CounterMetricFamily(
        "dunning_email_locale_fallback",
        "Emails sent in English because the customer's locale has no catalog, by requested language",
        labels=["requested"],
    )
    counts: dict[str, int] = {}
    for locale, n in s.execute(
        select(Outbox.locale, func.count()).where(Outbox.status == "sent").group_by(Outbox.locale)
    ):
        label = fallback_label(locale)
        if label is not None:
            counts[label] = counts.get(label, 0) + n
    for label, n in sorted(counts.items()):
        fallbacks.add_metric([label], n)
    return fallbacks


def _workers(s: Session, dead_after_s: float) -> Metric:
    """Worker processes by liveness: a heartbeat older than ``dead_after_s`` (wall time) is dead."""
    workers = GaugeMetricFamily(
        "dunning_workers", "Worker processes by heartbeat (alive, or silent: dead)", labels=["state"]
    )
    cutoff = wall_now().timestamp() - dead_after_s
    counts = {"alive": 0, "dead": 0}
    for (beat,) in s.execute(select(Worker.heartbeat_at)):
        counts["alive" if beat.timestamp() >= cutoff else "dead"] += 1
    for state, n in counts.items():
        workers.add_metric([state], n)
    return workers


def _price_migrations(s: Session) -> Iterator[Metric]:
    """Migrations by status, members of the running ones by state, and the cancellation alert."""
    migrations = GaugeMetricFamily(
        "dunning_price_migrations", "Price migrations by status", labels=["status"]
    )
    for status, n in s.execute(select(PriceMigration.status, func.count()).group_by(PriceMigration.status)):
        migrations.add_metric([status], n)
    yield migrations
    members = GaugeMetricFamily(
        "dunning_price_migration_members",
        "Members of launched or paused price migrations by state",
        labels=["migration", "state"],
    )
    for migration_id, state, n in s.execute(
        select(PriceMigrationMember.migration_id, PriceMigrationMember.state, func.count())
        .join(PriceMigration, PriceMigration.id == PriceMigrationMember.migration_id)
        .where(PriceMigration.status.in_(("launched", "paused")))
        .group_by(PriceMigrationMember.migration_id, PriceMigrationMember.state)
    ):
        members.add_metric([migration_id, state], n)
    yield members
    # The alert: 1 for each migration that paused itself because notified subscribers canceled.
    alert = GaugeMetricFamily(
        "dunning_price_migration_auto_paused",
        "Price migrations paused by their cancellation alert (see `dunning prices status`)",
        labels=["migration"],
    )
    for (migration_id,) in s.execute(
        select(PriceMigration.id).where(
            PriceMigration.status == "paused", PriceMigration.paused_reason.like("auto-paused%")
        )
    ):
        alert.add_metric([migration_id], 1)
    yield alert


def registry_for(rt: Runtime, client: redis.Redis) -> CollectorRegistry:
    """A registry holding only the dunning collector (scraped on demand)."""
    registry = CollectorRegistry(auto_describe=False)
    registry.register(DunningCollector(rt, client))
    registry.register(STRIPE_WEBHOOKS)
    return registry
