"""The demo runner's side of the lifecycle story: customers accepting the annual offer, and the summary.

A customer accepts the annual offer the way a real one does: the ``annual_offer``
email's button (its first ``/l/<token>`` link), a GET of the landing page, then
the page's confirm button, a POST carrying the page's ``confirm_code``. Both
requests go through the product's real Starlette app (:func:`dunning.http.app.create_app`),
in process: httpx over its ASGI transport instead of a socket.
"""

from __future__ import annotations

import asyncio
import re
from collections import Counter
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING, Any
from urllib.parse import urlsplit

import httpx
from rich.console import Console
from rich.table import Table
from sqlalchemy import func, select

from dunning.devtools.sandbox import SandboxServer
from dunning.http.app import create_app
from dunning.store.models import Case, Customer, Job, Outbox
from dunning.workflows.lifecycle.annual_switch import JOB_KIND as SWITCH_JOB
from dunning.workflows.lifecycle.notices import KINDS

if TYPE_CHECKING:
    import dramatiq
    from starlette.applications import Starlette

    from dunning.runtime import Runtime

#: The order of the summary's lifecycle table (the lifecycle spec's order).
KIND_ORDER = (
    "renewal_notice",
    "card_expiring",
    "annual_offer",
    "annual_switch_confirmed",
    "trial_reminder",
    "trial_ended",
    "upgrade_ending",
    "upgrade_reverted",
)
_BUTTON = re.compile(r'href="([^"]*/l/[^"]+)"')
_CONFIRM_CODE = re.compile(r'name="confirm_code" value="([^"]+)"')
_EXPIRY = re.compile(r":(\d{4})-(\d{2}):")


class OfferTaker:
    """Accepts annual offers as their customers would, through the product's HTTP app."""

    def __init__(self, rt: Runtime, broker: dramatiq.Broker) -> None:
        self.rt = rt
        self.app: Starlette = create_app(rt, broker)
        self.accepted = 0

    def accept(self, subscription_id: str) -> bool:
        """Open the latest annual-offer email's button and confirm; False while no such email was sent.

        Raises RuntimeError when the pages do not answer as a customer would expect.
        """
        with self.rt.sessions() as s:
            html = s.execute(
                select(Outbox.html)
                .where(
                    Outbox.subscription_id == subscription_id,
                    Outbox.kind == "annual_offer",
                    Outbox.status == "sent",
                )
                .order_by(Outbox.id.desc())
                .limit(1)
            ).scalar_one_or_none()
        button = _BUTTON.search(html or "")
        if button is None:
            return False
        path = urlsplit(button.group(1).replace("&amp;", "&")).path
        asyncio.run(self._open_and_confirm(subscription_id, path))
        self.accepted += 1
        return True

    async def _open_and_confirm(self, subscription_id: str, path: str) -> None:
        transport = httpx.ASGITransport(app=self.app)
        async with httpx.AsyncClient(transport=transport, base_url="http://localhost:8000") as http:
            page = await http.get(path)
            code = _CONFIRM_CODE.search(page.text)
            if page.status_code != 200 or code is None:
                raise RuntimeError(f"the annual offer page of {subscription_id} answered {page.status_code}")
            done = await http.post(path, data={"confirm_code": code.group(1)})
            if done.status_code != 200:
                raise RuntimeError(
                    f"confirming the annual offer of {subscription_id} answered {done.status_code}"
                )


def renewed(sandbox: SandboxServer, at: datetime, subscription: dict[str, Any]) -> dict[str, Any]:
    """The subscription the billing system reports after a renewal at ``at``.

    A monthly subscription that accepted the annual offer was switched by ``change_plan`` on the
    billing sandbox: it renews as a yearly one at the annual price. One whose plan or price a
    price migration changed (``change_plan`` effective at this renewal or earlier) renews on it.
    """
    try:
        billed = sandbox.state.subscription(subscription["id"])
    except KeyError:
        return subscription
    if billed.interval in (None, "month") and billed.plan_effective_at and billed.amount_minor is not None:
        effective = datetime.fromisoformat(billed.plan_effective_at.replace("Z", "+00:00"))
        if effective <= at:
            return {**subscription, "plan": billed.plan, "amount_minor": billed.amount_minor}
    if subscription["interval"] != "month" or billed.interval != "year" or billed.amount_minor is None:
        return subscription
    ends = (at + timedelta(days=365)).astimezone(UTC).isoformat().replace("+00:00", "Z")
    return {
        **subscription,
        "interval": "year",
        "amount_minor": billed.amount_minor,
        "current_period_end": ends,
    }


def register(sandbox: SandboxServer, subscription: dict[str, Any]) -> None:
    """The billing system knows every subscription (the annual switch's ``change_plan`` needs it)."""
    try:
        sandbox.state.subscription(subscription["id"])
    except KeyError:
        sandbox.state.add_subscription(
            subscription["id"],
            customer_id=subscription["customer_id"],
            plan=subscription["plan"],
            amount_minor=subscription["amount_minor"],
            currency=subscription["currency"],
        )


@dataclass(frozen=True)
class LifecycleSummary:
    """The lifecycle figures of a demo run."""

    sent: dict[str, int]
    trials: Counter[str]
    switches_done: int
    yearly_change_plans: int
    warned: int
    updated_in_time: int


def _pre_dunning(rt: Runtime) -> tuple[int, int]:
    """``(customers warned of an expiring card, those who then updated it before it expired)``.

    Customers with a failed-payment case are left out: their card updates answer dunning, not the notice.
    """
    with rt.sessions() as s:
        in_dunning = set(s.execute(select(Case.customer_id).distinct()).scalars())
        warned: dict[str, tuple[datetime, datetime]] = {}
        for customer_id, key, sent_at in s.execute(
            select(Outbox.customer_id, Outbox.key, Outbox.sent_at).where(
                Outbox.kind == "card_expiring", Outbox.status == "sent"
            )
        ):
            found = _EXPIRY.search(key)
            if customer_id in in_dunning or found is None or sent_at is None:
                continue
            year, month = int(found.group(1)), int(found.group(2))
            expires = datetime(year + month // 12, month % 12 + 1, 1, tzinfo=UTC)
            first = min(sent_at, warned.get(customer_id, (sent_at, expires))[0])
            warned[customer_id] = (first, expires)
        customers = {
            c.id: c for c in s.execute(select(Customer).where(Customer.id.in_(list(warned)))).scalars()
        }
    updated = 0
    for customer_id, (first, expires) in warned.items():
        c = customers.get(customer_id)
        if c is None or not c.pm_present or c.pm_source_at is None or not first <= c.pm_source_at < expires:
            continue
        if c.pm_exp_year is not None and c.pm_exp_month is not None:
            card_expires = datetime(
                c.pm_exp_year + c.pm_exp_month // 12, c.pm_exp_month % 12 + 1, 1, tzinfo=UTC
            )
            updated += card_expires > expires
    return len(warned), updated


def lifecycle_summary(rt: Runtime, sandbox: SandboxServer) -> LifecycleSummary:
    """Lifecycle emails sent by kind, trial outcomes, annual switches and pre-dunning card updates."""
    with rt.sessions() as s:
        sent = dict(
            s.execute(
                select(Outbox.kind, func.count())
                .where(Outbox.kind.in_(KINDS), Outbox.status == "sent")
                .group_by(Outbox.kind)
            ).all()
        )
        trials = Counter(
            dict(
                s.execute(
                    select(Outbox.variant, func.count())
                    .where(Outbox.kind == "trial_ended", Outbox.status == "sent")
                    .group_by(Outbox.variant)
                ).all()
            )
        )
        switches = s.execute(
            select(func.count()).select_from(Job).where(Job.kind == SWITCH_JOB, Job.status == "done")
        ).scalar_one()
    yearly = {
        call.idempotency_key
        for call in sandbox.state.calls()
        if call.path.endswith("/change_plan")
        and call.status == 200
        and not call.replay
        and (call.idempotency_key or "").startswith(f"{SWITCH_JOB}:")
    }
    warned, updated = _pre_dunning(rt)
    return LifecycleSummary(sent, trials, switches, len(yearly), warned, updated)


def print_lifecycle(console: Console, summary: LifecycleSummary) -> None:
    """Print the lifecycle part of the demo's summary."""
    t = Table(title="Lifecycle notices")
    t.add_column("kind")
    t.add_column("sent", justify="right")
    for kind in (*KIND_ORDER, *sorted(set(summary.sent) - set(KIND_ORDER))):
        t.add_row(kind, str(summary.sent.get(kind, 0)))
    console.print(t)
    console.print(
        f"trials: {summary.trials.get('converted', 0)} converted, {summary.trials.get('lapsed', 0)} lapsed"
        " (trial_ended emails)"
    )
    console.print(
        f"annual switches accepted: {summary.switches_done} ({summary.yearly_change_plans} change_plan calls"
        " to yearly billing on the billing sandbox)*"
    )
    console.print(
        f"pre-dunning card updates: {summary.updated_in_time} of {summary.warned} customers warned of an"
        " expiring card updated it before it expired"
    )
    console.print(
        "[dim]* accepted as a customer does: the annual_offer email's button (GET /l/<token>) and the"
        " landing page's confirm button (POST with its confirm_code), through the product's HTTP app"
        " in process[/dim]"
    )
