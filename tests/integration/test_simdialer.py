"""The simulated dialer (streams/dialers/simulated/) against a real broker.

Call timings are checked on a fake clock in tests/unit/test_simulated_calls.py; here the
statuses, the ledger and the offsets are checked as they reach Kafka.
"""

from __future__ import annotations

import json
import threading
import time
import uuid
from collections import defaultdict
from pathlib import Path

import pytest
from confluent_kafka import Consumer, TopicPartition
from confluent_kafka.admin import AdminClient, NewTopic

from streams.dialers.simulated import SimulatedDialer, concurrency_from_ledger
from streams.dialers.simulated.ledger import read_lines
from streams.kafka import clients
from streams.settings import Settings
from streams.topics import (
    CALL_STATUSES,
    CALLS_DIAL,
    CALLS_STATUS,
    DIAL_DEADLINE_PASSED,
    TERMINAL_STATUSES,
    CallStatus,
    DialCommand,
    record_key,
    to_iso,
    topic_name,
)
from tests.support.waiting import eventually

pytestmark = pytest.mark.integration

RING_TIMEOUT = 1.0
CALL_TIME_LIMIT = 1.0


@pytest.fixture
def settings(kafka_broker):
    """Settings for a fresh pair of topics that only this test uses."""
    prefix = f"t{uuid.uuid4().hex[:8]}."
    names = [topic_name(CALLS_DIAL, prefix), topic_name(CALLS_STATUS, prefix)]
    admin = AdminClient({"bootstrap.servers": kafka_broker.bootstrap})
    for future in admin.create_topics(
        [NewTopic(n, num_partitions=3) for n in names]
    ).values():
        future.result(timeout=30)
    yield Settings(
        kafka_bootstrap_servers=kafka_broker.bootstrap,
        topic_prefix=prefix,
        topic_partitions=3,
        ring_timeout_seconds=RING_TIMEOUT,
        call_time_limit_seconds=CALL_TIME_LIMIT,
    )
    for future in admin.delete_topics(names).values():
        future.result(timeout=30)


def command(business: str, lead: str, *, dial_by_in: float = 30.0) -> DialCommand:
    now = time.time()
    return DialCommand(
        dial_id=f"{business}:{lead}:1",
        lead_id=lead,
        business_id=business,
        phone="+14155550100",
        attempt=1,
        granted_at=to_iso(now),
        dial_by=to_iso(now + dial_by_in),
    )


def produce(settings: Settings, commands: list[DialCommand]) -> None:
    producer = clients.producer(settings)
    for c in commands:
        producer.produce(
            topic_name(CALLS_DIAL, settings.topic_prefix),
            key=record_key(c.business_id),
            value=c.encode(),
        )
    assert producer.flush(10) == 0


class TickingClock:
    """A fake monotonic clock that moves `step` seconds each time it is read."""

    def __init__(self, step: float) -> None:
        self.step = step
        self.now = 1000.0

    def __call__(self) -> float:
        self.now += self.step
        return self.now


def start(dialer: SimulatedDialer) -> tuple[threading.Thread, threading.Event]:
    stop = threading.Event()
    thread = threading.Thread(target=dialer.run, kwargs={"stop": stop}, daemon=True)
    thread.start()
    return thread, stop


def halt(thread: threading.Thread, stop: threading.Event) -> None:
    stop.set()
    thread.join(timeout=15)
    assert not thread.is_alive(), "dialer did not stop"


def statuses_until_final(
    settings: Settings, dial_ids: set[str], timeout: float = 25.0
) -> dict[str, list[tuple[CallStatus, float]]]:
    """Every status per dial_id, with the time it was read, until each dial has a
    terminal one."""
    consumer = Consumer(
        {
            "bootstrap.servers": settings.kafka_bootstrap_servers,
            "group.id": f"{settings.topic_prefix}test-reader",
            "auto.offset.reset": "earliest",
        }
    )
    consumer.subscribe([topic_name(CALLS_STATUS, settings.topic_prefix)])
    seen: dict[str, list[tuple[CallStatus, float]]] = defaultdict(list)
    deadline = time.monotonic() + timeout
    try:
        while time.monotonic() < deadline:
            message = consumer.poll(0.2)
            if message is None or message.error() is not None:
                continue
            status = read_status(message.value(), message.key())
            seen[status.dial_id].append((status, time.time()))
            if all(
                d in seen and seen[d][-1][0].status in TERMINAL_STATUSES for d in dial_ids
            ):
                return seen
    finally:
        consumer.close()
    missing = sorted(
        d
        for d in dial_ids
        if not seen.get(d) or seen[d][-1][0].status not in TERMINAL_STATUSES
    )
    pytest.fail(f"no terminal status within {timeout:.0f}s for {missing}")


def read_status(value: bytes, key: bytes | None) -> CallStatus:
    status = CallStatus.decode(value, key)
    assert key == record_key(status.business_id)
    assert status.status in CALL_STATUSES
    return status


def test_dialer_places_dedupes_refuses_and_reports(
    settings: Settings, tmp_path: Path
) -> None:
    live = [command("A", f"lead-{i}") for i in range(1, 6)] + [command("B", "lead-1")]
    stale = command("C", "lead-1", dial_by_in=-1.0)
    ledger = tmp_path / "ledger.jsonl"
    dialer = SimulatedDialer(
        settings,
        seed=7,
        talk_seconds=(0.3, 3.0),
        ring_seconds=(0.1, 0.5),
        answer_ratio=0.5,
        ledger_path=ledger,
    )
    produce(settings, [*live, stale, live[-1]])  # the last one a resend of B's dial
    thread, stop = start(dialer)
    try:
        statuses = statuses_until_final(settings, {c.dial_id for c in [*live, stale]})
    finally:
        halt(thread, stop)

    # Every placed call follows Twilio's order, numbered 0, 1, 2, ..., with one SID.
    for c in live:
        got = [s for s, _ in statuses[c.dial_id]]
        names = [s.status for s in got]
        assert names[:3] == ["queued", "initiated", "ringing"], names
        assert names[3:] in (
            ["in-progress", "completed"],
            ["no-answer"],
            ["busy"],
            ["failed"],
        )
        assert [s.sequence for s in got] == list(range(len(got)))
        assert len({s.call_sid for s in got}) == 1 and got[0].call_sid.startswith("CA")
        assert len(got[0].call_sid) == 34

    # The stale command is refused, never placed.
    ((refusal, _),) = statuses[stale.dial_id]
    assert (refusal.status, refusal.reason, refusal.sequence) == (
        "canceled",
        DIAL_DEADLINE_PASSED,
        0,
    )

    lines = read_lines(ledger)
    placed = [line["dial_id"] for line in lines if line["event"] == "placed"]
    assert sorted(placed) == sorted(c.dial_id for c in live)  # B's twice-sent dial once
    assert [line["dial_id"] for line in lines if line["event"] == "refused"] == [
        stale.dial_id
    ]
    assert [line["dial_id"] for line in lines if line["event"] == "duplicate"] == [
        live[-1].dial_id
    ]
    ended = {line["dial_id"]: line for line in lines if line["event"] == "ended"}
    assert set(ended) == set(placed)
    for dial_id, status_reads in statuses.items():
        if dial_id in ended:
            final, read_at = status_reads[-1]
            assert ended[dial_id]["status"] == final.status
            assert ended[dial_id]["at"] <= read_at, (
                "the ledger ended the call after it was reported"
            )

    snapshot = dialer.snapshot()
    assert snapshot["placed"] == len(live)
    assert (snapshot["refused"], snapshot["duplicates"]) == (1, 1)
    assert snapshot["live_by_business"] == {}
    assert sum(snapshot["ended_by_status"].values()) == len(live)
    assert concurrency_from_ledger(ledger) == snapshot["max_live_by_business"]
    assert snapshot["max_live_by_business"]["A"] > 1, "A's five calls never overlapped"
    assert snapshot["max_live_by_business"]["B"] == 1
    assert "C" not in snapshot["max_live_by_business"]


def test_restarted_dialer_does_not_place_again(settings: Settings, tmp_path: Path) -> None:
    """A dialer reading the same commands again (here: a new consumer group) with the
    ledger of an earlier run treats them all as duplicates."""
    commands = [
        command("A", "lead-1"),
        command("B", "lead-1"),
        command("C", "lead-1", dial_by_in=-1.0),
    ]
    ledger = tmp_path / "ledger.jsonl"
    produce(settings, commands)
    first = SimulatedDialer(
        settings,
        seed=1,
        talk_seconds=(0.1, 0.2),
        ring_seconds=(0.1, 0.2),
        ledger_path=ledger,
    )
    thread, stop = start(first)
    try:
        statuses_until_final(settings, {c.dial_id for c in commands})
    finally:
        halt(thread, stop)
    assert (first.snapshot()["placed"], first.snapshot()["refused"]) == (2, 1)

    second = SimulatedDialer(
        settings, ledger_path=ledger, group_id=f"{settings.topic_prefix}sim-dialer-2"
    )
    thread, stop = start(second)
    try:
        eventually(lambda: second.snapshot()["duplicates"] >= len(commands), timeout=20)
    finally:
        halt(thread, stop)
    snapshot = second.snapshot()
    assert (snapshot["duplicates"], snapshot["placed"], snapshot["refused"]) == (3, 0, 0)
    assert concurrency_from_ledger(ledger) == first.snapshot()["max_live_by_business"]


def test_stopped_or_crashed_calls_end_in_the_ledger(
    settings: Settings, tmp_path: Path
) -> None:
    """Calls cut off by a stop, or by a crash before it, still get an "ended" line, so
    placed/ended pairs keep bounding when each call could have been live."""
    ledger = tmp_path / "ledger.jsonl"
    crashed = command("Z", "lead-0")
    ledger.write_text(
        json.dumps(
            {
                "event": "placed",
                "at": time.time(),
                "dial_id": crashed.dial_id,
                "lead_id": "lead-0",
                "business_id": "Z",
                "phone": crashed.phone,
            }
        )
        + "\n"
        + '{"event": "pla'
    )
    produce(settings, [command("A", "lead-1")])
    dialer = SimulatedDialer(
        settings, talk_seconds=(5.0, 5.0), answer_ratio=1.0, ledger_path=ledger
    )
    thread, stop = start(dialer)
    try:
        eventually(lambda: dialer.snapshot()["placed"] >= 1, timeout=20, interval=0.05)
    finally:
        halt(thread, stop)
    assert dialer.snapshot()["ended_by_status"] == {"abandoned": 1}
    assert dialer.snapshot()["live_by_business"] == {}
    # Line 1 is the one the crash cut short; the dialer's own lines must stay whole.
    written = [json.loads(line) for line in ledger.read_text().splitlines()[2:]]
    ended = [
        (line["dial_id"], line["status"]) for line in written if line["event"] == "ended"
    ]
    assert ended == [(crashed.dial_id, "abandoned"), ("A:lead-1:1", "abandoned")]
    assert concurrency_from_ledger(ledger) == {"Z": 1, "A": 1}

    # The handled command's offset is committed for the dialer's group.
    reader = Consumer(
        {"bootstrap.servers": settings.kafka_bootstrap_servers, "group.id": dialer.group_id}
    )
    try:
        committed = reader.committed(
            [TopicPartition(dialer.dial_topic, p) for p in range(3)], timeout=10
        )
    finally:
        reader.close()
    assert sum(max(tp.offset, 0) for tp in committed) == 1

    # With nothing to do, a dialer given idle_exit_seconds returns by itself, once
    # idle that long on its clock (one that moves a tenth of a second per reading).
    clock = TickingClock(step=0.1)
    again = SimulatedDialer(settings, ledger_path=ledger, clock=clock)
    began = clock.now
    thread = threading.Thread(target=again.run, kwargs={"idle_exit_seconds": 1.0})
    thread.start()
    thread.join(timeout=30)
    assert not thread.is_alive(), "the idle dialer did not return by itself"
    assert clock.now - began >= 1.0
    assert again.snapshot()["placed"] == again.snapshot()["duplicates"] == 0
