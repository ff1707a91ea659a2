"""Restore progress: replayed of total, rate and time left, logged at most every few
seconds, from samples of what is left to replay."""

from __future__ import annotations

from streams.shell.restore import RestoreFigures, RestoreProgress


def test_a_long_restore_logs_its_progress_every_few_seconds_and_its_end():
    progress = RestoreProgress(log_seconds=5.0)
    lines = [
        progress.sample(now, remaining)
        for now, remaining in [
            (100.0, 10_000),  # the restore begins
            (101.0, 9_000),
            (104.0, 6_000),
            (105.0, 5_000),  # 5 s in: first line
            (106.0, 4_000),
            (109.0, 1_000),
            (110.0, 500),  # 5 s after the first line
            (111.0, 0),
            (112.0, None),  # restored
        ]
    ]
    assert lines == [
        None,
        None,
        None,
        "restoring the table: 5,000 of 10,000 changelog records (50%), 1,000"
        " records/s, about 5 s left",
        None,
        None,
        "restoring the table: 9,500 of 10,000 changelog records (95%), 950 records/s,"
        " about 1 s left",
        None,
        "restored the table: 10,000 changelog records in 12.0 s",
    ]
    assert progress.figures is None


def test_figures_follow_the_restore_for_ready():
    progress = RestoreProgress()
    progress.sample(10.0, 400)
    assert progress.figures == RestoreFigures(0, 400, None, None)
    progress.sample(12.0, 100)
    assert progress.figures == RestoreFigures(300, 400, 150.0, 100 / 150)
    assert progress.figures.as_json() == {
        "replayed": 300,
        "total": 400,
        "records_per_second": 150.0,
        "seconds_left": 0.7,
    }


def test_records_written_during_the_restore_add_to_the_total():
    progress = RestoreProgress()
    progress.sample(0.0, 100)
    progress.sample(1.0, 50)
    progress.sample(2.0, 80)  # 30 more came in
    assert progress.figures is not None
    assert (progress.figures.replayed, progress.figures.total) == (50, 130)


def test_a_restore_with_nothing_to_replay_says_nothing_and_the_next_starts_afresh():
    progress = RestoreProgress()
    assert progress.sample(0.0, 0) is None
    assert progress.sample(1.0, None) is None
    progress.sample(50.0, 10)
    assert progress.figures == RestoreFigures(0, 10, None, None)
