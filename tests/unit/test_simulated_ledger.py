"""The simulated dialer's call ledger and the one peak-concurrency sweep
(streams/dialers/simulated/ledger.py)."""

from __future__ import annotations

import json
from pathlib import Path

from streams.dialers.simulated.ledger import (
    ABANDONED,
    CallLedger,
    CallSpan,
    call_spans,
    concurrency_from_ledger,
    handled_and_unended,
    peak_concurrency,
    read_lines,
)
from streams.topics import DialCommand


def command(business: str, lead: str) -> DialCommand:
    return DialCommand(
        dial_id=f"{business}:{lead}:1",
        lead_id=lead,
        business_id=business,
        phone="+14155550100",
        attempt=1,
        granted_at="2024-01-01T00:00:00Z",
        dial_by="2024-01-01T00:00:30Z",
    )


def test_peak_counts_overlaps_per_key_and_an_end_before_a_start_at_equal_times():
    spans = [
        ("A", 0.0, 2.0),
        ("A", 1.0, 3.0),  # overlaps the first: 2
        ("A", 3.0, 4.0),  # starts as the second ends: still 2
        ("B", 0.0, 1.0),
        ("B", 1.0, 2.0),  # back to back: 1
        ("C", 5.0, None),  # never ended: open for good
        ("C", 9.0, 10.0),
    ]
    assert peak_concurrency(spans) == {"A": 2, "B": 1, "C": 2}
    assert peak_concurrency([]) == {}
    assert peak_concurrency(("all", s, e) for _, s, e in spans) == {"all": 3}


def test_ledger_written_and_read_back(tmp_path: Path):
    path = tmp_path / "ledger.jsonl"
    now = [100.0]
    ledger = CallLedger(path, clock=lambda: now[0])
    assert ledger.open() == (set(), [])
    a1, a2, b1 = command("A", "1"), command("A", "2"), command("B", "1")
    ledger.write("placed", a1)
    now[0] = 101.0
    ledger.write("placed", a2)
    ledger.write("refused", b1)
    now[0] = 102.0
    ledger.write("ended", a1, status="completed")
    ledger.write("duplicate", a1)
    ledger.close()

    lines = read_lines(path)
    assert [(line["event"], line["dial_id"], line["at"]) for line in lines] == [
        ("placed", a1.dial_id, 100.0),
        ("placed", a2.dial_id, 101.0),
        ("refused", b1.dial_id, 101.0),
        ("ended", a1.dial_id, 102.0),
        ("duplicate", a1.dial_id, 102.0),
    ]
    assert lines[3]["status"] == "completed" and lines[0]["phone"] == a1.phone
    assert sorted(call_spans(lines)) == [
        CallSpan("A", 100.0, 102.0),
        CallSpan("A", 101.0, None),
    ]
    assert concurrency_from_ledger(path) == {"A": 2}
    handled, unended = handled_and_unended(lines)
    assert handled == {a1.dial_id, a2.dial_id, b1.dial_id}
    assert [line["dial_id"] for line in unended] == [a2.dial_id]


def test_a_line_cut_short_is_skipped_and_the_next_run_writes_whole_lines(tmp_path: Path):
    path = tmp_path / "ledger.jsonl"
    placed = {"event": "placed", "at": 1.0, "dial_id": "Z:0:1", "business_id": "Z"}
    path.write_text(json.dumps(placed) + "\n" + '{"event": "pla')
    ledger = CallLedger(path, clock=lambda: 2.0)
    handled, unended = ledger.open()
    assert handled == {"Z:0:1"} and [line["dial_id"] for line in unended] == ["Z:0:1"]
    ledger.write("ended", unended[0], status=ABANDONED)
    ledger.close()
    lines = read_lines(path)
    assert [(line["event"], line.get("status")) for line in lines] == [
        ("placed", None),
        ("ended", ABANDONED),
    ]
    assert concurrency_from_ledger(path) == {"Z": 1}


def test_an_ended_line_without_its_placed_line_frees_nothing():
    lines = [
        {"event": "ended", "at": 0.5, "dial_id": "A:x:1", "business_id": "A"},
        {"event": "placed", "at": 1.0, "dial_id": "A:1:1", "business_id": "A"},
        {"event": "placed", "at": 2.0, "dial_id": "A:2:1", "business_id": "A"},
    ]
    assert peak_concurrency(call_spans(lines)) == {"A": 2}  # type: ignore[arg-type]
