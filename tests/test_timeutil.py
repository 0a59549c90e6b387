"""WHEN parsing (ISO 8601 or +30m/+2h/+3d) and how time left is said (bot/timeutil.py)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from zoneinfo import ZoneInfo

import pytest

from bot.timeutil import BadTime, format_utc, humanize, iso_utc, parse_when, time_left

NOW = datetime(2026, 3, 1, 9, 30, tzinfo=UTC)
BRUSSELS = ZoneInfo("Europe/Brussels")


def when(text: str, zone: ZoneInfo = BRUSSELS) -> datetime:
    return parse_when(text, now=NOW, zone=zone)


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("2026-12-01T12:00+01:00", datetime(2026, 12, 1, 11, 0, tzinfo=UTC)),
        ("2026-12-01T12:00:00-05:00", datetime(2026, 12, 1, 17, 0, tzinfo=UTC)),
        ("2026-12-01T12:00Z", datetime(2026, 12, 1, 12, 0, tzinfo=UTC)),
        ("2026-12-01T12:00:00Z", datetime(2026, 12, 1, 12, 0, tzinfo=UTC)),
        ("2026-12-01T12:00:00+00:00", datetime(2026, 12, 1, 12, 0, tzinfo=UTC)),
        # without an offset: read in the zone given (Brussels: CET in winter, CEST in summer)
        ("2026-12-01T12:00", datetime(2026, 12, 1, 11, 0, tzinfo=UTC)),
        ("2026-07-01T12:00:00", datetime(2026, 7, 1, 10, 0, tzinfo=UTC)),
        ("2026-07-01 12:00", datetime(2026, 7, 1, 10, 0, tzinfo=UTC)),
        ("  2026-07-01T12:00  ", datetime(2026, 7, 1, 10, 0, tzinfo=UTC)),
        ("2026-07-01", datetime(2026, 6, 30, 22, 0, tzinfo=UTC)),
    ],
)
def test_iso_8601(text: str, expected: datetime) -> None:
    result = when(text)
    assert result == expected
    assert result.utcoffset() == timedelta(0)


def test_zone_matters_only_without_offset() -> None:
    assert when("2026-07-01T12:00", ZoneInfo("UTC")) == datetime(2026, 7, 1, 12, tzinfo=UTC)
    assert when("2026-07-01T12:00", ZoneInfo("Asia/Tokyo")) == datetime(2026, 7, 1, 3, tzinfo=UTC)
    tokyo = when("2026-07-01T12:00+02:00", ZoneInfo("Asia/Tokyo"))
    assert tokyo == when("2026-07-01T12:00+02:00", ZoneInfo("UTC"))


@pytest.mark.parametrize(
    ("text", "delta"),
    [
        ("+30m", timedelta(minutes=30)),
        ("+2h", timedelta(hours=2)),
        ("+3d", timedelta(days=3)),
        ("+45s", timedelta(seconds=45)),
        ("+90m", timedelta(minutes=90)),
        (" +2h ", timedelta(hours=2)),
        ("+ 2 h", timedelta(hours=2)),
    ],
)
def test_relative(text: str, delta: timedelta) -> None:
    assert when(text) == NOW + delta


@pytest.mark.parametrize(
    "text",
    [
        "",
        "tomorrow",
        "next friday",
        "+",
        "+3w",
        "-3d",
        "+3",
        "3d",
        "+d",
        "2026-13-01T12:00",
        "2026-12-01T25:00",
        "12/01/2026",
        "+3d6h",
    ],
)
def test_garbage_is_bad_time_with_a_helpful_message(text: str) -> None:
    with pytest.raises(BadTime) as caught:
        when(text)
    message = str(caught.value)
    assert repr(text) in message
    assert "ISO 8601" in message and "+30m" in message


@pytest.mark.parametrize(
    "text", ["+99999999999d", "+999999999d", "9999-12-31T23:00-05:00", "0001-01-01T00:00+01:00"]
)
def test_out_of_range_is_bad_time(text: str) -> None:
    with pytest.raises(BadTime):
        when(text)


# --- saying it --------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("delta", "said"),
    [
        (timedelta(days=2, hours=3), "2 days 3 hours"),
        (timedelta(days=2, hours=3, minutes=59, seconds=59), "2 days 3 hours"),
        (timedelta(days=1, hours=1), "1 day 1 hour"),
        (timedelta(hours=5, minutes=1), "5 hours 1 minute"),
        (timedelta(minutes=45), "45 minutes"),
        (timedelta(minutes=1), "1 minute"),
        (timedelta(days=3), "3 days"),
        (timedelta(seconds=59), "less than a minute"),
        (timedelta(0), "less than a minute"),
    ],
)
def test_humanize(delta: timedelta, said: str) -> None:
    assert humanize(delta) == said


def test_time_left_while_open() -> None:
    deadline = NOW + timedelta(days=2, hours=3)
    assert time_left(deadline, NOW) == "2 days 3 hours left (closes 2026-03-03 12:30 UTC)"
    soon = NOW + timedelta(seconds=20)
    assert time_left(soon, NOW).startswith("less than a minute left")


def test_time_left_after_the_deadline() -> None:
    deadline = datetime(2021, 11, 15, 12, 0, tzinfo=UTC)
    assert time_left(deadline, NOW) == "closed at 2021-11-15 12:00 UTC"
    assert time_left(NOW, NOW) == "closed at 2026-03-01 09:30 UTC"


def test_formats_are_utc() -> None:
    moment = datetime(2026, 7, 1, 12, 0, tzinfo=BRUSSELS)
    assert format_utc(moment) == "2026-07-01 10:00 UTC"
    assert iso_utc(moment) == "2026-07-01T10:00:00Z"
