"""Calling windows on the calendar (streams/limiter_calendar.py), daylight saving too."""

from __future__ import annotations

import datetime
import zoneinfo

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from streams.limiter_calendar import closes_at, is_open, next_open
from streams.topics import CallingWindow, from_iso, to_iso

NEW_YORK = "America/New_York"


def test_a_window_follows_the_wall_clock_across_daylight_saving():
    """09:00 New York is 14:00 UTC in winter and 13:00 UTC in summer."""
    window = CallingWindow.parse("09:00-17:00", "mon-sun", NEW_YORK)
    saturday = from_iso("2026-03-07T10:00:00Z")
    assert to_iso(next_open(window, NEW_YORK, saturday)) == "2026-03-07T14:00:00.000Z"
    sunday = from_iso("2026-03-08T10:00:00Z")  # clocks went forward at 07:00 UTC
    assert to_iso(next_open(window, NEW_YORK, sunday)) == "2026-03-08T13:00:00.000Z"
    assert to_iso(closes_at(window, NEW_YORK, sunday + 3 * 3600)) == (
        "2026-03-08T21:00:00.000Z"
    )


def test_an_opening_the_spring_forward_skips_opens_at_the_jump():
    window = CallingWindow.parse("02:30-04:00", "sun", NEW_YORK)
    before = from_iso("2026-03-08T05:00:00Z")  # 00:00 EST
    assert to_iso(next_open(window, NEW_YORK, before)) == "2026-03-08T07:00:00.000Z"
    assert not is_open(window, NEW_YORK, from_iso("2026-03-08T06:59:59Z"))


def test_the_hour_a_fall_back_repeats_is_open_both_times():
    window = CallingWindow.parse("01:00-02:00", "sun", NEW_YORK)
    first = from_iso("2026-11-01T05:30:00Z")  # 01:30 EDT
    second = from_iso("2026-11-01T06:30:00Z")  # 01:30 EST
    assert is_open(window, NEW_YORK, first) and is_open(window, NEW_YORK, second)
    assert to_iso(closes_at(window, NEW_YORK, first)) == "2026-11-01T07:00:00.000Z"


def test_days_and_a_window_running_through_midnight_on_consecutive_days():
    weekdays = CallingWindow.parse("09:00-17:00", "mon-fri", "Europe/Paris")
    friday_evening = from_iso("2026-03-27T18:00:00Z")
    assert to_iso(next_open(weekdays, "Europe/Paris", friday_evening)) == (
        "2026-03-30T07:00:00.000Z"  # Monday 09:00 CEST, the clocks moved on Sunday
    )
    always = CallingWindow.parse("00:00-24:00", "mon-sun", "UTC")  # closes a week on
    assert closes_at(always, "UTC", from_iso("2026-03-02T10:00:00Z")) >= from_iso(
        "2026-03-09T00:00:00Z"
    )


def _open_by_definition(window: CallingWindow, zone: str, at: float) -> bool:
    local = datetime.datetime.fromtimestamp(at, zoneinfo.ZoneInfo(zone))
    second = local.hour * 3600 + local.minute * 60 + local.second
    return local.weekday() in window.days and window.start <= second < window.end


@settings(max_examples=200, deadline=None)
@given(
    start=st.integers(0, 23 * 60),
    length=st.integers(1, 6 * 60),
    days=st.sets(st.integers(0, 6), min_size=1),
    zone=st.sampled_from([NEW_YORK, "Europe/Paris", "Asia/Kolkata", "UTC"]),
    at=st.integers(
        int(from_iso("2026-03-05T00:00:00Z")), int(from_iso("2026-03-12T00:00:00Z"))
    ),
)
def test_next_open_is_the_first_open_minute(start, length, days, zone, at):
    """Against the definition, minute by minute: nothing opens before next_open, and
    it is open then (whole minutes: every window here starts on one)."""
    window = CallingWindow(
        start * 60, min(86400, (start + length) * 60), tuple(sorted(days)), zone
    )
    opens = next_open(window, zone, at)
    assert _open_by_definition(window, zone, opens)
    probe = at
    while probe < opens:
        assert not _open_by_definition(window, zone, probe), to_iso(probe)
        probe = (probe // 60 + 1) * 60
    assert opens - at <= 8 * 86400


@pytest.mark.parametrize(
    "hours, days, zone, message",
    [
        ("9-17", "mon", "UTC", "time of day"),
        ("17:00-09:00", "mon", "UTC", "start before it ends"),
        ("09:00-17:00", "monday", "UTC", "days like mon-fri"),
        ("09:00-17:00", "mon", "Mars/Olympus", "unknown time zone"),
        ("09:00", "mon", "UTC", "START-END"),
    ],
)
def test_bad_windows_say_why(hours, days, zone, message):
    with pytest.raises(ValueError, match=message):
        CallingWindow.parse(hours, days, zone)
