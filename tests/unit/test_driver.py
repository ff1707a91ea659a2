"""The worker's per-record procedure (streams/shell/driver.py), request by request.

The property tests run it against a model broker over random interleavings; these
pin down single cases: what is asked, in which order, with which answers.
"""

from __future__ import annotations

from collections.abc import Callable

from streams.limiter_table import Source
from streams.shell.driver import (
    Answer,
    Driver,
    End,
    Handle,
    IsAssigned,
    ReadAgain,
    ReadCommitted,
    ReadEnd,
    Request,
    Steps,
    TakeOver,
)
from streams.topics import CALLS_STATUS, LEADS_REQUESTS, LIMITER_TICKS

TOPICS = {f"p.{base}": base for base in (LEADS_REQUESTS, CALLS_STATUS, LIMITER_TICKS)}
LEADS, STATUS, TICKS = "p.leads.requests", "p.calls.status", "p.limiter.ticks"


def run(steps: Steps, answer: Callable[[Request], Answer]) -> list[Request]:
    """Run one record's procedure; every request it made, in order."""
    asked: list[Request] = []
    reply: Answer = None
    while True:
        try:
            request = steps.send(reply)
        except StopIteration:
            return asked
        asked.append(request)
        reply = answer(request)


def broker(
    committed: int | None = 0, ends: dict | None = None, records: int = 100, now: float = 0
) -> Callable[[Request], Answer]:
    """Answers as a broker would whose every partition is assigned here."""

    def answer(request: Request) -> Answer:
        match request:
            case ReadCommitted():
                return committed
            case ReadAgain((topic, partition), start, end):
                return [
                    Source(topic, partition, o) for o in range(start, min(end, records))
                ]
            case IsAssigned():
                return True
            case ReadEnd(key):
                return End((ends or {}).get(key), now)
        return None

    return answer


def handled(asked: list[Request]) -> list[tuple[str, int]]:
    return [(r.source.topic, r.source.offset) for r in asked if isinstance(r, Handle)]


def test_a_new_partition_is_taken_over_started_and_its_skipped_records_handled_first():
    driver = Driver(TOPICS)
    asked = run(driver.record(Source(LEADS, 3, 12), "g1"), broker(committed=10))
    assert asked[:2] == [TakeOver(3), ReadCommitted((LEADS, 3))]
    assert asked[2] == ReadAgain((LEADS, 3), 10, 12)
    assert handled(asked) == [(LEADS, 10), (LEADS, 11), (LEADS, 12)]
    assert driver.handled.through((LEADS, 3)) == 13
    again = run(driver.record(Source(LEADS, 3, 13), "g1"), broker())
    assert again == [Handle(Source(LEADS, 3, 13), None)], "owned and started: just handled"


def test_a_record_is_not_handled_before_its_partition_could_start():
    """Handled while the committed offset is unknown, a record would move the core's
    cursor past records skipped before it, and their re-reading would find them
    applied: they would be lost. It waits to be read again."""
    driver = Driver(TOPICS)
    asked = run(driver.record(Source(LEADS, 0, 5), "g1"), broker(committed=None))
    assert handled(asked) == [], "the coordinator could not say where the group stands"
    assert driver.handled.cap({(LEADS, 0): 6}) == {}, "nothing of it is committed"
    asked = run(driver.record(Source(LEADS, 0, 6), "g1"), broker(committed=2))
    assert handled(asked) == [(LEADS, o) for o in range(2, 7)]


def test_a_tick_starts_quiet_partitions_and_reads_what_faust_committed_past():
    driver = Driver(TOPICS)
    run(driver.record(Source(LEADS, 0, 0), "g1"), broker(committed=0))
    driver.handled.cap({(LEADS, 0): 4})  # Faust acked offsets 1-3 it never delivered
    asked = run(driver.record(Source(TICKS, 0, 0), "g1"), broker(committed=0))
    assert ReadCommitted((STATUS, 0)) in asked, "the status partition is watched too"
    assert ReadAgain((LEADS, 0), 1, 4) in asked
    assert (LEADS, 3) in handled(asked)


def test_records_dropped_unacked_at_the_tail_are_read_after_the_partition_stood_still():
    driver = Driver(TOPICS, stalled_after=10, stalled_most=100)
    run(driver.record(Source(LEADS, 0, 0), "g1"), broker(committed=0))
    ends = {(LEADS, 0): 3}  # offsets 1 and 2 never reached a stream

    def tick(offset: int, now: float) -> list[Request]:
        source = Source(TICKS, 0, offset)
        return run(driver.record(source, "g1"), broker(ends=ends, now=now))

    assert not [r for r in tick(0, now=100.0) if isinstance(r, ReadAgain)]
    assert not [r for r in tick(1, now=109.0) if isinstance(r, ReadAgain)]
    asked = tick(2, now=110.0)
    assert ReadAgain((LEADS, 0), 1, 3) in asked
    assert driver.handled.through((LEADS, 0)) == 3


def test_silent_dials_wait_while_it_is_unknown_what_statuses_were_read():
    """Core rule 5 resends a silent dial only once the statuses up to its resend time
    were read. Before any status of the partition is handled in this generation, or
    before a fetch of it answered, that is unknown: nothing counts as read (0.0), never
    everything (None)."""
    driver = Driver(TOPICS)

    def read_until(partition: int, highwater: int | None) -> float | None:
        tick = Source(TICKS, partition, 0)
        driver.handled.start((TICKS, partition), "generation", 0)
        ends = {(STATUS, partition): highwater}
        asked = run(driver.record(tick, "generation"), broker(committed=None, ends=ends))
        (decided,) = [r for r in asked if isinstance(r, Handle)]
        return decided.statuses_read_until

    assert read_until(0, 16_492) == 0.0  # not started here yet
    driver.handled.start((STATUS, 1), "generation", 0)
    assert read_until(1, None) == 0.0  # no fetch answered yet
    driver.handled.start((STATUS, 0), "generation", 16_000)
    driver.handled.handled((STATUS, 0), 16_100, 1_700_000_000.0)
    assert read_until(0, 16_492) == 1_700_000_000.0  # behind: its last status
    driver.handled.handled((STATUS, 0), 16_491)
    assert read_until(0, 16_492) is None  # caught up: all of them


def test_a_revoked_partition_is_taken_over_again_when_it_comes_back():
    driver = Driver(TOPICS)
    run(driver.record(Source(LEADS, 2, 0), "g1"), broker())
    driver.revoked([2])
    asked = run(driver.record(Source(LEADS, 2, 1), "g2"), broker(committed=1))
    assert asked[0] == TakeOver(2)
