"""The core's rules for bulk runs, event by event: withdrawals, schedules, expiry,
calling windows and retries (rules 10-14 of streams/limiter_table.py)."""

from __future__ import annotations

import collections
import dataclasses

from streams.limiter_state import read_business, read_lead, read_run
from streams.limiter_table import (
    Rules,
    Source,
    describe_business,
    describe_lead,
    describe_run,
    process,
)
from streams.topics import (
    BUSINESS_CONTROL,
    CALLS_DIAL,
    CALLS_STATUS,
    LEADS_OUTCOMES,
    LEADS_REQUESTS,
    LIMITER_TICKS,
    BusinessControl,
    CallingWindow,
    CallStatus,
    LeadRequest,
    RetryPolicy,
    Tick,
    Withdrawal,
    from_iso,
    to_iso,
)

RULES = Rules(
    limit=2,
    dial_deadline=30,
    ack_timeout=5,
    ring_timeout=3,
    call_time_limit=8,
    lease_grace=2,
    orphan_hold=20,
    max_attempts=3,
    max_wakes_per_tick=50,
    lead_retention=3600,
)
#: A Monday, 12:00 UTC.
NOON = from_iso("2026-03-02T12:00:00Z")


class Table:
    """One partition's table, fed event by event as the shell does (without Kafka)."""

    def __init__(self, rules: Rules = RULES) -> None:
        self.rules = rules
        self.state: dict = {}
        self.offsets: collections.Counter[str] = collections.Counter()
        self.now = NOON

    def feed(self, topic: str, event, now: float | None = None):
        self.now = self.now if now is None else now
        effects = process(
            self.state.get,
            event,
            Source(topic, 0, self.offsets[topic]),
            self.now,
            self.rules,
        )
        self.offsets[topic] += 1
        for key, value in effects.writes:
            self.state.pop(key, None) if value is None else self.state.__setitem__(
                key, value
            )
        self.last = effects
        return effects

    def lead(self, lead_id: str, business: str = "A", **fields):
        return self.feed(
            LEADS_REQUESTS, LeadRequest(lead_id, business, "+14155550100", **fields)
        )

    def status(self, dial_id: str, status: str, reason: str | None = None):
        business, lead_id, _ = dial_id.split(":")
        return self.feed(
            CALLS_STATUS,
            CallStatus(dial_id, lead_id, business, status, to_iso(self.now), reason=reason),
        )

    def tick(self, now: float):
        return self.feed(LIMITER_TICKS, Tick(0, to_iso(now)), now)

    def control(self, business: str = "A", **fields):
        return self.feed(BUSINESS_CONTROL, BusinessControl(business, **fields))


def dials(effects) -> list[str]:
    """The dials granted by an event (a tick also resends silent ones: not counted)."""
    granted = {n.lead_id for n in effects.notes if n.kind == "dial-granted"}
    return [
        e.record.dial_id
        for e in effects.emits
        if e.topic == CALLS_DIAL and e.record.lead_id in granted
    ]


def outcomes(effects) -> list[tuple[str, str, bool]]:
    return [
        (e.record.lead_id, e.record.outcome, e.record.final)
        for e in effects.emits
        if e.topic == LEADS_OUTCOMES
    ]


# -- withdrawals ---------------------------------------------------------------------


def test_a_withdrawn_run_is_skipped_whole_and_ended_in_slices_on_the_ticks():
    """Rule 12: the withdrawal is one bounded step; the run's 1,000 waiting leads ahead
    of another run's never cost a grant more than one skip, and they end `withdrawn` a
    slice per tick, each once."""
    table = Table()
    table.lead("first", run_id="other")
    table.lead("second", run_id="other")  # the two slots
    for n in range(1000):
        table.lead(f"R{n}", run_id="bulk")
    table.lead("after", run_id="other")
    business = read_business(table.state.get, "A")
    assert business["waiting"] == 1001
    assert len([k for k in table.state if k.startswith("q\x1f")]) == 2, "two segments"

    withdraw = table.feed(LEADS_REQUESTS, Withdrawal("A", run_id="bulk"))
    assert len(withdraw.writes) < 10 and outcomes(withdraw) == []
    assert read_run(table.state.get, "A", "bulk")["withdrawn"]

    granted = table.status("A:first:1", "completed")
    assert dials(granted) == ["A:after:1"], "the withdrawn segment is skipped whole"
    assert len(granted.writes) < 20

    ended: collections.Counter[str] = collections.Counter()
    for second in range(1, 40):
        effects = table.tick(NOON + second)
        assert len(outcomes(effects)) <= RULES.max_wakes_per_tick
        for lead_id, outcome, final in outcomes(effects):
            assert outcome == "withdrawn" and final
            ended[lead_id] += 1
    assert set(ended) == {f"R{n}" for n in range(1000)}
    assert set(ended.values()) == {1}
    assert describe_run(table.state.get, "A", "bulk") == {
        "run_id": "bulk",
        "business_id": "A",
        "total": 1000,
        "waiting": 0,
        "scheduled": 0,
        "live": 0,
        "outcomes": {"withdrawn": 1000},
        "withdrawn": True,
    }
    late = table.lead("R-late", run_id="bulk")
    assert outcomes(late) == [("R-late", "withdrawn", True)] and dials(late) == []


def test_a_withdrawal_costs_the_same_whatever_the_run_holds():
    def withdrawal_writes(leads: int) -> int:
        table = Table()
        for n in range(leads):
            table.lead(f"R{n}", run_id="bulk")
        return len(table.feed(LEADS_REQUESTS, Withdrawal("A", run_id="bulk")).writes)

    assert withdrawal_writes(10) == withdrawal_writes(2000)


def test_a_lead_on_a_call_is_not_hung_up_and_is_not_retried_after_its_withdrawal():
    table = Table()
    table.control(retry=RetryPolicy.parse("busy", "1m", 3))
    table.lead("L1", run_id="run")
    table.lead("L2")
    table.lead("L3")
    withdrawn = table.feed(LEADS_REQUESTS, Withdrawal("A", lead_id="L1"))
    assert outcomes(withdrawn) == [] and read_lead(table.state.get, "A", "L1")["withdrawn"]
    assert outcomes(table.feed(LEADS_REQUESTS, Withdrawal("A", lead_id="L3"))) == [
        ("L3", "withdrawn", True)
    ]
    assert outcomes(table.status("A:L1:1", "busy")) == [("L1", "busy", True)]
    assert dials(table.last) == [], "L3 was withdrawn while it waited"
    assert outcomes(table.feed(LEADS_REQUESTS, Withdrawal("A", lead_id="L1"))) == []


def test_a_run_withdrawn_before_its_leads_arrive_ends_them_as_they_come():
    table = Table()
    table.feed(LEADS_REQUESTS, Withdrawal("A", run_id="early"))
    effects = table.lead("L1", run_id="early")
    assert outcomes(effects) == [("L1", "withdrawn", True)] and dials(effects) == []
    assert read_lead(table.state.get, "A", "L1")["state"] == "done"


# -- a lead's time -------------------------------------------------------------------


def test_a_scheduled_lead_holds_no_slot_and_is_dialed_within_a_tick_of_its_time():
    """Rule 10: early ticks of the same second leave it; the first tick at or after its
    time dials it."""
    table = Table()
    due = NOON + 5.4
    effects = table.lead("L1", not_before=to_iso(due))
    assert dials(effects) == []
    view = describe_business(table.state.get, "A", NOON, RULES)
    assert (view["waiting"], view["scheduled"], view["active"]) == (0, 1, [])
    assert describe_lead(table.state.get, "A", "L1", RULES)["due"] == to_iso(due)
    assert dials(table.lead("L2")) == ["A:L2:1"], "it blocks nobody meanwhile"
    for now in (NOON + 1, NOON + 5.0, NOON + 5.3):
        assert dials(table.tick(now)) == [], now
    assert dials(table.tick(NOON + 5.6)) == ["A:L1:1"]


def test_an_expiring_lead_is_never_dialed_after_it_and_ends_expired():
    table = Table()
    table.lead("busy1")
    table.lead("busy2")
    expires = NOON + 10.5
    table.lead("L1", expires_at=to_iso(expires))
    assert dials(table.tick(NOON + 10)) == []
    effects = table.tick(NOON + 11)
    assert outcomes(effects) == [("L1", "expired", True)]
    (outcome,) = [e.record for e in effects.emits if e.topic == LEADS_OUTCOMES]
    assert outcome.reason == "not-dialed-before-expiry" and outcome.attempt == 0
    table.status("A:busy1:1", "completed")
    assert dials(table.last) == []
    # A lead granted near its expiry gets a dial_by that never passes it.
    soon = table.lead("L2", expires_at=to_iso(table.now + 4))
    (dial,) = [e.record for e in soon.emits if e.topic == CALLS_DIAL]
    assert from_iso(dial.dial_by) == table.now + 4


# -- calling windows -----------------------------------------------------------------


def test_a_closed_window_dials_nothing_and_the_business_fills_when_it_opens():
    table = Table()
    window = CallingWindow.parse("12:00:10-13:00", "mon-fri", "UTC")
    table.control(window=window)
    for n in range(3):
        assert dials(table.lead(f"L{n}")) == []
    view = describe_lead(table.state.get, "A", "L0", RULES, NOON)
    assert "calling window" in view["waits_for"]
    assert dials(table.tick(NOON + 9.5)) == []
    assert dials(table.tick(NOON + 10.2)) == ["A:L0:1", "A:L1:1"], "fills to the limit"


def test_a_lead_in_its_own_zone_is_judged_there_and_blocks_no_other():
    """Rule 11: 12:00 UTC is 07:00 in New York (closed) and 17:30 in Kolkata (open)."""
    table = Table()
    table.control(window=CallingWindow.parse("09:00-20:00", "mon-fri", "UTC"))
    assert dials(table.lead("NY", timezone="America/New_York", priority=9)) == []
    assert dials(table.lead("IN", timezone="Asia/Kolkata")) == ["A:IN:1"]
    assert dials(table.lead("UTC")) == ["A:UTC:1"]
    assert read_lead(table.state.get, "A", "NY")["state"] == "waiting"


def test_a_dial_by_never_passes_the_window_close_and_a_close_ends_no_call():
    table = Table()
    table.control(window=CallingWindow.parse("11:00-12:00:12", "mon-fri", "UTC"))
    (dial,) = [e.record for e in table.lead("L1").emits if e.topic == CALLS_DIAL]
    assert from_iso(dial.dial_by) == NOON + 12
    table.status("A:L1:1", "in-progress")
    table.tick(NOON + 20)
    assert [
        a["lead_id"] for a in describe_business(table.state.get, "A", NOON, RULES)["active"]
    ] == ["L1"]


# -- retries -------------------------------------------------------------------------


def test_busy_and_no_answer_are_retried_after_the_delays_then_final():
    table = Table()
    table.control(retry=RetryPolicy.parse("busy,no-answer", "10s,1m", 3))
    table.lead("L1")
    first = table.status("A:L1:1", "busy")
    assert outcomes(first) == [("L1", "busy", False)]
    assert describe_business(table.state.get, "A", NOON, RULES)["scheduled"] == 1
    assert dials(table.tick(NOON + 9)) == []
    assert dials(table.tick(NOON + 10)) == ["A:L1:2"]
    assert outcomes(table.status("A:L1:2", "no-answer")) == [("L1", "no-answer", False)]
    assert dials(table.tick(NOON + 69)) == []
    assert dials(table.tick(NOON + 70)) == ["A:L1:3"]
    last = table.status("A:L1:3", "no-answer")
    (outcome,) = [e.record for e in last.emits if e.topic == LEADS_OUTCOMES]
    assert (outcome.outcome, outcome.final, outcome.attempt) == ("no-answer", True, 3)


def test_dialer_refusals_count_against_the_retry_attempts():
    table = Table()
    table.control(retry=RetryPolicy.parse("busy", "5s", 2))
    table.lead("L1")
    table.status("A:L1:1", "canceled", reason="dial-deadline-passed")
    assert dials(table.last) == ["A:L1:2"], "a refusal goes back in front at once"
    assert outcomes(table.status("A:L1:2", "busy")) == [("L1", "busy", True)]


def test_a_retry_due_after_the_expiry_is_not_made():
    table = Table()
    table.control(retry=RetryPolicy.parse("busy", "1h", 3))
    table.lead("L1", expires_at=to_iso(NOON + 600))
    assert outcomes(table.status("A:L1:1", "busy")) == [("L1", "busy", True)]


def test_the_default_retry_policy_applies_to_businesses_without_their_own():
    table = Table(dataclasses.replace(RULES, retry=RetryPolicy.parse("busy", "1s", 2)))
    table.lead("L1")
    assert outcomes(table.status("A:L1:1", "busy")) == [("L1", "busy", False)]
    table.control(retry=RetryPolicy.parse("no-answer", "1s", 2))
    table.lead("L2")
    assert outcomes(table.status("A:L2:1", "busy")) == [("L2", "busy", True)]


# -- one final outcome ---------------------------------------------------------------


def test_a_rejected_lead_id_is_spent():
    from streams.limiter_table import reject

    table = Table()
    effects = reject(
        table.state.get, Source(LEADS_REQUESTS, 0, 0), "no phone", NOON, RULES, "L1", "A"
    )
    for key, value in effects.writes:
        table.state[key] = value
    assert outcomes(effects) == [("L1", "rejected", True)]
    table.offsets[LEADS_REQUESTS] = 1
    again = table.lead("L1")
    assert dials(again) == [] and outcomes(again) == []
    assert [n.kind for n in again.notes] == ["duplicate-lead"]
