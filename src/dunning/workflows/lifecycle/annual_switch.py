"""The annual-switch offer, accepted: its landing page, the confirm, and the ``annual_switch`` job.

The ``annual_offer`` email links here (purpose ``accept_annual_offer``, subject
``sub:<id>``). The GET shows the offer as it stands now and a confirm button;
it changes nothing. The button's POST, in one transaction, writes the job that
calls the billing API (kind ``annual_switch``, key
``annual_switch:<subscription>:<offer date>``) and the confirmation email
(``annual_switch_confirmed``). The key names the offer, so a second confirm
finds it and shows the choice already made; the job's key is also the
idempotency key of its ``change_plan`` call, so a re-run never switches twice.

The offer date is the date in the key of the subscription's latest
``annual_offer`` email (``annual_offer:<subscription>:<date>``): the offer the
customer was sent. No offer on record, no switch.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import datetime
from typing import TYPE_CHECKING, Any

from babel.dates import format_date
from sqlalchemy import select
from sqlalchemy.orm import Session

from dunning.billing.port import BillingRejected
from dunning.broker.names import JOBS_QUEUE
from dunning.engine.jobs import Dispatch, finish
from dunning.engine.link_pages import LinkAnswer, LinkPage, LinkPages, Page, Refused
from dunning.engine.links import ACCEPT_ANNUAL_OFFER, LinkClaims
from dunning.engine.notices import queue_email
from dunning.engine.registry import JobHandler, Result
from dunning.errors import PermanentJobError
from dunning.mail.render import format_money, resolve_timezone
from dunning.store.db import transaction
from dunning.store.models import Case, Customer, Job, Outbox
from dunning.store.unit import collecting, unit_of
from dunning.workflows.lifecycle.links import subscription_of

if TYPE_CHECKING:
    from dunning.runtime import Runtime

JOB_KIND = "annual_switch"
OFFER_KIND = "annual_offer"
CONFIRMED_KIND = "annual_switch_confirmed"
#: Case statuses during which offers are held (the failed-payment workflow's open and suspended).
_OPEN_CASE = ("open", "suspended")
_DATE = re.compile(r"[0-9]{4}-[0-9]{2}-[0-9]{2}", re.ASCII)
_KEY_MAX = 255  # jobs.key and outbox.key


@dataclass(frozen=True, slots=True)
class Offer:
    """The offer as it stands now, for one subscription that may take it."""

    subscription_id: str
    customer: Customer | None
    plan: str
    currency: str
    monthly_minor: int
    annual_minor: int
    saving_minor: int
    discount_percent: int | None
    months_free: int | None
    effective_at: datetime
    offered_on: str  # YYYY-MM-DD: the annual_offer's date (its key)

    @property
    def job_key(self) -> str:
        return f"{JOB_KIND}:{self.subscription_id}:{self.offered_on}"

    @property
    def email_key(self) -> str:
        return f"{CONFIRMED_KIND}:{self.subscription_id}:{self.offered_on}"


def offered_on(session: Session, subscription_id: str) -> str | None:
    """The date of the subscription's latest ``annual_offer`` email (from its key), or None."""
    prefix = f"{OFFER_KIND}:{subscription_id}:"
    keys = session.execute(
        select(Outbox.key).where(Outbox.kind == OFFER_KIND, Outbox.subscription_id == subscription_id)
    ).scalars()
    # A longer id that starts with this one leaves more than a date after the prefix: not ours.
    return max((k[len(prefix) :] for k in keys if _DATE.fullmatch(k[len(prefix) :])), default=None)


def _sorry(title: str, text: str, status: int = 409) -> Page:
    return Page(title, (text, "Nothing was changed."), status=status)


def _load(rt: Runtime, session: Session, claims: LinkClaims, *, lock: bool) -> Offer | LinkAnswer:
    """The offer this link may accept now, or the page to show instead (refusal, choice already made)."""
    sub = subscription_of(session, claims, lock=lock)
    if sub is None:
        return Refused()
    date = offered_on(session, sub.id)
    if date is None or len(f"{CONFIRMED_KIND}:{sub.id}:{date}") > _KEY_MAX:
        return _sorry("Offer not available", "We have no yearly-billing offer on record for you.", 404)
    customer = session.get(Customer, sub.customer_id)
    made = session.execute(select(Job.payload).where(Job.key == f"{JOB_KIND}:{sub.id}:{date}")).first()
    if made is not None:
        return _already(made.payload or {}, customer)
    if sub.status == "canceled":
        return _sorry(
            "Subscription ended", "This subscription has ended, so it cannot move to yearly billing."
        )
    if sub.interval == "year":
        return _sorry("Already billed yearly", "Your subscription is already billed once a year.")
    if sub.interval != "month" or sub.interval_count != 1:
        return _sorry("Offer not available", "This offer is for subscriptions billed every month.")
    if sub.cancel_at_period_end:
        return _sorry("Offer not available", "Your subscription is set to end with the current period.")
    if sub.status != "active":
        return _sorry("Offer not available", "This offer is not available for your subscription right now.")
    open_case = session.execute(
        select(Case.id).where(Case.subscription_id == sub.id, Case.status.in_(_OPEN_CASE)).limit(1)
    ).first()
    if open_case is not None:
        return _sorry(
            "Offer on hold",
            "A payment on this subscription is still to be settled. Once it is, this offer is yours again.",
        )
    rules = rt.policy.lifecycle_for(sub.plan).annual_offer
    if not rules.enabled:
        return _sorry("Offer not available", "This offer has ended.")
    # The same price the offer email stated (one formula, in the policy).
    annual = rules.annual_price_minor(sub.amount_minor)
    saving = sub.amount_minor * 12 - annual
    return Offer(
        subscription_id=sub.id,
        customer=customer,
        plan=sub.plan,
        currency=sub.currency,
        monthly_minor=sub.amount_minor,
        annual_minor=annual,
        saving_minor=saving,
        discount_percent=rules.discount_percent,
        months_free=rules.months_free,
        effective_at=sub.current_period_end,
        offered_on=date,
    )


def _money(amount_minor: int, currency: str) -> str:
    return format_money(amount_minor, currency, "en")  # the pages are in English


def _day(at: datetime, customer: Customer | None) -> str:
    return format_date(at.astimezone(resolve_timezone(customer.timezone if customer else None)), "long", "en")


def _already(payload: dict[str, Any], customer: Customer | None) -> Page:
    """The choice already made, as the confirm recorded it (not as the offer would be now)."""
    try:
        annual = _money(int(payload["amount_minor"]), str(payload["currency"]))
        start = _day(datetime.fromisoformat(str(payload["effective_at"])), customer)
        text = f"You chose yearly billing for your {payload['plan']} plan: {annual} a year from {start}."
    except (KeyError, TypeError, ValueError):
        text = "You chose yearly billing for your subscription."
    return Page("Already accepted", (text, "There is nothing more to do."))


def show_offer(rt: Runtime, claims: LinkClaims) -> LinkAnswer:
    """GET: the offer (plan, monthly price, annual price, saving, from when) and its confirm button."""
    with rt.sessions() as session:
        found = _load(rt, session, claims, lock=False)
    if not isinstance(found, Offer):
        return found
    if found.months_free is not None:
        terms = f"{found.months_free} month{'s' if found.months_free != 1 else ''} free"
    else:
        terms = f"{found.discount_percent}% off" if found.discount_percent else ""
    return Page(
        "Switch to yearly billing",
        (
            f"Pay once a year for your {found.plan} plan and save {_money(found.saving_minor, found.currency)}.",
        ),
        template="annual_offer.html",
        values={
            "plan": found.plan,
            "monthly_price": _money(found.monthly_minor, found.currency),
            "yearly_at_monthly": _money(found.monthly_minor * 12, found.currency),
            "annual_price": _money(found.annual_minor, found.currency),
            "saving": _money(found.saving_minor, found.currency),
            "terms": terms,
            "effective_on": _day(found.effective_at, found.customer),
        },
        confirm="Switch to yearly billing",
    )


def accept_offer(rt: Runtime, claims: LinkClaims) -> tuple[LinkAnswer, list[Dispatch]]:
    """POST: write the switch job and the confirmation email in one transaction (once per offer)."""
    sink: list[Dispatch] = []
    with collecting(rt.sessions, sink) as session:
        # The row lock serialises two clicks; the unique keys make a second insert a no-op anyway.
        found = _load(rt, session, claims, lock=True)
        if not isinstance(found, Offer):
            return found, sink
        now = rt.clock.now()
        unit = unit_of(session)
        unit.add_jobs(
            [
                {
                    "key": found.job_key,
                    "kind": JOB_KIND,
                    "queue": JOBS_QUEUE,
                    "due_at": now,
                    "subject": found.subscription_id,
                    "payload": {
                        "subscription_id": found.subscription_id,
                        "plan": found.plan,
                        "amount_minor": found.annual_minor,
                        "currency": found.currency,
                        "effective_at": found.effective_at.isoformat(),
                        "interval": "year",
                        "interval_count": 1,
                        "offered_on": found.offered_on,
                    },
                }
            ],
            now=now,
        )
        _write_confirmation(rt, session, found, now=now)
        start = _day(found.effective_at, found.customer)
        unit.add_timeline(
            found.subscription_id,
            None,
            now,
            "lifecycle",
            f"annual offer of {found.offered_on} accepted: {found.plan} at "
            f"{_money(found.annual_minor, found.currency)} a year from {start}",
        )
        return Page(
            "You are switching to yearly billing",
            (
                f"From {start}, your {found.plan} plan is billed {_money(found.annual_minor, found.currency)} "
                f"a year instead of {_money(found.monthly_minor, found.currency)} a month.",
                "We are sending you an email to confirm it."
                if found.customer
                else "There is nothing more to do.",
            ),
        ), sink


def _write_confirmation(rt: Runtime, session: Session, offer: Offer, *, now: datetime) -> None:
    """Queue the ``annual_switch_confirmed`` email with its send job (rendered when sent)."""
    customer = offer.customer
    if customer is None:
        unit_of(session).add_timeline(
            offer.subscription_id, None, now, "email", f"{CONFIRMED_KIND} not sent: customer unknown"
        )
        return
    queue_email(
        session,
        key=offer.email_key,
        kind=CONFIRMED_KIND,
        customer=customer,
        subscription_id=offer.subscription_id,
        quiet_hours=rt.policy.for_plan(offer.plan).quiet_hours,
        now=now,
    )


def confirmation_facts(session: Session, outbox: Outbox) -> dict[str, str | int | None] | None:
    """The facts of an ``annual_switch_confirmed`` email (LIFECYCLE spec), from its switch job; None if gone.

    For the lifecycle notice renderer: the email states the choice as it was made.
    """
    rest = outbox.key.removeprefix(f"{CONFIRMED_KIND}:")
    payload = session.execute(select(Job.payload).where(Job.key == f"{JOB_KIND}:{rest}")).scalar_one_or_none()
    if not payload:
        return None
    return {
        "plan": payload["plan"],
        "annual_price_minor": payload["amount_minor"],
        "currency": payload["currency"],
        "effective_at": payload["effective_at"],
    }


def run(rt: Runtime, job: Job) -> Result:
    """The ``annual_switch`` job: ``change_plan`` to yearly billing, keyed by the job's key.

    The key is stable across re-runs, so the billing system applies it once. Outages back off
    (the runner); a refusal (4xx) parks the job.
    """
    payload = job.payload or {}
    try:
        sub_id = str(payload["subscription_id"])
        plan, currency = str(payload["plan"]), str(payload["currency"])
        amount = int(payload["amount_minor"])
        effective_at = datetime.fromisoformat(str(payload["effective_at"]))
        interval, count = str(payload.get("interval", "year")), int(payload.get("interval_count", 1))
    except (KeyError, TypeError, ValueError) as exc:
        raise PermanentJobError(f"annual_switch job {job.id}: bad payload ({type(exc).__name__})") from None
    try:
        rt.billing.change_plan(
            sub_id,
            job.key,
            plan=plan,
            amount_minor=amount,
            currency=currency,
            effective_at=effective_at,
            interval=interval,
            interval_count=count,
        )
    except BillingRejected as exc:
        raise PermanentJobError(f"billing API refused the annual switch: {exc}") from None
    with transaction(rt.sessions) as session:
        unit_of(session).add_timeline(
            sub_id,
            None,
            rt.clock.now(),
            "billing",
            f"billing system: {plan} billed every {interval} from {effective_at:%Y-%m-%d}",
        )
        finish(session, job)
    return "switched", []


#: For the lifecycle workflow's registration (``Workflow.jobs``).
JOBS: dict[str, JobHandler] = {JOB_KIND: run}
#: For the lifecycle workflow's registration (``Workflow.links``), with :data:`.links.LINK_PAGES`.
LINK_PAGES: LinkPages = {(ACCEPT_ANNUAL_OFFER, "sub"): LinkPage(show=show_offer, act=accept_offer)}
