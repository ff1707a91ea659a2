"""Calling windows on the calendar: whether one is open at an instant, when it next
opens, when it closes. Pure arithmetic over the tz database (zoneinfo), for the rules
(`streams/limiter_table.py`): no clock, the instant is always given.

A window is open on its days from `start` to `end`, in the wall-clock time of the zone
it is judged in, so daylight-saving changes move it with the clocks: a 09:00 opening is
09:00 local before and after the change. An opening inside the hour a spring-forward
skips opens at the jump; during the hour a fall-back repeats, both passes count.
"""

from __future__ import annotations

import datetime as _dt
import functools
import zoneinfo

from streams.topics import CallingWindow

#: Days looked ahead for the next opening: a window with at least one day opens within
#: a week, and one more day covers an opening earlier in today's weekday.
_DAYS_AHEAD = 8


@functools.lru_cache(maxsize=1024)
def _zone(name: str) -> zoneinfo.ZoneInfo:
    return zoneinfo.ZoneInfo(name)


def _local(at: float, zone: str) -> _dt.datetime:
    return _dt.datetime.fromtimestamp(at, _zone(zone))


def _second_of_day(moment: _dt.datetime) -> float:
    return (
        moment.hour * 3600 + moment.minute * 60 + moment.second + moment.microsecond / 1e6
    )


def _instant(day: _dt.date, second: int, zone: str) -> float:
    """The first instant at which the wall clock of `zone` shows `second` of `day` or
    later: that wall time itself, or, when a spring-forward skips it, the jump."""
    if second >= 86400:
        return _instant(day + _dt.timedelta(days=1), second - 86400, zone)
    wall = _dt.datetime.combine(day, _dt.time(0), tzinfo=_zone(zone)) + _dt.timedelta(
        seconds=second
    )  # aware arithmetic is wall-clock arithmetic
    at = wall.timestamp()
    if _wall(at, zone) == (day, second):
        return at
    # Skipped (fold 0 maps it past the jump): the jump is within the two hours before.
    low, high = at - 7200.0, at
    while high - low > 0.5:
        middle = (low + high) / 2
        if _wall(middle, zone) >= (day, second):
            high = middle
        else:
            low = middle
    return float(round(high))


def _wall(at: float, zone: str) -> tuple[_dt.date, float]:
    local = _local(at, zone)
    return local.date(), _second_of_day(local)


def is_open(window: CallingWindow, zone: str, at: float) -> bool:
    """Whether `window`, judged in `zone`, is open at instant `at`."""
    local = _local(at, zone)
    return local.weekday() in window.days and (
        window.start <= _second_of_day(local) < window.end
    )


def next_open(window: CallingWindow, zone: str, at: float) -> float:
    """The first instant at or after `at` when `window`, judged in `zone`, is open."""
    if is_open(window, zone, at):
        return at
    today = _local(at, zone).date()
    for ahead in range(_DAYS_AHEAD):
        day = today + _dt.timedelta(days=ahead)
        if day.weekday() not in window.days:
            continue
        opening = _instant(day, window.start, zone)
        if opening > at and is_open(window, zone, opening):
            return opening
    raise ValueError(f"calling window {window.describe()} never opens")


def closes_at(window: CallingWindow, zone: str, at: float) -> float:
    """When `window`, open at `at` in `zone`, closes: the end of today's hours, or of the
    following days' when they run on without a break (00:00-24:00 on consecutive days)."""
    day = _local(at, zone).date()
    for _ in range(7):
        following = day + _dt.timedelta(days=1)
        if window.end == 86400 and window.start == 0 and following.weekday() in window.days:
            day = following
            continue
        break
    return _instant(day, window.end, zone)
