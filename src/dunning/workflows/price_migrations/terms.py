"""The terms of a price migration, validated: from command-line options or a TOML file.

Pure (the business ``now`` is passed in). Every refusal is a :class:`Refused` naming the
field as the operator wrote it: ``--new-amount`` for an option, ``new_amount`` for a key
of the file. What needs the database (is the plan known?) is checked by :mod:`.members`.

Notice: the policy minimum is :data:`POLICY_MIN_NOTICE_DAYS` (30); when the notice is not
given it is that minimum, and a shorter one must be given explicitly and be at least
:data:`EXPLICIT_MIN_NOTICE_DAYS` (7).
"""

from __future__ import annotations

import re
import tomllib
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta
from typing import Any

from babel.numbers import list_currencies

from dunning.errors import Refused
from dunning.workflows.price_migrations.pricing import add_months, parse_offer

POLICY_MIN_NOTICE_DAYS = 30
EXPLICIT_MIN_NOTICE_DAYS = 7
MAX_NOTICE_DAYS = 365
MAX_GRANDFATHER_MONTHS = 60
DEFAULT_GUARDRAIL_PERCENT = 50
MAX_REASON_CHARS = 1000
#: An effective date further ahead than this is a typo (2072 for 2027).
MAX_YEARS_AHEAD = 5
MAX_MINOR = 10**12  # the event contract's bound on amounts
INTERVALS = ("month", "year")
_CURRENCIES = frozenset(list_currencies())
_CONTROL = re.compile(r"[\x00-\x08\x0b-\x1f\x7f]")  # tabs and line breaks allowed
_ONE_LINE = re.compile(r"[\x00-\x1f\x7f]")

#: The file's keys and the command-line option each one corresponds to.
OPTIONS: dict[str, str] = {
    "plan": "--plan",
    "currency": "--currency",
    "interval": "--interval",
    "new_amount": "--new-amount",
    "effective": "--effective",
    "notice_days": "--notice-days",
    "grandfather_months": "--grandfather-months",
    "offers": "--offer",
    "reason": "--reason",
    "guardrail_percent": "--guardrail-percent",
    # File only: the auto-pause threshold (share of notified subscribers canceling within the window).
    "cancel_alert_percent": "--cancel-alert-percent",
    "cancel_alert_days": "--cancel-alert-days",
}
REQUIRED = ("plan", "currency", "new_amount", "effective", "reason")


@dataclass(frozen=True)
class MigrationTerms:
    """A migration's terms, valid by construction (build them with :func:`from_options` or :func:`from_toml`)."""

    plan: str
    currency: str
    interval: str
    new_amount_minor: int
    effective_at: datetime
    notice_days: int
    grandfather_months: int
    offers: tuple[dict[str, Any], ...]
    reason: str
    guardrail_percent: int = DEFAULT_GUARDRAIL_PERCENT
    cancel_alert_percent: int = 5
    cancel_alert_days: int = 14

    @property
    def not_before(self) -> datetime:
        """Effective date plus grandfathering: no price of this migration applies earlier."""
        return add_months(self.effective_at, self.grandfather_months)

    @property
    def short_notice(self) -> bool:
        """Whether the notice is below the policy minimum (allowed only because it was given explicitly)."""
        return self.notice_days < POLICY_MIN_NOTICE_DAYS


def from_options(values: Mapping[str, Any], *, now: datetime) -> MigrationTerms:
    """Terms from the command line: ``values`` keyed like the file (``new_amount``), None when not given."""
    return _build({k: v for k, v in values.items() if v is not None}, now=now, label=OPTIONS.__getitem__)


def from_toml(text: str, *, now: datetime) -> MigrationTerms:
    """Terms from a TOML document (``--file migration.toml``); unknown keys are refused."""
    try:
        raw = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise Refused("file", f"not valid TOML: {exc}") from None
    unknown = sorted(set(raw) - set(OPTIONS))
    if unknown:
        raise Refused(unknown[0], f"unknown key; the keys are {', '.join(OPTIONS)}")
    return _build(raw, now=now, label=lambda name: name)


def _build(raw: Mapping[str, Any], *, now: datetime, label: Callable[[str], str]) -> MigrationTerms:
    for name in REQUIRED:
        if name not in raw:
            raise Refused(label(name), "required")
    plan = _text(raw["plan"], label("plan"), max_chars=255)
    currency = _text(raw["currency"], label("currency"), max_chars=3).upper()
    if currency not in _CURRENCIES:
        raise Refused(label("currency"), f"{currency!r} is not an ISO-4217 currency code (such as EUR)")
    interval = _text(raw.get("interval", "month"), label("interval"), max_chars=10)
    if interval not in INTERVALS:
        raise Refused(label("interval"), f"expected month or year, got {interval!r}")
    new_amount = _whole(raw["new_amount"], label("new_amount"), lo=0, hi=MAX_MINOR, unit="minor units")
    if new_amount <= 0:
        raise Refused(label("new_amount"), "must be above zero (minor units: 5900 is 59.00 EUR)")
    effective = _effective(raw["effective"], label("effective"), now)
    if "notice_days" in raw:
        notice_days = _whole(raw["notice_days"], label("notice_days"), lo=0, hi=10**6, unit="days")
        if notice_days < EXPLICIT_MIN_NOTICE_DAYS:
            raise Refused(
                label("notice_days"),
                f"{notice_days} days is too short: at least {EXPLICIT_MIN_NOTICE_DAYS} when given explicitly "
                f"(the policy minimum is {POLICY_MIN_NOTICE_DAYS})",
            )
        if notice_days > MAX_NOTICE_DAYS:
            raise Refused(label("notice_days"), f"at most {MAX_NOTICE_DAYS} days, got {notice_days}")
    else:
        notice_days = POLICY_MIN_NOTICE_DAYS
    grandfather = _whole(
        raw.get("grandfather_months", 0),
        label("grandfather_months"),
        lo=0,
        hi=MAX_GRANDFATHER_MONTHS,
        unit="months",
    )
    reason = _text(raw["reason"], label("reason"), max_chars=MAX_REASON_CHARS, multiline=True)
    guardrail = _whole(
        raw.get("guardrail_percent", DEFAULT_GUARDRAIL_PERCENT),
        label("guardrail_percent"),
        lo=1,
        hi=10_000,
        unit="%",
    )
    alert_percent = _whole(
        raw.get("cancel_alert_percent", 5), label("cancel_alert_percent"), lo=1, hi=100, unit="%"
    )
    alert_days = _whole(
        raw.get("cancel_alert_days", 14), label("cancel_alert_days"), lo=1, hi=365, unit="days"
    )
    offers = _offers(
        raw.get("offers", ()), label("offers"), plan=plan, interval=interval, new_amount=new_amount
    )
    return MigrationTerms(
        plan=plan,
        currency=currency,
        interval=interval,
        new_amount_minor=new_amount,
        effective_at=effective,
        notice_days=notice_days,
        grandfather_months=grandfather,
        offers=offers,
        reason=reason,
        guardrail_percent=guardrail,
        cancel_alert_percent=alert_percent,
        cancel_alert_days=alert_days,
    )


def _text(value: Any, field: str, *, max_chars: int, multiline: bool = False) -> str:
    if not isinstance(value, str):
        raise Refused(field, f"expected text, got {type(value).__name__}")
    text = value.replace("\r\n", "\n").strip()
    if not text:
        raise Refused(field, "must not be empty")
    if len(text) > max_chars:
        raise Refused(field, f"at most {max_chars} characters, got {len(text)}")
    if (_CONTROL if multiline else _ONE_LINE).search(text):
        raise Refused(field, "contains a control character" + ("" if multiline else " or a line break"))
    return text


def _whole(value: Any, field: str, *, lo: int, hi: int, unit: str) -> int:
    """A whole number from an int (file) or its decimal text (option), within [lo, hi]."""
    if isinstance(value, bool) or not isinstance(value, int | str):
        raise Refused(field, f"expected a whole number of {unit}, got {type(value).__name__}")
    if isinstance(value, str):
        text = value.strip()
        if not re.fullmatch(r"-?[0-9]{1,15}", text):
            raise Refused(field, f"expected a whole number of {unit}, got {value!r}")
        value = int(text)
    if not lo <= value <= hi:
        raise Refused(field, f"must be {lo} to {hi:,} {unit}, got {value}")
    return value


def _effective(value: Any, field: str, now: datetime) -> datetime:
    """A date (00:00 UTC that day) or an aware date-time; not in the past, not years ahead."""
    if isinstance(value, str):
        text = value.strip()
        try:
            value = date.fromisoformat(text) if len(text) == 10 else datetime.fromisoformat(text)
        except ValueError:
            raise Refused(field, f"expected a date such as 2027-03-01, got {value!r}") from None
    if isinstance(value, datetime):
        if value.tzinfo is None:
            raise Refused(field, "a date-time needs its offset (2027-03-01T00:00:00Z), or give a date")
        at = value.astimezone(UTC)
        if at < now:
            raise Refused(field, f"{at.isoformat()} is in the past (now {now.astimezone(UTC).isoformat()})")
    elif isinstance(value, date):
        at = datetime(value.year, value.month, value.day, tzinfo=UTC)
        today = now.astimezone(UTC).date()
        if value < today:
            raise Refused(field, f"{value.isoformat()} is in the past (today is {today.isoformat()} UTC)")
    else:
        raise Refused(field, f"expected a date such as 2027-03-01, got {type(value).__name__}")
    if at > now + timedelta(days=366 * MAX_YEARS_AHEAD):
        raise Refused(field, f"{at.date().isoformat()} is more than {MAX_YEARS_AHEAD} years ahead")
    return at


def _offers(
    values: Any, field: str, *, plan: str, interval: str, new_amount: int
) -> tuple[dict[str, Any], ...]:
    if isinstance(values, str) or not isinstance(values, list | tuple):
        raise Refused(field, "expected a list of offers such as ['step-up:20:6', 'annual-lock']")
    offers: list[dict[str, Any]] = []
    for text in values:
        if not isinstance(text, str):
            raise Refused(field, f"expected offer text such as 'annual-lock', got {type(text).__name__}")
        offer = parse_offer(text, field)
        kind = offer["kind"]
        if any(o["kind"] == kind for o in offers):
            raise Refused(field, f"{text.strip().split(':')[0]} is given twice (one offer of each kind)")
        if kind == "annual_lock" and interval != "month":
            raise Refused(field, "annual-lock switches monthly billing to yearly: not for a yearly migration")
        if kind == "step_up" and interval == "year" and offer["months"] % 12:
            raise Refused(
                field,
                f"a yearly migration steps up by whole years: MONTHS 12, 24 or 36, not {offer['months']}",
            )
        if kind == "downgrade":
            if offer["plan"] == plan:
                raise Refused(field, f"downgrade to {plan!r} is the migration's own plan")
            if offer["amount_minor"] >= new_amount:
                raise Refused(
                    field, f"downgrade MINOR {offer['amount_minor']} is not below the new amount {new_amount}"
                )
        offers.append(offer)
    return tuple(offers)
