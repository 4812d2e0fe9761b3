"""The three ways in (contract §1), exactly as docs/producers.md tells producers to use them.

* raw Redis: the message JSON built by hand and the MULTI/HSET/RPUSH/EXEC of the guide;
* HTTP: signed ``POST /events`` and its refusals, ``/healthz`` (customer links: test_customer_links.py);
* the Python client: local validation, nothing enqueued on a bad event.
"""

from __future__ import annotations

import contextlib
import json
import time
import uuid
from collections.abc import Iterator
from datetime import timedelta
from typing import Any

import pytest
import redis
from starlette.testclient import TestClient
from tests.support.harness import START

from dunning.client import Client
from dunning.contract import MAX_EVENT_BYTES, InvalidEvent
from dunning.http.app import create_app
from dunning.signing import SIGNATURE_HEADER, sign
from dunning.store.dead_letters import list_parked

pytestmark = pytest.mark.integration

NAMESPACE = "dramatiq"
QUEUE_KEY = f"{NAMESPACE}:billing_events"
MSGS_KEY = f"{NAMESPACE}:billing_events.msgs"
SECRET = "s3cret"
EMAIL = "ada@example.com"


# ---------------------------------------------------------------------------
# Envelopes
# ---------------------------------------------------------------------------


def _at(minutes: int = 0) -> str:
    return (START + timedelta(minutes=minutes)).isoformat().replace("+00:00", "Z")


def customer_event(cid: str = "cus_1", event_id: str = "evt_cus_1") -> dict[str, Any]:
    return {
        "id": event_id,
        "type": "customer.upserted",
        "occurred_at": _at(-10),
        "data": {
            "customer": {"id": cid, "email": EMAIL, "name": "Ada Lovelace", "locale": "en", "timezone": "UTC"}
        },
    }


def subscription_event(sid: str = "sub_1", cid: str = "cus_1", event_id: str = "evt_sub_1") -> dict[str, Any]:
    return {
        "id": event_id,
        "type": "subscription.upserted",
        "occurred_at": _at(-9),
        "data": {
            "subscription": {
                "id": sid,
                "customer_id": cid,
                "plan": "pro",
                "status": "active",
                "amount_minor": 4900,
                "currency": "EUR",
                "interval": "month",
                "current_period_end": (START + timedelta(days=30)).isoformat(),
                "payment_method": {
                    "present": True,
                    "brand": "visa",
                    "last4": "4242",
                    "exp_month": 12,
                    "exp_year": 2030,
                },
            }
        },
    }


def failed_event(
    invoice: str = "in_1", *, currency: str = "EUR", event_id: str = "evt_in_1_failed_1"
) -> dict[str, Any]:
    return {
        "id": event_id,
        "type": "invoice.payment_failed",
        "occurred_at": _at(),
        "data": {
            "invoice": {
                "id": invoice,
                "subscription_id": "sub_1",
                "customer_id": "cus_1",
                "amount_minor": 4900,
                "currency": currency,
            },
            "decline_code": "insufficient_funds",
            "failure_message": 'Your card has "insufficient" funds\n(issuer said so).',
        },
    }


def _sandbox_invoice(world: Any, invoice: str = "in_1") -> None:
    """The sandbox billing API learns the invoice (as Harness.fail does) so retries have a script."""
    with contextlib.suppress(ValueError):
        world.sandbox.state.add_invoice(
            invoice,
            subscription_id="sub_1",
            customer_id="cus_1",
            amount_minor=4900,
            currency="EUR",
            decline_code="insufficient_funds",
            succeed_on_attempt=0,
        )


# ---------------------------------------------------------------------------
# Raw Redis: what a Go or Ruby producer does
# ---------------------------------------------------------------------------


@pytest.fixture
def raw_redis(redis_server: Any) -> Iterator[redis.Redis]:
    """A plain Redis client on the broker's server: no Dramatiq involved."""
    client = redis.Redis.from_url(redis_server.url)
    yield client
    client.close()


def raw_enqueue(client: redis.Redis, envelope: dict[str, Any]) -> str:
    """Build the Dramatiq message by hand and issue the guide's MULTI / HSET / RPUSH / EXEC."""
    redis_message_id = str(uuid.uuid4())
    message = json.dumps(
        {
            "queue_name": "billing_events",
            "actor_name": "ingest_event",
            "args": [envelope],
            "kwargs": {},
            "options": {"redis_message_id": redis_message_id},
            "message_id": str(uuid.uuid4()),
            "message_timestamp": int(time.time() * 1000),
        },
        separators=(",", ":"),
    )
    with client.pipeline(transaction=True) as tx:  # MULTI ... EXEC
        tx.hset(MSGS_KEY, redis_message_id, message)
        tx.rpush(QUEUE_KEY, redis_message_id)
        added, length = tx.execute()
    assert added == 1 and length >= 1
    return redis_message_id


def send_raw(world: Any, client: redis.Redis, envelope: dict[str, Any]) -> str:
    rid = raw_enqueue(client, envelope)
    world.sent_events += 1
    return rid


def test_raw_redis_message_is_processed_and_acknowledged(world: Any, raw_redis: redis.Redis) -> None:
    send_raw(world, raw_redis, customer_event())
    world.settle()  # the subscription names the customer
    send_raw(world, raw_redis, subscription_event())
    world.settle()
    _sandbox_invoice(world)
    send_raw(world, raw_redis, failed_event())
    world.settle()

    case = world.case("in_1")
    assert case.status == "open"
    assert case.customer_id == "cus_1"
    assert case.decline_code == "insufficient_funds"
    mails = world.smtp.wait_for(1)
    assert EMAIL in mails[0].rcpt_tos
    assert world.notices(EMAIL) == ["payment_failed"]
    # Acknowledged by redis_message_id: nothing left behind in the queue, its hash or the dead letters.
    assert raw_redis.llen(QUEUE_KEY) == 0
    assert raw_redis.hlen(MSGS_KEY) == 0
    assert raw_redis.zcard(f"{QUEUE_KEY}.XQ") == 0
    assert list_parked(world.rt) == []


def test_raw_redis_redelivery_of_an_event_id_is_a_no_op(world: Any, raw_redis: redis.Redis) -> None:
    send_raw(world, raw_redis, customer_event())
    world.settle()
    send_raw(world, raw_redis, subscription_event())
    world.settle()
    _sandbox_invoice(world)
    send_raw(world, raw_redis, failed_event())
    world.settle()
    send_raw(world, raw_redis, failed_event())  # new Dramatiq message, same event id
    world.settle()
    assert world.cases() == 1
    world.smtp.wait_for(1)
    assert world.notices(EMAIL) == ["payment_failed"]
    assert raw_redis.hlen(MSGS_KEY) == 0


def test_raw_redis_invalid_event_is_parked_with_field_and_reason(world: Any, raw_redis: redis.Redis) -> None:
    send_raw(world, raw_redis, failed_event(currency="eur", event_id="evt_bad_currency"))
    world.settle()
    parked = list_parked(world.rt)
    assert len(parked) == 1
    assert parked[0].queue == "billing_events"
    assert parked[0].field == "data.invoice.currency"
    assert "eur" not in parked[0].reason  # the value is never echoed
    assert world.cases() == 0


# ---------------------------------------------------------------------------
# HTTP: POST /events, customer links, /healthz
# ---------------------------------------------------------------------------


@pytest.fixture
def http(world: Any, monkeypatch: pytest.MonkeyPatch) -> Iterator[TestClient]:
    """The ingest app on the world's runtime and broker, with an ingest secret configured."""
    monkeypatch.setattr(world.rt, "settings", world.rt.settings.with_(ingest_secret=SECRET))
    with TestClient(create_app(world.rt, broker=world.broker)) as client:
        yield client


def _body(envelope: dict[str, Any]) -> bytes:
    return json.dumps(envelope, separators=(",", ":")).encode()


def post_signed(
    client: TestClient, body: bytes, *, secret: str = SECRET, timestamp: int | None = None
) -> Any:
    headers = {"Content-Type": "application/json", SIGNATURE_HEADER: sign(secret, body, timestamp)}
    return client.post("/events", content=body, headers=headers)


def _nothing_enqueued(world: Any, raw_redis: redis.Redis) -> None:
    assert raw_redis.llen(QUEUE_KEY) == 0
    assert raw_redis.hlen(MSGS_KEY) == 0
    assert world.counter.done["billing_events"] == world._base_done


def test_http_signed_events_are_accepted_and_processed(
    world: Any, http: TestClient, raw_redis: redis.Redis
) -> None:
    for envelope in (customer_event(), subscription_event()):
        answer = post_signed(http, _body(envelope))
        assert answer.status_code == 202, answer.text
        assert answer.json() == {"accepted": envelope["id"]}
        world.sent_events += 1
        world.settle()
    _sandbox_invoice(world)
    answer = post_signed(http, _body(failed_event()))
    assert answer.status_code == 202, answer.text
    world.sent_events += 1
    world.settle()
    assert world.case("in_1").status == "open"
    world.smtp.wait_for(1)
    assert world.notices(EMAIL) == ["payment_failed"]
    assert raw_redis.hlen(MSGS_KEY) == 0


def test_http_refuses_a_bad_signature(world: Any, http: TestClient, raw_redis: redis.Redis) -> None:
    body = _body(customer_event())
    answer = post_signed(http, body, secret="not-the-secret")
    assert answer.status_code == 401
    assert answer.json() == {"error": "bad signature", "reason": "signature mismatch"}
    # A valid signature of other bytes does not cover this body.
    header = sign(SECRET, body)
    answer = http.post("/events", content=body + b" ", headers={SIGNATURE_HEADER: header})
    assert answer.status_code == 401
    answer = http.post("/events", content=body)
    assert answer.status_code == 401
    assert answer.json()["reason"] == "missing Dunning-Signature header"
    _nothing_enqueued(world, raw_redis)


def test_http_refuses_a_stale_or_future_timestamp(
    world: Any, http: TestClient, raw_redis: redis.Redis
) -> None:
    body = _body(customer_event())
    answer = post_signed(http, body, timestamp=int(time.time()) - 301)
    assert answer.status_code == 401
    assert answer.json()["reason"] == "timestamp too old"
    answer = post_signed(http, body, timestamp=int(time.time()) + 400)
    assert answer.status_code == 401
    assert answer.json()["reason"] == "timestamp too far in the future"
    _nothing_enqueued(world, raw_redis)


def test_http_ingest_is_disabled_without_a_secret(world: Any, raw_redis: redis.Redis) -> None:
    assert world.rt.settings.ingest_secret is None
    with TestClient(create_app(world.rt, broker=world.broker)) as client:
        answer = post_signed(client, _body(customer_event()))
    assert answer.status_code == 401
    assert "ingest disabled" in answer.json()["error"]
    assert "DUNNING_INGEST_SECRET" in answer.json()["error"]
    _nothing_enqueued(world, raw_redis)


def test_http_invalid_event_is_422_naming_the_field(
    world: Any, http: TestClient, raw_redis: redis.Redis
) -> None:
    answer = post_signed(http, _body(failed_event(currency="eur")))
    assert answer.status_code == 422
    payload = answer.json()
    assert payload["error"] == "invalid event"
    assert payload["field"] == "data.invoice.currency"
    assert payload["reason"]
    assert "eur" not in payload["reason"]

    unknown = {**customer_event(), "type": "invoice.voided"}
    answer = post_signed(http, _body(unknown))
    assert answer.status_code == 422
    assert answer.json()["field"] == "type"
    _nothing_enqueued(world, raw_redis)


def test_http_non_json_is_400_and_json_that_is_not_an_event_422(
    world: Any, http: TestClient, raw_redis: redis.Redis
) -> None:
    for body, status in ((b"not json at all", 400), (b"[1, 2, 3]", 422), (b"\xff\xfe", 400)):
        answer = post_signed(http, body)
        assert answer.status_code == status, body
        assert answer.json()["field"] == "(envelope)"
    _nothing_enqueued(world, raw_redis)


def test_http_oversized_body_is_413(world: Any, http: TestClient, raw_redis: redis.Redis) -> None:
    envelope = customer_event()
    envelope["padding"] = "x" * MAX_EVENT_BYTES
    body = _body(envelope)
    assert len(body) > MAX_EVENT_BYTES
    answer = post_signed(http, body)
    assert answer.status_code == 413
    assert answer.json()["reason"] == "too large"
    # Refused on size before anything else: an unsigned client cannot make the server buffer a huge body,
    # whether it declares a Content-Length or streams the body in chunks without one.
    assert http.post("/events", content=b"x" * (MAX_EVENT_BYTES + 1)).status_code == 413

    def chunks() -> Iterator[bytes]:
        for _ in range(100):
            yield b"x" * 4096

    assert http.post("/events", content=chunks()).status_code == 413
    # Exactly at the limit is not "too large" (then it is judged on its signature, then as JSON).
    at_limit = b" " * MAX_EVENT_BYTES
    assert post_signed(http, at_limit).status_code == 400
    _nothing_enqueued(world, raw_redis)


def test_healthz(http: TestClient) -> None:
    answer = http.get("/healthz")
    assert answer.status_code == 200
    assert answer.text == "ok"


# ---------------------------------------------------------------------------
# Python client
# ---------------------------------------------------------------------------


def test_client_refuses_an_invalid_event_and_enqueues_nothing(world: Any, raw_redis: redis.Redis) -> None:
    client = Client(broker=world.broker)
    with pytest.raises(InvalidEvent) as caught:
        client.payment_failed(
            invoice_id="in_1",
            subscription_id="sub_1",
            customer_id="cus_1",
            amount_minor=4900,
            currency="eur",
            decline_code="insufficient_funds",
        )
    assert caught.value.field == "data.invoice.currency"
    time.sleep(0.2)  # a message, had one been sent, would have reached the worker by now
    _nothing_enqueued(world, raw_redis)
    assert list_parked(world.rt) == []


def test_metrics_endpoint_reports_cases_queues_and_dead_letters(world) -> None:
    from starlette.testclient import TestClient

    from dunning.http.app import create_app

    h = world
    h.customer()
    h.fail(code="insufficient_funds")
    h.send(
        {"id": "evt_bad", "type": "invoice.payment_failed", "occurred_at": "2026-11-02T10:00:00Z", "data": {}}
    )
    h.settle()
    # A loopback client: with no DUNNING_OPS_TOKEN, /metrics is served to those only.
    client = TestClient(create_app(h.rt, broker=h.broker), client=("127.0.0.1", 50000))
    body = client.get("/metrics").text
    assert 'dunning_cases{status="open"} 1.0' in body
    assert "dunning_dead_letters 1.0" in body
    assert 'dunning_queue_messages{queue="billing_events",state="ready"} 0.0' in body
    assert 'dunning_emails{kind="payment_failed",status="sent"} 1.0' in body
    assert "dunning_jobs_enqueued_again_unstarted 0.0" in body
    assert client.get("/healthz").text == "ok"
