"""`streams business`: reading `business.control` to its end without waiting out a
timeout, with a consumer double that waits the way librdkafka does; the actions and
what the command prints.

The double keeps a fake clock: a call that cannot return what it was asked for before
its timeout "waits" the whole timeout, and the test sees every such wait. A reader that
asked for a batch of 500 records when one was left (the 15-second `streams business`)
waits there; one that asks for no more than is left never does.
"""

from __future__ import annotations

import dataclasses
import io
from types import SimpleNamespace
from typing import Any

import pytest
from confluent_kafka import KafkaError, Message, TopicPartition

from streams.ops.control import command
from streams.ops.control.model import CHANGES
from streams.ops.control.reader import READER_OPTIONS, ControlError, read_controls
from streams.ops.control.view import control_line, worker_text
from streams.settings import Settings
from streams.topics import BusinessControl, record_key

TOPIC = "business.control"


@dataclasses.dataclass
class Record:
    offset: int
    business_id: str
    value: bytes | None


class WaitingConsumer:
    """A confluent-kafka Consumer over fixed partitions, librdkafka's waiting included:
    `poll(t)` returns at once when a record or an end-of-partition event is queued,
    else after `t`; `consume(n, t)` returns at once only when `n` are queued, else
    after `t` with what there is. Every wait for a timeout is recorded in `waited`."""

    def __init__(
        self, partitions: dict[int, list[Record]], ends: dict[int, int] | None = None
    ) -> None:
        self.partitions = partitions
        self.ends = ends or {
            p: (records[-1].offset + 1 if records else 0)
            for p, records in partitions.items()
        }
        self.now = 0.0
        self.waited: list[float] = []
        self.queue: list[Message] = []

    def clock(self) -> float:
        return self.now

    def list_topics(self, topic: str | None = None, timeout: float = -1) -> Any:
        partitions = {p: object() for p in self.partitions}
        return SimpleNamespace(topics={topic: SimpleNamespace(partitions=partitions)})

    def get_watermark_offsets(
        self, partition: TopicPartition, timeout: float = -1, cached: bool = False
    ) -> tuple[int, int]:
        records = self.partitions[partition.partition]
        low = records[0].offset if records else self.ends[partition.partition]
        return low, self.ends[partition.partition]

    def assign(self, partitions: list[TopicPartition]) -> None:
        # Partitions interleave as fetches do; each ends with its end-of-partition event.
        for tp in partitions:
            for record in self.partitions[tp.partition]:
                if record.offset >= tp.offset:
                    self.queue.append(
                        Message(
                            topic=TOPIC,
                            partition=tp.partition,
                            offset=record.offset,
                            key=record_key(record.business_id),
                            value=record.value,
                        )
                    )
            self.queue.append(
                Message(
                    topic=TOPIC,
                    partition=tp.partition,
                    offset=self.ends[tp.partition],
                    error=KafkaError(KafkaError._PARTITION_EOF),
                )
            )

    def _wait(self, timeout: float) -> None:
        self.waited.append(timeout)
        self.now += timeout

    def poll(self, timeout: float = -1) -> Message | None:
        if self.queue:
            return self.queue.pop(0)
        self._wait(timeout)
        return None

    def consume(self, num_messages: int = 1, timeout: float = -1) -> list[Message]:
        if len(self.queue) < num_messages:
            self._wait(timeout)
        batch, self.queue = self.queue[:num_messages], self.queue[num_messages:]
        return batch


def control(business_id: str, limit: int | None = None, paused: bool = False) -> bytes:
    return BusinessControl(business_id, limit, paused).encode()


def test_one_record_is_read_without_waiting_for_a_batch():
    consumer = WaitingConsumer({0: [Record(0, "A", control("A", 2))]})
    latest = read_controls(consumer, TOPIC, timeout=15, clock=consumer.clock)
    assert latest == {"A": BusinessControl("A", 2, False)}
    assert consumer.waited == []


def test_the_latest_record_of_each_business_wins_across_partitions():
    consumer = WaitingConsumer(
        {
            0: [
                Record(0, "A", control("A", 2)),
                Record(1, "A", control("A", 2, paused=True)),
            ],
            1: [],
            2: [Record(5, "B", control("B", 7)), Record(6, "B", b"not json")],
        }
    )
    latest = read_controls(consumer, TOPIC, timeout=15, clock=consumer.clock)
    assert latest == {
        "A": BusinessControl("A", 2, True),
        "B": BusinessControl("B", 7, False),
    }
    assert consumer.waited == []


def test_a_partition_whose_last_offsets_hold_no_record_ends_at_its_end_event():
    # Compaction or a transaction marker: the end is past the last record there is.
    consumer = WaitingConsumer({0: [Record(0, "A", control("A", 1))]}, ends={0: 3})
    latest = read_controls(consumer, TOPIC, timeout=15, clock=consumer.clock)
    assert latest == {"A": BusinessControl("A", 1, False)}
    assert consumer.waited == []


def test_a_read_that_cannot_reach_the_end_fails_after_its_timeout():
    consumer = WaitingConsumer({0: [Record(0, "A", control("A", 1))]}, ends={0: 3})
    consumer.assign = lambda partitions: None  # type: ignore[method-assign]
    with pytest.raises(ControlError, match="not read to its end within 15 s"):
        read_controls(consumer, TOPIC, timeout=15, clock=consumer.clock)
    assert sum(consumer.waited) == 15


def test_the_reader_asks_librdkafka_for_end_of_partition_events():
    assert READER_OPTIONS["enable.partition.eof"] is True


def test_actions_change_only_their_field():
    start = BusinessControl("A", 4, False)
    assert CHANGES["set-limit"](start, 2) == BusinessControl("A", 2, False)
    assert CHANGES["reset-limit"](start, None) == BusinessControl("A", None, False)
    assert CHANGES["pause"](start, None) == BusinessControl("A", 4, True)
    assert CHANGES["resume"](BusinessControl("A", 4, True), None) == start
    assert "show" not in CHANGES


def test_what_the_command_prints():
    assert control_line(BusinessControl("A"), 3) == "business A: limit 3 (default), running"
    assert control_line(BusinessControl("A", 0, True), 3) == "business A: limit 0, paused"
    assert worker_text(None, 6066) == "(no worker answering on localhost:6066)"
    assert worker_text({"waiting": 6}, 6066) == '{\n  "waiting": 6\n}'


def test_a_change_writes_the_whole_configuration(monkeypatch):
    written: list[BusinessControl] = []
    current = BusinessControl("A", 2, False)
    monkeypatch.setattr(command, "current_control", lambda settings, bid: current)
    monkeypatch.setattr(
        command, "write_control", lambda settings, control: written.append(control)
    )
    out = io.StringIO()
    assert command.run_business(Settings(), "pause", "A", out=out) == 0
    assert written == [BusinessControl("A", 2, True)]
    assert out.getvalue() == "business A: limit 2, paused\n"
