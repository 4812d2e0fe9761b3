"""The business picture: cases by outcome, revenue recovered, emails by kind."""

from __future__ import annotations

from collections import Counter, defaultdict
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from sqlalchemy import func, select

from dunning.store.models import Case, ChargeAttempt, Job, Outbox

if TYPE_CHECKING:
    from dunning.runtime import Runtime


@dataclass
class Report:
    cases_opened: int = 0
    by_status: Counter[str] = field(default_factory=Counter)
    by_outcome: Counter[str] = field(default_factory=Counter)
    ever_suspended: int = 0
    # Minor units actually paid on recovered cases, per currency (currencies with nothing paid are absent).
    recovered_minor: dict[str, int] = field(default_factory=lambda: defaultdict(int))
    at_risk_minor: dict[str, int] = field(default_factory=lambda: defaultdict(int))
    charges: Counter[str] = field(default_factory=Counter)
    emails: Counter[str] = field(default_factory=Counter)
    email_status: Counter[str] = field(default_factory=Counter)
    jobs: Counter[str] = field(default_factory=Counter)

    @property
    def recovery_rate(self) -> float:
        recovered = self.by_status.get("recovered", 0)
        return recovered / self.cases_opened if self.cases_opened else 0.0


def build_report(rt: Runtime) -> Report:
    """Aggregate the store into a :class:`Report`."""
    report = Report()
    with rt.sessions() as s:
        for status, outcome, suspended, currency, recovered, amount in s.execute(
            select(
                Case.status,
                Case.outcome,
                Case.suspended_at.is_not(None),
                Case.currency,
                Case.recovered_minor,
                Case.amount_minor,
            )
        ):
            report.cases_opened += 1
            report.by_status[status] += 1
            if outcome:
                report.by_outcome[outcome] += 1
            if suspended:
                report.ever_suspended += 1
            if status == "recovered" and recovered:
                # What was paid (``invoice.paid`` as received, or the invoice our retry collected),
                # not the case's amount; ingest refuses a payment in another currency than the case's.
                report.recovered_minor[currency] += recovered
            if status in ("open", "suspended"):
                report.at_risk_minor[currency] += amount
        for status, n in s.execute(select(ChargeAttempt.status, func.count()).group_by(ChargeAttempt.status)):
            report.charges[status] = n
        for kind, status, n in s.execute(
            select(Outbox.kind, Outbox.status, func.count()).group_by(Outbox.kind, Outbox.status)
        ):
            if status == "sent":
                report.emails[kind] += n
            report.email_status[status] += n
        for status, n in s.execute(select(Job.status, func.count()).group_by(Job.status)):
            report.jobs[status] = n
    return report
