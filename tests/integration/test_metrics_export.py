"""``/metrics``: the gauges computed at scrape time and the counters workers add up in Redis.

Real Redis, both databases, the sandbox billing API over HTTP. The alert rules and
the Grafana dashboard under ``deploy/`` may name only metrics the collector exports.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
import redis
from prometheus_client.parser import text_string_to_metric_families
from starlette.testclient import TestClient

from dunning import telemetry
from dunning.billing.http_client import HttpBillingClient
from dunning.billing.port import PayOutcome
from dunning.broker.ages import oldest_ready_ages
from dunning.devtools.sandbox import SandboxServer
from dunning.engine.jobs import wall_now
from dunning.http.app import create_app
from dunning.metrics import registry_for
from dunning.runtime import Runtime, Tuning, build_runtime
from dunning.settings import load_settings
from dunning.signing import SIGNATURE_HEADER
from dunning.store.db import transaction
from dunning.store.migrate import upgrade
from dunning.store.models import Case, Job, Worker

pytestmark = pytest.mark.integration

ROOT = Path(__file__).resolve().parents[2]
SECRET = "metrics-billing-secret"


@pytest.fixture
def client(redis_server: Any) -> Iterator[redis.Redis]:
    """The session's Redis with no metric keys, recording this process's metrics."""
    conn = redis.Redis.from_url(redis_server.url)
    before = telemetry.installed()
    for key in conn.scan_iter(f"{telemetry.PREFIX}*"):
        conn.delete(key)
    telemetry.install(conn)
    yield conn
    telemetry.install(before)
    for key in conn.scan_iter(f"{telemetry.PREFIX}*"):
        conn.delete(key)
    conn.close()


@pytest.fixture
def rt(db_url: str, tmp_path: Path, redis_server: Any) -> Iterator[Runtime]:
    env = {
        "DUNNING_HOME": str(tmp_path),
        "DUNNING_DATABASE_URL": db_url,
        "DUNNING_REDIS_URL": redis_server.url,
        "DUNNING_LINK_SECRET": "x",
        "DUNNING_INGEST_SECRET": "ingest-secret",
    }
    runtime = build_runtime(load_settings(env), tuning=Tuning(worker_dead_after_s=10))
    upgrade(runtime.engine)
    yield runtime
    runtime.close()


def scrape(rt: Runtime, client: redis.Redis) -> dict[str, Any]:
    """The exposition text parsed back, by family name."""
    from prometheus_client import generate_latest

    text = generate_latest(registry_for(rt, client)).decode()
    return {f.name: f for f in text_string_to_metric_families(text)}


def samples(family: Any) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    return {(s.name, tuple(sorted(s.labels.items()))): s.value for s in family.samples}


def _case(n: int, status: str, currency: str, recovered: int) -> Case:
    now = wall_now()
    return Case(
        invoice_id=f"in_{n}",
        subscription_id=f"sub_{n}",
        customer_id=f"cus_{n}",
        plan="pro",
        amount_minor=4900,
        currency=currency,
        status=status,
        decline_code="insufficient_funds",
        first_decline_code="insufficient_funds",
        has_payment_method=True,
        opened_at=now,
        recovered_minor=recovered,
        policy_version="v1",
    )


def test_scrape_time_gauges_and_redis_counters(rt: Runtime, client: redis.Redis) -> None:
    with transaction(rt.sessions) as s:
        s.add_all(
            [
                _case(1, "open", "EUR", 0),
                _case(2, "recovered", "EUR", 4900),
                _case(3, "recovered", "USD", 900),
            ]
        )
        now = rt.clock.now()
        s.add(
            Job(
                key="retry:test",
                kind="retry",
                queue="dunning",
                status="pending",
                due_at=now - timedelta(seconds=90),
                created_at=now,
            )
        )
        beat = wall_now()
        s.add(Worker(id="w-alive", host="h", pid=1, started_at=beat, heartbeat_at=beat))
        old = beat - timedelta(seconds=60)
        s.add(Worker(id="w-dead", host="h", pid=2, started_at=old, heartbeat_at=old))

    # The billing client counts each request: two answered, two refused by injected 503s.
    with SandboxServer(secret=SECRET, seed=1) as sandbox:
        sandbox.state.add_invoice(
            "in_ok",
            subscription_id="sub_ok",
            customer_id="cus_ok",
            amount_minor=100,
            currency="EUR",
            decline_code=None,
        )
        billing = HttpBillingClient(
            sandbox.url,
            SECRET,
            attempts=3,
            backoff_initial_s=0.001,
            backoff_max_s=0.01,
            backoff_jitter_s=0.001,
            observer=telemetry.billing_call,
        )
        with billing:
            assert billing.pay_invoice("in_ok", "key-1").outcome is PayOutcome.SUCCEEDED
            sandbox.state.queue_faults("error", "error")
            assert billing.pay_invoice("in_ok", "key-2").outcome is PayOutcome.SUCCEEDED

    # Ingest refusals, counted by reason.
    with TestClient(create_app(rt, broker=None), base_url="http://127.0.0.1") as http:
        assert http.post("/events", content=b"{}", headers={SIGNATURE_HEADER: "t=1,v1=00"}).status_code == 401
        assert http.post("/events", content=b"x" * 300_000).status_code == 413
    telemetry.inc(telemetry.EMAIL_DELIVERIES, "dunning_reminder", "transient_failure")

    got = scrape(rt, client)
    lag = got["dunning_scheduler_lag_seconds"].samples[0].value
    assert 90 <= lag < 3600
    assert samples(got["dunning_cases"])[("dunning_cases", (("status", "recovered"),))] == 2
    recovered = samples(got["dunning_recovered_minor"])
    assert recovered[("dunning_recovered_minor", (("currency", "EUR"),))] == 4900
    assert recovered[("dunning_recovered_minor", (("currency", "USD"),))] == 900
    workers = samples(got["dunning_workers"])
    assert workers[("dunning_workers", (("state", "alive"),))] == 1
    assert workers[("dunning_workers", (("state", "dead"),))] == 1
    ages = {s.labels["queue"] for s in got["dunning_queue_oldest_message_age_seconds"].samples}
    assert ages == {"billing_events", "dunning", "mail"}

    latency = samples(got["dunning_billing_request_seconds"])
    op = (("operation", "pay_invoice"),)
    assert latency[("dunning_billing_request_seconds_count", op)] == 4
    assert latency[("dunning_billing_request_seconds_bucket", (("le", "+Inf"), *op))] == 4
    errors = samples(got["dunning_billing_errors"])
    assert errors[("dunning_billing_errors_total", (("error", "server_error"), *op))] == 2
    refusals = samples(got["dunning_ingest_refusals"])
    assert refusals[("dunning_ingest_refusals_total", (("reason", "bad_signature"),))] == 1
    assert refusals[("dunning_ingest_refusals_total", (("reason", "too_large"),))] == 1
    emails = samples(got["dunning_email_deliveries"])
    assert (
        emails[
            (
                "dunning_email_deliveries_total",
                (("kind", "dunning_reminder"), ("outcome", "transient_failure")),
            )
        ]
        == 1
    )


def test_queue_age_is_the_head_of_the_ready_list(client: redis.Redis) -> None:
    ns = "agetest"
    now_ms = 1_800_000_000_000
    body = {"message_timestamp": now_ms - 120_000, "options": {}}
    delayed = {"message_timestamp": now_ms - 900_000, "options": {"eta": now_ms - 30_000}}
    try:
        client.rpush(f"{ns}:dunning", "m1", "m2")
        client.hset(f"{ns}:dunning.msgs", mapping={"m1": json.dumps(body), "m2": "{}"})
        client.rpush(f"{ns}:mail", "d1")
        client.hset(f"{ns}:mail.msgs", "d1", json.dumps(delayed))
        ages = oldest_ready_ages(client, now_ms, namespace=ns)
    finally:
        for key in client.scan_iter(f"{ns}:*"):
            client.delete(key)
    assert ages == {"billing_events": 0.0, "dunning": 120.0, "mail": 30.0}


def _exported(rt: Runtime, client: redis.Redis) -> set[str]:
    """Every sample name the collector can export (counters' _total, histograms' series)."""
    names: set[str] = set()
    for family in registry_for(rt, client).collect():
        if family.type == "counter":
            names.add(family.name + "_total")
        elif family.type == "histogram":
            names |= {family.name + suffix for suffix in ("_bucket", "_count", "_sum")}
        else:
            names.add(family.name)
    return names


@pytest.mark.parametrize("db_url", ["sqlite"], indirect=True)
def test_alerts_and_dashboard_reference_exported_metrics_only(rt: Runtime, client: redis.Redis) -> None:
    exported = _exported(rt, client)
    alerts = (ROOT / "deploy/prometheus/alerts.yml").read_text()
    dashboard = json.loads((ROOT / "deploy/grafana/dunning.json").read_text())
    exprs = [t["expr"] for p in dashboard["panels"] for t in p["targets"]]
    for source, text in (("alerts.yml", alerts), ("dunning.json", "\n".join(exprs))):
        used = set(re.findall(r"\bdunning_[a-z_]+\b", text))
        assert used, source
        assert used <= exported, (source, sorted(used - exported))
    for needed in (
        "dunning_queue_oldest_message_age_seconds",
        "dunning_dead_letters",
        "dunning_scheduler_lag_seconds",
        "dunning_email_deliveries_total",
        "dunning_billing_errors_total",
    ):
        assert needed in alerts, needed


def test_a_real_flow_counts_its_billing_calls_and_emails(world: Any) -> None:
    """Workers (the session's, which install the broker's Redis as the metrics store) count as they go."""
    h = world
    assert telemetry.installed() is not None, "setup_broker installs the metrics store"
    h.customer()
    h.fail(code="insufficient_funds", succeed_on_attempt=0)
    h.settle()
    assert h.notices() == ["payment_failed"]
    h.advance(timedelta(days=4))  # the first scheduled retry: a billing call
    pay_calls = len(h.pay_calls())
    assert pay_calls >= 1
    families = {f.name: f for f in telemetry.collect(h.broker.client)}
    emails = samples(families["dunning_email_deliveries"])
    sent = {dict(k[1])["kind"]: v for k, v in emails.items() if dict(k[1])["outcome"] == "sent"}
    assert sent.get("payment_failed") == 1
    latency = samples(families["dunning_billing_request_seconds"])
    requests = latency[("dunning_billing_request_seconds_count", (("operation", "pay_invoice"),))]
    assert requests == pay_calls  # the sandbox saw each one (no faults injected)


def test_counts_held_by_a_mail_batch_are_written_once_at_its_end(client: redis.Redis) -> None:
    key = telemetry.PREFIX + telemetry.EMAIL_DELIVERIES
    with telemetry.held():
        for _ in range(3):
            telemetry.inc(telemetry.EMAIL_DELIVERIES, "payment_failed", "sent")
        telemetry.inc(telemetry.EMAIL_DELIVERIES, "payment_failed", "skipped")
        with telemetry.held():  # nested: the outer one writes
            telemetry.inc(telemetry.EMAIL_DELIVERIES, "payment_failed", "sent")
        assert client.hgetall(key) == {}  # nothing yet
    assert {k.decode(): int(v) for k, v in client.hgetall(key).items()} == {
        '["payment_failed","sent"]': 4,
        '["payment_failed","skipped"]': 1,
    }
    telemetry.inc(telemetry.EMAIL_DELIVERIES, "payment_failed", "sent")  # outside: written at once
    assert int(client.hget(key, '["payment_failed","sent"]') or 0) == 5
