"""Dunning policy as data: a versioned TOML file, per plan, validated on load.

Example (every key optional; ``[plans.<plan>]`` tables override ``[defaults]``)::

    version = "2026-11-a"

    [defaults]
    retry_days = [1, 3, 5, 7, 12]      # days after the first failure
    grace_days = 14                    # access is suspended at the end of grace
    reminder_days = [6]                # reminder emails, days after the first failure
    final_notice_days_before = 2       # final notice, days before suspension
    end_after_days = 7                 # days after suspension until cancel/downgrade
    end_action = "cancel"              # or "downgrade"
    min_retry_gap_hours = 20           # never two charges of one invoice closer than this
    card_update_retries = 3            # immediate retries triggered by card updates, per case
    quiet_hours = ["21:00", "08:00"]   # no email in this local-time window ([] to disable)

    [plans.pro]
    end_action = "downgrade"
    downgrade_plan = "free"
    downgrade_amount_minor = 0

Lifecycle notices (``dunning.domain.lifecycle_policy``; every section optional, each overridable
per plan as ``[plans.<plan>.<section>]``, key by key)::

    [renewals]
    offsets_days = [30, 7]             # days before current_period_end
    intervals = ["year"]               # billing intervals that get renewal notices

    [card_expiry]
    offsets_days = [30, 7]             # days before the card expires, when that is before the next charge

    [annual_offer]
    enabled = true
    tenure_months = 3                  # since started_at (else since we first saw the subscription)
    every_days = 180                   # at most one offer per this many days
    discount_percent = 15              # 0 < p <= 50; or months_free = 1..6 (not both)

    [trials]
    offsets_days = [7, 3, 1]           # days before trial_end
    outcome_delay_hours = 2            # converted/lapsed notice this long after trial_end

    [temporary_upgrades]
    offsets_days = [3, 1]              # days before ends_at; all but the first only for long tastes
    long_taste_days = 7

    [prices.pro]                       # monthly list prices (minor units), for upgrade price differences
    EUR = 4900

    [plans.pro.renewals]
    offsets_days = [60, 30, 7]

Per-recipient email caps (``dunning.domain.emails``; not per plan)::

    [emails]
    max_dunning_per_day = 1            # more are deferred to the recipient's next local day
    max_prompts_per_week = 2           # offers and nudges over it are dropped (0: none at all)
"""

from __future__ import annotations

import itertools
import tomllib
from dataclasses import dataclass, field
from datetime import time, timedelta
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from dunning.domain.emails import DEFAULT_CAPS, EmailCaps, caps_from_dict
from dunning.domain.lifecycle_policy import (
    DEFAULT_LIFECYCLE,
    TOP_LEVEL_KEYS,
    LifecyclePolicy,
    lifecycle_from_dict,
    split_plan_table,
)
from dunning.domain.policy_errors import PolicyError, validate_table

__all__ = [
    "DEFAULT_POLICY",
    "LifecyclePolicy",
    "PlanPolicy",
    "Policy",
    "PolicyError",
    "load_policy",
    "policy_from_dict",
]


class _PlanFields(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    retry_days: tuple[float, ...] = (1, 3, 5, 7, 12)
    grace_days: float = Field(default=14, gt=0, le=120)
    reminder_days: tuple[float, ...] = (6,)
    final_notice_days_before: float = Field(default=2, gt=0)
    end_after_days: float = Field(default=7, ge=0, le=365)
    end_action: Literal["cancel", "downgrade"] = "cancel"
    downgrade_plan: str | None = None
    downgrade_amount_minor: int | None = Field(default=None, ge=0)
    min_retry_gap_hours: float = Field(default=20, ge=0, le=24 * 30)
    card_update_retries: int = Field(default=3, ge=0, le=20)
    quiet_hours: tuple[str, ...] = ("21:00", "08:00")

    @field_validator("retry_days", "reminder_days")
    @classmethod
    def _increasing(cls, days: tuple[float, ...]) -> tuple[float, ...]:
        if any(d <= 0 for d in days):
            raise ValueError("days must be greater than 0 (day 0 is the failure itself)")
        if any(b <= a for a, b in itertools.pairwise(days)):
            raise ValueError("days must be strictly increasing")
        return days

    @field_validator("quiet_hours")
    @classmethod
    def _clock_times(cls, value: tuple[str, ...]) -> tuple[str, ...]:
        if len(value) not in (0, 2):
            raise ValueError('expected ["HH:MM", "HH:MM"] (start, end) or [] to disable')
        for item in value:
            if time.fromisoformat(item).tzinfo is not None:  # raises ValueError with a clear message
                raise ValueError("quiet hours are the recipient's local wall time: no UTC offset")
        return value

    @model_validator(mode="after")
    def _coherent(self) -> _PlanFields:
        if self.retry_days and self.retry_days[-1] > self.grace_days - 1:
            raise PolicyError(
                "retry_days",
                f"the last retry (day {self.retry_days[-1]:g}) must come at least 1 day before access "
                f"is suspended (day {self.grace_days:g}); otherwise the final retry happens after the cut",
            )
        if self.final_notice_days_before >= self.grace_days:
            raise PolicyError("final_notice_days_before", "must be smaller than grace_days")
        final_day = self.grace_days - self.final_notice_days_before
        if self.reminder_days and self.reminder_days[-1] >= final_day:
            raise PolicyError(
                "reminder_days",
                f"reminders must come before the final notice (day {final_day:g})",
            )
        if self.end_action == "downgrade" and not self.downgrade_plan:
            raise PolicyError("downgrade_plan", 'required when end_action = "downgrade"')
        return self


@dataclass(frozen=True)
class PlanPolicy:
    """The validated, resolved policy for one plan."""

    retry_days: tuple[float, ...]
    grace_days: float
    reminder_days: tuple[float, ...]
    final_notice_days_before: float
    end_after_days: float
    end_action: Literal["cancel", "downgrade"]
    downgrade_plan: str | None
    downgrade_amount_minor: int | None
    min_retry_gap: timedelta
    card_update_retries: int
    quiet_hours: tuple[time, time] | None

    @property
    def grace(self) -> timedelta:
        return timedelta(days=self.grace_days)

    @property
    def end_after(self) -> timedelta:
        return timedelta(days=self.end_after_days)

    @property
    def final_notice_before(self) -> timedelta:
        return timedelta(days=self.final_notice_days_before)

    @property
    def max_retries(self) -> int:
        return len(self.retry_days)


@dataclass(frozen=True)
class Policy:
    """All plans' policies, plus the version recorded on every case opened under it."""

    version: str
    default: PlanPolicy
    plans: dict[str, PlanPolicy]
    lifecycle: LifecyclePolicy = DEFAULT_LIFECYCLE
    lifecycle_plans: dict[str, LifecyclePolicy] = field(default_factory=dict)
    #: Per-recipient caps on dunning emails and prompts (the ``[emails]`` table).
    emails: EmailCaps = DEFAULT_CAPS

    def for_plan(self, plan: str | None) -> PlanPolicy:
        """The policy of a plan, or the defaults."""
        return self.plans.get(plan or "", self.default)

    def lifecycle_for(self, plan: str | None) -> LifecyclePolicy:
        """The lifecycle-notice policy of a plan (its ``[plans.<plan>.<section>]`` overrides applied)."""
        return self.lifecycle_plans.get(plan or "", self.lifecycle)


def _resolve(fields: _PlanFields) -> PlanPolicy:
    quiet = None
    if fields.quiet_hours:
        quiet = (time.fromisoformat(fields.quiet_hours[0]), time.fromisoformat(fields.quiet_hours[1]))
    return PlanPolicy(
        retry_days=fields.retry_days,
        grace_days=fields.grace_days,
        reminder_days=fields.reminder_days,
        final_notice_days_before=fields.final_notice_days_before,
        end_after_days=fields.end_after_days,
        end_action=fields.end_action,
        downgrade_plan=fields.downgrade_plan,
        downgrade_amount_minor=fields.downgrade_amount_minor,
        min_retry_gap=timedelta(hours=fields.min_retry_gap_hours),
        card_update_retries=fields.card_update_retries,
        quiet_hours=quiet,
    )


def _validate(prefix: str, data: Any) -> _PlanFields:
    return validate_table(_PlanFields, prefix, data)


def policy_from_dict(data: dict[str, Any]) -> Policy:
    """Validate a parsed policy document; errors name the field."""
    unknown = set(data) - {"version", "defaults", "plans", "emails"} - TOP_LEVEL_KEYS
    if unknown:
        expected = ", ".join(["version", "defaults", "plans", "emails", *sorted(TOP_LEVEL_KEYS)])
        raise PolicyError(sorted(unknown)[0], f"unknown key (expected {expected})")
    version = data.get("version", "builtin")
    if not isinstance(version, str | int):
        raise PolicyError("version", "expected a string")
    defaults_raw = data.get("defaults", {})
    defaults = _validate("defaults", defaults_raw)
    plans_raw = data.get("plans", {})
    if not isinstance(plans_raw, dict):
        raise PolicyError("plans", "expected a table of plan tables")
    plans: dict[str, PlanPolicy] = {}
    for name, overrides in plans_raw.items():
        if not isinstance(overrides, dict):
            raise PolicyError(f"plans.{name}", "expected a table")
        flat, _ = split_plan_table(name, overrides)  # nested lifecycle sections are resolved below
        merged = {**defaults_raw, **flat}
        plans[name] = _resolve(_validate(f"plans.{name}", merged))
    lifecycle, lifecycle_plans = lifecycle_from_dict(data, plans_raw)
    return Policy(
        version=str(version),
        default=_resolve(defaults),
        plans=plans,
        lifecycle=lifecycle,
        lifecycle_plans=lifecycle_plans,
        emails=caps_from_dict(data.get("emails", {})),
    )


def load_policy(path: Path | None) -> Policy:
    """Load a policy TOML file, or the built-in defaults when ``path`` is None."""
    if path is None:
        return policy_from_dict({"version": "builtin-1"})
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as exc:
        raise PolicyError("(file)", f"cannot read {path}: {exc.strerror}") from None
    try:
        data = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise PolicyError("(file)", f"not valid TOML: {exc}") from None
    return policy_from_dict(data)


DEFAULT_POLICY = policy_from_dict({"version": "builtin-1"})
