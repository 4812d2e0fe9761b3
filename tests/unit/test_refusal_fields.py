"""A refusal lists every invalid field: pydantic's errors and the cross-field date checks, once each."""

from __future__ import annotations

from typing import Any

import pytest

from dunning.contract import InvalidEvent, parse_event
from dunning.errors import describe_failure


def _subscription(**changes: Any) -> dict[str, Any]:
    sub = {
        "id": "sub_1",
        "customer_id": "cus_1",
        "plan": "pro",
        "status": "trialing",
        "amount_minor": 4900,
        "currency": "EUR",
        "interval": "month",
        "current_period_end": "2026-12-02T09:00:00Z",
        **changes,
    }
    return {
        "id": "evt_s",
        "type": "subscription.upserted",
        "occurred_at": "2026-11-02T09:00:00Z",
        "data": {"subscription": sub},
    }


def _refusal(raw: Any) -> InvalidEvent:
    with pytest.raises(InvalidEvent) as caught:
        parse_event(raw)
    return caught.value


def test_every_pydantic_error_is_listed_in_order_the_first_named_alone() -> None:
    exc = _refusal(_subscription(amount_minor="4900", currency="eur", interval="fortnight"))
    assert [f["path"] for f in exc.fields] == [
        "data.subscription.amount_minor",
        "data.subscription.currency",
        "data.subscription.interval",
    ]
    assert (exc.field, exc.reason) == (exc.fields[0]["path"], exc.fields[0]["reason"])
    assert not exc.malformed


def test_date_checks_are_listed_even_when_other_fields_are_wrong() -> None:
    exc = _refusal(
        _subscription(
            currency="XYZ",
            trial_end="2026-10-01T00:00:00Z",
            started_at="2027-01-01T00:00:00Z",
            temporary_upgrade={"plan": "max", "ends_at": "2026-01-01T00:00:00Z", "revert_to": "pro"},
        )
    )
    assert [f["path"] for f in exc.fields] == [
        "data.subscription.currency",
        "data.subscription.trial_end",
        "data.subscription.temporary_upgrade.ends_at",
        "data.subscription.started_at",
    ]


def test_an_invalid_date_is_reported_once_not_compared() -> None:
    exc = _refusal(_subscription(trial_end="yesterday"))
    assert [f["path"] for f in exc.fields] == ["data.subscription.trial_end"]
    assert "RFC 3339" in exc.reason


def test_a_valid_event_with_only_a_date_problem_names_it() -> None:
    exc = _refusal(_subscription(started_at="2027-01-01T00:00:00Z"))
    assert exc.field == "data.subscription.started_at"
    assert len(exc.fields) == 1


def test_bytes_that_are_not_json_are_malformed_json_that_is_not_an_event_is_not() -> None:
    assert _refusal(b'{"id": ').malformed
    assert _refusal(b"\xff").malformed
    assert not _refusal(b"[1]").malformed
    assert not _refusal(b"[" * 200 + b"]" * 200).malformed  # too deep: JSON over a limit, not bad syntax


def test_the_dead_letter_reason_lists_the_other_fields_after_the_first() -> None:
    exc = _refusal(_subscription(amount_minor=-1, currency="eur"))
    field, reason, kind = describe_failure(exc)
    assert field == "data.subscription.amount_minor"
    first, other = reason.split("\n")
    assert first == exc.reason
    assert other.startswith("+ data.subscription.currency: not an ISO-4217")
    assert kind == "InvalidEvent"
    # One problem: the reason alone, as before.
    single = _refusal(_subscription(currency="eur"))
    assert describe_failure(single)[1] == single.reason
