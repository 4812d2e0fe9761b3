"""What ops look at: queue depths from Redis, the schedule from the database, the report."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import TYPE_CHECKING

import redis
from rich.console import Console
from rich.table import Table
from sqlalchemy import func, select

from dunning.broker.names import ALL_QUEUES
from dunning.engine.jobs import wall_now
from dunning.store.models import DeadLetter, Job

if TYPE_CHECKING:
    from dunning.runtime import Runtime


@dataclass(frozen=True)
class QueueDepth:
    name: str
    ready: int
    delayed: int
    dead: int


@dataclass(frozen=True)
class Snapshot:
    now: datetime
    queues: list[QueueDepth]
    jobs: dict[str, int]
    oldest_due_age_s: float | None
    dead_letters: int


def queue_depths(client: redis.Redis, namespace: str = "dramatiq") -> list[QueueDepth]:
    """Ready, delayed and dead message counts per queue, read with the keys Dramatiq uses."""
    out = []
    for q in ALL_QUEUES:
        pipe = client.pipeline()
        pipe.llen(f"{namespace}:{q}")
        pipe.llen(f"{namespace}:{q}.DQ")
        pipe.zcard(f"{namespace}:{q}.XQ")
        ready, delayed, dead = pipe.execute()
        out.append(QueueDepth(q, int(ready), int(delayed), int(dead)))
    return out


def queue_snapshot(rt: Runtime, url: str) -> Snapshot:
    """Everything ``dunning queues`` prints."""
    now = rt.clock.now()
    with rt.sessions() as s:
        jobs: dict[str, int] = {}
        for status, n in s.execute(select(Job.status, func.count()).group_by(Job.status)):
            jobs[status] = n
        due = s.execute(
            select(func.count(), func.min(Job.due_at)).where(Job.status == "pending", Job.due_at <= now)
        ).one()
        jobs["pending (due now)"] = due[0]
        jobs["pending"] = jobs.get("pending", 0) - due[0]
        oldest = (now - due[1]).total_seconds() if due[1] is not None else None
        dead_letters = s.execute(
            select(func.count()).select_from(DeadLetter).where(DeadLetter.requeued_at.is_(None))
        ).scalar_one() + jobs.get("dead", 0)
    client = redis.Redis.from_url(url)
    try:
        depths = queue_depths(client)
    finally:
        client.close()
    order = ["pending (due now)", "claimed", "pending", "done", "canceled", "dead"]
    return Snapshot(now, depths, {k: jobs.get(k, 0) for k in order}, oldest, dead_letters)


def _money(amounts: dict[str, int]) -> str:
    from dunning.mail.render import format_money

    if not amounts or not any(amounts.values()):
        return "0"
    return ", ".join(format_money(v, cur, "en") for cur, v in sorted(amounts.items()) if v)


def print_report(console: Console, rt: Runtime) -> None:
    """Print the business report."""
    from dunning.report import build_report

    r = build_report(rt)
    t = Table(title=f"Dunning report ({rt.clock.now():%Y-%m-%d %H:%M}Z)")
    t.add_column("metric")
    t.add_column("value", justify="right")
    rows = [
        ("cases opened", r.cases_opened),
        ("recovered by retry", r.by_outcome.get("retry", 0)),
        ("recovered by card update", r.by_outcome.get("card_update", 0)),
        ("recovered, paid elsewhere", r.by_outcome.get("paid", 0)),
        ("ever suspended", r.ever_suspended),
        ("canceled for non-payment", r.by_outcome.get("canceled", 0)),
        ("downgraded", r.by_outcome.get("downgraded", 0)),
        ("closed (subscription canceled)", r.by_outcome.get("subscription_canceled", 0)),
        ("still open / suspended", r.by_status.get("open", 0) + r.by_status.get("suspended", 0)),
        ("recovery rate", f"{r.recovery_rate:.0%}"),
        ("revenue recovered", _money(r.recovered_minor)),
        ("revenue still at risk", _money(r.at_risk_minor)),
        (
            "charge attempts (ok / declined / unknown)",
            f"{r.charges.get('succeeded', 0)} / {r.charges.get('failed', 0)} / {r.charges.get('unknown', 0) + r.charges.get('pending', 0)}",
        ),
    ]
    for name, value in rows:
        t.add_row(name, str(value))
    console.print(t)
    e = Table(title="Emails sent")
    e.add_column("kind")
    e.add_column("sent", justify="right")
    for kind, n in sorted(r.emails.items()):
        e.add_row(kind, str(n))
    e.add_row("[dim]dropped (no longer true)[/dim]", str(r.email_status.get("skipped", 0)))
    e.add_row(
        "[dim]failed / waiting[/dim]",
        f"{r.email_status.get('failed', 0)} / {r.email_status.get('pending', 0) + r.email_status.get('sending', 0)}",
    )
    console.print(e)


__all__ = ["QueueDepth", "Snapshot", "print_report", "queue_depths", "queue_snapshot", "wall_now"]
