"""``POST /stripe/webhook`` on real Redis, both databases and the SMTP test server.

Stripe's example payloads (tests/fixtures/stripe, in Stripe's documented shapes)
are signed the way Stripe signs them and posted to the app; the worker then
handles the mapped events exactly as if our own producer had sent them.
"""

from __future__ import annotations

import contextlib
import json
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import redis
from starlette.testclient import TestClient

from dunning.http.app import create_app
from dunning.signing import sign
from dunning.store.dead_letters import list_parked

pytestmark = pytest.mark.integration

FIXTURES = Path(__file__).parents[1] / "fixtures" / "stripe"
OLD_SECRET = "whsec_old_5cZp7w0rQ"
NEW_SECRET = "whsec_new_Jd81mB2kA"
EMAIL = "ada@example.com"
OPS_TOKEN = "ops-token-for-metrics-0123"
QUEUE_KEY = "dramatiq:billing_events"
MSGS_KEY = "dramatiq:billing_events.msgs"


_TIMES = {"created", "start_date", "current_period_start", "current_period_end", "trial_start", "trial_end"}


def _shift(value: Any, delta: int) -> Any:
    if isinstance(value, dict):
        return {
            k: v + delta if k in _TIMES and isinstance(v, int) else _shift(v, delta) for k, v in value.items()
        }
    if isinstance(value, list):
        return [_shift(v, delta) for v in value]
    return value


def stripe_event(world: Any, name: str, *, minutes: int = 0) -> dict[str, Any]:
    """An example payload moved onto the world's simulated clock (every Stripe time by the same amount)."""
    event = json.loads((FIXTURES / f"{name}.json").read_text())
    delta = int(world.rt.clock.now().timestamp()) + minutes * 60 - event["created"]
    shifted: dict[str, Any] = _shift(event, delta)
    return shifted


@pytest.fixture
def stripe(world: Any, monkeypatch: pytest.MonkeyPatch) -> Iterator[TestClient]:
    """The app with two webhook secrets configured, as during a rotation."""
    settings = world.rt.settings.with_(stripe_webhook_secrets=(OLD_SECRET, NEW_SECRET), ops_token=OPS_TOKEN)
    monkeypatch.setattr(world.rt, "settings", settings)
    with TestClient(create_app(world.rt, broker=world.broker)) as client:
        yield client


def post(
    client: TestClient, event: dict[str, Any], *, secret: str = NEW_SECRET, ts: int | None = None
) -> Any:
    body = json.dumps(event).encode()
    return client.post(
        "/stripe/webhook",
        content=body,
        headers={"Content-Type": "application/json", "Stripe-Signature": sign(secret, body, ts)},
    )


def metrics_text(client: TestClient) -> str:
    answer = client.get("/metrics", headers={"Authorization": f"Bearer {OPS_TOKEN}"})
    assert answer.status_code == 200, answer.text
    return str(answer.text)


def _sandbox_invoice(world: Any) -> None:
    """The sandbox billing API learns Stripe's invoice so the retries have a script."""
    with contextlib.suppress(ValueError):
        world.sandbox.state.add_invoice(
            "in_Stripe001",
            subscription_id="sub_Stripe001",
            customer_id="cus_Stripe001",
            amount_minor=2900,
            currency="EUR",
            decline_code="insufficient_funds",
            succeed_on_attempt=0,
        )


def accept(world: Any, client: TestClient, event: dict[str, Any], **kw: Any) -> None:
    answer = post(client, event, **kw)
    assert answer.status_code == 200, answer.text
    assert answer.json().get("accepted") == event["id"], answer.text
    world.sent_events += 1
    world.settle()


def test_stripe_events_open_a_case_and_email_the_customer(world: Any, stripe: TestClient) -> None:
    accept(world, stripe, stripe_event(world, "customer_created", minutes=-30))
    accept(
        world, stripe, stripe_event(world, "customer_subscription_created", minutes=-29), secret=OLD_SECRET
    )
    _sandbox_invoice(world)
    failed = stripe_event(world, "invoice_payment_failed")
    accept(world, stripe, failed)

    case = world.case("in_Stripe001")
    assert case.status == "open"
    assert case.customer_id == "cus_Stripe001"
    assert case.decline_code == "insufficient_funds"
    mails = world.smtp.wait_for(1)
    assert EMAIL in mails[0].rcpt_tos
    assert world.notices(EMAIL) == ["payment_failed"]

    # Stripe delivers an event again after a timeout on its side: same event id, a no-op here.
    answer = post(stripe, failed)
    assert answer.status_code == 200
    world.sent_events += 1
    world.settle()
    assert world.cases() == 1
    assert world.notices(EMAIL) == ["payment_failed"]


def test_unmapped_types_answer_200_and_are_counted_not_parked(
    world: Any, stripe: TestClient, redis_server: Any
) -> None:
    raw = redis.Redis.from_url(redis_server.url)
    answer = post(stripe, stripe_event(world, "charge_succeeded"))
    assert answer.status_code == 200
    assert answer.json() == {"ignored": "charge.succeeded", "reason": "not a type dunning acts on"}
    assert list_parked(world.rt) == []
    metrics = metrics_text(stripe)
    assert 'dunning_stripe_webhooks_total{outcome="ignored",stripe_type="charge.succeeded"}' in metrics
    assert raw.llen(QUEUE_KEY) == 0
    assert raw.hlen(MSGS_KEY) == 0
    raw.close()


def test_a_mapped_event_we_refuse_is_parked_with_its_field(world: Any, stripe: TestClient) -> None:
    answer = post(stripe, stripe_event(world, "customer_updated_no_email"))
    assert answer.status_code == 200, answer.text
    assert answer.json()["parked"] == "stripe:evt_1QcusUpdated0002"
    assert answer.json()["fields"][0]["path"] == "data.customer.email"
    parked = list_parked(world.rt)
    assert len(parked) == 1
    assert parked[0].field == "data.customer.email"
    assert "customer.updated" in parked[0].reason
    # Stripe retrying the same bad event parks it once, not twice.
    post(stripe, stripe_event(world, "customer_updated_no_email"))
    assert len(list_parked(world.rt)) == 1


def test_bad_signatures_are_400_and_nothing_is_enqueued(world: Any, stripe: TestClient) -> None:
    event = stripe_event(world, "customer_created")
    assert post(stripe, event, secret="whsec_somebody_else").status_code == 400
    stale = post(stripe, event, ts=int(time.time()) - 301)
    assert stale.status_code == 400
    assert stale.json()["reason"] == "timestamp too old"
    missing = stripe.post("/stripe/webhook", content=json.dumps(event).encode())
    assert missing.status_code == 400
    assert world.counter.done["billing_events"] == world._base_done
    metrics = metrics_text(stripe)
    assert 'dunning_stripe_webhooks_total{outcome="refused",stripe_type="(unknown)"}' in metrics


def test_the_endpoint_is_off_without_secrets(world: Any) -> None:
    assert world.rt.settings.stripe_webhook_secrets == ()
    with TestClient(create_app(world.rt, broker=world.broker)) as client:
        answer = post(client, stripe_event(world, "customer_created"))
    assert answer.status_code == 401
    assert "DUNNING_STRIPE_WEBHOOK_SECRETS" in answer.json()["error"]
