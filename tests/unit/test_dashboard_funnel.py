"""The dashboard's funnel, from the report's counts (pure)."""

from __future__ import annotations

from dunning.http.dashboard import _valid_ref
from dunning.http.dashboard_data import funnel


def test_the_funnel_splits_closed_cases_into_recovered_and_lost() -> None:
    rows = funnel(
        10,
        3,
        {"open": 2, "suspended": 1, "recovered": 4, "canceled": 3},
        {"retry": 2, "card_update": 1, "paid_elsewhere": 1, "canceled": 2, "downgraded": 1},
    )
    assert rows == [
        ("opened", 10),
        ("suspended at some point", 3),
        ("still open", 3),
        ("recovered", 4),
        ("lost or closed", 3),
    ]


def test_only_dlq_refs_reach_the_actions() -> None:
    assert _valid_ref("m12") and _valid_ref("j3")
    for bad in ("m", "x1", "m1a", "m-1", "j" + "9" * 30, "../m1", ""):
        assert not _valid_ref(bad), bad
