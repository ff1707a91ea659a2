"""The worker's own account of handled offsets (streams/shell/progress.py)."""

from __future__ import annotations

from streams.shell.progress import HandledOffsets

KEY = ("leads.requests", 2)


def test_a_record_beyond_the_handled_offset_reveals_the_skipped_range():
    handled = HandledOffsets()
    assert handled.needs_start(KEY, generation=1)
    handled.start(KEY, 1, committed=10)
    assert handled.missing(KEY, 10) is None
    handled.handled(KEY, 10)
    assert handled.missing(KEY, 11) is None
    assert handled.missing(KEY, 14) == (11, 14)
    assert handled.missing(KEY, 5) is None, "a redelivery is not a gap"


def test_commits_are_capped_and_what_faust_wanted_beyond_is_found_on_a_tick():
    handled = HandledOffsets()
    handled.start(KEY, 1, committed=10)
    handled.handled(KEY, 10)
    other = ("calls.status", 2)
    assert handled.cap({KEY: 15, other: 3}) == {KEY: 11}, "no start: not committed"
    assert handled.unrevealed(partition=2) == [(KEY, 11, 15)]
    assert handled.unrevealed(partition=1) == []
    handled.absent_below(KEY, 15)  # the range was read again and handled
    assert handled.unrevealed(partition=2) == []
    assert handled.cap({KEY: 15}) == {KEY: 15}


def test_every_rebalance_starts_again_at_the_committed_offset():
    handled = HandledOffsets()
    handled.start(KEY, 1, committed=10)
    handled.handled(KEY, 20)
    assert not handled.needs_start(KEY, 1)
    assert handled.needs_start(KEY, 2)
    handled.start(KEY, 2, committed=12)
    assert handled.cap({KEY: 30}) == {KEY: 12}


def test_records_beyond_a_standing_still_offset_are_found_after_a_while():
    handled = HandledOffsets()
    handled.start(KEY, 1, committed=10)
    assert handled.stalled(KEY, end=10, now=0, after=5, most=100) is None, "nothing beyond"
    assert handled.stalled(KEY, end=14, now=1, after=5, most=100) is None, "watch starts"
    assert handled.stalled(KEY, end=14, now=5.9, after=5, most=100) is None
    handled.handled(KEY, 10)  # the consumer delivers: not stalled
    assert handled.stalled(KEY, end=14, now=7, after=5, most=100) is None
    assert handled.stalled(KEY, end=14, now=11.9, after=5, most=100) is None
    assert handled.stalled(KEY, end=14, now=12, after=5, most=100) == (11, 14)
    assert handled.stalled(KEY, end=500, now=13, after=5, most=100) == (11, 111)
    handled.start(KEY, 2, committed=11)  # a rebalance: watch afresh
    assert handled.stalled(KEY, end=14, now=14, after=5, most=100) is None
    assert handled.stalled(KEY, end=14, now=18, after=5, most=100) is None
    assert handled.stalled(KEY, end=14, now=19, after=5, most=100) == (11, 14)
    assert handled.stalled(("calls.status", 2), 9, now=30, after=5, most=100) is None
