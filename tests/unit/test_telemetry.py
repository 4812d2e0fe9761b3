"""Metrics recording never fails the work: an unreachable Redis drops samples and pauses recording."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
import redis
from tests.support.servers import free_port

from dunning import telemetry


@pytest.fixture
def unreachable() -> Iterator[None]:
    before = telemetry.installed()
    telemetry.install(redis.Redis(host="127.0.0.1", port=free_port()))  # nothing listens there
    yield
    telemetry.install(before)


def test_an_unreachable_redis_drops_the_sample_and_pauses_recording(unreachable: None) -> None:
    assert telemetry._writer() is not None
    telemetry.inc(telemetry.INGEST_REFUSALS, "bad_signature")  # no exception
    assert telemetry._writer() is None, "paused after the failure"
    telemetry.billing_call("pay_invoice", 0.2, "transport")  # dropped without trying


def test_nothing_is_recorded_before_install() -> None:
    before = telemetry.installed()
    telemetry.install(None)
    try:
        assert telemetry._writer() is None
        telemetry.observe(telemetry.BILLING_SECONDS, 0.1, "pay_invoice")
    finally:
        telemetry.install(before)


def test_label_values_are_cut_to_bound_the_series() -> None:
    assert telemetry._field(("x" * 100, "ok")) == '["' + "x" * telemetry.MAX_LABEL + '","ok"]'
