"""What every sample email shares: one customer, one moment, links that look like ours.

Each workflow writes one sample notice per kind (its ``samples`` module, reached
through :attr:`dunning.engine.registry.Workflow.sample`); ``dunning emails preview``,
the demo's gallery, the start-up template check and the layout tests render them.
The values are fixed, so a sample renders the same email on every run.
"""

from __future__ import annotations

from datetime import UTC, datetime

#: The sample customer, in a zone where the dates below are the next day in UTC+9 but not here.
NAME = "Ada Lovelace"
EMAIL = "ada@example.com"
TIMEZONE = "Europe/Paris"
#: When a sample email is "sent" (its Date header): fixed, so previews do not change from run to run.
SENT_AT = datetime(2027, 3, 1, 9, 0, tzinfo=UTC)


def link(name: str) -> str:
    """A sample customer link (the shape of :mod:`dunning.engine.links` URLs, not a working one)."""
    return f"https://billing.example.com/l/sample-{name.replace('_', '-')}"


def at(day: int, hour: int = 9) -> datetime:
    """A moment in March 2027 (UTC), after :data:`SENT_AT` for days >= 2."""
    return datetime(2027, 3, day, hour, 0, tzinfo=UTC)


def iso(day: int, hour: int = 9) -> str:
    """:func:`at` as the ISO-8601 string the planned notices' facts hold."""
    return at(day, hour).isoformat()
