"""The facts one price-migration email is rendered from: the notice, the reminder, a choice's confirmation.

A :class:`PriceNotice` is plain data, like the lifecycle notice: the caller
(:mod:`.rendering`) fills it from the migration, the member and the signed
links; :meth:`PriceNotice.template_values` formats it for one customer with
the renderer's :class:`~dunning.mail.render.Formatter` (amounts in the
currency's own exponent and the customer's locale, the date the price applies
in the customer's zone). Templates only choose sentences.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

from babel.numbers import format_percent
from babel.units import format_unit

from dunning.domain.emails import TRANSACTIONAL, MailKind
from dunning.mail.links import checked_links
from dunning.mail.render import N_
from dunning.workflows.price_migrations.rules import CHOICES

if TYPE_CHECKING:
    from dunning.mail.render import Formatter

NOTICE, REMINDER, CONFIRMED = "price_change_notice", "price_change_reminder", "price_choice_confirmed"
#: Notice kinds (``outbox.kind``); each has ``templates/email/price_migrations/<kind>.html`` and ``.txt``.
KINDS: tuple[str, ...] = (NOTICE, REMINDER, CONFIRMED)
#: A price change and a choice's confirmation are facts about what the customer will pay:
#: transactional (:mod:`dunning.domain.emails`), never capped or suppressed.
MAIL_KINDS: dict[str, MailKind] = dict.fromkeys(KINDS, MailKind(TRANSACTIONAL))

#: Link names (keys of ``PriceNotice.links``): the account (the email's one button) and one per choice.
LINK_NAMES: tuple[str, ...] = ("manage", *CHOICES)

_REQUIRED = ("plan", "currency", "interval", "old_amount_minor", "new_amount_minor", "applies_at")

# The same msgids as the lifecycle emails' prices: one translation for both.
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


@dataclass(frozen=True, slots=True, kw_only=True)
class PriceNotice:
    """Everything needed to render one price-migration email to one customer.

    ``facts``: ``plan``, ``currency``, ``interval``, ``interval_count``, ``old_amount_minor``,
    ``new_amount_minor``, ``applies_at`` (ISO-8601 UTC), ``reason`` (the operator's words),
    ``choice`` (the reminder: the choice made so far; the confirmation: the choice confirmed)
    and ``offers``: offer kind -> ``{amount_minor, percent, months, plan}`` as
    :func:`~dunning.workflows.price_migrations.rules.offer_prices` gives them. ``links``: link
    name (:data:`LINK_NAMES`) -> signed URL; a choice without a link is not shown.
    """

    kind: str
    customer_name: str | None
    customer_email: str
    locale: str = "en"
    timezone: str = "UTC"
    facts: Mapping[str, Any]
    links: Mapping[str, str] = field(default_factory=dict)
    product_name: str = "Acme"
    support_email: str = "support@example.com"

    def template_values(self, fmt: Formatter) -> dict[str, Any]:
        """Every variable the price-migration templates use, formatted for this customer.

        Raises ValueError naming the field (``kind``, ``facts.<key>``, ``links.<name>``) when the
        email cannot be written: a half-filled price notice must not go out.
        """
        if self.kind not in KINDS:
            raise ValueError(f"kind: unknown price-migration email {self.kind!r}")
        facts = self.facts
        for key in _REQUIRED:
            if facts.get(key) in (None, ""):
                raise ValueError(f"facts.{key}: required for {self.kind}")
        links = self._checked_links()
        currency = _text(facts, "currency")
        interval = _text(facts, "interval")
        count = _integer(facts, "interval_count") or 1
        choice = facts.get("choice")
        if choice is not None and choice not in CHOICES:
            raise ValueError(f"facts.choice: expected one of {', '.join(CHOICES)}, got {choice!r}")
        if self.kind == CONFIRMED and choice is None:
            raise ValueError("facts.choice: required for price_choice_confirmed")
        offers = facts.get("offers") or {}
        if not isinstance(offers, Mapping):
            raise ValueError("facts.offers: expected a mapping of offer kind to its terms")

        def price(amount_minor: int | None, every: str | None = interval, n: int = count) -> str | None:
            if amount_minor is None:
                return None
            return _price(fmt, fmt.money(amount_minor, currency or ""), every, n)

        step_up = _offer(offers, "step_up", ("amount_minor", "percent", "months"))
        annual = _offer(offers, "annual_lock", ("amount_minor",))
        downgrade = _offer(offers, "downgrade", ("amount_minor", "plan"))
        for name, terms in (("step_up", step_up), ("annual_lock", annual), ("downgrade", downgrade)):
            if (name in links or choice == name) and terms is None:
                raise ValueError(f"facts.offers.{name}: required with its link or choice")
        applies_at = _instant(facts, "applies_at")
        choices = [name for name in ("step_up", "annual_lock", "downgrade", "none") if name in links]
        return {
            "name": fmt.one_line(self.customer_name),
            "customer_email": self.customer_email,
            "product": self.product_name,
            "support_email": self.support_email,
            "action_url": links.get("manage"),
            "plan": _text(facts, "plan"),
            "old_price": price(_integer(facts, "old_amount_minor")),
            "new_price": price(_integer(facts, "new_amount_minor")),
            "applies_date": fmt.date(applies_at),
            "applies_date_short": fmt.date(applies_at, "long"),
            # The operator's words, as written (one line: they go into both bodies).
            "reason": fmt.one_line(_text(facts, "reason")),
            "choice": choice,
            "has_choices": bool(choices),
            "step_up_url": links.get("step_up"),
            "step_up_price": price(step_up["amount_minor"]) if step_up else None,
            "step_up_discount": format_percent(step_up["percent"] / 100, locale=fmt.locale)
            if step_up
            else None,
            "step_up_duration": _months(step_up["months"], fmt.locale) if step_up else None,
            "annual_url": links.get("annual_lock"),
            "annual_price": price(annual["amount_minor"], "year", 1) if annual else None,
            "downgrade_url": links.get("downgrade"),
            "downgrade_plan": " ".join(str(downgrade["plan"]).split()) if downgrade else None,
            "downgrade_price": price(downgrade["amount_minor"]) if downgrade else None,
            "keep_url": links.get("none"),
        }

    def _checked_links(self) -> dict[str, str]:
        return checked_links(self.links, LINK_NAMES)


def _text(facts: Mapping[str, Any], key: str) -> str | None:
    value = facts.get(key)
    if value is None or value == "":
        return None
    if not isinstance(value, str):
        raise ValueError(f"facts.{key}: expected a string, got {value!r}")
    return " ".join(value.split()) or None


def _integer(facts: Mapping[str, Any], key: str) -> int | None:
    value = facts.get(key)
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int):
        raise ValueError(f"facts.{key}: expected an integer, got {value!r}")
    return value


def _instant(facts: Mapping[str, Any], key: str) -> datetime | None:
    value = facts.get(key)
    if isinstance(value, datetime):
        parsed = value
    else:
        try:
            parsed = datetime.fromisoformat(str(value))
        except ValueError:
            raise ValueError(f"facts.{key}: expected an ISO-8601 datetime, got {value!r}") from None
    return parsed if parsed.tzinfo is not None else parsed.replace(tzinfo=UTC)


def _offer(offers: Mapping[str, Any], kind: str, keys: tuple[str, ...]) -> dict[str, Any] | None:
    terms = offers.get(kind)
    if terms is None:
        return None
    if not isinstance(terms, Mapping):
        raise ValueError(f"facts.offers.{kind}: expected a mapping")
    for key in keys:
        value = terms.get(key)
        ok = isinstance(value, str) and value.strip() if key == "plan" else type(value) is int
        if not ok:
            raise ValueError(f"facts.offers.{kind}.{key}: missing or of the wrong type ({value!r})")
    return dict(terms)


def _price(fmt: Formatter, amount: str, interval: str | None, count: int) -> str:
    """'€49.00 a month', '€49.00 every 3 months'; just the amount for a period we have no words for."""
    table = _PRICE_PER if count == 1 else _PRICE_EVERY
    message = table.get(interval or "")
    if message is None:
        return amount
    return str(fmt.gettext(message) % {"amount": amount, "count": count})


def _months(count: int, locale: Any) -> str:
    """ "3 months" in the customer's language.

    CLDR has no long form of this unit for Portuguese (Babel prints
    "3 duration-month"); the short form there is the full word ("3 meses").
    """
    text = str(format_unit(count, "duration-month", length="long", locale=locale))
    if "duration" in text:
        text = str(format_unit(count, "duration-month", length="short", locale=locale))
    return text
