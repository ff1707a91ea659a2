"""The simulated calls on a fake clock (streams/dialers/simulated/calls.py): each call's
statuses, in Twilio's order and at its script's times, capped by the ring timeout and
the call time limit the limiter's leases rely on."""

from __future__ import annotations

import random
from dataclasses import dataclass

import pytest

from streams.dialers.simulated.calls import (
    CallTimings,
    Switchboard,
    draw_script,
)
from streams.dialers.simulated.ledger import CallLedger
from streams.topics import DIAL_DEADLINE_PASSED, DialCommand, to_iso

RING_TIMEOUT = 1.0
CALL_TIME_LIMIT = 1.0
#: Ranges reaching past both caps, so the caps are exercised.
TIMINGS = CallTimings(
    ring_seconds=(0.1, 3.0),
    talk_seconds=(0.3, 3.0),
    answer_ratio=0.5,
    ring_timeout=RING_TIMEOUT,
    time_limit=CALL_TIME_LIMIT,
)
WALL = 1_700_000_000.0


class FakeClock:
    def __init__(self) -> None:
        self.now = 50.0

    def __call__(self) -> float:
        return self.now


@dataclass(frozen=True)
class Emitted:
    at: float
    dial_id: str
    status: str
    sequence: int
    call_sid: str | None
    reason: str | None


def command(business: str, lead: str, *, dial_by_in: float = 30.0) -> DialCommand:
    return DialCommand(
        dial_id=f"{business}:{lead}:1",
        lead_id=lead,
        business_id=business,
        phone="+14155550100",
        attempt=1,
        granted_at=to_iso(WALL),
        dial_by=to_iso(WALL + dial_by_in),
    )


def switchboard(clock: FakeClock, emitted: list[Emitted], seed: int = 7) -> Switchboard:
    def emit(
        command: DialCommand,
        status: str,
        *,
        sequence: int,
        call_sid: str | None = None,
        reason: str | None = None,
    ) -> None:
        emitted.append(
            Emitted(clock.now, command.dial_id, status, sequence, call_sid, reason)
        )

    return Switchboard(
        timings=TIMINGS,
        ledger=CallLedger(None),
        emit=emit,
        rng=random.Random(seed),
        clock=clock,
        now=lambda: WALL,
    )


def play_out(board: Switchboard, clock: FakeClock) -> None:
    """Run every timed action, the clock jumping to each one's moment."""
    while (due_in := board.next_due_in()) is not None:
        clock.now += due_in
        board.run_due()


def test_scripts_never_ring_or_talk_past_the_caps():
    rng = random.Random(3)
    scripts = [draw_script(rng, TIMINGS) for _ in range(2000)]
    assert all(s.ring <= RING_TIMEOUT for s in scripts)
    assert all(s.talk is None or s.talk <= CALL_TIME_LIMIT for s in scripts)
    assert all((s.talk is not None) == (s.final == "completed") for s in scripts)
    assert any(s.ring == RING_TIMEOUT for s in scripts), "the ring cap never applied"
    assert any(s.talk == CALL_TIME_LIMIT for s in scripts), "the talk cap never applied"
    assert {s.final for s in scripts} == {"completed", "no-answer", "busy", "failed"}


def test_calls_follow_twilios_order_at_their_scripts_times():
    clock, emitted = FakeClock(), []
    board = switchboard(clock, emitted)
    live = [command("A", f"lead-{i}") for i in range(1, 30)] + [command("B", "lead-1")]
    stale = command("C", "lead-1", dial_by_in=-1.0)
    for c in [*live, stale, live[-1]]:  # the last one a resend of B's dial
        board.handle(c)
    play_out(board, clock)

    rings, talks = [], []
    for c in live:
        got = [e for e in emitted if e.dial_id == c.dial_id]
        names = [e.status for e in got]
        assert names[:3] == ["queued", "initiated", "ringing"], names
        assert names[3:] in (
            ["in-progress", "completed"],
            ["no-answer"],
            ["busy"],
            ["failed"],
        )
        assert [e.sequence for e in got] == list(range(len(got)))
        assert len({e.call_sid for e in got}) == 1 and got[0].call_sid is not None
        assert got[0].call_sid.startswith("CA") and len(got[0].call_sid) == 34
        if "in-progress" in names:
            talks.append(got[-1].at - got[-2].at)
            rings.append(got[-2].at - got[-3].at)
        else:
            rings.append(got[-1].at - got[-2].at)
    assert max(talks) == pytest.approx(CALL_TIME_LIMIT), (
        "talked past the limit, or no call reached it"
    )
    assert max(rings) == pytest.approx(RING_TIMEOUT), (
        "rang past the timeout, or no call reached it"
    )

    (refusal,) = [e for e in emitted if e.dial_id == stale.dial_id]
    assert (refusal.status, refusal.reason, refusal.sequence) == (
        "canceled",
        DIAL_DEADLINE_PASSED,
        0,
    )
    snapshot = board.snapshot()
    assert snapshot["placed"] == len(live)
    assert (snapshot["refused"], snapshot["duplicates"]) == (1, 1)
    assert snapshot["live_by_business"] == {}
    assert snapshot["max_live_by_business"] == {"A": 29, "B": 1}


def test_idle_only_once_no_call_is_live_and_stopping_abandons_live_calls():
    clock, emitted = FakeClock(), []
    board = switchboard(clock, emitted)
    board.touch()
    clock.now += 2.0
    assert board.idle_for() == pytest.approx(2.0)
    board.handle(command("A", "lead-1"))
    assert board.idle_for() == 0.0
    clock.now += 0.01
    board.run_due()
    board.abandon_live()
    assert board.next_due_in() is None
    assert board.snapshot()["ended_by_status"] == {"abandoned": 1}
    assert board.snapshot()["live_by_business"] == {}
    assert [e.status for e in emitted] == ["queued"]
    clock.now += 1.5
    assert board.idle_for() == pytest.approx(1.5)
