"""Rendering ``dunning queues`` (Rich): the tables of a :class:`~dunning.ops.queues.QueueStatus`."""

from __future__ import annotations

from typing import TYPE_CHECKING

from rich.console import Group
from rich.markup import escape
from rich.table import Table
from rich.text import Text

if TYPE_CHECKING:
    from dunning.ops.queues import QueueStatus


def _age(seconds: float | None) -> str:
    if seconds is None:
        return "-"
    if seconds < 120:
        return f"{seconds:.0f}s"
    if seconds < 7200:
        return f"{seconds / 60:.0f}m"
    if seconds < 172_800:
        return f"{seconds / 3600:.1f}h"
    return f"{seconds / 86400:.1f}d"


def render_status(status: QueueStatus) -> Group:
    """Queues, scheduler, workers and dead letters, as one Rich renderable (redrawn by ``--watch``)."""
    q = Table(title=f"Broker queues ({status.at:%H:%M:%S}Z)")
    cols = ("queue", "ready", "delayed (held)", "in progress", "dead", "XQ", "oldest ready")
    for col in cols:
        q.add_column(col, justify="left" if col == "queue" else "right", no_wrap=col == "queue")
    for row in status.queues:
        q.add_row(
            row.name,
            str(row.ready),
            f"{row.delayed} ({row.delayed_held})",
            str(row.in_progress),
            str(row.dead_lettered),
            str(row.dead_broker),
            _age(row.oldest_ready_age_s),
        )
    s = status.scheduler
    sched = Table(title=f"Scheduler (business time {status.business_now:%Y-%m-%d %H:%M}Z)")
    sched.add_column("jobs")
    sched.add_column("count", justify="right")
    sched.add_row("due, not claimed yet", str(s.due_unclaimed))
    sched.add_row("  lag (oldest due vs now)", _age(s.lag_s))
    sched.add_row("due, backing off after a failure", str(s.backing_off))
    sched.add_row("claimed (queued or running)", str(s.claimed))
    sched.add_row("scheduled later", str(s.scheduled))
    sched.add_row("sends on hold (paused kinds)", str(s.held))
    w = Table(title="Workers (by heartbeat)")
    for col in ("host", "pid", "last seen", "alive", "in progress", "delayed held"):
        w.add_column(col, justify="left" if col == "host" else "right")
    for worker in status.workers:
        w.add_row(
            escape(worker.host or f"(no heartbeat) {worker.id[:8]}"),
            str(worker.pid or "-"),
            _age(worker.last_seen_age_s) + (" ago" if worker.last_seen_age_s is not None else ""),
            "yes" if worker.alive else "[red]no[/red]",
            str(worker.in_progress),
            str(worker.delayed_held),
        )
    d = status.dead_letters
    lines = [
        f"dead letters to review: {d.messages} messages, {d.jobs} jobs (see `dunning dlq list`)",
    ]
    if d.waiting_in_redis:
        lines.append(f"refused while the database was down, waiting in Redis: {d.waiting_in_redis}")
    if status.paused:
        lines.append(f"notice kinds paused: {', '.join(status.paused)} (`dunning resume`)")
    legend = Text(
        "delayed: retries waiting for their backoff, (held) of them in a worker's memory; in progress: "
        "fetched by a worker (running or prefetched); dead: to review (`dunning dlq`); XQ: Dramatiq's own set",
        style="dim",
    )
    return Group(q, legend, sched, w, *(Text(line) for line in lines))
