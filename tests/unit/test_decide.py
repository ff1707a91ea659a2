"""From a record's bytes to the core's decision (streams/shell/decide.py)."""

from __future__ import annotations

from streams.limiter_table import Rules, Source
from streams.shell.decide import decide, failed
from streams.topics import (
    CALLS_STATUS,
    LEADS_DEADLETTER,
    LEADS_OUTCOMES,
    LEADS_REQUESTS,
    LIMITER_TICKS,
    CallStatus,
    LeadRequest,
    Tick,
    record_key,
    to_iso,
)

RULES = Rules(
    limit=3,
    dial_deadline=10,
    ack_timeout=2,
    ring_timeout=3,
    call_time_limit=8,
    lease_grace=2,
    orphan_hold=20,
    max_attempts=2,
)


def outcomes(effects) -> list[tuple[str, str]]:
    return [
        (e.record.lead_id, e.record.outcome)
        for e in effects.emits
        if e.topic == LEADS_OUTCOMES
    ]


def letters(effects) -> list[str]:
    return [e.record.reason for e in effects.emits if e.topic == LEADS_DEADLETTER]


def test_a_lead_request_is_decoded_and_decided_by_the_core():
    lead = LeadRequest("L1", "A", "+14155550100")
    source = Source("p.leads.requests", 0, 0, record_key("A"), lead.encode())
    effects = decide({}.get, source, LEADS_REQUESTS, 5.0, RULES)
    assert [n.kind for n in effects.notes] == ["dial-granted"]


def test_a_bad_lead_is_dead_lettered_and_rejected_a_bad_status_only_dead_lettered():
    lead = b'{"lead_id": "L1", "business_id": "A", "phone": "0800"}'
    effects = decide({}.get, Source("p.l", 0, 0, b"A", lead), LEADS_REQUESTS, 5.0, RULES)
    assert outcomes(effects) == [("L1", "rejected")]
    assert letters(effects) == ["phone '0800' is not an E.164 number like +14155550100"]
    status = CallStatus("A:L1:1", "L1", "A", "ringing", to_iso(5.0)).encode()
    effects = decide({}.get, Source("p.s", 0, 0, b"B", status), CALLS_STATUS, 5.0, RULES)
    assert outcomes(effects) == [], "a status has no lead of its own to end"
    assert len(letters(effects)) == 1


def test_a_null_record_is_dead_lettered_not_an_error():
    """A tombstone on an input topic has no value to decode: it used to raise a
    TypeError, which for a lead request escaped the agent's own error handling."""
    source = Source("p.leads.requests", 0, 3, record_key("A"), None)
    effects = decide({}.get, source, LEADS_REQUESTS, 5.0, RULES)
    assert letters(effects) == ["value is missing (a null record)"]
    effects = failed({}.get, source, LEADS_REQUESTS, RuntimeError("x"), 5.0, RULES, False)
    assert letters(effects) == ["internal error: RuntimeError('x')"]


def test_a_tick_for_another_partition_is_rejected():
    tick = Tick(partition=1, at=to_iso(5.0)).encode()
    effects = decide({}.get, Source("p.t", 0, 0, None, tick), LIMITER_TICKS, 5.0, RULES)
    assert letters(effects) == ["tick for partition 1 arrived on partition 0"]


def test_a_lead_that_failed_before_its_decision_is_told_rejected_after_it_is_not():
    lead = LeadRequest("L1", "A", "+14155550100")
    source = Source("p.leads.requests", 0, 0, record_key("A"), lead.encode())
    error = RuntimeError("boom")
    before = failed({}.get, source, LEADS_REQUESTS, error, 5.0, RULES, decided=False)
    assert outcomes(before) == [("L1", "rejected")]
    assert letters(before) == ["internal error: RuntimeError('boom')"]
    after = failed({}.get, source, LEADS_REQUESTS, error, 5.0, RULES, decided=True)
    assert outcomes(after) == []


def test_a_bad_record_naming_a_known_lead_is_dead_lettered_without_an_outcome():
    """One lead, one final outcome: a phone-less record for a waiting lead must not end
    it `rejected` while it goes on to be dialed and end again."""
    state: dict = {}

    def feed(topic: str, offset: int, key: bytes, value: bytes):
        effects = decide(state.get, Source(topic, 0, offset, key, value), topic, 5.0, RULES)
        for k, v in effects.writes:
            state.pop(k, None) if v is None else state.__setitem__(k, v)
        return effects

    for n in range(4):  # three take the slots, L3 waits
        feed(LEADS_REQUESTS, n, b"A", LeadRequest(f"L{n}", "A", "+14155550100").encode())
    bad = feed(LEADS_REQUESTS, 4, b"A", b'{"lead_id": "L3", "business_id": "A"}')
    assert outcomes(bad) == [], "the waiting lead L3 keeps its one outcome to come"
    assert len(letters(bad)) == 1
    done = CallStatus("A:L0:1", "L0", "A", "completed", to_iso(6.0)).encode()
    granted = feed(CALLS_STATUS, 0, b"A", done)
    assert [e.record.lead_id for e in granted.emits if e.topic == "calls.dial"] == ["L3"]
