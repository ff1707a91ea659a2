"""The lag evaluator (Burrow's rules over a window of samples), with hand-made windows.

No broker: samples are built here. The last tests run the CLI against a closed port.
"""

from __future__ import annotations

import json
import socket

import pytest
from rich.console import Console

from streams import cli
from streams.ops.formatting import format_age
from streams.ops.lag.model import (
    STAND_STILL_SECONDS,
    GroupSample,
    PartitionOffsets,
    Status,
    collect,
    evaluate,
    evaluate_partition,
    failures,
    project_groups,
)
from streams.ops.lag.view import render, to_json
from streams.settings import Settings

TOPIC = "leads.requests"


def sample(
    at: float,
    partitions: dict[int, tuple[int | None, int]],
    members: int = 1,
    group: str = "g",
    time_lag: float = 30.0,
    **extra,
) -> GroupSample:
    """partition -> (committed, end); time lag 0 when caught up, else `time_lag`."""
    offsets = []
    for partition, (committed, end) in partitions.items():
        lag = None if committed is None else end - committed
        offsets.append(
            PartitionOffsets(
                TOPIC,
                partition,
                committed,
                end,
                lag,
                None if lag is None else (time_lag if lag else 0.0),
            )
        )
    return GroupSample(
        group, at, "STABLE" if members else "EMPTY", members, tuple(offsets), **extra
    )


def window(
    *points: tuple[int | None, int], members: int = 1, step: float = 1.0, **extra
) -> list[GroupSample]:
    """One partition's (committed, end) per sample, `step` seconds apart."""
    return [
        sample(1000.0 + i * step, {0: point}, members, **extra)
        for i, point in enumerate(points)
    ]


def status(samples: list[GroupSample]) -> Status:
    return evaluate(samples).status


# -- OK ------------------------------------------------------------------------------


def test_caught_up_is_ok():
    result = evaluate(window((10, 10), (20, 20), (30, 30)))
    assert result.status == Status.OK and result.reason == "caught up"
    assert result.total_lag == 0 and result.max_time_lag == 0


def test_lag_zero_anywhere_in_the_window_is_ok_even_if_it_stands_still_now():
    # Burrow's first rule: a consumer that was caught up within the window is fine.
    assert (
        status(window((10, 10), (10, 12), (10, 14), (10, 16), (10, 18), (10, 20), step=2))
        == Status.OK
    )


def test_lag_being_worked_off_is_ok():
    assert (
        status(
            window(
                (0, 100), (30, 110), (60, 120), (90, 125), (110, 126), (120, 130), step=2
            )
        )
        == Status.OK
    )


def test_steady_lag_with_advancing_offsets_is_ok_not_warn():
    # Offsets advance as fast as records arrive: keeping up, not falling behind.
    assert (
        status(window((0, 5), (5, 10), (10, 15), (15, 20), (20, 25), (25, 30), step=2))
        == Status.OK
    )


def test_faust_between_two_commits_is_not_a_stall():
    # The worker commits every 2.8 s: two seconds of unchanged offsets prove nothing.
    result = evaluate(window((10, 12), (10, 13), (10, 14)))
    assert result.status == Status.OK and result.pending
    assert "too short" in result.partitions[0].reason


# -- WARN, STALL, STOP, REWIND, ERR --------------------------------------------------


def test_lag_growing_while_offsets_advance_is_warn():
    result = evaluate(
        window((0, 10), (5, 20), (10, 30), (15, 40), (20, 50), (25, 60), step=1.2)
    )
    assert result.status == Status.WARN
    assert "lag grew from 10 to 35" in result.reason


def test_lag_growing_with_a_dip_is_not_warn():
    assert (
        status(window((0, 10), (5, 20), (15, 22), (20, 40), (25, 50), (30, 60), step=1.2))
        == Status.OK
    )


def test_offsets_standing_still_with_lag_and_members_is_stall():
    result = evaluate(
        window((10, 15), (10, 15), (10, 16), (10, 18), (10, 18), (10, 20), step=1.0)
    )
    assert result.status == Status.STALL
    assert "stood at 10 for 5.0 s with lag 10" in result.reason
    assert not result.pending


def test_no_members_with_lag_is_stop_even_from_one_sample():
    result = evaluate(window((4, 10), members=0))
    assert result.status == Status.STOP
    assert "no active member" in result.reason
    assert result.members == 0


def test_no_members_without_lag_is_ok():
    assert status(window((10, 10), (10, 10), members=0)) == Status.OK


def test_committed_offset_going_back_is_rewind():
    result = evaluate(window((50, 60), (20, 60), (25, 61)))
    assert result.status == Status.REWIND
    assert "went back from 50 to 20" in result.reason


def test_group_that_cannot_be_read_is_err():
    result = evaluate(
        [GroupSample("ghost", 1000.0, "DEAD", 0, (), error="no such consumer group")]
    )
    assert result.status == Status.ERR and result.reason == "no such consumer group"


def test_group_without_committed_offsets_is_err():
    result = evaluate(window((None, 5), (None, 6)))
    assert (
        result.status == Status.ERR
        and result.reason == "no committed offsets yet (1 member)"
    )
    assert result.partitions[0].status is None


# -- windows and groups --------------------------------------------------------------


def test_group_status_is_its_worst_partition():
    samples = [
        sample(
            1000.0 + i,
            {
                0: (i * 10, i * 10),  # OK
                1: (5, 9 + i),  # STALL
                2: (i * 2, 10 + i * 5),  # WARN
                3: (None, 4),
            },
        )  # not judged
        for i in range(7)
    ]
    result = evaluate(samples)
    assert result.status == Status.STALL
    assert result.reason.startswith(f"{TOPIC}/1: committed offset stood at 5")
    by_partition = {p.offsets.partition: p.status for p in result.partitions}
    assert by_partition == {0: Status.OK, 1: Status.STALL, 2: Status.WARN, 3: None}
    assert result.total_lag == 10 + 28  # the unknown partition adds nothing


def test_a_partition_is_judged_on_its_trailing_run_of_committed_offsets():
    # Offsets reset to nothing (deleted) and committed again: the old run is forgotten,
    # so the drop from 50 to 20 is no rewind.
    assert (
        status(
            window(
                (50, 60),
                (None, 60),
                (20, 60),
                (30, 60),
                (40, 61),
                (45, 62),
                (50, 63),
                (55, 64),
                step=1.0,
            )
        )
        == Status.OK
    )


def test_evaluate_partition_directly():
    assert evaluate_partition([(0.0, 5, 3)], members=1) == (
        Status.OK,
        "lag 3; 0.0 s of samples is too short to judge (needs 5 s)",
        True,
    )
    assert evaluate_partition([(0.0, 5, 3), (10.0, 5, 3)], members=1)[0] == Status.STALL
    assert (
        evaluate_partition([(0.0, 5, 3), (2.0, 5, 3)], members=1, min_window=1.0)[0]
        == Status.STALL
    )
    assert evaluate_partition([(0.0, 5, 3)], members=0)[0] == Status.STOP


def test_evaluate_needs_a_sample():
    with pytest.raises(ValueError):
        evaluate([])


# -- --fail-over ---------------------------------------------------------------------


def test_fail_over_on_time_lag():
    statuses = [
        evaluate(
            window(
                (0, 100),
                (30, 110),
                (60, 120),
                (90, 125),
                (110, 126),
                (120, 130),
                step=2,
                time_lag=12.5,
            )
        )
    ]
    assert statuses[0].status == Status.OK
    assert failures(statuses, None) == []
    assert failures(statuses, 60) == []
    [line] = failures(statuses, 10)
    assert line == f"g: {TOPIC}/0 time lag 12s > 10 s"


def test_fail_over_on_stall_and_stop_whatever_the_time_lag():
    stall = evaluate(
        window((10, 15), (10, 15), (10, 15), (10, 15), (10, 15), (10, 15), time_lag=1.0)
    )
    stop = evaluate(window((4, 10), members=0, group="h", time_lag=1.0))
    found = failures([stall, stop], 3600)
    assert len(found) == 2
    assert found[0].startswith("g: STALL:") and found[1].startswith("h: STOP:")


def test_fail_over_ignores_err_and_unknown_time_lag():
    ghost = evaluate([GroupSample("ghost", 1.0, error="no such consumer group")])
    unknown = evaluate(
        [GroupSample("u", 1.0, "STABLE", 1, (PartitionOffsets(TOPIC, 0, 5, 9, 4, None),))]
    )
    assert failures([ghost, unknown], 0) == []


# -- sampling, output ----------------------------------------------------------------


def test_collect_takes_more_samples_only_while_a_suspicion_awaits_its_window():
    clock = [1000.0]
    taken = []

    def take(committed_moves: bool):
        def look():
            n = len(taken)
            taken.append(clock[0])
            committed = 10 + n if committed_moves else 10
            return {"g": sample(clock[0], {0: (committed, 20 + n)})}

        return look

    def sleep(seconds):
        clock[0] += seconds

    [moving] = collect(take(True), samples=3, interval=1.0, sleep=sleep)
    assert (moving.status, moving.samples, len(taken)) == (Status.OK, 3, 3)

    taken.clear()
    [still] = collect(take(False), samples=3, interval=1.0, sleep=sleep)
    assert still.status == Status.STALL
    assert still.window_seconds >= STAND_STILL_SECONDS and still.samples == 6


def test_json_shape():
    report = to_json([evaluate(window((4, 10), members=0))], fail_over=1.0)
    json.dumps(report)
    [group] = report["groups"]
    assert group["status"] == "STOP" and group["total_lag"] == 6
    assert group["partitions"] == [
        {
            "topic": TOPIC,
            "partition": 0,
            "committed": 4,
            "end": 10,
            "lag": 6,
            "time_lag_seconds": 30.0,
            "status": "STOP",
            "reason": group["partitions"][0]["reason"],
        }
    ]
    assert report["ok"] is False and len(report["failures"]) == 2


def test_table_shows_groups_partitions_and_failures():
    console = Console(record=True, width=140)
    console.print(
        render([evaluate(window((4, 10), members=0, group="biz-worker"))], fail_over=5)
    )
    text = console.export_text()
    assert "biz-worker" in text and "STOP" in text and "30s" in text
    assert "over --fail-over 5 s" in text
    console.print(render([], looked_for=["a", "b"]))
    assert "no consumer group of this project exists yet (a, b)" in console.export_text()


def test_format_age():
    assert [format_age(s) for s in (None, 0, 0.25, 42, 185, 7300, 200_000)] == [
        "?",
        "0s",
        "0.2s",
        "42s",
        "3m05s",
        "2h01m",
        "2d07h",
    ]


def test_project_groups():
    settings = Settings.from_env({"TOPIC_PREFIX": "p.", "STREAMS_APP_ID": "lim"})
    assert project_groups(settings) == ["p.lim", "p.sim-dialer", "p.twilio-dialer"]


# -- the command line ----------------------------------------------------------------


def test_bad_flags_are_one_line_and_exit_2(capsys):
    assert cli.main(["lag", "--samples", "0"]) == 2
    assert (
        capsys.readouterr().err.strip()
        == "streams: error: --samples must be at least 1, got 0"
    )
    assert cli.main(["lag", "--interval", "0"]) == 2
    assert cli.main(["lag", "--fail-over", "-1"]) == 2


def test_unreachable_broker_is_one_line_and_exit_2(monkeypatch, capsys):
    with socket.socket() as sock:  # a port nobody listens on
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    monkeypatch.setenv("KAFKA_BOOTSTRAP_SERVERS", f"127.0.0.1:{port}")
    assert cli.main(["lag", "--samples", "1"]) == 2
    captured = capsys.readouterr()
    assert captured.out == ""
    [line] = captured.err.strip().splitlines()
    assert line.startswith(f"streams: error: cannot reach Kafka at 127.0.0.1:{port}")
