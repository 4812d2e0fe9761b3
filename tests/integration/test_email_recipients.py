"""What recipients can trust: one-click unsubscribe from prompts, bounces that stop sending, caps.

Real parts (Redis, the SMTP test server, SQLite and PostgreSQL, the sandbox billing API, the
``dunning serve`` app); the simulated clock moves the world over days.
"""

from __future__ import annotations

import json
from collections import Counter
from collections.abc import Callable
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

import pytest
import typer
from sqlalchemy import select
from starlette.testclient import TestClient
from typer.testing import CliRunner

from dunning.commands.emails_bounces import bounces_command
from dunning.http.app import create_app
from dunning.store.mail_models import MailBounce, MailSuppression
from dunning.store.models import Outbox

pytestmark = pytest.mark.integration

VISA = {"present": True, "brand": "visa", "last4": "4242", "exp_month": 12, "exp_year": 2030}
DUNNING = {"payment_failed", "payment_reminder", "final_notice"}


def _iso(at: datetime) -> str:
    return at.isoformat().replace("+00:00", "Z")


def _subscription(h: Any, sub: str = "sub_1", cid: str = "cus_1", **fields: Any) -> None:
    now = h.rt.clock.now()
    data: dict[str, Any] = {
        "id": sub,
        "customer_id": cid,
        "plan": "pro",
        "status": "active",
        "amount_minor": 4900,
        "currency": "EUR",
        "interval": "month",
        "current_period_end": _iso(now + timedelta(days=30)),
        "payment_method": VISA,
    }
    data.update(fields)
    h.client.subscription_upserted(data, occurred_at=_iso(now))
    h.sent_events += 1
    h.settle()


def _outbox(h: Any, kind: str) -> list[Outbox]:
    return [o for o in h.outbox() if o.kind == kind]


# ---------------------------------------------------------------------------
# Unsubscribe


def test_one_click_unsubscribe_stops_prompts_but_never_account_emails(world: Any) -> None:
    h = world
    h.customer(sub=None)
    # A long taste (10 days) gets two prompts, 3 days and 1 day before it ends.
    ends = h.rt.clock.now() + timedelta(days=10)
    _subscription(h, temporary_upgrade={"plan": "max", "ends_at": _iso(ends), "revert_to": "pro"})
    h.advance(timedelta(days=7, hours=12), step=timedelta(hours=12))
    [prompt] = [m for m in h.smtp.messages if m["X-Dunning-Kind"] == "upgrade_ending"]
    header = str(prompt["List-Unsubscribe"])
    assert header.startswith("<http://localhost:8000/unsubscribe/") and header.endswith(">")
    assert str(prompt["List-Unsubscribe-Post"]) == "List-Unsubscribe=One-Click"
    assert b"=?utf-8?" not in prompt.raw.split(b"\r\n\r\n")[0]
    path = header[1:-1].removeprefix("http://localhost:8000")

    web = TestClient(create_app(h.rt, broker=h.broker))
    page = web.get(path)  # a scanner's fetch, or the customer opening the link: changes nothing
    assert page.status_code == 200 and 'name="List-Unsubscribe" value="One-Click"' in page.text
    assert web.post(path).status_code == 400  # a bare POST is not the one-click request
    assert web.post(path, data={"List-Unsubscribe": "Nope"}).status_code == 400
    assert web.get(path.replace("/unsubscribe/", "/unsubscribe/x")).status_code == 404
    assert web.get(path[:-2] + ("AA" if not path.endswith("AA") else "BB")).status_code == 404
    with h.rt.sessions() as s:
        assert s.execute(select(MailSuppression)).scalars().all() == []

    done = web.post(path, data={"List-Unsubscribe": "One-Click"})  # what Gmail's button sends
    assert done.status_code == 200 and "unsubscribed" in done.text
    again = web.post(path, files={"List-Unsubscribe": (None, "One-Click")})  # multipart, and twice
    assert again.status_code == 200
    with h.rt.sessions() as s:
        [row] = s.execute(select(MailSuppression)).scalars().all()
    assert row.address == "cus_1@example.com" and row.customer_id == "cus_1"
    shown = web.get(path).text
    assert "unsubscribed" in shown and "<form" not in shown

    h.advance(timedelta(days=3), step=timedelta(hours=12))
    kinds = [str(m["X-Dunning-Kind"]) for m in h.smtp.messages]
    assert kinds.count("upgrade_ending") == 1  # the second prompt was skipped...
    assert "upgrade_reverted" in kinds  # ...the account email still went
    skipped = [o for o in _outbox(h, "upgrade_ending") if o.status == "skipped"]
    assert len(skipped) == 1 and "unsubscribed" in (skipped[0].last_error or "")
    timeline = h.timeline()
    assert any("unsubscribed from offers (List-Unsubscribe" in line for line in timeline)
    assert any(line.startswith("upgrade_ending not sent: the recipient unsubscribed") for line in timeline)
    reverted = next(m for m in h.smtp.messages if m["X-Dunning-Kind"] == "upgrade_reverted")
    assert reverted["List-Unsubscribe"] is None  # transactional: nothing to unsubscribe from

    # Payment emails are never suppressed either.
    h.fail(code="insufficient_funds")
    h.advance(timedelta(hours=12), step=timedelta(hours=6))  # past the night's quiet hours
    assert "payment_failed" in h.notices()


# ---------------------------------------------------------------------------
# Bounces


def _bounces_cli(h: Any) -> dict[str, Any]:
    app = typer.Typer()
    app.callback()(lambda: None)
    app.command("bounces")(bounces_command)
    result = CliRunner().invoke(app, ["bounces", "--json"])
    assert result.exit_code == 0, result.output
    return json.loads(result.output)


def test_a_permanent_refusal_stops_sending_until_the_customer_email_changes(world: Any) -> None:
    h = world
    h.customer()
    h.smtp.refuse_all(code=550, at="rcpt")  # "no such user"
    h.fail(code="insufficient_funds")
    h.settle()
    h.smtp.reset_faults()
    [failed] = _outbox(h, "payment_failed")
    assert failed.status == "failed"
    with h.rt.sessions() as s:
        [bounce] = s.execute(select(MailBounce)).scalars().all()
    assert (bounce.address, bounce.customer_id, bounce.code) == ("cus_1@example.com", "cus_1", 550)
    listed = _bounces_cli(h)
    assert listed["count"] == 1 and listed["bounces"][0]["address"] == "cus_1@example.com"
    app = typer.Typer()
    app.callback()(lambda: None)
    app.command("bounces")(bounces_command)
    table = CliRunner().invoke(app, ["bounces"])
    assert table.exit_code == 0 and "cus_1@example.com" in table.output and "550" in table.output
    assert listed["bounces"][0]["kind"] == "payment_failed"

    h.advance(timedelta(days=6, hours=1), step=timedelta(hours=12))  # the reminder falls due
    assert h.smtp.messages == []
    [reminder] = _outbox(h, "payment_reminder")
    assert reminder.status == "skipped" and "bounced" in (reminder.last_error or "")
    assert any(line.startswith("payment_reminder not sent: the address bounced") for line in h.timeline())
    assert any("refused by the mail server (SMTP 550)" in line for line in h.timeline())

    # The same email again changes nothing; a new one lifts the bounce.
    h.customer("cus_1", sub=None)
    assert _bounces_cli(h)["count"] == 1
    h.customer("cus_1", email="ada.new@example.com", sub=None)
    assert _bounces_cli(h) == {"bounces": [], "count": 0}
    h.advance(timedelta(days=6), step=timedelta(hours=12))  # the final notice falls due
    assert "final_notice" in h.notices("ada.new@example.com")


# ---------------------------------------------------------------------------
# Caps and coalescing over a simulated week


ZONES = {"cus_tok": "Asia/Tokyo", "cus_la": "America/Los_Angeles", "cus_utc": "UTC"}


@pytest.fixture
def capped_world(db_url: str, tmp_path: Path, make_world: Callable[..., Any]) -> Any:
    """A world whose policy allows one prompt a week (and the default one dunning email a day)."""
    policy = tmp_path / "policy.toml"
    policy.write_text('version = "caps"\n[emails]\nmax_dunning_per_day = 1\nmax_prompts_per_week = 1\n')
    return make_world(db_url, policy_path=policy)


def test_caps_and_coalescing_over_a_week_in_three_timezones(capped_world: Any) -> None:
    h = capped_world
    for cid, tz in ZONES.items():
        h.customer(cid, tz=tz, sub=f"{cid}_a")
        _subscription(h, sub=f"{cid}_b", cid=cid)
    # Two prompts two days apart for the UTC customer, on a third subscription (an open case holds
    # its own subscription's prompts): a week's cap of one lets one through at most.
    ends = h.rt.clock.now() + timedelta(days=9, hours=12)
    _subscription(
        h,
        sub="cus_utc_c",
        cid="cus_utc",
        temporary_upgrade={"plan": "max", "ends_at": _iso(ends), "revert_to": "pro"},
    )
    # And a customer in Berlin with no failed payment gets the same two prompts.
    h.customer("cus_ber", tz="Europe/Berlin", sub=None)
    _subscription(
        h,
        sub="cus_ber_a",
        cid="cus_ber",
        temporary_upgrade={"plan": "max", "ends_at": _iso(ends), "revert_to": "pro"},
    )
    # Two subscriptions of each customer fail at the same moment: two cases, two "payment failed".
    for cid in ZONES:
        for part in ("a", "b"):
            h.fail(f"in_{cid}_{part}", sub=f"{cid}_{part}", cid=cid, code="insufficient_funds")
    h.settle()
    h.advance(timedelta(days=10), step=timedelta(hours=6))

    rows = [o for o in h.outbox() if o.status == "sent"]
    for cid, tz in ZONES.items():
        address = f"{cid}@example.com"
        mine = [o for o in rows if o.to_email == address]
        dunning_days = Counter(o.sent_at.astimezone(ZoneInfo(tz)).date() for o in mine if o.kind in DUNNING)
        assert dunning_days and max(dunning_days.values()) == 1, (cid, dunning_days)
        # Nothing lost: both cases' "payment failed" and both reminders went, a day apart.
        kinds = Counter(o.kind for o in mine)
        assert kinds["payment_failed"] == 2 and kinds["payment_reminder"] == 2, (cid, kinds)
        received = [
            m for m in h.smtp.messages if address in m.rcpt_tos and str(m["X-Dunning-Kind"]) in DUNNING
        ]
        assert len(received) == sum(dunning_days.values())
        # Never in the recipient's quiet hours (21:00-08:00), deferred or not.
        for o in mine:
            assert 8 <= o.sent_at.astimezone(ZoneInfo(tz)).hour < 21, (cid, o.kind, o.sent_at)
        deferred = [
            line for sub in (f"{cid}_a", f"{cid}_b") for line in h.timeline(sub) if "deferred to" in line
        ]
        assert any("at most 1 dunning email(s) a day per recipient" in line for line in deferred), (
            cid,
            deferred,
        )

    # Berlin: the first prompt went, the second two days later is over the week's cap of one.
    berlin = [(o.status, o.last_error) for o in h.outbox() if o.to_email == "cus_ber@example.com"]
    assert berlin[:2] == [
        ("sent", None),
        ("skipped", "at most 1 prompt(s) a week per recipient"),
    ], berlin
    assert any(
        "upgrade_ending not sent: at most 1 prompt(s) a week" in line for line in h.timeline("cus_ber_a")
    )
    # UTC: the first prompt fell on a day with a dunning email (dropped), the second went.
    prompts = [o for o in h.outbox() if o.kind == "upgrade_ending" and o.to_email == "cus_utc@example.com"]
    assert [(o.status, o.last_error) for o in prompts] == [
        ("skipped", "a dunning email goes to this recipient today; no offer on the same day"),
        ("sent", None),
    ]
    assert any(line.startswith("upgrade_ending not sent:") for line in h.timeline("cus_utc_c"))
    assert "upgrade_reverted" in [o.kind for o in rows if o.to_email == "cus_utc@example.com"]


def test_unsubscribe_links_refuse_anything_but_their_own_token(world: Any) -> None:
    from dunning.engine.delivery import UNSUBSCRIBE_TTL
    from dunning.engine.links import MANAGE_ACCOUNT, UNSUBSCRIBE, outbox_subject

    h = world
    h.customer()
    h.fail(code="insufficient_funds")
    h.settle()
    [row] = h.outbox()
    web = TestClient(create_app(h.rt, broker=h.broker))
    now = h.rt.clock.now()

    def token(**claims: Any) -> str:
        expires_at = claims.pop("expires_at", now + UNSUBSCRIBE_TTL)
        fields = {"purpose": UNSUBSCRIBE, "customer": "cus_1", "subject": outbox_subject(row.id), **claims}
        return h.rt.links.token(expires_at=expires_at, **fields)

    one_click = {"List-Unsubscribe": "One-Click"}
    cases = {
        "x" * 10_000: 404,
        "ünïcödé.tøken": 404,
        token(purpose=MANAGE_ACCOUNT): 404,  # another purpose's link
        token(customer="cus_2"): 404,  # the claim must name the email's customer
        token(subject=outbox_subject(row.id + 1000)): 404,  # no such email
        token(subject="case:1"): 404,
        token(expires_at=now - timedelta(seconds=1)): 410,
    }
    for bad, status in cases.items():
        assert web.get(f"/unsubscribe/{bad}").status_code == status, bad[:40]
        assert web.post(f"/unsubscribe/{bad}", data=one_click).status_code == status, bad[:40]
    # An unsubscribe token is good for nothing at /l/.
    assert web.get(f"/l/{token()}").status_code == 404
    with h.rt.sessions() as s:
        assert s.execute(select(MailSuppression)).scalars().all() == []
