"""A price notice's choices, from the outside: the links in the email, a real ``dunning serve``, the sandbox.

The links are read from the notice the SMTP server received; a real ``dunning
serve`` process answers them; the harness's worker applies the price through
the sandbox billing server. GET shows and changes nothing, the page's POST
records the choice once (a second click shows it), a choice can be replaced
until the price applies, and what is applied follows the choice. SQLite and
PostgreSQL.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import func, select
from tests.support.harness import START
from tests.support.lifecycle_links import Answer, LinkServer, registered
from tests.support.prices import (
    REASON,
    change_plan_calls,
    launch,
    member,
    price_mails,
    set_status,
    text_of,
)

from dunning.engine.links import PRICE_CHOICE, LinkSigner, price_subject
from dunning.store.models import Job, Outbox, PriceMigrationMember, TimelineEntry

pytestmark = pytest.mark.integration

LINK_SECRET = "test-link-secret"  # what the harness signs links with
RENEWAL = START + timedelta(days=30)
CONFIRMED = "price_choice_confirmed"
#: The label before each choice's link in the notice's text body.
LABELS = {
    "step_up": "Choose the step-up",
    "annual_lock": "Switch to yearly billing",
    "downgrade": "Move to basic",
    "none": "Keep my plan",
}
signer = LinkSigner(LINK_SECRET, "http://localhost:8000")


@pytest.fixture
def serve(world: Any, tmp_path: Path) -> Iterator[LinkServer]:
    """``dunning serve`` on the world's database, Redis and simulated clock."""
    env = {
        "DUNNING_HOME": str(tmp_path / "serve-home"),
        "DUNNING_DATABASE_URL": world.rt.settings.database_url,
        "DUNNING_REDIS_URL": world.rt.settings.redis_url,
        "DUNNING_CLOCK": "simulated",
        "DUNNING_LINK_SECRET": LINK_SECRET,
    }
    with registered():
        server = LinkServer(env, tmp_path / "serve.log")
        try:
            yield server
        finally:
            server.stop()


def _notified(world: Any, *ids: int) -> dict[str, dict[str, str]]:
    """cus_N with sub_N in a launched migration, notified; the paths of each notice's choice links."""
    for n in ids:
        world.customer(f"cus_{n}", sub=f"sub_{n}")
        world.sandbox.state.add_subscription(
            f"sub_{n}", customer_id=f"cus_{n}", plan="pro", amount_minor=4900, currency="EUR"
        )
    launch(world, [f"sub_{n}" for n in ids])
    links: dict[str, dict[str, str]] = {}
    for n in ids:
        [notice] = price_mails(world, "price_change_notice", f"cus_{n}@example.com")
        text = text_of(notice)
        links[f"sub_{n}"] = {
            choice: re.search(rf"{label}:\s+\S*?(/l/\S+)", text).group(1)  # type: ignore[union-attr]
            for choice, label in LABELS.items()
        }
    return links


def _code(page: Answer) -> str:
    found = re.findall(r'name="confirm_code" value="([^"]+)"', page.text)
    assert len(found) == 1, page.text
    return found[0]


def _snapshot(world: Any) -> tuple[Any, ...]:
    """Everything a click could change."""
    with world.rt.sessions() as s:
        counts = tuple(
            s.execute(select(func.count()).select_from(model)).scalar_one()
            for model in (Outbox, Job, TimelineEntry)
        )
        choices = s.execute(
            select(
                PriceMigrationMember.subscription_id,
                PriceMigrationMember.choice,
                PriceMigrationMember.choice_at,
            )
        ).all()
    return counts, tuple(sorted(choices)), len(world.smtp.messages), len(world.sandbox.state.calls())


def _until(world: Any, at: datetime, step: timedelta = timedelta(hours=12)) -> None:
    world.advance(at - world.rt.clock.now(), step=step)


def test_get_shows_the_choice_the_confirm_records_it_once_and_the_step_up_is_applied(
    world: Any, serve: LinkServer
) -> None:
    h = world
    path = _notified(h, 1)["sub_1"]["step_up"]
    before = _snapshot(h)

    page = serve.get(path)
    assert page.status_code == 200, page.text
    for shown in (
        "Step up to the new price gradually",
        "€49.00 a month",
        "€59.00 a month",
        "December 2, 2026",
        REASON,
        "You pay €53.10 a month for 3 months, then €59.00 a month.",
    ):
        assert shown in page.text, shown
    assert '<form method="post">' in page.text
    assert page.headers["cache-control"] == "no-store" and page.headers["x-frame-options"] == "DENY"
    code = _code(page)
    # Prefetches, scanners, bare POSTs and wrong codes change nothing.
    assert serve.get(path).status_code == 200
    assert serve.request("HEAD", path).status_code == 200
    assert serve.request("POST", path).status_code == 403
    assert (
        serve.post_form(path, {"confirm_code": code[:-1] + ("A" if code[-1] != "A" else "B")}).status_code
        == 403
    )
    h.settle()
    assert _snapshot(h) == before

    done = serve.post_form(path, {"confirm_code": code})
    assert done.status_code == 200, done.text
    assert "Thank you, your choice is recorded" in done.text
    h.settle()
    assert member(h).choice == "step_up"
    [confirmed] = price_mails(h, CONFIRMED)
    assert (
        "Thank you! From Wednesday, December 2, 2026, you'll pay €53.10 a month for 3 months, then €59.00 a month."
        in " ".join(text_of(confirmed).split())
    )
    assert any("choice step_up recorded" in line for line in h.timeline())

    # The same form again: the choice already made, nothing new.
    after = _snapshot(h)
    again = serve.post_form(path, {"confirm_code": code})
    assert again.status_code == 200
    assert "Your choice is recorded" in again.text and "<form" not in again.text
    assert "Your choice is recorded" in serve.get(path).text
    h.settle()
    assert _snapshot(h) == after

    # The reminder states the choice; the renewal gets the step-up price, its end the full price.
    _until(h, RENEWAL + timedelta(days=1))
    [reminder] = price_mails(h, "price_change_reminder")
    assert "As you chose, you'll pay €53.10 a month for 3 months" in " ".join(text_of(reminder).split())
    [call] = change_plan_calls(h)
    assert (call.idempotency_key, call.replay) == ("price:pm_1:sub_1:apply", False)
    assert h.sandbox.state.subscription("sub_1").amount_minor == 5310
    # Too late to change: the page says so and changes nothing.
    annual = _notified_path(h, "annual_lock")
    late = serve.get(annual)
    assert late.status_code == 409 and "The new price applies already" in late.text
    assert (
        serve.post_form(annual, {"confirm_code": signer.form_code(annual.removeprefix("/l/"))}).status_code
        == 409
    )
    assert member(h).choice == "step_up"

    _until(h, datetime(2027, 2, 27, tzinfo=START.tzinfo), step=timedelta(days=2))
    assert len(change_plan_calls(h)) == 1
    _until(h, datetime(2027, 3, 3, tzinfo=START.tzinfo))
    _, second = change_plan_calls(h)
    assert (second.idempotency_key, second.replay) == ("price:pm_1:sub_1:apply-2", False)
    billed = h.sandbox.state.subscription("sub_1")
    assert (billed.amount_minor, billed.plan_effective_at) == (5900, "2027-03-02T10:00:00Z")
    assert len(price_mails(h, CONFIRMED)) == 1


def _notified_path(world: Any, offer: str, sub: str = "sub_1", customer: str = "cus_1") -> str:
    """A fresh signed path to ``offer`` (what the notice links to), good for 60 days."""
    token = signer.token(
        purpose=PRICE_CHOICE,
        customer=customer,
        subject=price_subject("pm_1", sub, offer),
        expires_at=world.rt.clock.now() + timedelta(days=60),
    )
    return f"/l/{token}"


def test_a_choice_can_be_replaced_until_the_price_applies_and_annual_lock_switches_to_yearly(
    world: Any, serve: LinkServer
) -> None:
    h = world
    links = _notified(h, 1)["sub_1"]
    for offer in ("downgrade", "annual_lock"):
        page = serve.get(links[offer])
        assert page.status_code == 200, page.text
        assert serve.post_form(links[offer], {"confirm_code": _code(page)}).status_code == 200
        h.settle()
    page = serve.get(links["downgrade"])
    assert "You had chosen yearly billing at today&#39;s price" in page.text
    m = member(h)
    assert m.choice == "annual_lock"
    assert len(price_mails(h, CONFIRMED)) == 2
    assert any("choice annual_lock recorded (replacing downgrade)" in line for line in h.timeline())

    _until(h, RENEWAL + timedelta(days=1))
    assert len(change_plan_calls(h)) == 1
    billed = h.sandbox.state.subscription("sub_1")
    # The current amount x 12 less the policy's 15 % annual discount, billed yearly from the renewal.
    assert (billed.plan, billed.amount_minor, billed.interval, billed.interval_count) == (
        "pro",
        49_980,
        "year",
        1,
    )
    assert billed.plan_effective_at == "2026-12-02T10:00:00Z"
    assert member(h).state == "applied"


def test_other_subscribers_tokens_canceled_migrations_and_skipped_members_are_refused(
    world: Any, serve: LinkServer
) -> None:
    h = world
    links = _notified(h, 1, 2)
    before = _snapshot(h)
    # cus_2's signature on sub_1's offer: not theirs.
    other = _notified_path(h, "downgrade", customer="cus_2")
    assert serve.get(other).status_code == 404
    assert (
        serve.post_form(other, {"confirm_code": signer.form_code(other.removeprefix("/l/"))}).status_code
        == 404
    )
    # An offer the migration does not make, and a subject naming no member.
    assert serve.get(_notified_path(h, "free_lunch")).status_code == 404
    assert serve.get(_notified_path(h, "downgrade", sub="sub_9")).status_code == 404
    h.settle()
    assert _snapshot(h) == before

    # sub_2 cancels: its links now refuse, with a good form code too.
    h.cancel("sub_2")
    h.settle()
    skipped = links["sub_2"]["downgrade"]
    answer = serve.post_form(skipped, {"confirm_code": signer.form_code(skipped.removeprefix("/l/"))})
    assert answer.status_code == 409 and "no longer applies" in answer.text
    # The migration is canceled: sub_1's links refuse and nothing changes.
    set_status(h, "canceled")
    before = _snapshot(h)
    path = links["sub_1"]["step_up"]
    page = serve.get(path)
    assert page.status_code == 409 and "Price change withdrawn" in page.text and "<form" not in page.text
    assert (
        serve.post_form(path, {"confirm_code": signer.form_code(path.removeprefix("/l/"))}).status_code == 409
    )
    h.settle()
    assert _snapshot(h) == before
    assert member(h).choice is None and price_mails(h, CONFIRMED) == []
    _until(h, RENEWAL + timedelta(days=1), step=timedelta(days=1))
    assert change_plan_calls(h) == [] and change_plan_calls(h, "sub_2") == []
