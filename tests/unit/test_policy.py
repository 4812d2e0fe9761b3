"""Policy as data: defaults, per-plan overrides, TOML loading, errors that name the field."""

from __future__ import annotations

from datetime import UTC, datetime, time, timedelta
from pathlib import Path

import pytest

from dunning.domain.clock import FixedClock, SystemClock, parse_duration
from dunning.domain.notices import deliver_at
from dunning.domain.policy import DEFAULT_POLICY, PolicyError, load_policy, policy_from_dict


def _error(data: dict) -> PolicyError:
    with pytest.raises(PolicyError) as info:
        policy_from_dict(data)
    return info.value


# ---------------------------------------------------------------------------
# Defaults and overrides
# ---------------------------------------------------------------------------


def test_builtin_defaults() -> None:
    p = DEFAULT_POLICY.default
    assert DEFAULT_POLICY.version == "builtin-1"
    assert p.retry_days == (1, 3, 5, 7, 12)
    assert p.max_retries == 5
    assert p.grace_days == 14
    assert p.grace == timedelta(days=14)
    assert p.reminder_days == (6,)
    assert p.final_notice_days_before == 2
    assert p.final_notice_before == timedelta(days=2)
    assert p.end_after_days == 7
    assert p.end_after == timedelta(days=7)
    assert p.end_action == "cancel"
    assert p.downgrade_plan is None
    assert p.downgrade_amount_minor is None
    assert p.min_retry_gap == timedelta(hours=20)
    assert p.card_update_retries == 3
    assert p.quiet_hours == (time(21, 0), time(8, 0))
    assert DEFAULT_POLICY.plans == {}


def test_empty_document_is_the_defaults() -> None:
    policy = policy_from_dict({})
    assert policy.version == "builtin"
    assert policy.default == DEFAULT_POLICY.default


def test_load_policy_none_is_builtin() -> None:
    assert load_policy(None) == DEFAULT_POLICY


def test_plan_overrides_merge_on_defaults() -> None:
    policy = policy_from_dict(
        {
            "version": "2026-11-a",
            "defaults": {"grace_days": 20, "retry_days": [2, 4, 8, 16], "min_retry_gap_hours": 12},
            "plans": {
                "pro": {"end_action": "downgrade", "downgrade_plan": "free", "downgrade_amount_minor": 0},
                "team": {"retry_days": [1, 2]},
            },
        }
    )
    assert policy.version == "2026-11-a"
    assert policy.default.grace_days == 20
    assert policy.default.end_action == "cancel"
    pro = policy.for_plan("pro")
    # Overridden keys come from the plan ...
    assert pro.end_action == "downgrade"
    assert pro.downgrade_plan == "free"
    assert pro.downgrade_amount_minor == 0
    # ... everything else from [defaults], not from the built-in defaults.
    assert pro.grace_days == 20
    assert pro.retry_days == (2, 4, 8, 16)
    assert pro.min_retry_gap == timedelta(hours=12)
    team = policy.for_plan("team")
    assert team.retry_days == (1, 2)
    assert team.grace_days == 20
    assert team.end_action == "cancel"


def test_unknown_plan_and_none_use_defaults() -> None:
    policy = policy_from_dict({"plans": {"pro": {"grace_days": 21}}})
    assert policy.for_plan("pro").grace_days == 21
    assert policy.for_plan("starter") is policy.default
    assert policy.for_plan(None) is policy.default
    assert policy.for_plan("") is policy.default


def test_integer_version_is_kept_as_text() -> None:
    assert policy_from_dict({"version": 7}).version == "7"


def test_empty_quiet_hours_disable_them() -> None:
    # Regression: _resolve used to index quiet_hours[0] and [1] and raise IndexError for [].
    assert policy_from_dict({"defaults": {"quiet_hours": []}}).default.quiet_hours is None


def test_empty_quiet_hours_in_a_plan_file(tmp_path: Path) -> None:
    path = tmp_path / "policy.toml"
    path.write_text("[plans.api]\nquiet_hours = []\n", encoding="utf-8")
    policy = load_policy(path)
    assert policy.for_plan("api").quiet_hours is None
    assert policy.default.quiet_hours == (time(21, 0), time(8, 0))


def test_empty_retry_days_is_allowed() -> None:
    assert policy_from_dict({"defaults": {"retry_days": []}}).default.max_retries == 0


# ---------------------------------------------------------------------------
# load_policy from a file
# ---------------------------------------------------------------------------


def test_load_policy_from_toml(tmp_path: Path) -> None:
    path = tmp_path / "policy.toml"
    path.write_text(
        """
version = "2026-11-a"

[defaults]
retry_days = [1, 2, 4, 8]
grace_days = 10
reminder_days = [3, 5]
final_notice_days_before = 3
end_after_days = 5
min_retry_gap_hours = 18
card_update_retries = 2
quiet_hours = ["22:00", "07:30"]

[plans.pro]
end_action = "downgrade"
downgrade_plan = "free"
downgrade_amount_minor = 0
""",
        encoding="utf-8",
    )
    policy = load_policy(path)
    assert policy.version == "2026-11-a"
    d = policy.default
    assert d.retry_days == (1, 2, 4, 8)
    assert d.grace == timedelta(days=10)
    assert d.reminder_days == (3, 5)
    assert d.final_notice_before == timedelta(days=3)
    assert d.end_after == timedelta(days=5)
    assert d.min_retry_gap == timedelta(hours=18)
    assert d.card_update_retries == 2
    assert d.quiet_hours == (time(22, 0), time(7, 30))
    pro = policy.for_plan("pro")
    assert (pro.end_action, pro.downgrade_plan, pro.downgrade_amount_minor) == ("downgrade", "free", 0)
    assert pro.retry_days == (1, 2, 4, 8)


def test_unreadable_file(tmp_path: Path) -> None:
    missing = tmp_path / "nope.toml"
    with pytest.raises(PolicyError) as info:
        load_policy(missing)
    assert info.value.field == "(file)"
    assert "cannot read" in info.value.reason
    assert str(missing) in info.value.reason


def test_directory_is_unreadable(tmp_path: Path) -> None:
    with pytest.raises(PolicyError) as info:
        load_policy(tmp_path)
    assert info.value.field == "(file)"


def test_invalid_toml(tmp_path: Path) -> None:
    path = tmp_path / "bad.toml"
    path.write_text("[defaults\nretry_days = [1, 2", encoding="utf-8")
    with pytest.raises(PolicyError) as info:
        load_policy(path)
    assert info.value.field == "(file)"
    assert "not valid TOML" in info.value.reason


def test_file_errors_name_the_field(tmp_path: Path) -> None:
    path = tmp_path / "policy.toml"
    path.write_text("[plans.pro]\nbogus = 1\n", encoding="utf-8")
    with pytest.raises(PolicyError) as info:
        load_policy(path)
    assert info.value.field == "plans.pro.bogus"


# ---------------------------------------------------------------------------
# Errors name the field
# ---------------------------------------------------------------------------


def test_policy_error_is_a_value_error_starting_with_the_field() -> None:
    err = _error({"defaults": {"retry_days": [1, 3, 3]}})
    assert isinstance(err, ValueError)
    assert str(err).startswith("defaults.retry_days: ")


@pytest.mark.parametrize("last", [13.5, 14, 20])
def test_last_retry_must_come_a_day_before_suspension(last: float) -> None:
    err = _error({"defaults": {"retry_days": [1, 3, last]}})
    assert err.field == "defaults.retry_days"
    assert "before access" in err.reason


def test_last_retry_one_day_before_suspension_is_fine() -> None:
    assert policy_from_dict({"defaults": {"retry_days": [1, 13]}}).default.retry_days == (1, 13)


def test_shorter_grace_revalidates_default_retry_days() -> None:
    # The built-in retry days end at day 12: a grace of 10 days would retry after the cut.
    err = _error({"plans": {"trial": {"grace_days": 10}}})
    assert err.field == "plans.trial.retry_days"


@pytest.mark.parametrize("days", [[1, 3, 3], [1, 5, 3], [7, 1]])
def test_retry_days_must_increase(days: list[int]) -> None:
    err = _error({"defaults": {"retry_days": days}})
    assert err.field == "defaults.retry_days"
    assert err.reason == "days must be strictly increasing"


def test_reminder_days_must_increase() -> None:
    err = _error({"defaults": {"reminder_days": [5, 4]}})
    assert err.field == "defaults.reminder_days"
    assert "increasing" in err.reason


def test_day_zero_is_refused() -> None:
    err = _error({"defaults": {"retry_days": [0, 3]}})
    assert err.field == "defaults.retry_days"
    assert "greater than 0" in err.reason


def test_downgrade_needs_a_plan() -> None:
    err = _error({"plans": {"pro": {"end_action": "downgrade"}}})
    assert err.field == "plans.pro.downgrade_plan"
    assert "downgrade" in err.reason


def test_unknown_plan_key() -> None:
    err = _error({"plans": {"pro": {"bogus": 1}}})
    assert err.field == "plans.pro.bogus"


def test_unknown_defaults_key() -> None:
    assert _error({"defaults": {"retry_dayz": [1]}}).field == "defaults.retry_dayz"


@pytest.mark.parametrize(
    ("data", "field"),
    [
        ({"defaults": {"grace_days": "two weeks"}}, "defaults.grace_days"),
        ({"defaults": {"card_update_retries": "three"}}, "defaults.card_update_retries"),
        ({"defaults": {"retry_days": [1, "a"]}}, "defaults.retry_days[1]"),
        ({"defaults": {"end_action": "delete"}}, "defaults.end_action"),
        ({"plans": {"pro": {"min_retry_gap_hours": "soon"}}}, "plans.pro.min_retry_gap_hours"),
        ({"defaults": []}, "defaults"),
        ({"plans": {"pro": 3}}, "plans.pro"),
        ({"plans": ["pro"]}, "plans"),
        ({"version": 1.5}, "version"),
    ],
)
def test_wrong_type(data: dict, field: str) -> None:
    assert _error(data).field == field


@pytest.mark.parametrize(
    ("data", "field"),
    [
        ({"defaults": {"grace_days": 0}}, "defaults.grace_days"),
        ({"defaults": {"grace_days": 121}}, "defaults.grace_days"),
        ({"defaults": {"card_update_retries": -1}}, "defaults.card_update_retries"),
        ({"defaults": {"downgrade_amount_minor": -5}}, "defaults.downgrade_amount_minor"),
        ({"defaults": {"final_notice_days_before": 14}}, "defaults.final_notice_days_before"),
        ({"defaults": {"reminder_days": [12]}}, "defaults.reminder_days"),
    ],
)
def test_out_of_range(data: dict, field: str) -> None:
    assert _error(data).field == field


@pytest.mark.parametrize(
    "quiet", [["21:00"], ["21:00", "08:00", "09:00"], ["25:00", "08:00"], ["21:00", "eight"]]
)
def test_bad_quiet_hours(quiet: list[str]) -> None:
    assert _error({"defaults": {"quiet_hours": quiet}}).field == "defaults.quiet_hours"


@pytest.mark.parametrize("quiet", [["21:00+02:00", "08:00+02:00"], ["21:00", "08:00Z"]])
def test_quiet_hours_with_utc_offset_are_refused(quiet: list[str]) -> None:
    # Regression: an offset was accepted, then deliver_at raised TypeError (aware vs naive times).
    err = _error({"defaults": {"quiet_hours": quiet}})
    assert err.field == "defaults.quiet_hours"
    assert "offset" in err.reason


def test_accepted_quiet_hours_work_in_deliver_at() -> None:
    quiet = policy_from_dict({"defaults": {"quiet_hours": ["22:15", "07:45"]}}).default.quiet_hours
    assert quiet == (time(22, 15), time(7, 45))
    now = datetime(2026, 1, 5, 23, 0, tzinfo=UTC)
    assert deliver_at(now, "UTC", quiet) == datetime(2026, 1, 6, 7, 45, tzinfo=UTC)


def test_unknown_top_level_key() -> None:
    err = _error({"version": "x", "defualts": {}})
    assert err.field == "defualts"
    assert "unknown key" in err.reason


def test_error_messages_do_not_depend_on_pydantic_prefixes() -> None:
    err = _error({"defaults": {"retry_days": [2, 1]}})
    assert not err.reason.startswith("Value error")


# ---------------------------------------------------------------------------
# Durations and clocks
# ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("3d", timedelta(days=3)),
        ("6h", timedelta(hours=6)),
        ("1d12h", timedelta(days=1, hours=12)),
        ("90s", timedelta(seconds=90)),
        ("15m", timedelta(minutes=15)),
        ("2w", timedelta(weeks=2)),
        ("1.5h", timedelta(minutes=90)),
        (" 1D 2H ", timedelta(days=1, hours=2)),
        ("0s", timedelta(0)),
    ],
)
def test_parse_duration(text: str, expected: timedelta) -> None:
    assert parse_duration(text) == expected


@pytest.mark.parametrize("text", ["", "3", "d", "3x", "3d-", "-3d", "3 days", "abc", "1d 2", "h6"])
def test_parse_duration_rejects(text: str) -> None:
    with pytest.raises(ValueError, match="invalid duration"):
        parse_duration(text)


def test_fixed_clock_moves_only_when_told() -> None:
    start = datetime(2026, 3, 2, 10, 0, tzinfo=UTC)
    clock = FixedClock(start)
    assert clock.now() == start
    assert clock.now() == start
    assert clock.advance(timedelta(hours=5)) == start + timedelta(hours=5)
    assert clock.now() == start + timedelta(hours=5)


def test_system_clock_is_aware_utc() -> None:
    now = SystemClock().now()
    assert now.utcoffset() == timedelta(0)
