"""The facts one lifecycle email is rendered from (renewals, card expiry, annual offer, trials, upgrades).

A :class:`LifecycleNotice` is plain data, like the failed-payment
``NoticeContext``: the caller fills it from the planned notice's facts (JSON
values: minor units, ISO-8601 UTC datetimes), the customer profile and the
signed links, and :meth:`LifecycleNotice.template_values` formats them for
one customer with the renderer's :class:`~dunning.mail.render.Formatter`. So
``Renderer.render`` takes it unchanged, and templates only choose sentences.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import UTC, date, datetime
from typing import TYPE_CHECKING, Any

from babel.dates import format_skeleton
from babel.numbers import format_percent

from dunning.domain.emails import PROMPT, TRANSACTIONAL, MailKind
from dunning.mail.links import checked_links
from dunning.mail.render import N_

if TYPE_CHECKING:
    from dunning.mail.render import Formatter

#: Notice kinds (``outbox.kind``), in the order of the spec; each has
#: ``templates/email/lifecycle/<kind>.html`` and ``.txt``.
KINDS: tuple[str, ...] = (
    "renewal_notice",
    "card_expiring",
    "annual_offer",
    "annual_switch_confirmed",
    "trial_reminder",
    "trial_ended",
    "upgrade_ending",
    "upgrade_reverted",
)

#: How each kind is treated on the way out (:mod:`dunning.domain.emails`). Prompts (offers and
#: nudges: capped per week, carry List-Unsubscribe, skipped once the address unsubscribed) are
#: the annual-billing offer and the end of a free upgrade (the account goes back to what the
#: customer pays for: nothing is lost by missing it). Both trial kinds are transactional:
#: the reminder announces, for a date, a charge on the card (card networks and auto-renewal
#: laws ask for exactly this notice) or, without a card, the end of access; the trial's end
#: says what happened (charged, or not and access gone). A no-card reminder also asks for a
#: card, but a prompt cap would drop the last of its three reminders, the day before access
#: ends: the one that matters most. Among prompts, the time-bound upgrade outranks the offer.
MAIL_KINDS: dict[str, MailKind] = {
    "renewal_notice": MailKind(TRANSACTIONAL),
    "card_expiring": MailKind(TRANSACTIONAL),
    "annual_offer": MailKind(PROMPT, 10),
    "annual_switch_confirmed": MailKind(TRANSACTIONAL),
    "trial_reminder": MailKind(TRANSACTIONAL),
    "trial_ended": MailKind(TRANSACTIONAL),
    "upgrade_ending": MailKind(PROMPT, 20),
    "upgrade_reverted": MailKind(TRANSACTIONAL),
}
#: The prompt kinds (``Workflow.prompt_kinds``, for ``dunning emails list`` and the gallery), read off
#: :data:`MAIL_KINDS` so that the two cannot disagree.
PROMPT_KINDS: tuple[str, ...] = tuple(
    kind for kind, mail in MAIL_KINDS.items() if mail.mail_class == PROMPT and ":" not in kind
)

#: The variants a kind has; a kind not listed here has one, ``None``.
VARIANTS: dict[str, tuple[str, ...]] = {
    "trial_reminder": ("card", "no_card"),
    "trial_ended": ("converted", "lapsed"),
}

#: Link name (a key of ``LifecycleNotice.links``) -> purpose of :mod:`dunning.engine.links`.
#: Resubscribing happens in the account (portal), so it is a ``manage_account`` link.
LINK_PURPOSES: dict[str, str] = {
    "manage": "manage_account",
    "update_card": "update_payment_method",
    "accept_offer": "accept_annual_offer",
    "resubscribe": "manage_account",
}

#: The links each email shows, the button's first (one button per email; others are plain links).
_LINKS: dict[tuple[str, str | None], tuple[str, ...]] = {
    ("renewal_notice", None): ("manage",),
    ("card_expiring", None): ("update_card",),
    ("annual_offer", None): ("accept_offer", "manage"),
    ("annual_switch_confirmed", None): ("manage",),
    ("trial_reminder", "card"): ("manage",),
    ("trial_reminder", "no_card"): ("update_card",),
    ("trial_ended", "converted"): ("manage",),
    ("trial_ended", "lapsed"): ("resubscribe",),
    ("upgrade_ending", None): ("manage",),
    ("upgrade_reverted", None): ("manage",),
}

#: Facts an email cannot be written without; the others are optional (a sentence is left out).
_REQUIRED: dict[str, tuple[str, ...]] = {
    "renewal_notice": ("renews_at", "amount_minor", "currency", "plan"),
    "card_expiring": ("exp_month", "exp_year"),
    "annual_offer": ("plan", "amount_minor", "currency", "annual_price_minor", "saving_minor"),
    "annual_switch_confirmed": ("plan", "annual_price_minor", "currency", "effective_at"),
    "trial_reminder": ("trial_ends_at", "plan", "amount_minor", "currency"),
    "trial_ended": ("trial_ended_at", "plan", "amount_minor", "currency"),
    "upgrade_ending": ("upgrade_plan", "revert_to", "ends_at"),
    "upgrade_reverted": ("upgrade_plan", "revert_to", "ended_at"),
}

# A price with its billing period ("€49.00 a month"). More than one period is
# always plural in the shipped languages, so no ngettext is needed.
_PRICE_PER: dict[str, str] = {
    "day": N_("%(amount)s a day"),
    "week": N_("%(amount)s a week"),
    "month": N_("%(amount)s a month"),
    "year": N_("%(amount)s a year"),
}
_PRICE_EVERY: dict[str, str] = {
    "day": N_("%(amount)s every %(count)s days"),
    "week": N_("%(amount)s every %(count)s weeks"),
    "month": N_("%(amount)s every %(count)s months"),
    "year": N_("%(amount)s every %(count)s years"),
}


def link_names(kind: str, variant: str | None) -> tuple[str, ...]:
    """The link names the email of ``kind``/``variant`` shows, the button's first (see :data:`LINK_PURPOSES`)."""
    try:
        return _LINKS[(kind, variant)]
    except KeyError:
        raise ValueError(f"kind: no lifecycle email for {kind!r} variant {variant!r}") from None


@dataclass(frozen=True, slots=True, kw_only=True)
class LifecycleNotice:
    """Everything needed to render one lifecycle notice to one customer.

    ``facts`` are the planned notice's facts (``PlannedNotice.facts``): amounts
    in minor units, datetimes as ISO-8601 UTC strings, card brand and last four
    (None when there is no card). ``links`` maps link names (:data:`LINK_PURPOSES`)
    to signed URLs. ``locale`` and ``timezone`` come from the customer's profile
    and may be wrong or empty: the renderer falls back to English and UTC.
    """

    kind: str
    variant: str | None = None
    customer_name: str | None
    customer_email: str
    locale: str = "en"
    timezone: str = "UTC"
    facts: Mapping[str, str | int | None]
    links: Mapping[str, str] = field(default_factory=dict)
    product_name: str = "Acme"
    support_email: str = "support@example.com"

    def template_values(self, fmt: Formatter) -> dict[str, Any]:
        """Every variable the lifecycle templates use, formatted for this customer.

        Raises ValueError naming the field (``kind``, ``variant``, ``facts.<key>``,
        ``links.<name>``) when the notice cannot be written: that is a bug in the
        caller, and a half-filled email must not go out.
        """
        kind, variant = self.kind, self.variant
        if kind not in KINDS:
            raise ValueError(f"kind: unknown lifecycle notice kind {kind!r}")
        if variant not in VARIANTS.get(kind, (None,)):
            raise ValueError(f"variant: {variant!r} is not a variant of {kind}")
        links = self._checked_links()
        facts = _Facts(self.facts, kind)
        currency = facts.text("currency")
        names = link_names(kind, variant)

        def money(key: str) -> str | None:
            value = facts.integer(key)
            if value is None:
                return None
            if not currency:
                raise ValueError(f"facts.currency: required with facts.{key} for {kind}")
            return fmt.money(value, currency)

        amount_minor = facts.integer("amount_minor")
        amount = money("amount_minor")
        interval = facts.text("interval")
        interval_count = facts.integer("interval_count") or 1
        brand, last4 = facts.text("card_brand"), facts.text("card_last4")
        # Facts say "no card" with both None; a trial reminder's variant says it outright.
        has_card = variant == "card" if kind == "trial_reminder" else bool(brand or last4)
        if kind == "card_expiring":
            has_card = True  # the email is about the card on file, named or not
        difference_minor = facts.integer("price_difference_minor")
        discount_percent = facts.integer("discount_percent")
        months_free = facts.integer("months_free")
        renews_at = facts.instant("renews_at")
        trial_end = facts.instant("trial_ends_at") or facts.instant("trial_ended_at")
        upgrade_end = facts.instant("ends_at") or facts.instant("ended_at")
        return {
            "variant": variant,
            "name": fmt.one_line(self.customer_name),
            "customer_email": self.customer_email,
            "product": self.product_name,
            "support_email": self.support_email,
            "action_url": links.get(names[0]),
            "manage_url": links.get("manage") if "manage" in names[1:] else None,
            "plan": facts.text("plan"),
            "amount": amount,
            "price": _price(fmt, amount, interval, interval_count),
            "yearly": interval == "year" and interval_count == 1,
            "has_card": has_card,
            "card": fmt.card(brand, last4) if has_card else None,
            "renewal_date": fmt.date(renews_at),
            "renewal_date_short": fmt.date(renews_at, "long"),
            "expiry_month": _month(fmt, _expiry_month(facts)),
            "yearly_total": fmt.money(amount_minor * 12, currency) if amount_minor is not None else None,
            "annual_price": money("annual_price_minor"),
            "saving": money("saving_minor"),
            # Passed in as a value: a literal percent sign in a msgid would be read as a placeholder.
            "discount": format_percent(discount_percent / 100, locale=fmt.locale)
            if discount_percent
            else None,
            "months_free": months_free if months_free in (1, 2) else None,
            "effective_date": fmt.date(facts.instant("effective_at")),
            "effective_date_short": fmt.date(facts.instant("effective_at"), "long"),
            "trial_end_date": fmt.date(trial_end),
            "trial_end_date_short": fmt.date(trial_end, "long"),
            "trial_end_time": fmt.time(trial_end),
            "next_charge_date": fmt.date(facts.instant("next_charge_at")),
            "upgrade_plan": facts.text("upgrade_plan"),
            "revert_to": facts.text("revert_to"),
            "upgrade_end_date": fmt.date(upgrade_end),
            "upgrade_end_date_short": fmt.date(upgrade_end, "long"),
            "upgrade_end_time": fmt.time(upgrade_end),
            # A difference of zero or less is no reason to pay for the upgrade: say nothing.
            "price_difference": money("price_difference_minor")
            if difference_minor is not None and difference_minor > 0
            else None,
        }

    def _checked_links(self) -> dict[str, str]:
        return checked_links(self.links, LINK_PURPOSES)


class _Facts:
    """Typed reads of a notice's JSON facts; a bad or missing required value names its key."""

    def __init__(self, facts: Mapping[str, str | int | None], kind: str) -> None:
        self._facts = facts
        self._kind = kind
        for key in _REQUIRED[kind]:
            if facts.get(key) in (None, ""):
                raise ValueError(f"facts.{key}: required for {kind}")

    def text(self, key: str) -> str | None:
        value = self._facts.get(key)
        if value is None or value == "":
            return None
        if not isinstance(value, str):
            raise ValueError(f"facts.{key}: expected a string, got {value!r}")
        # Plan names and brands end up in sentences and subjects: one line only.
        return " ".join(value.split()) or None

    def integer(self, key: str) -> int | None:
        value = self._facts.get(key)
        if value is None:
            return None
        if isinstance(value, bool) or not isinstance(value, int):
            raise ValueError(f"facts.{key}: expected an integer, got {value!r}")
        return value

    def instant(self, key: str) -> datetime | None:
        value = self._facts.get(key)
        if value is None or value == "":
            return None
        if isinstance(value, datetime):
            parsed = value
        elif isinstance(value, str):
            try:
                parsed = datetime.fromisoformat(value)
            except ValueError:
                raise ValueError(f"facts.{key}: expected an ISO-8601 datetime, got {value!r}") from None
        else:
            raise ValueError(f"facts.{key}: expected an ISO-8601 datetime, got {value!r}")
        # Facts are UTC; a naive value is read as UTC rather than as server-local time.
        return parsed if parsed.tzinfo is not None else parsed.replace(tzinfo=UTC)


def _expiry_month(facts: _Facts) -> date | None:
    """The month the card expires in: its last valid month, the same in every timezone."""
    month, year = facts.integer("exp_month"), facts.integer("exp_year")
    if month is None or year is None:
        return None
    if not 1 <= month <= 12 or not 2000 <= year <= 9999:
        raise ValueError(f"facts.exp_month: no such card expiry {month}/{year}")
    return date(year, month, 1)


def _month(fmt: Formatter, value: date | None) -> str | None:
    """A month and year in the customer's locale (``December 2026``, ``décembre 2026``)."""
    return format_skeleton("yMMMM", value, locale=fmt.locale) if value is not None else None


def _price(fmt: Formatter, amount: str | None, interval: str | None, count: int) -> str | None:
    """'€49.00 a month', '€49.00 every 3 months'; just the amount for a period we have no words for."""
    if amount is None:
        return None
    table = _PRICE_PER if count == 1 else _PRICE_EVERY
    message = table.get(interval or "")
    if message is None:
        return amount
    return fmt.gettext(message) % {"amount": amount, "count": count}
