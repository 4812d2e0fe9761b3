"""A ``dunning serve`` process with some data, for the dashboard tests (HTTP and browser).

The data goes in through the product's own ingest (a customer, an annual
subscription with renewal notices ahead, a failed payment that opens a case
and writes the timeline, a recovered case for the chart) and its own
dead-letter store (a parked, re-sendable event message).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx

from dunning.contract import parse_event
from dunning.engine.ingest import ingest
from dunning.runtime import Runtime, build_runtime
from dunning.settings import load_settings
from dunning.store.db import transaction
from dunning.store.dead_letters import park
from dunning.store.migrate import upgrade
from dunning.store.models import Case, DeadLetter
from tests.support.servers import free_port

TOKEN = "dashboard-token-0123456789abcdef"


def _iso(at: datetime) -> str:
    return at.astimezone(UTC).isoformat().replace("+00:00", "Z")


def _event(rt: Runtime, n: int, type_: str, data: dict[str, Any]) -> None:
    envelope = {"id": f"evt_dash_{n}", "type": type_, "occurred_at": _iso(rt.clock.now()), "data": data}
    ingest(rt, parse_event(envelope))


def seed(rt: Runtime) -> dict[str, Any]:
    """Customer cus_dash (sub_dash, annual, renewing in 45 days), an open case, a recovered one, a dead letter."""
    now = rt.clock.now()
    _event(
        rt,
        1,
        "customer.upserted",
        {
            "customer": {
                "id": "cus_dash",
                "email": "dash@example.com",
                "name": "Dana Dash",
                "locale": "en",
                "timezone": "UTC",
            }
        },
    )
    card = {"present": True, "brand": "visa", "last4": "4242", "exp_month": 12, "exp_year": 2040}
    _event(
        rt,
        2,
        "subscription.upserted",
        {
            "subscription": {
                "id": "sub_dash",
                "customer_id": "cus_dash",
                "plan": "pro",
                "status": "active",
                "amount_minor": 49000,
                "currency": "EUR",
                "interval": "year",
                "current_period_end": _iso(now + timedelta(days=45)),
                "payment_method": card,
            }
        },
    )
    _event(
        rt,
        3,
        "invoice.payment_failed",
        {
            "invoice": {
                "id": "in_dash",
                "subscription_id": "sub_dash",
                "customer_id": "cus_dash",
                "amount_minor": 49000,
                "currency": "EUR",
            },
            "decline_code": "insufficient_funds",
        },
    )
    with transaction(rt.sessions) as s:
        # A case recovered yesterday, for the recovery chart (as a worker's retry would close it).
        s.add(
            Case(
                invoice_id="in_done",
                subscription_id="sub_other",
                customer_id="cus_other",
                plan="pro",
                amount_minor=2500,
                currency="EUR",
                status="recovered",
                decline_code="insufficient_funds",
                first_decline_code="insufficient_funds",
                has_payment_method=True,
                opened_at=now - timedelta(days=3),
                closed_at=now - timedelta(days=1),
                outcome="retry",
                recovered_minor=2500,
                policy_version="test",
            )
        )
    message = {
        "queue_name": "billing_events",
        "actor_name": "ingest_event",
        "args": [{"id": "evt_parked", "type": "customer.upserted"}],
        "kwargs": {},
        "options": {},
        "message_id": "0f0f0f0f-dash-dead-letter",
        "message_timestamp": int(time.time() * 1000),
    }
    park(
        rt,
        {
            "message_id": message["message_id"],
            "queue": "billing_events",
            "actor": "ingest_event",
            "payload": json.dumps(message),
            "field": "data.email",
            "reason": "missing",
            "error_type": "InvalidEvent",
            "parked_at": now,
        },
    )
    with rt.sessions() as s:
        dead = s.query(DeadLetter).filter_by(message_id=message["message_id"]).one()
        return {"dead_ref": f"m{dead.id}", "message_id": message["message_id"]}


@contextmanager
def serve(tmp_path: Path, db_url: str, redis_url: str, **extra: str) -> Iterator[tuple[str, dict[str, Any]]]:
    """Migrate and seed the database, start ``dunning serve`` on a free loopback port: ``(base URL, seeded)``."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("DUNNING_", "FORWARDED_ALLOW_IPS"))}
    env |= {
        "DUNNING_HOME": str(tmp_path),
        "DUNNING_DATABASE_URL": db_url,
        "DUNNING_REDIS_URL": redis_url,
        "DUNNING_LINK_SECRET": "dashboard-link-secret",
        **extra,
    }
    rt = build_runtime(load_settings(env))
    upgrade(rt.engine)
    seeded = seed(rt)
    rt.close()
    port = free_port()
    log_path = tmp_path / "serve.log"
    with log_path.open("ab") as log:
        proc = subprocess.Popen(
            [sys.executable, "-m", "dunning", "serve", "--host", "127.0.0.1", "--port", str(port)],
            env=env,
            stdout=log,
            stderr=subprocess.STDOUT,
        )
        base = f"http://127.0.0.1:{port}"
        try:
            deadline = time.monotonic() + 120  # a loaded CI machine starts Python slowly
            while True:
                assert proc.poll() is None, log_path.read_text()
                try:
                    if httpx.get(f"{base}/healthz", timeout=2).status_code == 200:
                        break
                except httpx.TransportError:
                    pass
                assert time.monotonic() < deadline, "dunning serve did not start"
                time.sleep(0.1)
            yield base, seeded
        finally:
            proc.terminate()
            proc.wait(15)
