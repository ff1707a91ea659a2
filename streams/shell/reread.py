"""Read input records again, by offset, straight from the broker.

The worker's answer to records faust-streaming skipped (see `streams/shell/progress.py`):
it asks here where its consumer group's committed offset stands when a partition is
assigned, and reads a skipped range again to handle it before going on.
"""

from __future__ import annotations

import time

from confluent_kafka import Consumer, KafkaError, KafkaException, TopicPartition

from streams.kafka import clients
from streams.limiter_table import Source
from streams.settings import Settings


class BrokerReader:
    """Reads committed offsets of `group_id` and records by offset. Blocking: the worker
    calls it in a thread. It never joins the group (assign only) and commits nothing."""

    def __init__(self, settings: Settings, group_id: str, timeout: float = 30.0):
        self._settings = settings
        self._group_id = group_id
        self._config = {
            "client.id": f"{group_id}-reread",
            "enable.auto.commit": False,
            "enable.partition.eof": True,
            "auto.offset.reset": "earliest",  # a range the log no longer has: what is left
        }
        self._timeout = timeout
        self._consumer: Consumer | None = None

    def committed(self, topic: str, partition: int) -> int:
        """Where the group resumes this partition: its committed offset or, before any
        commit, the log's start (the worker's consumer starts from the earliest)."""
        consumer = self._client()
        found = consumer.committed(
            [TopicPartition(topic, partition)], timeout=self._timeout
        )[0]
        if found.error:
            raise KafkaException(found.error)
        if found.offset >= 0:
            return found.offset
        low, _ = consumer.get_watermark_offsets(
            TopicPartition(topic, partition), timeout=self._timeout
        )
        return low

    def read(self, topic: str, partition: int, start: int, end: int) -> list[Source]:
        """The records with start <= offset < end, in order. Offsets the broker has no
        record for (transaction markers, compacted records) are simply not there."""
        consumer = self._client()
        consumer.assign([TopicPartition(topic, partition, start)])
        records: list[Source] = []
        deadline = time.monotonic() + self._timeout
        try:
            while True:
                if time.monotonic() > deadline:
                    raise TimeoutError(
                        f"could not read {topic}/{partition} offsets"
                        f" {start}-{end - 1} within {self._timeout:.0f}s"
                    )
                message = consumer.poll(0.5)
                if message is None:
                    position = consumer.position([TopicPartition(topic, partition)])[0]
                    if position.offset >= end:
                        break
                    continue
                if (message.topic(), message.partition()) != (topic, partition):
                    continue  # left over from an earlier read's assignment
                error = message.error()
                if error is not None and error.code() != KafkaError._PARTITION_EOF:
                    raise KafkaException(error)
                offset = message.offset()
                assert offset is not None, "records and end-of-log events have offsets"
                if error is not None:
                    # The end of the log is final only at or past `end`: an early one
                    # must never hide records still wanted.
                    if offset >= end:
                        break
                    continue
                if offset >= end:
                    break
                _, timestamp_ms = message.timestamp()
                records.append(
                    Source(
                        topic,
                        partition,
                        offset,
                        message.key(),
                        message.value(),
                        timestamp_ms / 1000,
                    )
                )
        finally:
            consumer.unassign()
        return records

    def _client(self) -> Consumer:
        if self._consumer is None:
            self._consumer = clients.consumer(self._settings, self._group_id, self._config)
        return self._consumer

    def close(self) -> None:
        if self._consumer is not None:
            self._consumer.close()
            self._consumer = None
