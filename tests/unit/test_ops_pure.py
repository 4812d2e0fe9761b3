"""The pure parts of the ops commands: Redis key parsing, message ages, percentiles, dead-letter filters."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta

from dunning.broker.unparked import decode_row, encode_row
from dunning.ops.broker_state import message_timestamp, parse_ack_key
from dunning.ops.dlq import DlqFilter
from dunning.ops.report_data import percentile, rate
from dunning.store.dead_letters import Parked

NOW = datetime(2026, 12, 6, 12, 0, tzinfo=UTC)


def test_ack_keys_name_the_worker_the_queue_and_whether_the_message_is_a_held_delayed_one() -> None:
    assert parse_ack_key("dramatiq:__acks__.w-1.dunning", "dramatiq") == ("w-1", "dunning", False)
    assert parse_ack_key("dramatiq:__acks__.w-1.dunning.DQ", "dramatiq") == ("w-1", "dunning", True)
    assert parse_ack_key("dramatiq:__acks__.w-1.billing_events", "dramatiq") == (
        "w-1",
        "billing_events",
        False,
    )
    assert parse_ack_key("dramatiq:__acks__.w-1", "dramatiq") is None
    assert parse_ack_key("dramatiq:dunning.DQ", "dramatiq") is None
    assert parse_ack_key("other:__acks__.w.q", "dramatiq") is None


def test_message_timestamp_is_read_from_a_message_and_nothing_else() -> None:
    assert message_timestamp(json.dumps({"message_timestamp": 1765000000123}).encode()) == 1765000000123
    assert message_timestamp(b"not json") is None
    assert message_timestamp(b"[1, 2]") is None
    assert message_timestamp(json.dumps({"message_timestamp": "soon"})) is None
    assert message_timestamp(json.dumps({"message_timestamp": True})) is None
    assert message_timestamp(None) is None


def test_percentiles_by_nearest_rank() -> None:
    assert percentile([], 0.5) is None
    assert percentile([5.0], 0.9) == 5.0
    values = [float(v) for v in range(1, 11)]  # 1..10
    assert percentile(values, 0.5) == 5.0
    assert percentile(values, 0.9) == 9.0
    assert percentile(list(reversed(values)), 1.0) == 10.0
    assert rate(1, 4) == 0.25 and rate(3, 0) is None


def _parked(ref: str, queue: str, what: str, reason: str, age: timedelta, source: str = "message") -> Parked:
    return Parked(ref, source, queue, what, None, reason, NOW - age, None)


def test_dead_letter_filters_combine_queue_actor_reason_and_age() -> None:
    items = [
        _parked("m1", "billing_events", "ingest_event", "amount_minor: must be positive", timedelta(hours=1)),
        _parked("m2", "mail", "deliver_email", "SMTP said no", timedelta(days=4)),
        _parked(
            "j3", "dunning", "retry_charge case-1", "parked after 6 failed runs", timedelta(days=1), "job"
        ),
    ]

    def refs(f: DlqFilter) -> list[str]:
        return [p.ref for p in items if f.keeps(p, NOW)]

    assert refs(DlqFilter()) == ["m1", "m2", "j3"]
    assert refs(DlqFilter(queue="mail")) == ["m2"]
    assert refs(DlqFilter(actor="ingest_event")) == ["m1"]
    # A parked job answers to its kind and to the actor that runs its queue.
    assert refs(DlqFilter(actor="retry_charge")) == ["j3"]
    assert refs(DlqFilter(actor="run_job")) == ["j3"]
    assert refs(DlqFilter(reason="SMTP")) == ["m2"]
    assert refs(DlqFilter(reason="smtp said")) == ["m2"]
    assert refs(DlqFilter(older_than=timedelta(hours=2))) == ["m2", "j3"]
    assert refs(DlqFilter(newer_than=timedelta(days=2))) == ["m1", "j3"]
    assert refs(DlqFilter(older_than=timedelta(hours=2), newer_than=timedelta(days=2))) == ["j3"]
    assert refs(DlqFilter(queue="mail", reason="amount")) == []


def test_a_dead_letter_row_survives_its_trip_through_redis() -> None:
    row = {"message_id": "abc", "queue": "mail", "reason": "x", "parked_at": NOW, "field": None}
    back = decode_row(encode_row(row).encode())
    assert back == row
