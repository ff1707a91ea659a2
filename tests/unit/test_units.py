"""The shell's units (streams/shell/units.py): atomic groups of table writes, reads through
writes not yet durable, and records kept in the table until delivered."""

from __future__ import annotations

import json

from faust.serializers import codecs

from streams.limiter_state import undelivered_key
from streams.limiter_table import Effects, Emit
from streams.shell.units import Units, encode_json
from streams.topics import CALLS_DIAL, LEADS_OUTCOMES, LeadOutcome


def _encode(value) -> bytes:
    return json.dumps(value).encode()


def _outcome(lead: str) -> Emit:
    return Emit(
        LEADS_OUTCOMES, "A", LeadOutcome(lead_id=lead, business_id="A", outcome="completed")
    )


def _land(units: Units, store: dict) -> list:
    landed = units.take()
    for unit in landed:
        for key, value, _, _ in units.durable(unit):
            store.pop(key, None) if value is None else store.__setitem__(key, value)
    return landed


def test_the_changelog_codec_is_faust_s_own_byte_for_byte():
    """A RocksDB store finds a key only under the bytes Faust's codec gives it."""
    for value in (
        "b\x1fACME",
        "l\x1fé\x1fL1",
        {"active": {"A:L:1": {"dial_by": 1.5}}, "queues": {"0": [0, 2]}, "wake": None},
        [["calls.dial", "A", {"x": 1}]],
        7,
        1e-7,
        True,
    ):
        assert encode_json(value) == codecs.dumps("json", value), value


def test_reads_see_writes_not_yet_durable_and_the_store_once_they_are():
    store = {"k": "old"}
    units = Units(store.get, _encode)
    units.add(0, Effects([("k", "new"), ("gone", None)], [], []))
    assert units.get("k") == "new" and units.get("gone") is None
    assert store == {"k": "old"}, "the store holds only what the changelog acknowledged"
    _land(units, store)
    assert units.pending_keys() == [] and store == {"k": "new"}


def test_an_older_unit_landing_never_hides_a_newer_write():
    store: dict = {}
    units = Units(store.get, _encode)
    units.add(0, Effects([("k", 1)], [], []))
    first = units.take()
    units.add(0, Effects([("k", 2)], [], []))
    units.durable(first[0])
    assert units.get("k") == 2


def test_a_unit_holds_whole_events_and_each_key_once():
    units = Units({}.get, _encode, max_bytes=300)
    for n in range(6):  # each event: the same key again and one of its own
        units.add(0, Effects([("cursor", n), (f"lead-{n}", "x" * 60)], [], []))
    taken = units.take()
    assert len(taken) > 1, "the byte bound split the events over several units"
    assert sum(unit.events for unit in taken) == 6
    for unit in taken:
        assert list(unit.records).count("cursor") == 1
        assert unit.records["cursor"][0] == max(
            int(k.split("-")[1]) for k in unit.records if k.startswith("lead-")
        )


def test_every_unit_carries_its_partition_s_undelivered_records():
    store: dict = {}
    units = Units(store.get, _encode)
    units.add(0, Effects([("a", 1)], [_outcome("L1")], []))
    first = _land(units, store)[0]
    units.add(0, Effects([("a", 2)], [_outcome("L2")], []))
    second = _land(units, store)[0]
    held = [record["lead_id"] for _, _, record in store[undelivered_key(0)]]
    assert held == ["L1", "L2"], "L1 not yet delivered: the next unit keeps it too"
    units.delivered(first)
    units.add(0, Effects([("a", 3)], [], []))
    _land(units, store)
    assert [r["lead_id"] for _, _, r in store[undelivered_key(0)]] == ["L2"]
    units.delivered(second)
    assert units.oldest_pending() is None


def test_a_new_owner_sends_again_what_the_table_says_is_undelivered():
    store: dict = {}
    units = Units(store.get, _encode)
    dial = Emit(CALLS_DIAL, "A", _outcome("L1").record)
    units.add(3, Effects([("a", 1)], [_outcome("L1")], []))
    _land(units, store)  # durable, then the worker dies before delivering
    successor = Units(store.get, _encode)
    resent = successor.resend(3)
    assert [e.record for e in resent.emits] == [dial.record]
    assert successor.resend(4) is None
    assert successor.oldest_pending() == resent.number, "pending until delivered"


def test_commits_wait_for_units_begun_before_them_only():
    store: dict = {}
    units = Units(store.get, _encode)
    units.add(0, Effects([("a", 1)], [], []))
    newest = units.newest()
    taken = units.take()
    units.add(1, Effects([("b", 1)], [], []))
    assert units.oldest_pending() <= newest
    units.durable(taken[0])
    units.delivered(taken[0])
    assert units.oldest_pending() > newest, "what began later does not hold a commit"


def test_the_pending_figures_the_agent_checks_follow_every_unit():
    """Backpressure asks after every event how many records await delivery and how
    large a partition's undelivered record is; kept as units come and go, the answers
    must match a count over the units themselves, also after a delivery repeated."""
    store: dict = {}
    units = Units(store.get, _encode)
    landed = []
    for n in range(6):
        units.add(n % 2, Effects([(f"k{n}", n)], [_outcome(f"L{n}")] * (n % 3), []))
        landed += _land(units, store)
    resent = Units(store.get, _encode).resend(0)
    assert resent is not None

    def counted() -> tuple[int, int]:
        held = [u for u in landed if u.emits and u not in delivered]
        sizes = [sum(u.emits_size for u in held if u.partition == p) for p in (0, 1)]
        return sum(len(u.emits) for u in held), max(sizes)

    delivered: list = []
    assert (units.undelivered_count(), units.undelivered_bytes()) == counted() != (0, 0)
    for unit in landed:
        units.delivered(unit)
        units.delivered(unit)  # a second acknowledgement changes nothing
        delivered.append(unit)
        assert (units.undelivered_count(), units.undelivered_bytes()) == counted()
    assert (units.undelivered_count(), units.undelivered_bytes()) == (0, 0)
