"""The chaos verifier's per-fault figures, from a made-up ledger (bench/chaos.py)."""

from __future__ import annotations

import argparse

import pytest

from bench.chaos import fault_figures, fault_list, slot_free_delays
from bench.cluster_faults import FAULTS, FaultWindow


def line(event: str, at: float, business: str = "b1", dial: str = "d") -> dict:
    return {
        "event": event,
        "at": at,
        "business_id": business,
        "dial_id": dial,
        "lead_id": f"lead-{dial}",
    }


LEDGER = [
    line("placed", 100.0, dial="d1"),
    line("ended", 101.0, dial="d1"),
    line("placed", 101.5, dial="d2"),  # refill 0.5 s after the slot freed (before)
    line("ended", 110.0, dial="d2"),  # inside the window...
    line("placed", 114.0, dial="d3"),  # ...refilled 4 s later
    line("ended", 115.0, dial="d3"),
    line("placed", 115.2, dial="d4"),
    line("ended", 130.0, dial="d4"),  # after the window
    line("placed", 130.1, dial="d5"),
]


def test_a_fault_window_gets_its_own_longest_stall_and_slot_free_delays() -> None:
    window = FaultWindow("pause_broker", "SIGSTOP node 2", started=105.0, ended=120.0)
    (figures,) = fault_figures(LEDGER, [window])
    assert figures["fault"] == "pause_broker" and figures["seconds"] == 15.0
    assert figures["dials"] == 2  # 114.0 and 115.2
    # from the window's start to the first dial inside it: 105 -> 114
    assert figures["longest_dial_stall_seconds"] == 9.0
    delays = figures["slot_free_to_dial_seconds"]
    assert delays["count"] == 2  # the ends at 110 and 115, not those outside
    assert delays["p50"] == pytest.approx(4.0) and delays["p99"] == pytest.approx(4.0)


def test_a_window_without_dials_stalls_for_all_of_it() -> None:
    window = FaultWindow("lose_disk", "node 1", started=131.0, ended=150.0)
    (figures,) = fault_figures(LEDGER, [window])
    assert figures["dials"] == 0 and figures["longest_dial_stall_seconds"] == 19.0
    assert figures["slot_free_to_dial_seconds"] == {}


def test_without_a_window_every_slot_freed_counts() -> None:
    assert slot_free_delays(LEDGER)["count"] == 4


def test_fault_lists_name_known_faults_only() -> None:
    assert fault_list("lose_disk, pause_broker") == ("lose_disk", "pause_broker")
    assert set(fault_list(",".join(FAULTS))) == set(FAULTS)
    with pytest.raises(argparse.ArgumentTypeError, match="kill_everything"):
        fault_list("lose_disk,kill_everything")
    with pytest.raises(argparse.ArgumentTypeError):
        fault_list(" , ")


def test_only_slots_freed_while_a_lead_waited_count_when_send_times_are_known() -> None:
    """d3's lead came after d2's slot freed (the business waited for a lead, no delay
    of ours); d4's and d5's were waiting when their slots freed."""
    sent_at = {"lead-d1": 99.0, "lead-d2": 100.0, "lead-d3": 112.0}
    sent_at |= {"lead-d4": 114.5, "lead-d5": 120.0}
    delays = slot_free_delays(LEDGER, sent_at=sent_at)
    assert delays["count"] == 3  # d2 (after d1's end), d4, d5; not d3
    window = FaultWindow("pause_broker", "SIGSTOP node 2", started=105.0, ended=120.0)
    (figures,) = fault_figures(LEDGER, [window], sent_at)
    assert figures["slot_free_to_dial_seconds"]["count"] == 1  # d3 is out
    assert figures["slot_free_to_dial_seconds"]["p99"] == pytest.approx(0.2)
