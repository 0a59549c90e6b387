"""Deadlines: parsing WHEN, and saying how long is left the way people say it."""

from __future__ import annotations

import re
from datetime import UTC, datetime, timedelta, tzinfo

from bot.config import parse_duration

_RELATIVE = re.compile(r"^\+\s*(\d+\s*[smhd])$")


class BadTime(ValueError):
    """WHEN could not be read; the message says what was expected."""


def parse_when(text: str, *, now: datetime, zone: tzinfo) -> datetime:
    """ISO 8601 (read in `zone` when it has no offset) or relative: +30m, +2h, +3d."""
    try:
        return _parse_when(text, now=now, zone=zone)
    except OverflowError:
        raise BadTime(f"{text!r} is out of range for a deadline") from None


def _parse_when(text: str, *, now: datetime, zone: tzinfo) -> datetime:
    value = text.strip()
    relative = _RELATIVE.match(value)
    if relative:
        return now + parse_duration(relative.group(1))
    try:
        moment = datetime.fromisoformat(
            value.replace("Z", "+00:00") if value.endswith("Z") else value
        )
    except ValueError:
        raise BadTime(
            f"cannot read {text!r} as a time: use ISO 8601 (2026-12-01T12:00, "
            "2026-12-01T12:00+01:00) or +30m, +2h, +3d"
        ) from None
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=zone)
    return moment.astimezone(UTC)


def format_utc(moment: datetime) -> str:
    return moment.astimezone(UTC).strftime("%Y-%m-%d %H:%M UTC")


def iso_utc(moment: datetime) -> str:
    return moment.astimezone(UTC).isoformat().replace("+00:00", "Z")


def humanize(delta: timedelta) -> str:
    """'2 days 3 hours', '45 minutes', 'less than a minute' (two largest units)."""
    seconds = int(delta.total_seconds())
    if seconds < 60:
        return "less than a minute"
    units = [("day", 86400), ("hour", 3600), ("minute", 60)]
    parts: list[str] = []
    for name, size in units:
        count, seconds = divmod(seconds, size)
        if count:
            parts.append(f"{count} {name}{'' if count == 1 else 's'}")
        if len(parts) == 2:
            break
    return " ".join(parts)


def time_left(deadline: datetime, now: datetime) -> str:
    if deadline <= now:
        return f"closed at {format_utc(deadline)}"
    return f"{humanize(deadline - now)} left (closes {format_utc(deadline)})"
