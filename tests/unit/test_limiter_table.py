"""Property tests of the limiter core's invariants over random interleavings.

Hypothesis drives a model world (tests/unit/world.py) through the worker's own
per-record driver: leads for a few businesses, an honest dialer whose reports are
duplicated, reordered or lost, ticks, a consumer that skips or drops records, the
outbox sending units and records at random moments, commits, and crashes that keep
whole units only and any prefix of the records not yet delivered. The checks read
what the dialer really did, not the limiter's own counters.
"""

from __future__ import annotations

import collections
import dataclasses
import json

from hypothesis import HealthCheck, given, settings
from hypothesis import event as statistic
from hypothesis import strategies as st

from streams.limiter_state import (
    BUSINESS_DEFAULTS,
    QueuedLead,
    business_key,
    decode_business,
    encode_business,
    is_business_key,
    key_kind,
    read_business,
    read_lead,
    waiting_leads,
)
from streams.limiter_table import (
    Rules,
    Source,
    describe_business,
    oldest_waiting_since,
    process,
)
from streams.shell.units import Units
from streams.topics import (
    CALLS_DIAL,
    CALLS_STATUS,
    LEADS_DEADLETTER,
    LEADS_OUTCOMES,
    LEADS_REQUESTS,
    LIMITER_TICKS,
    BusinessControl,
    CallingWindow,
    CallStatus,
    LeadRequest,
    RetryPolicy,
    Tick,
    from_iso,
    to_iso,
)
from tests.unit.world import Malformed, World

RULES = Rules(
    limit=3,
    dial_deadline=10,
    ack_timeout=2,
    ring_timeout=3,
    call_time_limit=8,
    lease_grace=2,
    orphan_hold=20,
    max_attempts=2,
    max_wakes_per_tick=4,
    lead_retention=3600,
    max_skips_per_event=2,
)
BUSINESSES = ("A", "B", "C")
RUNS = ("R1", "R2")
ZONES = (None, "America/New_York", "Europe/Paris", "Asia/Kolkata")
#: The model world starts a little before New York springs forward (07:00Z, 01:59:59
#: EST to 03:00 EDT), so that windows open and close, and one opens at the jump.
START = from_iso("2026-03-08T06:58:00Z")
WINDOWS = (
    CallingWindow.parse("01:58:30-01:59:30", "sun", "America/New_York"),
    CallingWindow.parse("02:30-03:02", "sun", "America/New_York"),  # opens at the jump
    CallingWindow.parse("06:59-07:03", "mon-sun", "UTC"),
    CallingWindow.parse("07:59:30-08:01", "sat-sun", "Europe/Paris"),
    CallingWindow.parse("06:58:05-06:58:25", "sun", "UTC"),  # closes within dial_by
)
RETRIES = (
    RetryPolicy.parse("busy,no-answer", "5s,20s", 3),
    RetryPolicy.parse("busy", "2s", 2),
)
#: The world's rules also retry by default, so that retries meet crashes often.
WORLD_RULES = dataclasses.replace(RULES, retry=RetryPolicy.parse("no-answer", "3s", 3))

ACTIONS = (
    "lead",
    "lead",
    "lead",
    "repeat-lead",
    "junk-status",
    "process",
    "process",
    "process",
    "process",
    "dialer",
    "dialer",
    "report",
    "report",
    "report",
    "report-fault",
    "tick",
    "advance",
    "advance",
    "flush",
    "flush",
    "commit",
    "crash",
    "control",
    "control",
    "skip",
    "drop-unacked",
    "busy-coordinator",
    "marker",
    "run-lead",
    "run-lead",
    "scheduled-lead",
    "withdraw-lead",
    "withdraw-run",
    "jump",
    "malformed-lead",
)


def run_world(data, rules: Rules, steps: int) -> World:
    world = World(rules, lambda n: data.draw(st.integers(0, n - 1)) if n > 1 else 0)
    world.now = START
    for _ in range(steps):
        action = data.draw(st.sampled_from(ACTIONS))
        if action == "lead":
            world.request_lead(
                data.draw(st.sampled_from(BUSINESSES)), data.draw(st.integers(0, 2))
            )
        elif action == "run-lead":
            world.request_lead(
                data.draw(st.sampled_from(BUSINESSES)),
                data.draw(st.integers(0, 1)),
                run_id=data.draw(st.sampled_from(RUNS)),
                expires_in=data.draw(st.sampled_from((None, None, 4.0, 30.0))),
                timezone=data.draw(st.sampled_from(ZONES)),
            )
        elif action == "scheduled-lead":
            world.request_lead(
                data.draw(st.sampled_from(BUSINESSES)),
                data.draw(st.integers(0, 1)),
                run_id=data.draw(st.sampled_from((None,) + RUNS)),
                not_before=data.draw(st.sampled_from((0.4, 2.5, 9.0, 60.0))),
                expires_in=data.draw(st.sampled_from((None, 3.0, 40.0))),
                timezone=data.draw(st.sampled_from(ZONES)),
            )
        elif action == "withdraw-lead":
            world.withdraw_lead()
        elif action == "withdraw-run":
            world.withdraw_run(
                data.draw(st.sampled_from(BUSINESSES)), data.draw(st.sampled_from(RUNS))
            )
        elif action == "malformed-lead":
            world.malformed_lead(
                data.draw(st.booleans()), data.draw(st.sampled_from(BUSINESSES))
            )
        elif action == "jump":
            world.now += data.draw(st.sampled_from((30.0, 61.0)))
        elif action == "repeat-lead":
            world.repeat_lead()
        elif action == "junk-status":
            world.junk_status(data.draw(st.sampled_from(BUSINESSES)))
        elif action == "process":
            world.process_one()
        elif action == "dialer":
            world.dialer_consume()
        elif action == "report":
            world.deliver_report(fault=0)
        elif action == "report-fault":
            world.deliver_report(fault=data.draw(st.integers(1, 4)))
        elif action == "tick":
            world.tick()
        elif action == "advance":
            world.now += data.draw(st.sampled_from((0.5, 1.0, 3.0, 7.0)))
        elif action == "flush":
            world.flush()
        elif action == "commit":
            world.commit()
        elif action == "crash":
            world.crash()
        elif action == "skip":
            world.skip(data.draw(st.integers(1, 3)))
        elif action == "drop-unacked":
            world.drop_unacked(data.draw(st.integers(1, 3)))
        elif action == "busy-coordinator":
            world.busy_coordinator()
        elif action == "marker":
            world.marker(data.draw(st.sampled_from(sorted(world.logs))))
        elif action == "control":
            world.control(
                data.draw(st.sampled_from(BUSINESSES)),
                data.draw(st.one_of(st.none(), st.integers(0, 4))),
                data.draw(st.booleans()),
                data.draw(st.sampled_from((None,) + WINDOWS)),
                data.draw(st.sampled_from((None,) + RETRIES)),
            )
    for business in BUSINESSES:  # back to defaults, so that every queue can drain
        world.control(business, None, False)
    quiesce(world)
    return world


def quiesce(world: World) -> None:
    """No more faults: let time pass until every lead is settled."""
    for _ in range(400):
        world.tick()
        while (
            world.process_one()
            or world.drain()
            or world.dialer_consume()
            or world.deliver_report(0)
        ):
            pass
        world.commit()
        if (
            not world.reports
            and all(world.position[t] == len(world.logs[t]) for t in world.logs)
            and all(
                world.driver.handled.through((t, 0)) == len(world.logs[t])
                for t in world.logs
            )
            and not world.driver.handled.unrevealed(0)
            and _settled(world)
        ):
            return
        world.now += 1.0
    unsettled = {k: v for k, v in world.state.items() if key_kind(k) in ("business", "run")}
    raise AssertionError(f"the world never quiesced: {unsettled}")


def _settled(world: World) -> bool:
    return not any(
        (business := decode_business(v))["active"]
        or business["queues"]
        or business["held"]
        or business["scheduled"]
        for k, v in world.state.items()
        if is_business_key(k)
    )


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.data())
def test_invariants_hold_under_duplicates_reordering_loss_and_crashes(data):
    world = run_world(data, WORLD_RULES, steps=data.draw(st.integers(20, 160)))

    # Never more live calls than the limit, per business, by the dialer's own record
    # (a business's own limit may have been raised up to highest_limit for a while);
    # and no grant ever filled a slot at or above the business's limit of the moment.
    for business, peak in world.peak_concurrency().items():
        assert peak <= world.highest_limit, f"business {business} had {peak} calls at once"
    assert not world.grants_over_limit, world.grants_over_limit

    # Every lead gets exactly one (distinct) final outcome; redelivery may repeat it
    # verbatim. An attempt retried later is reported as not final, for a dial of its own.
    outcomes = collections.defaultdict(set)
    retried = collections.defaultdict(set)
    for outcome in world.outputs[LEADS_OUTCOMES]:
        if outcome.final:
            outcomes[outcome.lead_id].add(outcome.outcome)
        else:
            retried[outcome.lead_id].add(outcome.dial_id)
    assert set(outcomes) == set(world.leads), "a lead was lost or invented"
    assert all(len(v) == 1 for v in outcomes.values()), outcomes
    kinds = collections.Counter(note.kind for note in world.notes)
    shown = (
        "outcome-withdrawn",
        "outcome-expired",
        "lead-scheduled",
        "retry-scheduled",
        "dial-refused",
        "lead-released",
        "refill-deferred",
    )
    for kind in shown:
        statistic(f"{kind}: {'yes' if kinds[kind] else 'no'}")
    statistic(f"granted under a window: {'yes' if world.grants_in_window else 'no'}")
    statistic(f"crashed: {'yes' if world.generation else 'no'}")

    # No grant broke a rule of time, window or withdrawal; no dial could be placed past
    # the lead's expiry or its window's close.
    assert not world.bad_grants, world.bad_grants

    # No call is ever placed twice for one attempt of a lead (a refused dial is not a
    # call), nor for more attempts than allowed, nor before not_before or after
    # expires_at; a lead's calls are its retried attempts and at most one more.
    calls_per_lead = collections.Counter(call.lead_id for call in world.calls)
    assert len({call.dial_id for call in world.calls}) == len(world.calls)
    for lead_id, calls in calls_per_lead.items():
        assert calls <= world.highest_attempts, (lead_id, calls)
        assert calls <= len(retried[lead_id]) + 1, (lead_id, calls, retried[lead_id])
    for call in world.calls:
        request = world.leads[call.lead_id]
        if request.not_before is not None:
            assert call.placed_at >= from_iso(request.not_before), call
        if request.expires_at is not None:
            assert call.placed_at <= from_iso(request.expires_at), call

    # A lead that was really called never ends 'expired' unless a report was lost.
    # At quiescence nothing holds a slot, a waiting lead or a held status.
    assert _settled(world)

    # Every junk status for a dial nobody granted is dead-lettered.
    lettered = {
        letter.reason.split(" for unknown dial ")[1].split(": no grant")[0]
        for letter in world.outputs[LEADS_DEADLETTER]
        if " for unknown dial " in letter.reason
    }
    assert lettered == world.junk_dial_ids
    # Every malformed lead request is dead-lettered (once per offset).
    malformed = {
        offset
        for offset, appended in enumerate(world.logs[LEADS_REQUESTS])
        if appended is not None and isinstance(appended.record, Malformed)
    }
    assert {
        letter.offset
        for letter in world.outputs[LEADS_DEADLETTER]
        if letter.topic == LEADS_REQUESTS
    } == malformed

    # Once the retention has passed, the leads are forgotten and the state holds only
    # the partition's bookkeeping: it does not grow with the leads ever handled.
    world.now += RULES.lead_retention + 1

    def leftovers() -> dict:
        kinds = ("lead", "business", "wake-entry", "wake-size", "held", "run", "run-lead")
        return {k: v for k, v in world.state.items() if key_kind(k) in kinds}

    for _ in range(1000):  # each tick visits at most max_wakes_per_tick entries
        world.tick()
        while world.process_one():
            pass
        if not leftovers():
            break
    assert not leftovers(), leftovers()


@settings(max_examples=100, deadline=None)
@given(
    st.lists(
        st.tuples(st.sampled_from(BUSINESSES), st.integers(0, 9)), min_size=1, max_size=40
    )
)
def test_waiting_leads_are_released_by_priority_then_arrival(requests):
    """Fill each business, then free slots one by one: grants follow (-priority,
    arrival)."""
    state: dict = {}
    offsets = collections.Counter()

    def feed(topic, event, now):
        effects = process(state.get, event, Source(topic, 0, offsets[topic]), now, RULES)
        offsets[topic] += 1
        for key, value in effects.writes:
            state.pop(key, None) if value is None else state.__setitem__(key, value)
        for business in BUSINESSES:  # the value's head times are the heads' own
            value = read_business(state.get, business)
            heads: dict[str, str] = {}
            for queued in waiting_leads(state.get, business):
                heads.setdefault(queued.queue, queued.lead_id)
            since = [
                read_lead(state.get, business, lead)["waiting_since"]
                for lead in heads.values()
            ]
            assert (oldest_waiting_since(value) if value else None) == min(
                since, default=None
            )
        return [e.record for e in effects.emits if e.topic == CALLS_DIAL]

    granted, arrival = [], {}
    for n, (business, priority) in enumerate(requests):
        lead = LeadRequest(
            lead_id=f"L{n}", business_id=business, phone="+14155550100", priority=priority
        )
        arrival[lead.lead_id] = (business, -priority, n)
        granted += feed(LEADS_REQUESTS, lead, 10.0 + n)
    # Exactly min(limit, leads of the business) were granted at once, per business.
    per_business = collections.Counter(b for b, _ in requests)
    at_once = collections.Counter(d.business_id for d in granted)
    assert at_once == {b: min(RULES.limit, c) for b, c in per_business.items()}

    released = []
    while granted:
        dial = granted.pop(0)
        finished = CallStatus(
            dial_id=dial.dial_id,
            lead_id=dial.lead_id,
            business_id=dial.business_id,
            status="completed",
            at=to_iso(11.0),
        )
        new = feed(CALLS_STATUS, finished, 11.0)
        assert len(new) <= 1 and all(d.business_id == dial.business_id for d in new)
        released += [d.lead_id for d in new]
        granted += new
    for business in BUSINESSES:
        order = [lead for lead in released if arrival[lead][0] == business]
        assert order == sorted(order, key=lambda lead: arrival[lead][1:])


def test_per_event_writes_do_not_grow_with_backlog():
    """A business with 10,000 waiting leads costs the same writes per event as one
    with none."""

    def cost(backlog: int) -> tuple[int, int, int]:
        state: dict = {}
        for n in range(RULES.limit + backlog + 1):
            lead = LeadRequest(lead_id=f"L{n:06d}", business_id="A", phone="+14155550100")
            effects = process(state.get, lead, Source(LEADS_REQUESTS, 0, n), 5.0, RULES)
            for key, value in effects.writes:
                state.pop(key, None) if value is None else state.__setitem__(key, value)
        return (
            len(effects.writes),
            sum(len(repr(v)) for _, v in effects.writes),
            len(repr(state[business_key("A")])),
        )

    writes_0, bytes_0, business_0 = cost(0)
    writes_n, bytes_n, business_n = cost(10_000)
    assert writes_n == writes_0
    assert bytes_n <= bytes_0 * 1.1
    assert business_n <= business_0 * 1.1


def test_no_global_limit_thousand_businesses_each_get_their_slots():
    state: dict = {}
    dials = 0
    for n in range(3_000):
        lead = LeadRequest(
            lead_id=f"L{n}", business_id=f"biz{n % 1000}", phone="+14155550100"
        )
        effects = process(state.get, lead, Source(LEADS_REQUESTS, 0, n), 1.0, RULES)
        for key, value in effects.writes:
            state.pop(key, None) if value is None else state.__setitem__(key, value)
        dials += sum(1 for e in effects.emits if e.topic == CALLS_DIAL)
    assert dials == 3_000
    assert describe_business(state.get, "biz7", 2.0, RULES)["waiting"] == 0


def test_pause_keeps_the_queue_resume_fills_every_slot_and_lowering_drains():
    state: dict = {}
    offsets = collections.Counter()

    def feed(topic, event):
        effects = _feed(state, event, Source(topic, 0, offsets[topic]), 1.0)
        offsets[topic] += 1
        return [e.record.dial_id for e in effects.emits if e.topic == CALLS_DIAL]

    assert feed("business.control", BusinessControl("A", None, paused=True)) == []
    for n in range(5):
        assert feed(LEADS_REQUESTS, LeadRequest(f"L{n}", "A", "+14155550100")) == []
    assert describe_business(state.get, "A", 1.0, RULES)["waiting"] == 5
    resumed = feed("business.control", BusinessControl("A", None, paused=False))
    assert resumed == ["A:L0:1", "A:L1:1", "A:L2:1"], "resume fills every free slot at once"
    assert feed("business.control", BusinessControl("A", 1, paused=False)) == []
    view = describe_business(state.get, "A", 1.0, RULES)
    assert len(view["active"]) == 3 and view["limit"] == 1, "lowering ends no live call"
    for n in range(2):  # draining: ending calls frees no slot until below the new limit
        assert (
            feed(
                CALLS_STATUS,
                CallStatus(f"A:L{n}:1", f"L{n}", "A", "completed", to_iso(1.0)),
            )
            == []
        )
    assert feed(
        CALLS_STATUS, CallStatus("A:L2:1", "L2", "A", "completed", to_iso(1.0))
    ) == ["A:L3:1"]
    assert feed("business.control", BusinessControl("A", 4, paused=False)) == ["A:L4:1"]


def _feed(state: dict, event, source: Source, now: float):
    effects = process(state.get, event, source, now, RULES)
    for key, value in effects.writes:
        state.pop(key, None) if value is None else state.__setitem__(key, value)
    return effects


def test_an_unacknowledged_grant_outlives_dial_by_plus_the_longest_call():
    """Rule 3: silence after a grant frees the slot only once the call cannot be live."""
    state: dict = {}
    lead = LeadRequest(lead_id="L", business_id="A", phone="+14155550100")
    dial = _feed(state, lead, Source(LEADS_REQUESTS, 0, 0), 100.0).emits[0].record
    last_possible_end = (
        100.0 + RULES.dial_deadline + RULES.ring_timeout + RULES.call_time_limit
    )
    for offset, now in enumerate((last_possible_end - 0.5, last_possible_end + 0.01)):
        _feed(
            state,
            Tick(partition=0, at=to_iso(now)),
            Source("limiter.ticks", 0, offset),
            now,
        )
        assert describe_business(state.get, "A", now, RULES)["active"], now
    expiry = last_possible_end + RULES.lease_grace + 1
    effects = _feed(
        state, Tick(partition=0, at=to_iso(expiry)), Source("limiter.ticks", 0, 2), expiry
    )
    assert [
        (e.record.lead_id, e.record.outcome)
        for e in effects.emits
        if e.topic == LEADS_OUTCOMES
    ] == [("L", "expired")]
    assert dial.dial_id == "A:L:1"


def _script() -> list[tuple[object, Source, float]]:
    """Five leads for one business, calls ending, a refusal, ticks: every kind of write."""
    events = []
    offsets = collections.Counter()

    def add(topic, event, now):
        events.append((event, Source(topic, 0, offsets[topic]), now))
        offsets[topic] += 1

    for n in range(5):
        add(
            LEADS_REQUESTS,
            LeadRequest(
                lead_id=f"L{n}", business_id="A", phone="+14155550100", priority=n % 2
            ),
            1.0,
        )
    for n, status in ((1, "ringing"), (1, "completed"), (0, "in-progress"), (0, "busy")):
        add(
            CALLS_STATUS,
            CallStatus(
                dial_id=f"A:L{n}:1",
                lead_id=f"L{n}",
                business_id="A",
                status=status,
                at=to_iso(2.0),
            ),
            2.0,
        )
    add(
        CALLS_STATUS,
        CallStatus(
            dial_id="A:L2:1",
            lead_id="L2",
            business_id="A",
            status="canceled",
            reason="dial-deadline-passed",
            at=to_iso(3.0),
        ),
        3.0,
    )
    add("limiter.ticks", Tick(partition=0, at=to_iso(4.0)), 4.0)
    add("limiter.ticks", Tick(partition=0, at=to_iso(500.0)), 500.0)
    return events


def _run(
    events, crash_at: int | None = None, delivered: bool = True
) -> tuple[set, set, dict]:
    """Run the script through the shell's units, one unit per event; optionally crash
    before event `crash_at`, with the records of the event before it delivered or not,
    then restart: take the partition over and redeliver every event (none committed)."""
    durable: dict = {}
    units = Units(durable.get, lambda v: json.dumps(v).encode())
    emitted = []

    def land() -> list:
        out = []
        for unit in units.take():
            for key, value, _, _ in units.durable(unit):
                durable.pop(key, None) if value is None else durable.__setitem__(key, value)
            out.append(unit)
        return out

    def deliver(landed: list) -> list:
        for unit in landed:
            units.delivered(unit)
        return [e for unit in landed for e in unit.emits]

    landed: list = []
    for index, (event, source, now) in enumerate(events):
        if index == crash_at:
            if delivered:
                emitted += deliver(landed)
            units = Units(durable.get, lambda v: json.dumps(v).encode())
            resent = units.resend(0)
            emitted += resent.emits if resent else []
            for again, again_source, again_now in events[:index]:
                assert process(units.get, again, again_source, again_now, RULES).replayed
        else:
            emitted += deliver(landed)
        units.add(0, process(units.get, event, source, now, RULES))
        landed = land()
    emitted += deliver(landed)
    outcomes = {
        (e.record.lead_id, e.record.outcome) for e in emitted if e.topic == LEADS_OUTCOMES
    }
    dials = {e.record.dial_id for e in emitted if e.topic == CALLS_DIAL}
    business = {k: v for k, v in durable.items() if is_business_key(k)}
    return outcomes, dials, business


def test_a_crash_between_any_two_events_loses_no_record_and_applies_none_twice():
    """Rule 7, exhaustively: a crash before every event, with the records of the event
    before it out or still undelivered; every event is redelivered after it."""
    events = _script()
    baseline = _run(events)
    assert len(baseline[0]) == 5 and not baseline[2]
    for index in range(1, len(events)):
        for delivered in (True, False):
            assert _run(events, index, delivered) == baseline, (index, delivered)


def test_a_silent_dial_is_resent_until_dial_by_and_a_refusal_retries_it_first():
    state: dict = {}
    offsets = collections.Counter()

    def feed(topic, event, now):
        effects = _feed(state, event, Source(topic, 0, offsets[topic]), now)
        offsets[topic] += 1
        return [e.record for e in effects.emits if e.topic == CALLS_DIAL]

    for n in range(4):
        feed(LEADS_REQUESTS, LeadRequest(f"L{n}", "A", "+14155550100"), 0.0)
    first = [d for d in feed("limiter.ticks", Tick(0, to_iso(0.0)), 0.0)]
    assert first == []
    resent = feed("limiter.ticks", Tick(0, to_iso(RULES.ack_timeout)), RULES.ack_timeout)
    assert sorted(d.dial_id for d in resent) == ["A:L0:1", "A:L1:1", "A:L2:1"]
    assert {d.dial_by for d in resent} == {to_iso(RULES.dial_deadline)}, "same dial_by"
    acked = CallStatus("A:L1:1", "L1", "A", "queued", to_iso(3.0))
    feed(CALLS_STATUS, acked, 3.0)
    again = feed(
        "limiter.ticks", Tick(0, to_iso(2 * RULES.ack_timeout)), 2 * RULES.ack_timeout
    )
    assert sorted(d.dial_id for d in again) == ["A:L0:1", "A:L2:1"], "acked dials rest"
    late = RULES.dial_deadline + 0.5
    assert feed("limiter.ticks", Tick(0, to_iso(late)), late) == [], "never after dial_by"

    refused = CallStatus(
        "A:L2:1", "L2", "A", "canceled", to_iso(late), reason="dial-deadline-passed"
    )
    retried = feed(CALLS_STATUS, refused, late)
    assert [(d.dial_id, d.attempt) for d in retried] == [("A:L2:2", 2)], (
        "the refused lead goes back to the front, ahead of L3, as a new attempt"
    )
    assert describe_business(state.get, "A", late, RULES)["waiting"] == 1


def test_a_dial_is_resent_only_once_statuses_up_to_the_resend_time_were_read():
    """Rule 5: a status waiting in the worker's own backlog is not silence."""
    state: dict = {}
    lead = LeadRequest(lead_id="L", business_id="A", phone="+14155550100")
    _feed(state, lead, Source(LEADS_REQUESTS, 0, 0), 100.0)
    resend_at = 100.0 + RULES.ack_timeout

    def tick(offset: int, now: float, read_until: float | None) -> list:
        effects = process(
            state.get,
            Tick(partition=0, at=to_iso(now)),
            Source("limiter.ticks", 0, offset),
            now,
            RULES,
            read_until,
        )
        for key, value in effects.writes:
            state.pop(key, None) if value is None else state.__setitem__(key, value)
        return [e.record.dial_id for e in effects.emits if e.topic == CALLS_DIAL]

    assert tick(0, resend_at + 0.5, read_until=resend_at - 1) == [], "lagging: deferred"
    # deferred by a second: the next look must find statuses read past that, too
    assert tick(1, resend_at + 2.1, read_until=resend_at + 0.2) == [], "still behind"
    assert tick(2, resend_at + 4.5, read_until=None) == ["A:L:1"], "caught up: resent"


class Partition:
    """One partition's table, fed event by event (what the shell does, without Kafka)."""

    def __init__(self) -> None:
        self.state: dict = {}
        self.offsets: collections.Counter[str] = collections.Counter()

    def feed(self, topic: str, event, now: float) -> list:
        effects = process(
            self.state.get, event, Source(topic, 0, self.offsets[topic]), now, RULES
        )
        self.offsets[topic] += 1
        for key, value in effects.writes:
            self.state.pop(key, None) if value is None else self.state.__setitem__(
                key, value
            )
        return effects.emits


def test_a_finished_lead_is_forgotten_after_the_retention_and_may_come_again():
    table = Partition()
    lead = LeadRequest(lead_id="L1", business_id="A", phone="+14155550100")
    dial = table.feed(LEADS_REQUESTS, lead, 100.0)[0].record
    table.feed(
        CALLS_STATUS,
        CallStatus(
            dial_id=dial.dial_id,
            lead_id="L1",
            business_id="A",
            status="completed",
            at=to_iso(101.0),
        ),
        101.0,
    )
    assert read_lead(table.state.get, "A", "L1")["outcome"] == "completed"
    # Within the retention the same lead id is a duplicate...
    table.feed(LIMITER_TICKS, Tick(partition=0, at=to_iso(3000.0)), 3000.0)
    assert not [
        e for e in table.feed(LEADS_REQUESTS, lead, 3000.0) if e.topic == CALLS_DIAL
    ]
    # ...after it the record is gone (and only it), and the id is a new lead.
    table.feed(LIMITER_TICKS, Tick(partition=0, at=to_iso(3702.0)), 3702.0)
    assert read_lead(table.state.get, "A", "L1") is None
    again = [e for e in table.feed(LEADS_REQUESTS, lead, 3703.0) if e.topic == CALLS_DIAL]
    assert [e.record.lead_id for e in again] == ["L1"]


def _table_as_written_before_the_types() -> dict:
    """A partition's table exactly as the core wrote it before its values were typed:
    lead L0 ended, L1-L3 hold granted slots, L4 waits, a status for an unknown dial is
    held; a business's held dial ids under "orphans", a business to wake as its bare id.
    """
    slot = {
        "attempt": 1,
        "phone": "+14155550100",
        "granted_at": 102.0,
        "dial_by": 112.0,
        "status": "granted",
        "sequence": None,
        "call_sid": None,
        "resends": 0,
        "resend_at": 104.0,
        "lease_until": 125.0,
    }

    def lead(state, priority, dials, outcome, level, waiting_since):
        return {
            "state": state,
            "phone": "+14155550100",
            "priority": priority,
            "attempt": 1,
            "dials": dials,
            "outcome": outcome,
            "queued_at": [level, 0],
            "waiting_since": waiting_since,
        }

    return {
        "b\x1fA": {
            "active": {f"A:L{n}:1": {"lead_id": f"L{n}", **slot} for n in (1, 2, 3)},
            "queues": {"0": [0, 1, 102.0]},
            "orphans": {"A:ghost:1": 123.0},
            "wake": 104,
            "limit": None,
            "paused": False,
        },
        "c\x1f0": {LEADS_REQUESTS: 5, CALLS_STATUS: 2},
        "l\x1fA\x1fL0": lead("done", 0, ["A:L0:1"], "completed", 0, 100.0),
        "l\x1fA\x1fL1": lead("active", 1, ["A:L1:1"], None, 1, 102.0),
        "l\x1fA\x1fL2": lead("active", 0, ["A:L2:1"], None, 0, 102.0),
        "l\x1fA\x1fL3": lead("active", 1, ["A:L3:1"], None, 1, 102.0),
        "l\x1fA\x1fL4": lead("waiting", 0, [], None, 0, 102.0),
        "o\x1fA\x1fA:ghost:1": [
            {
                "status": {
                    "dial_id": "A:ghost:1",
                    "lead_id": "ghost",
                    "business_id": "A",
                    "status": "ringing",
                    "at": "1970-01-01T00:01:43.000Z",
                },
                "source": {
                    "reason": "",
                    "topic": CALLS_STATUS,
                    "partition": 0,
                    "offset": 1,
                    "key": "QQ==",
                    "value": "e30=",
                },
            }
        ],
        "q\x1fA\x1f0\x1f0": "L4",
        "w\x1f0\x1f102\x1f0": "A",
        "w\x1f0\x1f104\x1f0": "A",
        "w\x1f0\x1f3701\x1f0": ["lead", "A", "L0"],
        "wc\x1f0": [102, 0],
        "wn\x1f0\x1f102": 1,
        "wn\x1f0\x1f104": 1,
        "wn\x1f0\x1f3701": 1,
    }


def test_values_without_the_new_fields_get_defaults_of_their_own():
    """Fields a value lacks (written before them, or left out at their default) are
    filled in on reading; a list filled in is the value's own, never one shared."""
    old = {"active": {}, "queues": {}, "held": {}, "paused": False, "limit": None}
    first, second = decode_business(dict(old)), decode_business(dict(old))
    assert {k: first[k] for k in BUSINESS_DEFAULTS} == BUSINESS_DEFAULTS
    first["runs"].append("r1")
    assert second["runs"] == [] and BUSINESS_DEFAULTS["runs"] == []
    assert not set(encode_business(second)) & set(BUSINESS_DEFAULTS), "left out"
    assert encode_business(first)["runs"] == ["r1"], "a value not at its default is kept"


def test_a_table_written_before_the_types_is_read_and_carried_on():
    """A worker upgraded in place reads the changelog its predecessor wrote: every
    value in today's shapes goes on through the rules as if nothing had changed."""
    table = Partition()
    table.state = _table_as_written_before_the_types()
    table.offsets.update({LEADS_REQUESTS: 5, CALLS_STATUS: 2})
    view = describe_business(table.state.get, "A", 104.0, RULES)
    assert (len(view["active"]), view["waiting"], view["held_statuses"]) == (3, 1, 1)
    assert waiting_leads(table.state.get, "A") == [QueuedLead("0", 0, "L4")]

    # the untagged wake entries still wake the business: its silent dials are resent
    resent = table.feed(LIMITER_TICKS, Tick(partition=0, at=to_iso(104.0)), 104.0)
    assert sorted(e.record.dial_id for e in resent) == ["A:L1:1", "A:L2:1", "A:L3:1"]
    assert "orphans" not in table.state["b\x1fA"], "written back in the new shape"
    assert read_business(table.state.get, "A")["held"] == {"A:ghost:1": 123.0}

    # the held status is dead-lettered, the leases end, the waiting lead is granted
    emits = table.feed(LIMITER_TICKS, Tick(partition=0, at=to_iso(125.0)), 125.0)
    assert sorted(
        (e.record.lead_id, e.record.outcome) for e in emits if e.topic == LEADS_OUTCOMES
    ) == [("L1", "expired"), ("L2", "expired"), ("L3", "expired")]
    assert [e.record.dial_id for e in emits if e.topic == CALLS_DIAL] == ["A:L4:1"]
    letters = [e.record for e in emits if e.topic == LEADS_DEADLETTER]
    assert [(d.topic, d.offset) for d in letters] == [(CALLS_STATUS, 1)]
    assert "unknown dial A:ghost:1" in letters[0].reason

    # the tagged entry written before forgets its lead when its retention is over
    assert read_lead(table.state.get, "A", "L0")["outcome"] == "completed"
    table.feed(LIMITER_TICKS, Tick(partition=0, at=to_iso(3702.0)), 3702.0)
    assert read_lead(table.state.get, "A", "L0") is None
    assert read_lead(table.state.get, "A", "L1")["state"] == "done"
