"""Cross-field date checks of ``subscription.upserted`` (a schema cannot compare two fields).

They read the raw envelope rather than the validated model, so they still run
when some other field is wrong: a refusal then lists every problem at once.
Each date is compared only if it is itself valid; an invalid one is reported
by the models already.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

from pydantic import TypeAdapter, ValidationError

from dunning.contract.fields import Timestamp

_timestamp: TypeAdapter[datetime] = TypeAdapter(Timestamp)


def _date(value: Any) -> datetime | None:
    if value is None:
        return None
    try:
        return _timestamp.validate_python(value)
    except ValidationError:
        return None


def _get(node: Any, key: str) -> Any:
    return node.get(key) if isinstance(node, dict) else None


def date_problems(raw: dict[str, Any]) -> list[tuple[str, str]]:
    """``(path, reason)`` for each date of a subscription that cannot be true when the event occurred."""
    occurred = _date(raw.get("occurred_at"))
    sub = _get(raw.get("data"), "subscription")
    if occurred is None or not isinstance(sub, dict):
        return []
    problems: list[tuple[str, str]] = []
    trial_end = _date(sub.get("trial_end"))
    if sub.get("status") == "trialing" and trial_end is not None and trial_end < occurred:
        problems.append(
            (
                "data.subscription.trial_end",
                f"a trialing subscription's trial cannot end ({trial_end.isoformat()}) before the event"
                f" occurred ({occurred.isoformat()})",
            )
        )
    ends_at = _date(_get(sub.get("temporary_upgrade"), "ends_at"))
    if ends_at is not None and ends_at < occurred:
        problems.append(
            (
                "data.subscription.temporary_upgrade.ends_at",
                f"the upgrade ends ({ends_at.isoformat()}) before the event occurred"
                f" ({occurred.isoformat()}); send the subscription without temporary_upgrade instead",
            )
        )
    started_at = _date(sub.get("started_at"))
    if started_at is not None and started_at > occurred:
        problems.append(
            (
                "data.subscription.started_at",
                f"the subscription cannot start ({started_at.isoformat()}) after the event occurred"
                f" ({occurred.isoformat()})",
            )
        )
    return problems
