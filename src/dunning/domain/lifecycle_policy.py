"""Lifecycle-notice policy: the ``[renewals]``, ``[card_expiry]``, ``[annual_offer]``, ``[trials]``,
``[temporary_upgrades]`` and ``[prices.<plan>]`` tables of the policy file, validated on load.

Each section can be overridden per plan as ``[plans.<plan>.<section>]``: the plan's keys replace the
top-level ones, key by key (``discount_percent`` and ``months_free`` count as one choice: a plan that
sets either drops the other). Offsets are whole days before the announced date, positive and distinct,
and are kept sorted descending (the earliest notice first). :func:`lifecycle_from_dict` is called by
:func:`dunning.domain.policy.policy_from_dict`; errors are :class:`PolicyError` naming the dotted field.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import timedelta
from typing import Annotated, Any, Literal

from pydantic import AfterValidator, BaseModel, ConfigDict, Field, StrictBool, StrictInt, model_validator

from dunning.domain.policy_errors import PolicyError, validate_table

DEFAULT_DISCOUNT_PERCENT = 15
_CURRENCY = re.compile(r"[A-Z]{3}")


def _offsets(days: tuple[int, ...]) -> tuple[int, ...]:
    if any(d <= 0 for d in days):
        raise ValueError("offsets must be positive (whole days before the announced date)")
    if len(set(days)) != len(days):
        raise ValueError("offsets must be distinct")
    return tuple(sorted(days, reverse=True))


_Days = Annotated[tuple[StrictInt, ...], AfterValidator(_offsets)]


class _Section(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class _Renewals(_Section):
    offsets_days: _Days = (30, 7)
    intervals: tuple[Literal["day", "week", "month", "year"], ...] = ("year",)


class _CardExpiry(_Section):
    offsets_days: _Days = (30, 7)


class _AnnualOffer(_Section):
    enabled: StrictBool = True
    tenure_months: StrictInt = Field(default=3, ge=0, le=120)
    every_days: float = Field(default=180, gt=0)
    discount_percent: StrictInt | None = Field(default=None, gt=0, le=50)
    months_free: StrictInt | None = Field(default=None, ge=1, le=6)

    @model_validator(mode="after")
    def _one_offer(self) -> _AnnualOffer:
        if self.discount_percent is not None and self.months_free is not None:
            raise PolicyError("months_free", "set either discount_percent or months_free, not both")
        return self


class _Trials(_Section):
    offsets_days: _Days = (7, 3, 1)
    outcome_delay_hours: float = Field(default=2, ge=0, le=24 * 7)


class _TemporaryUpgrades(_Section):
    offsets_days: _Days = (3, 1)
    long_taste_days: float = Field(default=7, gt=0)


@dataclass(frozen=True, kw_only=True)
class SectionPolicy:
    """Where a resolved section came from, so a notice's reason can name the exact policy key."""

    table: str = field(compare=False)
    plan: str | None = field(default=None, compare=False)
    plan_keys: frozenset[str] = field(default=frozenset(), compare=False)

    def path(self, name: str) -> str:
        """The dotted key a value came from: ``plans.pro.renewals.offsets_days`` or ``renewals.offsets_days``."""
        if self.plan is not None and name in self.plan_keys:
            return f"plans.{self.plan}.{self.table}.{name}"
        return f"{self.table}.{name}"


@dataclass(frozen=True, kw_only=True)
class RenewalsPolicy(SectionPolicy):
    """Renewal notices: days before ``current_period_end``, for the billing intervals listed."""

    offsets_days: tuple[int, ...]
    intervals: frozenset[str]


@dataclass(frozen=True, kw_only=True)
class CardExpiryPolicy(SectionPolicy):
    """Pre-dunning: days before the card on file expires (when that is before the next charge)."""

    offsets_days: tuple[int, ...]


@dataclass(frozen=True, kw_only=True)
class AnnualOfferPolicy(SectionPolicy):
    """The offer to switch monthly billing to annual: a discount or some months free."""

    enabled: bool
    tenure_months: int
    every_days: float
    discount_percent: int | None  # exactly one of these two is set
    months_free: int | None

    @property
    def every(self) -> timedelta:
        return timedelta(days=self.every_days)

    def annual_price_minor(self, monthly_minor: int) -> int:
        """What a year costs after the offer, in minor units (rounded down, in the customer's favour)."""
        if self.months_free is not None:
            return monthly_minor * (12 - self.months_free)
        return monthly_minor * 12 * (100 - (self.discount_percent or 0)) // 100


@dataclass(frozen=True, kw_only=True)
class TrialsPolicy(SectionPolicy):
    """Trial reminders (days before ``trial_end``) and when the outcome notice goes."""

    offsets_days: tuple[int, ...]
    outcome_delay_hours: float

    @property
    def outcome_delay(self) -> timedelta:
        return timedelta(hours=self.outcome_delay_hours)


@dataclass(frozen=True, kw_only=True)
class UpgradesPolicy(SectionPolicy):
    """Temporary-upgrade prompts: the first (largest) offset always, the others only for long tastes."""

    offsets_days: tuple[int, ...]
    long_taste_days: float

    @property
    def long_taste(self) -> timedelta:
        return timedelta(days=self.long_taste_days)


@dataclass(frozen=True, kw_only=True)
class LifecyclePolicy:
    """The resolved lifecycle policy of one plan."""

    renewals: RenewalsPolicy
    card_expiry: CardExpiryPolicy
    annual_offer: AnnualOfferPolicy
    trials: TrialsPolicy
    upgrades: UpgradesPolicy
    prices: dict[str, dict[str, int]]  # plan -> currency -> monthly list price (minor units)

    def monthly_price(self, plan: str, currency: str) -> int | None:
        """The monthly list price of ``plan`` in ``currency`` from ``[prices]``, or None when not listed."""
        return self.prices.get(plan, {}).get(currency)


# TOML table name -> model; ``temporary_upgrades`` resolves to ``LifecyclePolicy.upgrades``.
SECTIONS: dict[str, type[_Section]] = {
    "renewals": _Renewals,
    "card_expiry": _CardExpiry,
    "annual_offer": _AnnualOffer,
    "trials": _Trials,
    "temporary_upgrades": _TemporaryUpgrades,
}
TOP_LEVEL_KEYS = frozenset({*SECTIONS, "prices"})
_OFFER_CHOICE = frozenset({"discount_percent", "months_free"})


def _resolve(
    models: Mapping[str, Any],
    prices: dict[str, dict[str, int]],
    plan: str | None,
    keys: Mapping[str, frozenset[str]],
) -> LifecyclePolicy:
    def where(table: str) -> dict[str, Any]:
        return {"table": table, "plan": plan, "plan_keys": keys.get(table, frozenset())}

    r: _Renewals = models["renewals"]
    c: _CardExpiry = models["card_expiry"]
    a: _AnnualOffer = models["annual_offer"]
    t: _Trials = models["trials"]
    u: _TemporaryUpgrades = models["temporary_upgrades"]
    discount = a.discount_percent
    if discount is None and a.months_free is None:
        discount = DEFAULT_DISCOUNT_PERCENT
    return LifecyclePolicy(
        renewals=RenewalsPolicy(
            offsets_days=r.offsets_days, intervals=frozenset(r.intervals), **where("renewals")
        ),
        card_expiry=CardExpiryPolicy(offsets_days=c.offsets_days, **where("card_expiry")),
        annual_offer=AnnualOfferPolicy(
            enabled=a.enabled,
            tenure_months=a.tenure_months,
            every_days=a.every_days,
            discount_percent=discount,
            months_free=a.months_free,
            **where("annual_offer"),
        ),
        trials=TrialsPolicy(
            offsets_days=t.offsets_days, outcome_delay_hours=t.outcome_delay_hours, **where("trials")
        ),
        upgrades=UpgradesPolicy(
            offsets_days=u.offsets_days, long_taste_days=u.long_taste_days, **where("temporary_upgrades")
        ),
        prices=prices,
    )


def _prices(raw: Any) -> dict[str, dict[str, int]]:
    if not isinstance(raw, dict):
        raise PolicyError("prices", "expected a table of plan tables, e.g. [prices.pro] EUR = 4900")
    prices: dict[str, dict[str, int]] = {}
    for plan, table in raw.items():
        if not isinstance(table, dict):
            raise PolicyError(f"prices.{plan}", "expected a table of currency = monthly price in minor units")
        for currency, amount in table.items():
            if not _CURRENCY.fullmatch(currency):
                raise PolicyError(f"prices.{plan}.{currency}", "expected an ISO 4217 currency code, e.g. EUR")
            if isinstance(amount, bool) or not isinstance(amount, int) or amount <= 0:
                raise PolicyError(f"prices.{plan}.{currency}", "expected a positive integer (minor units)")
        prices[plan] = dict(table)
    return prices


def split_plan_table(name: str, table: Mapping[str, Any]) -> tuple[dict[str, Any], dict[str, Any]]:
    """A ``[plans.<name>]`` table as (flat dunning keys, lifecycle section overrides)."""
    if "prices" in table:
        raise PolicyError(f"plans.{name}.prices", "prices are per plan already: use [prices.<plan>]")
    flat = {k: v for k, v in table.items() if k not in SECTIONS}
    sections = {k: v for k, v in table.items() if k in SECTIONS}
    return flat, sections


def lifecycle_from_dict(
    data: Mapping[str, Any], plan_tables: Mapping[str, Mapping[str, Any]]
) -> tuple[LifecyclePolicy, dict[str, LifecyclePolicy]]:
    """Validate the lifecycle sections of a policy document and resolve them per plan.

    Returns the default :class:`LifecyclePolicy` and one per plan that overrides any section
    (plans without overrides use the default).
    """
    base_raw = {name: data.get(name, {}) for name in SECTIONS}
    base = {name: validate_table(model, name, base_raw[name]) for name, model in SECTIONS.items()}
    prices = _prices(data.get("prices", {}))
    default = _resolve(base, prices, None, {})
    per_plan: dict[str, LifecyclePolicy] = {}
    for plan, table in plan_tables.items():
        _, overrides = split_plan_table(plan, table)
        if not overrides:
            continue
        models = dict(base)
        keys: dict[str, frozenset[str]] = {}
        for section, override in overrides.items():
            prefix = f"plans.{plan}.{section}"
            if not isinstance(override, dict):
                raise PolicyError(prefix, "expected a table")
            inherited = dict(base_raw[section])
            if section == "annual_offer" and _OFFER_CHOICE & set(override):
                # The plan picks its own kind of offer; the top-level one must not clash with it.
                for key in _OFFER_CHOICE:
                    inherited.pop(key, None)
            models[section] = validate_table(SECTIONS[section], prefix, {**inherited, **override})
            keys[section] = frozenset(override)
        per_plan[plan] = _resolve(models, prices, plan, keys)
    return default, per_plan


DEFAULT_LIFECYCLE, _ = lifecycle_from_dict({}, {})
