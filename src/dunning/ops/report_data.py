"""The queries behind ``dunning report``: recovery, churn, lifecycle and price-migration rows.

Data only: :func:`build_ops_report` returns an :class:`OpsReport` (``to_json()``, ``rows()``
for CSV); :mod:`dunning.ops.report_view` renders it. The window (``--since``) is in business
time: cases opened, trials ended, notices sent, offers accepted within it. Without a window,
everything. The older summary (:func:`dunning.report.build_report`) is part of it, unchanged.
"""

from __future__ import annotations

import math
from collections import Counter, defaultdict
from dataclasses import asdict, dataclass, field
from datetime import datetime, timedelta
from typing import TYPE_CHECKING, Any

from sqlalchemy import func, select

from dunning.store.models import (
    Case,
    ChargeAttempt,
    Outbox,
    PriceMigration,
    PriceMigrationMember,
    Subscription,
    TimelineEntry,
)
from dunning.workflows.failed_payments.declines import classify_decline

if TYPE_CHECKING:
    from dunning.runtime import Runtime

#: Timeline line written when a customer takes the annual offer (``lifecycle/annual_switch.py``).
ANNUAL_ACCEPTED = "annual offer of % accepted%"


def percentile(values: list[float], q: float) -> float | None:
    """The ``q`` quantile (0..1) by nearest rank; None for no values."""
    if not values:
        return None
    ordered = sorted(values)
    return ordered[max(0, math.ceil(q * len(ordered)) - 1)]


def rate(part: int, whole: int) -> float | None:
    """``part / whole``, None when there is no whole."""
    return part / whole if whole else None


@dataclass
class Recovery:
    """Cases opened in the window, by how they stand."""

    opened: int = 0
    recovered: int = 0
    #: Canceled for non-payment: the involuntary churn.
    churned: int = 0
    by_class: dict[str, dict[str, int]] = field(default_factory=dict)
    #: Attempt number -> charges made and succeeded (attempt 1 is the first retry we made).
    by_attempt: dict[int, dict[str, int]] = field(default_factory=dict)
    recovered_minor: dict[str, int] = field(default_factory=dict)
    at_risk_minor: dict[str, int] = field(default_factory=dict)
    recover_hours_median: float | None = None
    recover_hours_p90: float | None = None


@dataclass
class Lifecycle:
    """Notices sent (every kind, in the window), trials ended and converted, annual offers taken."""

    notices_sent: dict[str, int] = field(default_factory=dict)
    trials_ended: int = 0
    trials_converted: int = 0
    annual_offers_sent: int = 0
    annual_switches: int = 0


@dataclass
class MigrationAcceptance:
    """One price migration: of the members notified, who chose, who canceled, who let it apply."""

    id: str
    status: str
    notified: int
    #: Made a choice on the page (an offer, or "keep the new price").
    accepted: int
    #: Canceled their subscription after the notice (the price did not apply).
    declined: int
    #: Applied without a choice.
    defaulted: int
    #: Notified, no choice yet, not applied yet.
    open: int
    choices: dict[str, int] = field(default_factory=dict)


@dataclass
class OpsReport:
    """Everything ``dunning report`` shows."""

    now: datetime
    since: datetime | None
    recovery: Recovery
    lifecycle: Lifecycle
    migrations: list[MigrationAcceptance]

    def to_json(self) -> dict[str, Any]:
        r = self.recovery
        return {
            "now": self.now.isoformat(),
            "since": self.since.isoformat() if self.since else None,
            "recovery": asdict(r)
            | {
                "recovery_rate": rate(r.recovered, r.opened),
                "churn_rate": rate(r.churned, r.opened),
                "by_class": {
                    k: v | {"rate": rate(v["recovered"], v["opened"])} for k, v in r.by_class.items()
                },
                "by_attempt": {
                    str(k): v | {"rate": rate(v["succeeded"], v["made"])} for k, v in r.by_attempt.items()
                },
            },
            "lifecycle": asdict(self.lifecycle)
            | {
                "trial_conversion": rate(self.lifecycle.trials_converted, self.lifecycle.trials_ended),
                "annual_take_rate": rate(self.lifecycle.annual_switches, self.lifecycle.annual_offers_sent),
            },
            "price_migrations": [asdict(m) for m in self.migrations],
        }

    def rows(self) -> list[tuple[str, str, str, Any]]:
        """Flat (section, metric, key, value) rows, for CSV."""
        out: list[tuple[str, str, str, Any]] = []
        data = self.to_json()
        rec = data["recovery"]
        for name in ("opened", "recovered", "churned", "recovery_rate", "churn_rate"):
            out.append(("recovery", name, "", rec[name]))
        for cls, v in rec["by_class"].items():
            out += [("recovery_by_class", k, cls, v[k]) for k in ("opened", "recovered", "rate")]
        for n, v in rec["by_attempt"].items():
            out += [("recovery_by_attempt", k, n, v[k]) for k in ("made", "succeeded", "rate")]
        out += [("revenue_recovered", "minor_units", c, v) for c, v in rec["recovered_minor"].items()]
        out += [("revenue_at_risk", "minor_units", c, v) for c, v in rec["at_risk_minor"].items()]
        out += [("time_to_recover", k, "hours", rec[f"recover_hours_{k}"]) for k in ("median", "p90")]
        life = data["lifecycle"]
        out += [("notices_sent", "sent", k, v) for k, v in life["notices_sent"].items()]
        for name in ("trials_ended", "trials_converted", "trial_conversion"):
            out.append(("lifecycle", name, "", life[name]))
        for name in ("annual_offers_sent", "annual_switches", "annual_take_rate"):
            out.append(("lifecycle", name, "", life[name]))
        for m in data["price_migrations"]:
            out += [
                ("price_migration", k, m["id"], m[k])
                for k in ("notified", "accepted", "declined", "defaulted", "open")
            ]
        return out


def build_ops_report(rt: Runtime, *, since: timedelta | None = None) -> OpsReport:
    """Run the report's queries (a handful of grouped queries; cases are read once)."""
    now = rt.clock.now()
    start = now - since if since is not None else None
    with rt.sessions() as s:
        recovery = _recovery(s, start)
        lifecycle = _lifecycle(s, start, now)
        migrations = _migrations(s)
    return OpsReport(now, start, recovery, lifecycle, migrations)


def _recovery(s: Any, start: datetime | None) -> Recovery:
    r = Recovery()
    by_class: dict[str, Counter[str]] = defaultdict(Counter)
    recovered: dict[str, int] = defaultdict(int)
    at_risk: dict[str, int] = defaultdict(int)
    hours: list[float] = []
    stmt = select(
        Case.status, Case.outcome, Case.first_decline_code, Case.currency, Case.recovered_minor,
        Case.amount_minor, Case.opened_at, Case.closed_at,
    )  # fmt: skip
    if start is not None:
        stmt = stmt.where(Case.opened_at >= start)
    for status, outcome, code, currency, paid, amount, opened, closed in s.execute(stmt):
        cls = str(classify_decline(code))
        r.opened += 1
        by_class[cls]["opened"] += 1
        if status == "recovered":
            r.recovered += 1
            by_class[cls]["recovered"] += 1
            recovered[currency] += paid or 0
            if closed is not None:
                hours.append((closed - opened).total_seconds() / 3600)
        if outcome == "canceled":
            r.churned += 1
        if status in ("open", "suspended"):
            at_risk[currency] += amount
    r.by_class = {
        k: {"opened": v["opened"], "recovered": v["recovered"]} for k, v in sorted(by_class.items())
    }
    r.recovered_minor, r.at_risk_minor = dict(sorted(recovered.items())), dict(sorted(at_risk.items()))
    r.recover_hours_median, r.recover_hours_p90 = percentile(hours, 0.5), percentile(hours, 0.9)
    attempts = (
        select(ChargeAttempt.attempt_no, ChargeAttempt.status, func.count())
        .join(Case, Case.id == ChargeAttempt.case_id)
        .group_by(ChargeAttempt.attempt_no, ChargeAttempt.status)
    )
    if start is not None:
        attempts = attempts.where(Case.opened_at >= start)
    by_attempt: dict[int, Counter[str]] = defaultdict(Counter)
    for n, status, count in s.execute(attempts):
        by_attempt[n]["made"] += count
        if status == "succeeded":
            by_attempt[n]["succeeded"] += count
    r.by_attempt = {
        n: {"made": v["made"], "succeeded": v["succeeded"]} for n, v in sorted(by_attempt.items())
    }
    return r


def _lifecycle(s: Any, start: datetime | None, now: datetime) -> Lifecycle:
    life = Lifecycle()
    sent = select(Outbox.kind, func.count()).where(Outbox.status == "sent")
    if start is not None:
        sent = sent.where(Outbox.sent_at >= start)
    life.notices_sent = dict(sorted(s.execute(sent.group_by(Outbox.kind)).all()))
    life.annual_offers_sent = life.notices_sent.get("annual_offer", 0)
    trials = select(Subscription.status, func.count()).where(
        Subscription.trial_end.is_not(None), Subscription.trial_end <= now
    )
    if start is not None:
        trials = trials.where(Subscription.trial_end >= start)
    for status, n in s.execute(trials.group_by(Subscription.status)):
        if status == "trialing":
            continue  # its trial end passed but the billing system has not said how it ended yet
        life.trials_ended += n
        if status in ("active", "past_due"):
            life.trials_converted += n
    switches = select(func.count()).where(
        TimelineEntry.kind == "lifecycle", TimelineEntry.detail.like(ANNUAL_ACCEPTED)
    )
    if start is not None:
        switches = switches.where(TimelineEntry.at >= start)
    life.annual_switches = s.execute(switches).scalar_one()
    return life


def _migrations(s: Any) -> list[MigrationAcceptance]:
    m, pm = PriceMigrationMember, PriceMigration
    rows = s.execute(
        select(pm.id, pm.status, m.state, m.choice, m.reason, func.count())
        .join(m, m.migration_id == pm.id)
        .where(m.notified_at.is_not(None))
        .group_by(pm.id, pm.status, m.state, m.choice, m.reason)
        .order_by(pm.id)
    ).all()
    out: dict[str, MigrationAcceptance] = {}
    for mid, status, state, choice, reason, n in rows:
        a = out.setdefault(mid, MigrationAcceptance(mid, status, 0, 0, 0, 0, 0))
        a.notified += n
        if choice is not None:
            a.accepted += n
            a.choices[choice] = a.choices.get(choice, 0) + n
        elif state == "skipped" and "cancel" in (reason or "") and reason != "migration canceled":
            a.declined += n
        elif state == "applied":
            a.defaulted += n
        elif state in ("notified", "reminded", "deferred", "pending"):
            a.open += n
    return list(out.values())
