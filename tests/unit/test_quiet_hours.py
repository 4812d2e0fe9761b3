"""Quiet hours: no email in the recipient's local 21:00-08:00 window (the default policy)."""

from __future__ import annotations

from datetime import UTC, datetime, time, timedelta
from zoneinfo import ZoneInfo

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from dunning.domain.notices import deliver_at, in_quiet_hours
from dunning.domain.policy import DEFAULT_POLICY

QUIET = DEFAULT_POLICY.default.quiet_hours


def utc(*args: int) -> datetime:
    return datetime(*args, tzinfo=UTC)


def local(zone: str, *args: int) -> datetime:
    return datetime(*args, tzinfo=ZoneInfo(zone))


def test_default_window_is_nine_pm_to_eight_am() -> None:
    assert (time(21, 0), time(8, 0)) == QUIET


@pytest.mark.parametrize("zone", ["America/New_York", "Asia/Tokyo", "Europe/Paris", "UTC"])
def test_daytime_is_kept(zone: str) -> None:
    now = local(zone, 2026, 1, 15, 14, 37).astimezone(UTC)
    assert deliver_at(now, zone, QUIET) == now


def test_three_am_new_york_waits_until_eight_the_same_day() -> None:
    now = utc(2026, 1, 15, 8, 0)  # 03:00 EST
    result = deliver_at(now, "America/New_York", QUIET)
    assert result == utc(2026, 1, 15, 13, 0)  # 08:00 EST
    assert result.astimezone(ZoneInfo("America/New_York")).hour == 8


def test_three_am_tokyo_waits_until_eight_the_same_local_day() -> None:
    now = utc(2026, 1, 14, 18, 0)  # 03:00 JST on the 15th
    assert deliver_at(now, "Asia/Tokyo", QUIET) == utc(2026, 1, 14, 23, 0)  # 08:00 JST on the 15th


def test_late_evening_waits_until_eight_the_next_day() -> None:
    now = local("America/New_York", 2026, 1, 15, 22, 30).astimezone(UTC)
    assert deliver_at(now, "America/New_York", QUIET) == local("America/New_York", 2026, 1, 16, 8, 0)
    assert deliver_at(now, "America/New_York", QUIET) == utc(2026, 1, 16, 13, 0)


def test_result_is_utc() -> None:
    result = deliver_at(utc(2026, 1, 15, 8, 0), "America/New_York", QUIET)
    assert result.tzinfo is UTC


def test_paris_spring_forward() -> None:
    # 2026-03-29 02:00 CET -> 03:00 CEST. 22:30 CET (UTC+1) the evening before ...
    now = local("Europe/Paris", 2026, 3, 28, 22, 30).astimezone(UTC)
    assert now == utc(2026, 3, 28, 21, 30)
    # ... goes out at 08:00 CEST (UTC+2), i.e. 06:00Z, not 07:00Z (24 h of UTC later).
    assert deliver_at(now, "Europe/Paris", QUIET) == utc(2026, 3, 29, 6, 0)


def test_paris_fall_back() -> None:
    # 2026-10-25 03:00 CEST -> 02:00 CET: 08:00 local is 07:00Z.
    now = local("Europe/Paris", 2026, 10, 24, 23, 0).astimezone(UTC)
    assert deliver_at(now, "Europe/Paris", QUIET) == utc(2026, 10, 25, 7, 0)


def test_paris_inside_the_dst_night() -> None:
    now = utc(2026, 3, 29, 0, 30)  # 01:30 CET, before the jump
    assert deliver_at(now, "Europe/Paris", QUIET) == utc(2026, 3, 29, 6, 0)


@pytest.mark.parametrize(
    ("wall", "quiet"),
    [((21, 0), True), ((20, 59), False), ((8, 0), False), ((7, 59), True), ((0, 0), True), ((12, 0), False)],
)
def test_window_boundaries(wall: tuple[int, int], quiet: bool) -> None:
    now = utc(2026, 1, 15, *wall)
    result = deliver_at(now, "UTC", QUIET)
    assert (result != now) is quiet
    assert in_quiet_hours(time(*wall), QUIET) is quiet


def test_start_of_window_waits_for_the_next_morning() -> None:
    assert deliver_at(utc(2026, 1, 15, 21, 0), "UTC", QUIET) == utc(2026, 1, 16, 8, 0)


def test_just_before_the_end_waits_the_minute() -> None:
    assert deliver_at(utc(2026, 1, 15, 7, 59, 30), "UTC", QUIET) == utc(2026, 1, 15, 8, 0)


@pytest.mark.parametrize("zone", ["Mars/Olympus_Mons", "not a zone", "", None, "../../etc/passwd"])
def test_unknown_timezone_falls_back_to_utc(zone: str | None) -> None:
    assert deliver_at(utc(2026, 1, 15, 3, 0), zone, QUIET) == utc(2026, 1, 15, 8, 0)
    assert deliver_at(utc(2026, 1, 15, 12, 0), zone, QUIET) == utc(2026, 1, 15, 12, 0)


def test_no_quiet_hours_returns_now() -> None:
    now = utc(2026, 1, 15, 3, 0)
    assert deliver_at(now, "America/New_York", None) is now


def test_window_not_spanning_midnight() -> None:
    lunch = (time(12, 0), time(14, 0))
    assert in_quiet_hours(time(13, 0), lunch)
    assert not in_quiet_hours(time(14, 0), lunch)
    assert not in_quiet_hours(time(23, 0), lunch)
    assert deliver_at(utc(2026, 1, 15, 13, 0), "UTC", lunch) == utc(2026, 1, 15, 14, 0)
    assert deliver_at(utc(2026, 1, 15, 11, 0), "UTC", lunch) == utc(2026, 1, 15, 11, 0)


def test_custom_window_with_minutes() -> None:
    quiet = (time(22, 15), time(7, 45))
    now = local("Asia/Tokyo", 2026, 6, 1, 23, 0).astimezone(UTC)
    assert deliver_at(now, "Asia/Tokyo", quiet) == local("Asia/Tokyo", 2026, 6, 2, 7, 45)


ZONES = ["UTC", "America/New_York", "Asia/Tokyo", "Europe/Paris", "Australia/Lord_Howe", "Asia/Kolkata"]


@settings(max_examples=300, deadline=None)
@given(
    now=st.datetimes(min_value=datetime(2020, 1, 1), max_value=datetime(2035, 1, 1), timezones=st.just(UTC)),
    zone=st.sampled_from(ZONES),
)
def test_delivery_is_never_early_never_quiet_and_within_a_day(now: datetime, zone: str) -> None:
    result = deliver_at(now, zone, QUIET)
    assert result >= now
    assert result - now <= timedelta(hours=12)  # the longest wait is from 21:00 to 08:00 (+1 h DST)
    wall = result.astimezone(ZoneInfo(zone)).time()
    assert not in_quiet_hours(wall, QUIET)
    if result != now:
        assert wall == time(8, 0)
