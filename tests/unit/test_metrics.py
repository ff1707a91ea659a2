"""`streams/metrics.py` without a broker: note kinds to counters, bounded per-business
gauges, consumer lag from a consumer's offsets."""

from __future__ import annotations

import asyncio
from collections import namedtuple

from streams import limiter_table as core
from streams import metrics
from streams.topics import LEADS_OUTCOMES, LeadOutcome

TP = namedtuple("TP", "topic partition")


def sample(name: str, **labels: str) -> float | None:
    return metrics.REGISTRY.get_sample_value(name, labels)


def test_note_kinds_count_into_their_metrics():
    before = {
        name: sample(name)
        for name in (
            "streams_dials_granted_total",
            "streams_lease_expiries_total",
            "streams_dial_resends_total",
            "streams_dead_letters_total",
        )
    }
    expired = sample("streams_outcomes_total", outcome="expired")
    rejected = sample("streams_outcomes_total", outcome="rejected")
    notes = [
        core.Note(kind, "B", "L", "")
        for kind in (
            "dial-granted",
            "dial-granted",
            "outcome-expired",
            "lease-expired",
            "dial-resent",
            "waiting",
        )
    ]
    metrics.observe_effects(core.Effects([], [], notes))
    rules = core.Rules(
        limit=3,
        dial_deadline=10,
        ack_timeout=2,
        ring_timeout=3,
        call_time_limit=8,
        lease_grace=2,
        orphan_hold=20,
        max_attempts=2,
    )
    metrics.observe_effects(
        core.reject(
            {}.get, core.Source("leads.requests", 0, 0), "bad phone", 1.0, rules, "L2", "B"
        )
    )
    assert (
        sample("streams_dials_granted_total") == before["streams_dials_granted_total"] + 2
    )
    assert (
        sample("streams_lease_expiries_total") == before["streams_lease_expiries_total"] + 1
    )
    assert sample("streams_dial_resends_total") == before["streams_dial_resends_total"] + 1
    assert sample("streams_dead_letters_total") == before["streams_dead_letters_total"] + 1
    assert sample("streams_outcomes_total", outcome="expired") == expired + 1
    assert sample("streams_outcomes_total", outcome="rejected") == rejected + 1
    assert sample("streams_decisions_total", kind="waiting") >= 1
    # a replayed event re-emits its records but counts nothing again
    replay = core.Effects(
        [],
        [
            core.Emit(
                LEADS_OUTCOMES,
                "B",
                LeadOutcome(lead_id="L3", business_id="B", outcome="rejected"),
            )
        ],
        [],
        replayed=True,
    )
    metrics.observe_effects(replay)
    assert sample("streams_outcomes_total", outcome="rejected") == rejected + 1


def value(active: int, waiting: int, since: float | None = None) -> dict:
    """A business's table value with `active` slots and `waiting` leads in one queue."""
    return {
        "active": {f"d{n}": {} for n in range(active)},
        "queues": {"0": [5, 5 + waiting, since]} if waiting else {},
        "held": {},
        "wake": None,
        "limit": None,
        "paused": False,
    }


def test_business_gauges_hold_totals_and_only_the_busiest_businesses():
    summary = metrics.BusinessSummary()
    for n in range(100):
        summary.update(f"b{n:03}", value(n % 4, n % 7, 1000.0 + n if n % 7 else None))
    summary.update("b005", value(3, 0))  # written again: counted once, as it is now
    summary.update("b006", None)  # left the table
    rows = {f"b{n:03}": (n % 4, n % 7) for n in range(100) if n != 6}
    rows["b005"] = (3, 0)
    asyncio.run(summary.set_gauges(now=1200.0, rows_per_slice=7))  # 15 slices
    assert sample("streams_active_calls") == sum(a for a, _ in rows.values())
    assert sample("streams_waiting_leads") == sum(w for _, w in rows.values())
    assert sample("streams_businesses") == 99
    assert sample("streams_oldest_waiting_seconds") == 1200.0 - 1001.0
    labelled = {
        s.labels["business_id"]: s.value
        for family in metrics.BUSINESS_ACTIVE_CALLS.collect()
        for s in family.samples
    }
    assert len(labelled) == metrics.TOP_BUSINESSES
    busiest = sorted(rows, key=lambda b: (-sum(rows[b]), b))[: metrics.TOP_BUSINESSES]
    assert set(labelled) == set(busiest)
    # the next refresh replaces the set: a business that went quiet loses its series
    summary.clear()
    summary.update("only", value(1, 2, 1197.0))
    asyncio.run(summary.set_gauges(now=1200.0))
    assert sample("streams_business_active_calls", business_id="only") == 1
    assert sample("streams_business_waiting_leads", business_id="only") == 2
    assert sample("streams_business_active_calls", business_id=busiest[0]) is None
    assert sample("streams_oldest_waiting_seconds") == 3.0


class FakeConsumer:
    def __init__(self, highwaters: dict, committed: dict):
        self.highwaters = highwaters
        self._committed_offset = committed

    def assignment(self):
        return set(self.highwaters)

    def highwater(self, tp):
        return self.highwaters[tp]


def test_lag_in_records_and_approximate_seconds_for_owned_input_partitions():
    leads0, leads1, changelog = TP("leads", 0), TP("leads", 1), TP("changelog", 0)
    tracker = metrics.LagTracker()
    consumer = FakeConsumer(
        {leads0: 120, leads1: 50, changelog: 999}, {leads0: 100, leads1: 50}
    )
    tracker.processed("leads", 0, 1000.0)
    tracker.refresh(consumer, ["leads"], now=1030.0)
    assert sample("streams_consumer_lag_records", topic="leads", partition="0") == 20
    assert sample("streams_consumer_lag_seconds", topic="leads", partition="0") == 30.0
    assert sample("streams_consumer_committed_offset", topic="leads", partition="0") == 100
    assert sample("streams_consumer_lag_records", topic="leads", partition="1") == 0
    assert sample("streams_consumer_lag_seconds", topic="leads", partition="1") == 0.0
    assert sample("streams_consumer_lag_records", topic="changelog", partition="0") is None
    # lag with no event processed yet: counted from when the lag was first seen
    consumer.highwaters[leads1] = 60
    tracker.refresh(consumer, ["leads"], now=1040.0)
    tracker.refresh(consumer, ["leads"], now=1045.0)
    assert sample("streams_consumer_lag_seconds", topic="leads", partition="1") == 5.0
    # a partition that moved to another worker loses its series
    del consumer.highwaters[leads0]
    tracker.refresh(consumer, ["leads"], now=1050.0)
    assert sample("streams_consumer_lag_records", topic="leads", partition="0") is None
