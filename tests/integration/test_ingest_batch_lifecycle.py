"""Group commit of lifecycle events: one batch gives the same jobs, timeline and outcomes as one at a time.

Two copies of the same customers (ids marked ``qa`` and ``qb``) get the same
events: copy ``qa`` one event per transaction (:func:`ingest`), copy ``qb`` all in
one group commit (:func:`ingest_many`), where ``subscription.upserted`` is applied
without a barrier and its subscription re-planned at the end of the group. The
rows of both copies must then be the same, ids aside. Nothing runs the jobs (no
worker, no scheduler) and the simulated clock stands still, so the rows are
exactly what ingest wrote.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import select
from tests.support.harness import START, Harness, harness

from dunning.contract import parse_event
from dunning.engine.ingest import ingest, ingest_many
from dunning.store.models import Job, Subscription, TimelineEntry

pytestmark = pytest.mark.integration

VISA_EXPIRING = {"present": True, "brand": "visa", "last4": "4242", "exp_month": 12, "exp_year": 2026}


@pytest.fixture
def quiet_world(
    db_url: str, redis_server: Any, smtp: Any, tmp_path: Path, dunning_broker: tuple[Any, Any]
) -> Iterator[Harness]:
    """A world without workers or scheduler: only what ingest writes."""
    broker, counter = dunning_broker
    with harness(
        db_url=db_url,
        redis_url=redis_server.url,
        smtp=smtp,
        home=tmp_path,
        broker=broker,
        counter=counter,
        start_workers=False,
    ) as h:
        yield h


def _iso(days: float = 0) -> str:
    return (START + timedelta(days=days)).isoformat()


def _customer(p: str, n: int, event: str) -> dict[str, Any]:
    return {
        "id": f"evt_{p}_{event}",
        "type": "customer.upserted",
        "occurred_at": _iso(),
        "data": {
            "customer": {
                "id": f"cus_{p}{n}",
                "email": f"cus_{p}{n}@example.com",
                "name": f"Customer {n}",
                "locale": "en",
                "timezone": "Europe/Paris",
            }
        },
    }


def _sub(p: str, n: int, event: str, *, at: float = 0, **fields: Any) -> dict[str, Any]:
    sub: dict[str, Any] = {
        "id": f"sub_{p}{n}",
        "customer_id": f"cus_{p}{n}",
        "plan": "pro",
        "status": "active",
        "amount_minor": 4900,
        "currency": "EUR",
        "interval": "month",
        "current_period_end": _iso(30),
    }
    sub.update(fields)
    return {
        "id": f"evt_{p}_{event}",
        "type": "subscription.upserted",
        "occurred_at": _iso(at),
        "data": {"subscription": sub},
    }


def _failed(p: str, n: int, event: str, invoice: str) -> dict[str, Any]:
    return {
        "id": f"evt_{p}_{event}",
        "type": "invoice.payment_failed",
        "occurred_at": _iso(),
        "data": {
            "invoice": {
                "id": f"in_{p}{invoice}",
                "subscription_id": f"sub_{p}{n}",
                "customer_id": f"cus_{p}{n}",
                "amount_minor": 4900,
                "currency": "EUR",
            },
            "decline_code": "insufficient_funds",
        },
    }


def _setup(p: str) -> list[dict[str, Any]]:
    """Four customers with a monthly subscription each; the first two already have notices planned."""
    events: list[dict[str, Any]] = []
    for n in range(1, 5):
        events.append(_customer(p, n, f"c{n}"))
        events.append(_sub(p, n, f"s{n}", at=-1, payment_method=VISA_EXPIRING))
    return events


def _mixed(p: str) -> list[dict[str, Any]]:
    """Changes that plan, move and cancel notices, a failure, a stale event, a redelivery."""
    trial = {"status": "trialing", "trial_end": _iso(10), "current_period_end": _iso(10)}
    upgrade = {"plan": "max", "ends_at": _iso(8), "revert_to": "pro"}
    return [
        _sub(p, 1, "u1", interval="year", amount_minor=49000, current_period_end=_iso(40)),
        _sub(p, 2, "u2", **trial),
        _failed(p, 3, "f3", "3"),  # a case for sub 3, then an upsert of it: a barrier
        _sub(p, 3, "u3", temporary_upgrade=upgrade, payment_method=VISA_EXPIRING),
        _failed(p, 1, "f1", "1"),  # sub 1 waits to be re-planned: the failure runs a barrier
        _sub(p, 2, "u2b", **{**trial, "trial_end": _iso(12), "current_period_end": _iso(12)}),
        _sub(p, 4, "u4old", at=-2),  # older than what is stored: stale
        _sub(p, 4, "u4", cancel_at_period_end=True, payment_method={"present": False}),
        _customer(p, 4, "c4b"),  # a barrier event between upserts
        _sub(p, 2, "u2"),  # a redelivery inside the batch
        _sub(p, 1, "u1c", at=0.001, status="canceled", interval="year", amount_minor=49000),
    ]


def _unprefixed(value: Any, p: str) -> Any:
    return str(value).replace(p, "Q") if value is not None else None


def _snapshot(h: Harness, p: str) -> dict[str, Any]:
    """Jobs, timeline and subscriptions of copy ``p``, with the copy's mark taken out of ids."""
    with h.rt.sessions() as s:
        jobs = sorted(
            (
                # A case's jobs name it by id, which differs between the copies.
                re.sub(r":\d+:", ":N:", _unprefixed(j.key, p)) if j.case_id else _unprefixed(j.key, p),
                j.kind,
                _unprefixed(j.subject, p),
                j.status,
                j.due_at,
                _unprefixed(j.payload, p),
            )
            for j in s.execute(select(Job)).scalars()
            if (j.subject or "").startswith(f"sub_{p}") or f"_{p}" in j.key
        )
        timeline: dict[str, list[tuple[Any, ...]]] = {}
        for e in s.execute(select(TimelineEntry).order_by(TimelineEntry.id)).scalars():
            if e.subscription_id.startswith(f"sub_{p}"):
                line = (e.at, e.kind, _unprefixed(e.detail, p))
                timeline.setdefault(_unprefixed(e.subscription_id, p), []).append(line)
        subs = sorted(
            (_unprefixed(r.id, p), r.status, r.plan, r.source_at, r.upgrade_plan, r.upgrade_seen_at)
            for r in s.execute(select(Subscription)).scalars()
            if r.id.startswith(f"sub_{p}")
        )
    return {"jobs": jobs, "timeline": timeline, "subscriptions": subs}


def test_a_group_of_lifecycle_events_matches_one_at_a_time(quiet_world: Harness) -> None:
    h = quiet_world
    for p in ("qa", "qb"):
        for raw in _setup(p):
            assert ingest(h.rt, parse_event(raw))[0] in {"customer", "subscription"}
    h.rt.clock.set(START + timedelta(hours=1))  # type: ignore[attr-defined]
    alone = [ingest(h.rt, parse_event(raw))[0] for raw in _mixed("qa")]
    grouped = ingest_many(h.rt, [parse_event(raw) for raw in _mixed("qb")])
    assert all(isinstance(r, tuple) for r in grouped), grouped
    assert [r[0] for r in grouped] == [  # type: ignore[index]
        "subscription",
        "subscription",
        "case_opened",
        "subscription",
        "case_opened",
        "subscription",
        "stale",
        "subscription",
        "customer",
        "duplicate",
        "subscription",
    ]
    # One at a time, the redelivery is a duplicate too.
    assert alone == [r[0] for r in grouped]  # type: ignore[index]
    a, b = _snapshot(h, "qa"), _snapshot(h, "qb")
    assert a["jobs"], "the events planned notice jobs"
    assert any("planned" in line[2] for lines in a["timeline"].values() for line in lines)
    assert any("canceled after subscription.upserted" in line[2] for line in a["timeline"]["sub_Q2"])
    assert a == b
