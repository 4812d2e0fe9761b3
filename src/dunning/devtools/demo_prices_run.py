"""The demo runner's side of the price migration: the operator's commands, the customers' choices, the summary.

The operator plans and launches the migration with the functions behind ``dunning prices plan``
and ``dunning prices launch`` (terms validated from the same options, one transaction each).
A customer chooses an offer the way a real one does: the notice email's link for that offer,
a GET of its landing page, then the page's confirm button, a POST carrying the page's
``confirm_code``; both through the product's real Starlette app in process, like the annual
offers of :mod:`.demo_lifecycle_run`. The links are told apart by their signed subject, not
by their words (the notice is in the customer's language).
"""

from __future__ import annotations

import asyncio
import re
from collections import Counter
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import httpx
from rich.console import Console
from sqlalchemy import func, select

from dunning.devtools.sandbox import SandboxServer
from dunning.engine.links import PRICE_CHOICE, LinkError, price_parts_of
from dunning.errors import Refused
from dunning.mail.render import format_money
from dunning.store.db import transaction
from dunning.store.models import Outbox
from dunning.workflows.price_migrations import terms as terms_module
from dunning.workflows.price_migrations.members import launch, plan_migration
from dunning.workflows.price_migrations.notices import CONFIRMED, NOTICE, REMINDER
from dunning.workflows.price_migrations.reports import status
from dunning.workflows.price_migrations.rules import job_key

if TYPE_CHECKING:
    from starlette.applications import Starlette

    from dunning.runtime import Runtime

_LINK = re.compile(r'href="[^"]*/l/([^"/?#]+)"')
_CONFIRM_CODE = re.compile(r'name="confirm_code" value="([^"]+)"')


class PriceDesk:
    """The operator who runs the demo's migration, and its customers who answer the notice."""

    def __init__(self, rt: Runtime, app: Starlette) -> None:
        self.rt = rt
        self.app = app
        self.migration_id: str | None = None

    def launch(self, options: dict[str, Any]) -> str:
        """``dunning prices plan`` with ``options``, then ``dunning prices launch``; returns the id.

        Raises RuntimeError with the command's one-line refusal (``--plan: ...``).
        """
        now = self.rt.clock.now()
        try:
            terms = terms_module.from_options(options, now=now)
            with transaction(self.rt.sessions) as session:
                planned = plan_migration(session, terms, now=now)
            with transaction(self.rt.sessions) as session:
                done = launch(session, planned.id, now=now)
        except Refused as exc:
            field = terms_module.OPTIONS.get(exc.field or "", exc.field)
            raise RuntimeError(f"dunning prices: {field}: {exc.reason}") from None
        self.migration_id = done.id
        return done.id

    def choose(self, subscription_id: str, offer: str) -> bool:
        """Open the notice's link for ``offer`` and confirm; False while the notice has not been sent.

        Raises RuntimeError when the notice has no such link or the pages do not answer as a
        customer would expect.
        """
        if self.migration_id is None:
            return False
        key = job_key(self.migration_id, subscription_id, "notice")
        with self.rt.sessions() as s:
            html = s.execute(
                select(Outbox.html).where(Outbox.key == key, Outbox.status == "sent")
            ).scalar_one_or_none()
        if not html:
            return False
        now = self.rt.clock.now()
        for token in _LINK.findall(html):
            try:
                claims = self.rt.links.verify(token, purpose=PRICE_CHOICE, now=now)
            except LinkError:
                continue  # the account button
            if (price_parts_of(claims.subject) or ("", "", ""))[2] == offer:
                asyncio.run(self._open_and_confirm(subscription_id, f"/l/{token}"))
                return True
        raise RuntimeError(f"the price notice of {subscription_id} has no {offer} link")

    async def _open_and_confirm(self, subscription_id: str, path: str) -> None:
        transport = httpx.ASGITransport(app=self.app)
        async with httpx.AsyncClient(transport=transport, base_url="http://localhost:8000") as http:
            page = await http.get(path)
            code = _CONFIRM_CODE.search(page.text)
            if page.status_code != 200 or code is None:
                raise RuntimeError(f"the price choice page of {subscription_id} answered {page.status_code}")
            done = await http.post(path, data={"confirm_code": code.group(1)})
            if done.status_code != 200:
                raise RuntimeError(
                    f"confirming the price choice of {subscription_id} answered {done.status_code}"
                )


@dataclass(frozen=True)
class PriceSummary:
    """The figures of the demo's migration at the end of the run."""

    id: str
    terms: dict[str, Any]
    members: int
    counts: dict[str, int]
    choices: dict[str, int]
    skipped: Counter[str]
    emails: Counter[str]  # price-migration emails sent, by kind
    changes: int  # change_plan calls that changed something (not replays)
    keys: int  # distinct idempotency keys among them
    replays: int
    double_changes: int  # a subscription's price applied more than once (must be 0)


def price_summary(rt: Runtime, sandbox: SandboxServer, migration_id: str) -> PriceSummary:
    """What ``dunning prices status`` says of the migration, its emails, and its calls to the billing sandbox."""
    with rt.sessions() as s:
        found = status(s, migration_id)
        emails = Counter(
            dict(
                s.execute(
                    select(Outbox.kind, func.count())
                    .where(Outbox.key.like(f"price:{migration_id}:%"), Outbox.status == "sent")
                    .group_by(Outbox.kind)
                ).all()
            )
        )
    prefix = f"price:{migration_id}:"
    calls = [
        call
        for call in sandbox.state.calls()
        if call.path.endswith("/change_plan") and (call.idempotency_key or "").startswith(prefix)
    ]
    made = [call for call in calls if call.status == 200 and not call.replay]
    # The first application of each subscription (``...:apply``; ``apply-2`` ends a step-up later).
    applied = Counter(call.path for call in made if (call.idempotency_key or "").endswith(":apply"))
    skipped = Counter({r["reason"]: r["count"] for r in found["reasons"] if r["state"] == "skipped"})
    return PriceSummary(
        id=migration_id,
        terms={
            k: found[k]
            for k in ("status", "plan", "currency", "interval", "new_amount_minor", "notice_days", "offers")
        },
        members=found["subscribers"],
        counts=found["counts"],
        choices=found["choices"],
        skipped=skipped,
        emails=emails,
        changes=len(made),
        keys=len({call.idempotency_key for call in made}),
        replays=sum(call.replay for call in calls),
        double_changes=sum(n - 1 for n in applied.values()),
    )


def print_prices(console: Console, summary: PriceSummary, current_minor: int) -> None:
    """Print the price-migration part of the demo's summary."""
    t = summary.terms
    old = format_money(current_minor, t["currency"], "en")
    new = format_money(t["new_amount_minor"], t["currency"], "en")
    c, e = summary.counts, summary.emails
    reasons = summary.skipped.most_common()
    skipped = reasons[0][0] if len(reasons) == 1 else ", ".join(f"{n} {why}" for why, n in reasons)
    console.print(
        f"price migration {summary.id} ({t['status']}): {t['plan']} {t['currency']} {t['interval']}ly {old} -> {new},"
        f" {t['notice_days']} days' notice"
    )
    console.print(
        f"  {summary.members} members: {e[NOTICE]} notified, {e[REMINDER]} reminded, {c['applied']} applied,"
        f" {c['skipped']} skipped"
        + (f" ({skipped})" if skipped else "")
        + f", {sum(c[s] for s in ('pending', 'notified', 'reminded', 'deferred'))} still to apply"
    )
    offered = [o.get("kind") for o in t["offers"] or ()]
    chosen = ", ".join(f"{offer} {n}" for offer, n in summary.choices.items() if offer in (*offered, "none"))
    console.print(f"  choices: {chosen} ({e[CONFIRMED]} confirmation emails)*")
    console.print(
        f"  billing sandbox: {summary.changes} change_plan calls for it ({summary.keys} keys,"
        f" {summary.replays} {'replay' if summary.replays == 1 else 'replays'}), [bold]{summary.double_changes} double changes[/bold]"
    )
    console.print(
        "[dim]* chosen as a customer does: the notice's link for the offer (GET /l/<token>) and the"
        " page's confirm button (POST with its confirm_code), through the product's HTTP app in process[/dim]"
    )
