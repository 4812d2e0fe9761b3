"""When an email may go out: never in the recipient's quiet hours."""

from __future__ import annotations

from datetime import UTC, datetime, time, timedelta
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError


def _zone(name: str | None) -> ZoneInfo:
    try:
        return ZoneInfo(name or "UTC")
    except (ZoneInfoNotFoundError, ValueError):
        return ZoneInfo("UTC")


def in_quiet_hours(local: time, quiet: tuple[time, time]) -> bool:
    """Whether a local wall time falls in the quiet window (which may span midnight)."""
    start, end = quiet
    if start <= end:
        return start <= local < end
    return local >= start or local < end


def deliver_at(now: datetime, timezone: str | None, quiet: tuple[time, time] | None) -> datetime:
    """The earliest time at or after ``now`` outside the recipient's quiet hours (UTC)."""
    if quiet is None:
        return now
    zone = _zone(timezone)
    local = now.astimezone(zone)
    if not in_quiet_hours(local.timetz().replace(tzinfo=None), quiet):
        return now
    end = quiet[1]
    candidate = local.replace(hour=end.hour, minute=end.minute, second=0, microsecond=0)
    if candidate <= local:
        candidate += timedelta(days=1)
    # Re-localise after adding a day so DST shifts keep the wall time at ``end``.
    candidate = candidate.replace(tzinfo=None)
    return candidate.replace(tzinfo=zone).astimezone(UTC)
