"""The annual-switch offer's landing page and confirm, from the outside (issue 10 items 3 and 10).

A real ``dunning serve`` process answers the links; the harness's worker runs
the ``annual_switch`` job through the real runner against the sandbox billing
server and sends the confirmation email to the real SMTP server. SQLite and
PostgreSQL.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlsplit

import pytest
from sqlalchemy import func, select
from tests.support.harness import START
from tests.support.lifecycle_links import Answer, LinkServer, registered

from dunning.engine.links import (
    ACCEPT_ANNUAL_OFFER,
    MANAGE_ACCOUNT,
    UPDATE_PAYMENT_METHOD,
    LinkSigner,
    case_subject,
    subscription_subject,
    verify_portal_token,
)
from dunning.mail.message import message_id_for
from dunning.store.models import Job, Outbox, TimelineEntry

pytestmark = pytest.mark.integration

LINK_SECRET = "test-link-secret"  # what the harness signs links with
PORTAL_SECRET = "portal-shared-secret"
PORTAL = "https://billing.example.com/portal?customer={customer_id}"
OFFER_DATE = "2026-11-02"
JOB_KEY = f"annual_switch:sub_1:{OFFER_DATE}"
signer = LinkSigner(LINK_SECRET, "http://localhost:8000")


@pytest.fixture
def lifecycle(world: Any) -> Iterator[Any]:
    """The world, with the test registration of the lifecycle links and job in this process."""
    with registered():
        yield world


@pytest.fixture
def serve(lifecycle: Any, tmp_path: Path) -> Iterator[LinkServer]:
    """``dunning serve`` on the world's database, Redis and simulated clock, with a billing portal."""
    env = {
        "DUNNING_HOME": str(tmp_path / "serve-home"),
        "DUNNING_DATABASE_URL": lifecycle.rt.settings.database_url,
        "DUNNING_REDIS_URL": lifecycle.rt.settings.redis_url,
        "DUNNING_CLOCK": "simulated",
        "DUNNING_LINK_SECRET": LINK_SECRET,
        "DUNNING_PAYMENT_UPDATE_URL": PORTAL,
        "DUNNING_PORTAL_SECRET": PORTAL_SECRET,
    }
    server = LinkServer(env, tmp_path / "serve.log")
    try:
        yield server
    finally:
        server.stop()


def _offered(world: Any, *, interval: str = "month", sub: str = "sub_1") -> None:
    """cus_1 with a monthly subscription (EUR 49.00), known to the sandbox, and an annual offer sent."""
    world.customer("cus_1", sub=sub)
    if interval != "month":
        world.client.subscription_upserted(
            {
                "id": sub,
                "customer_id": "cus_1",
                "plan": "pro",
                "status": "active",
                "amount_minor": 49_980,
                "currency": "EUR",
                "interval": interval,
                "current_period_end": (START + timedelta(days=30)).isoformat(),
            }
        )
        world.sent_events += 1
        world.settle()
    world.sandbox.state.add_subscription(
        sub, customer_id="cus_1", plan="pro", amount_minor=4_900, currency="EUR"
    )
    # The annual_offer email as the lifecycle planner writes it (its key names the offer's date).
    key = f"annual_offer:{sub}:{OFFER_DATE}"
    with world.rt.sessions.begin() as s:
        s.add(
            Outbox(
                key=key,
                kind="annual_offer",
                subscription_id=sub,
                customer_id="cus_1",
                to_email="cus_1@example.com",
                locale="en",
                subject="Save with yearly billing",
                html="<p>offer</p>",
                text="offer",
                message_id=message_id_for(key),
                status="sent",
                send_after=START,
                created_at=START,
                sent_at=START,
                attempts=1,
            )
        )


def _path(
    purpose: str = ACCEPT_ANNUAL_OFFER,
    *,
    customer: str = "cus_1",
    subject: str = "sub:sub_1",
    now: datetime | None = None,
) -> str:
    now = now or START
    token = signer.token(
        purpose=purpose, customer=customer, subject=subject, expires_at=now + timedelta(days=21)
    )
    return f"/l/{token}"


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
        jobs = s.execute(select(Job.id, Job.status).order_by(Job.id)).all()
    return counts, tuple(jobs), len(world.smtp.messages), len(world.sandbox.state.calls())


def _change_plan_calls(world: Any) -> list[Any]:
    return [c for c in world.sandbox.state.calls() if c.path == "/subscriptions/sub_1/change_plan"]


def test_get_shows_the_offer_and_the_confirm_switches_once_even_clicked_twice(
    lifecycle: Any, serve: LinkServer
) -> None:
    world = lifecycle
    _offered(world)
    path = _path()
    before = _snapshot(world)

    page = serve.get(path)
    assert page.status_code == 200, page.text
    assert "Switch to yearly billing" in page.text
    for shown in ("pro", "€49.00", "€588.00", "€499.80", "€88.20", "15% off", "December 2, 2026"):
        assert shown in page.text, shown
    assert '<form method="post">' in page.text
    assert page.headers["cache-control"] == "no-store"
    assert page.headers["x-frame-options"] == "DENY"
    code = _code(page)
    # Prefetches, scanners and bare POSTs change nothing.
    assert serve.get(path).status_code == 200
    assert serve.request("HEAD", path).status_code == 200
    assert serve.request("POST", path).status_code == 403
    assert (
        serve.post_form(path, {"confirm_code": code[:-1] + ("A" if code[-1] != "A" else "B")}).status_code
        == 403
    )
    assert serve.post_form(path, {}).status_code == 403
    world.settle()
    assert _snapshot(world) == before

    done = serve.post_form(path, {"confirm_code": code})
    assert done.status_code == 200, done.text
    assert "You are switching to yearly billing" in done.text
    assert "€499.80 a year" in done.text
    world.settle()

    [call] = _change_plan_calls(world)
    assert (call.idempotency_key, call.status, call.replay) == (JOB_KEY, 200, False)
    sub = world.sandbox.state.subscription("sub_1")
    assert (sub.plan, sub.amount_minor, sub.currency, sub.interval, sub.interval_count) == (
        "pro",
        49_980,
        "EUR",
        "year",
        1,
    )
    assert sub.plan_effective_at == "2026-12-02T10:00:00Z"  # current_period_end
    [job] = [j for j in world.jobs() if j.kind == "annual_switch"]
    assert (job.key, job.status) == (JOB_KEY, "done")
    assert job.payload["interval"] == "year" and job.payload["amount_minor"] == 49_980
    assert world.notices("cus_1@example.com") == ["annual_switch_confirmed"]
    [confirmed] = [o for o in world.outbox() if o.kind == "annual_switch_confirmed"]
    assert confirmed.key == f"annual_switch_confirmed:sub_1:{OFFER_DATE}"
    assert confirmed.status == "sent"
    assert any("annual offer of 2026-11-02 accepted" in line for line in world.timeline())
    assert any("billed every year" in line for line in world.timeline())

    # The second click (the same form sent again) shows the choice already made and makes nothing.
    after = _snapshot(world)
    again = serve.post_form(path, {"confirm_code": code})
    assert again.status_code == 200
    assert "Already accepted" in again.text
    assert "€499.80 a year from December 2, 2026" in again.text
    assert "<form" not in again.text
    shown = serve.get(path)
    assert "Already accepted" in shown.text and "<form" not in shown.text
    world.settle()
    assert _snapshot(world) == after
    assert len(_change_plan_calls(world)) == 1
    assert world.notices("cus_1@example.com") == ["annual_switch_confirmed"]


def test_expired_and_tampered_links_act_on_nothing(lifecycle: Any, serve: LinkServer) -> None:
    world = lifecycle
    _offered(world)
    path = _path()
    code = _code(serve.get(path))
    before = _snapshot(world)

    body, sig = path.removeprefix("/l/").split(".")
    tampered = f"/l/{body}.{sig[:-1]}{'A' if sig[-1] != 'A' else 'B'}"
    assert serve.get(tampered).status_code == 404
    assert serve.post_form(tampered, {"confirm_code": code}).status_code == 404
    # A token for the offer, for another customer's subscription: refused as not ours.
    other = _path(customer="cus_2")
    assert serve.get(other).status_code == 404
    assert (
        serve.post_form(other, {"confirm_code": signer.form_code(other.removeprefix("/l/"))}).status_code
        == 404
    )

    world.rt.clock.advance(timedelta(days=21, seconds=1))
    expired = serve.post_form(path, {"confirm_code": code})
    assert expired.status_code == 410
    assert "expired" in expired.text
    assert serve.get(path).status_code == 410
    world.settle()
    assert _snapshot(world) == before
    assert _change_plan_calls(world) == []


def test_yearly_subscription_is_refused(lifecycle: Any, serve: LinkServer) -> None:
    world = lifecycle
    _offered(world, interval="year")
    path = _path()
    before = _snapshot(world)
    page = serve.get(path)
    assert page.status_code == 409
    assert "Already billed yearly" in page.text
    assert "<form" not in page.text
    # Even with a good form code (from a page shown before the switch), nothing happens.
    refused = serve.post_form(path, {"confirm_code": signer.form_code(path.removeprefix("/l/"))})
    assert refused.status_code == 409
    assert "Nothing was changed" in refused.text
    world.settle()
    assert _snapshot(world) == before
    assert _change_plan_calls(world) == []


def test_offer_is_held_while_a_dunning_case_is_open(lifecycle: Any, serve: LinkServer) -> None:
    world = lifecycle
    _offered(world)
    world.fail("in_1", sub="sub_1", cid="cus_1")
    world.settle()
    path = _path()
    before = _snapshot(world)
    page = serve.get(path)
    assert page.status_code == 409
    assert "Offer on hold" in page.text and "<form" not in page.text
    assert (
        serve.post_form(path, {"confirm_code": signer.form_code(path.removeprefix("/l/"))}).status_code == 409
    )
    assert _snapshot(world) == before
    assert not [j for j in world.jobs() if j.kind == "annual_switch"]


def test_subscription_links_go_on_to_the_portal_and_case_links_take_no_post(
    lifecycle: Any, serve: LinkServer
) -> None:
    world = lifecycle
    _offered(world)
    world.fail("in_1", sub="sub_1", cid="cus_1")
    world.settle()
    before = _snapshot(world)
    for purpose in (MANAGE_ACCOUNT, UPDATE_PAYMENT_METHOD):
        answer = serve.get(_path(purpose, subject=subscription_subject("sub_1")))
        assert answer.status_code == 303, answer.text
        params = parse_qs(urlsplit(answer.headers["location"]).query)
        claims = verify_portal_token(
            params["dunning_token"][0], PORTAL_SECRET, customer="cus_1", purpose=purpose
        )
        assert claims.subject == "sub:sub_1"
        # Another customer's subscription, an unknown one: refused.
        assert serve.get(_path(purpose, customer="cus_2", subject="sub:sub_1")).status_code == 404
        assert serve.get(_path(purpose, subject="sub:sub_9")).status_code == 404
    # The offer about a case, or a case link POSTed to: nothing to confirm there.
    case_id = world.case("in_1").id
    assert serve.get(_path(ACCEPT_ANNUAL_OFFER, subject=case_subject(case_id))).status_code == 404
    case_link = _path(UPDATE_PAYMENT_METHOD, subject=case_subject(case_id))
    assert serve.get(case_link).status_code == 303
    posted = serve.post_form(case_link, {"confirm_code": signer.form_code(case_link.removeprefix("/l/"))})
    assert posted.status_code == 405
    assert _snapshot(world) == before
