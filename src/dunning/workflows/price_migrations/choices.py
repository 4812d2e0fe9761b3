"""The choices of a price notice: one landing page per offer, and its confirm.

Each choice in the notice links here (purpose ``price_choice``, subject
``price:MIG:SUB:OFFER``, OFFER one of ``step_up``, ``annual_lock``,
``downgrade``, ``none``). The GET shows the price now, the new price, the
date it applies, the operator's reason and what this choice means, with a
confirm button; it changes nothing (mail scanners open every link). The
button's POST, in one transaction with the member's row locked, records the
choice on the member and queues the ``price_choice_confirmed`` email: once (a
second click finds the choice already made and shows it). Another choice may
replace it until the application job has fixed the call it makes; then, and
for a canceled migration or a member no longer in it, the page refuses and
nothing changes. A token is good for its own customer's member only.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import TYPE_CHECKING, Any

from babel.dates import format_date
from sqlalchemy.orm import Session

from dunning.engine.jobs import Dispatch
from dunning.engine.link_pages import LinkAnswer, LinkPage, LinkPages, Page, Refused
from dunning.engine.links import PRICE_CHOICE, LinkClaims, price_parts_of
from dunning.engine.notices import queue_email
from dunning.mail.render import format_money, resolve_timezone
from dunning.store.models import Customer, PriceMigrationMember
from dunning.store.unit import collecting
from dunning.workflows.price_migrations.notices import CONFIRMED
from dunning.workflows.price_migrations.rendering import email_facts
from dunning.workflows.price_migrations.rules import CHOICES, NOTIFIED_STATES, Terms, job_key
from dunning.workflows.price_migrations.state import call_recorded, load, note

if TYPE_CHECKING:
    from dunning.runtime import Runtime

_KEY_MAX = 255  # outbox.key

#: Page title and confirm label per choice (``{plan}``: the downgrade's plan).
_TITLES = {
    "step_up": ("Step up to the new price gradually", "Choose the step-up"),
    "annual_lock": ("Keep today's price with yearly billing", "Switch to yearly billing"),
    "downgrade": ("Move to the {plan} plan", "Move to {plan}"),
    "none": ("Keep your plan at the new price", "Keep my plan"),
}
_NAMES = {
    "step_up": "the step-up",
    "annual_lock": "yearly billing at today's price",
    "downgrade": "the {plan} plan",
    "none": "your plan at the new price",
}


@dataclass(frozen=True, slots=True)
class Choice:
    """A choice this link may record now, with what the page says of it."""

    migration_id: str
    subscription_id: str
    offer: str
    member: PriceMigrationMember
    customer: Customer | None
    plan: str
    previous: str | None
    facts: dict[str, Any]


def _sorry(title: str, text: str, status: int = 409) -> Page:
    return Page(title, (text, "Nothing was changed."), status=status)


def _price(amount_minor: int, currency: str, interval: str = "month", count: int = 1) -> str:
    money = format_money(amount_minor, currency, "en")  # the pages are in English
    return f"{money} a {interval}" if count == 1 else f"{money} every {count} {interval}s"


def _day(at: datetime | None, customer: Customer | None) -> str:
    if at is None:
        return "the renewal"
    return format_date(at.astimezone(resolve_timezone(customer.timezone if customer else None)), "long", "en")


def _terms(offer: str, facts: dict[str, Any]) -> str:
    """What a choice means, in one sentence (English, for the page)."""
    currency, interval, count = facts["currency"], facts["interval"], facts["interval_count"]
    new = _price(facts["new_amount_minor"], currency, interval, count)
    terms = facts["offers"].get(offer, {})
    if offer == "step_up":
        months = terms["months"]
        step = _price(terms["amount_minor"], currency, interval, count)
        return f"You pay {step} for {months} month{'s' if months != 1 else ''}, then {new}."
    if offer == "annual_lock":
        annual = _price(terms["amount_minor"], currency, "year")
        return f"Your plan is billed once a year at {annual}: today's price less the yearly discount, instead of {new}."
    if offer == "downgrade":
        return f"You move to the {terms['plan']} plan at {_price(terms['amount_minor'], currency, interval, count)}."
    return f"You keep your {facts['plan']} plan at {new}."


def _name(offer: str, facts: dict[str, Any]) -> str:
    return _NAMES[offer].format(plan=facts["offers"].get("downgrade", {}).get("plan", ""))


def _load(rt: Runtime, session: Session, claims: LinkClaims, *, lock: bool) -> Choice | LinkAnswer:
    """The choice this link may record now, or the page to show instead (refusal, choice already made)."""
    parts = price_parts_of(claims.subject)
    if parts is None or parts[2] not in CHOICES:
        return Refused()
    migration_id, sub_id, offer = parts
    migration, member, sub = load(session, migration_id, sub_id, lock=lock)
    # A member of another customer cannot come from a token we signed; refuse it all the same.
    if migration is None or member is None or member.customer_id != claims.customer:
        return Refused()
    if member.state == "pending" or migration.status == "draft":
        return Refused()  # no notice went out: no link to it either
    customer = session.get(Customer, member.customer_id)
    facts, offered = email_facts(rt, migration, member, sub, choice=member.choice)
    applies = _day(member.applies_at, customer)
    # What was applied stays applied, whatever became of the migration since.
    if member.state == "applied" or call_recorded(session, migration_id, sub_id):
        if member.choice == offer:
            return _already(offer, facts, applies)
        return _sorry(
            "The new price applies already",
            f"The price change for your subscription is set for {applies}: the choice can no longer be changed.",
        )
    if migration.status == "canceled":
        return _sorry(
            "Price change withdrawn", "This price change has been canceled: your price stays as it is."
        )
    if member.state not in NOTIFIED_STATES:
        return _sorry("Offer not available", "This price change no longer applies to your subscription.")
    if offer not in offered:
        return _sorry(
            "Offer not available", "This option is not part of the price change for your subscription.", 404
        )
    if member.choice == offer:
        return _already(offer, facts, applies)
    return Choice(
        migration_id=migration_id,
        subscription_id=sub_id,
        offer=offer,
        member=member,
        customer=customer,
        plan=Terms.of(migration).plan,
        previous=member.choice,
        facts=facts,
    )


def _already(offer: str, facts: dict[str, Any], applies: str) -> Page:
    """The choice already made (a second click, or the page opened again)."""
    return Page(
        "Your choice is recorded",
        (
            f"You chose {_name(offer, facts)}, from {applies}.",
            _terms(offer, facts),
            "There is nothing more to do.",
        ),
    )


def _page_values(found: Choice) -> dict[str, object]:
    facts = found.facts
    currency, interval, count = facts["currency"], facts["interval"], facts["interval_count"]
    applies = _day(
        datetime.fromisoformat(facts["applies_at"]) if facts["applies_at"] else None, found.customer
    )
    return {
        "plan": found.plan,
        "old_price": _price(facts["old_amount_minor"], currency, interval, count),
        "new_price": _price(facts["new_amount_minor"], currency, interval, count),
        "applies_on": applies,
        "reason": facts["reason"],
        "choice_terms": _terms(found.offer, facts),
        "previous": _name(found.previous, facts) if found.previous else None,
    }


def show_choice(rt: Runtime, claims: LinkClaims) -> LinkAnswer:
    """GET: the price change, what this choice means, and its confirm button; changes nothing."""
    with rt.sessions() as session:
        found = _load(rt, session, claims, lock=False)
    if not isinstance(found, Choice):
        return found
    plan = found.facts["offers"].get("downgrade", {}).get("plan", "")
    title, confirm = (text.format(plan=plan) for text in _TITLES[found.offer])
    values = _page_values(found)
    lead = f"From {values['applies_on']}, the price of your {found.plan} plan changes."
    return Page(title, (lead,), template="price_choice.html", values=values, confirm=confirm)


def record_choice(rt: Runtime, claims: LinkClaims) -> tuple[LinkAnswer, list[Dispatch]]:
    """POST: record the choice and queue its confirmation email, in one transaction (once per choice)."""
    sink: list[Dispatch] = []
    with collecting(rt.sessions, sink) as session:
        # The member's row lock serialises two clicks, and a click with the application job.
        found = _load(rt, session, claims, lock=True)
        if not isinstance(found, Choice):
            return found, sink
        now = rt.clock.now()
        found.member.choice, found.member.choice_at = found.offer, now
        was = f" (replacing {found.previous})" if found.previous else ""
        note(session, found.subscription_id, found.migration_id, now, f"choice {found.offer} recorded{was}")
        key = f"{job_key(found.migration_id, found.subscription_id, 'choice')}:{found.offer}:{now:%Y%m%dT%H%M%S}"
        confirm = "There is nothing more to do."
        if found.customer is not None and len(key) <= _KEY_MAX:
            queue_email(
                session,
                key=key,
                kind=CONFIRMED,
                customer=found.customer,
                subscription_id=found.subscription_id,
                quiet_hours=rt.policy.for_plan(found.plan).quiet_hours,
                now=now,
            )
            confirm = "We are sending you an email to confirm it."
        values = _page_values(found)
        return Page(
            "Thank you, your choice is recorded",
            (
                _terms(found.offer, found.facts),
                f"It takes effect on {values['applies_on']}; until then, you can still change it with the links in our email.",
                confirm,
            ),
        ), sink


#: For the workflow's registration (``Workflow.links``).
LINK_PAGES: LinkPages = {(PRICE_CHOICE, "price"): LinkPage(show=show_choice, act=record_choice)}
