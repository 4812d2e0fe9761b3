"""What the dashboard (``/ops``) shows, as plain data: queues, workers, dead letters, charts, a search.

Queue depths, the schedule and dead letters come from the functions ``dunning
queues`` and ``dunning dlq`` use (:mod:`dunning.ops`, :mod:`dunning.store.dead_letters`),
so the page and the CLI never disagree. Every query is bounded (by a limit or a
small label set): the page is cheap to reload.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from datetime import timedelta
from typing import TYPE_CHECKING, Any

import redis
from sqlalchemy import func, or_, select

from dunning.broker.ages import oldest_ready_ages
from dunning.engine.jobs import wall_now
from dunning.ops import Snapshot, queue_snapshot
from dunning.report import build_report
from dunning.store.dead_letters import Parked, list_parked
from dunning.store.models import Case, Customer, Subscription, TimelineEntry, Worker

if TYPE_CHECKING:
    from dunning.runtime import Runtime

#: Days of recovered revenue in the chart.
RECOVERY_DAYS = 30
#: Dead letters listed (the rest: ``dunning dlq list``).
DEAD_LETTERS_SHOWN = 50
#: Timeline entries shown per subscription, newest first.
TIMELINE_SHOWN = 100
#: Days of upcoming notices (as ``dunning calendar --days``).
UPCOMING_DAYS = 30
#: Outcomes that recovered the money; the rest of the closed cases are lost.
RECOVERED = ("retry", "card_update", "paid", "paid_elsewhere")


@dataclass(frozen=True)
class WorkerRow:
    id: str
    host: str
    pid: int
    heartbeat_age_s: float
    alive: bool


@dataclass
class Overview:
    """Everything the dashboard's main page shows."""

    snapshot: Snapshot
    queue_age_s: dict[str, float]
    workers: list[WorkerRow]
    dead_letters: list[Parked]
    funnel: list[tuple[str, int]]
    recovery: dict[str, Any]
    recovered_total: list[str] = field(default_factory=list)  # formatted, one per currency


def overview(rt: Runtime, redis_url: str) -> Overview:
    """The main page's data (a few small queries and two Redis round trips)."""
    snap = queue_snapshot(rt, redis_url)
    client = redis.Redis.from_url(redis_url)
    try:
        ages = oldest_ready_ages(client, int(time.time() * 1000))
    finally:
        client.close()
    from dunning.mail.render import format_money

    report = build_report(rt)
    return Overview(
        snapshot=snap,
        queue_age_s=ages,
        workers=workers(rt),
        dead_letters=list_parked(rt, limit=DEAD_LETTERS_SHOWN),
        funnel=funnel(report.cases_opened, report.ever_suspended, report.by_status, report.by_outcome),
        recovery=recovery(rt),
        recovered_total=[
            format_money(v, cur, "en") for cur, v in sorted(report.recovered_minor.items()) if v
        ],
    )


def workers(rt: Runtime) -> list[WorkerRow]:
    """Worker processes by heartbeat (wall time); silent for ``worker_dead_after_s``: dead."""
    now = wall_now()
    with rt.sessions() as s:
        rows = s.execute(select(Worker).order_by(Worker.heartbeat_at.desc()).limit(100)).scalars().all()
        out = []
        for w in rows:
            age = max(0.0, (now - w.heartbeat_at).total_seconds())
            out.append(WorkerRow(w.id, w.host, w.pid, age, age < rt.tuning.worker_dead_after_s))
    return out


def funnel(
    opened: int, ever_suspended: int, by_status: dict[str, int], by_outcome: dict[str, int]
) -> list[tuple[str, int]]:
    """The dunning funnel: cases opened, how many got to suspension, how they ended (pure)."""
    recovered = sum(by_outcome.get(o, 0) for o in RECOVERED)
    closed = sum(by_outcome.values())
    return [
        ("opened", opened),
        ("suspended at some point", ever_suspended),
        ("still open", by_status.get("open", 0) + by_status.get("suspended", 0)),
        ("recovered", recovered),
        ("lost or closed", closed - recovered),
    ]


def recovery(rt: Runtime) -> dict[str, Any]:
    """Revenue recovered per day (business time) and currency, over the last :data:`RECOVERY_DAYS` days.

    ``{"days": [iso date, ...], "series": {currency: [amount per day, in major units, ...]}}``.
    """
    from babel.numbers import get_currency_precision

    now = rt.clock.now()
    start = (now - timedelta(days=RECOVERY_DAYS - 1)).date()
    days = [(start + timedelta(days=i)).isoformat() for i in range(RECOVERY_DAYS)]
    day = func.date(Case.closed_at)
    with rt.sessions() as s:
        rows = s.execute(
            select(day, Case.currency, func.sum(Case.recovered_minor))
            .where(Case.closed_at >= now - timedelta(days=RECOVERY_DAYS), Case.recovered_minor > 0)
            .group_by(day, Case.currency)
        ).all()
    series: dict[str, list[int]] = {}
    index = {d: i for i, d in enumerate(days)}
    for when, currency, total in rows:
        i = index.get(str(when)[:10])
        if i is not None:
            series.setdefault(currency, [0] * len(days))[i] += int(total)
    major = {cur: [v / 10 ** get_currency_precision(cur) for v in values] for cur, values in series.items()}
    return {"days": days, "series": dict(sorted(major.items()))}


@dataclass
class Found:
    """A search's answer: the customer and, per subscription, its cases, timeline and upcoming notices."""

    query: str
    customer: dict[str, Any] | None
    subscriptions: list[dict[str, Any]]


def search(rt: Runtime, query: str) -> Found:
    """Look a customer (id or email) or a subscription (id) up; an empty answer when nothing matches."""
    from dunning.workflows.lifecycle.calendar_view import upcoming

    query = query.strip()[:320]
    with rt.sessions() as s:
        sub = s.get(Subscription, query)
        if sub is not None:
            customer = s.get(Customer, sub.customer_id)
            subs = [sub]
        else:
            customer = s.execute(
                select(Customer).where(or_(Customer.id == query, Customer.email == query)).limit(1)
            ).scalar_one_or_none()
            subs = []
            if customer is not None:
                subs = list(
                    s.execute(
                        select(Subscription).where(Subscription.customer_id == customer.id).limit(20)
                    ).scalars()
                )
        out = []
        for sub in subs:
            _found, notices = upcoming(rt, s, subscription=sub.id, customer=None, days=UPCOMING_DAYS)
            out.append(
                {
                    "id": sub.id,
                    "plan": sub.plan,
                    "status": sub.status,
                    "access": sub.access,
                    "period_end": sub.current_period_end,
                    "cases": _cases(s, sub.id),
                    "timeline": _timeline(s, sub.id),
                    "upcoming": notices,
                }
            )
        who = None
        if customer is not None:
            who = {"id": customer.id, "email": customer.email, "name": customer.name}
    return Found(query, who, out)


def _cases(s: Any, subscription_id: str) -> list[dict[str, Any]]:
    from dunning.mail.render import format_money

    rows = s.execute(
        select(Case).where(Case.subscription_id == subscription_id).order_by(Case.opened_at.desc()).limit(20)
    ).scalars()
    return [
        {
            "invoice": c.invoice_id,
            "status": c.status,
            "outcome": c.outcome,
            "amount": format_money(c.amount_minor, c.currency, "en"),
            "opened_at": c.opened_at,
        }
        for c in rows
    ]


def _timeline(s: Any, subscription_id: str) -> list[dict[str, Any]]:
    rows = s.execute(
        select(TimelineEntry)
        .where(TimelineEntry.subscription_id == subscription_id)
        .order_by(TimelineEntry.at.desc(), TimelineEntry.id.desc())
        .limit(TIMELINE_SHOWN)
    ).scalars()
    return [{"at": t.at, "kind": t.kind, "detail": t.detail} for t in rows]
