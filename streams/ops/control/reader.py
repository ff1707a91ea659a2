"""Reading `business.control` to its end, writing one record, asking the local worker.

The reader asks librdkafka for one record at a time and stops at the end each partition
had when the read began (or at its end-of-partition event): a call for a batch of N
records waits out its whole timeout whenever fewer than N are left.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any, Protocol

from confluent_kafka import KafkaError, KafkaException, Message, TopicPartition

from streams.errors import StreamsError
from streams.kafka import clients
from streams.kafka.clients import kafka_reason
from streams.ops.status.model import business_path
from streams.ops.status.reader import fetch
from streams.settings import Settings
from streams.topics import (
    BUSINESS_CONTROL,
    BusinessControl,
    InvalidRecord,
    record_key,
    topic_name,
)

#: Seconds a read of `business.control` may take, and a write's delivery.
READ_TIMEOUT = 15.0
WRITE_TIMEOUT = 30.0
#: Seconds to wait for the local worker's view of a business.
WORKER_TIMEOUT = 3.0


#: The reader is assigned its partitions, never subscribed: it joins no group, commits
#: nothing, and is told where each partition ends.
READER_GROUP = "streams-control-reader"
READER_OPTIONS = {"enable.auto.commit": False, "enable.partition.eof": True}


class ControlError(StreamsError):
    """`business.control` could not be read or written; the message says why."""


class ControlConsumer(Protocol):
    """What the reader needs of a confluent-kafka Consumer (tests give a double)."""

    def list_topics(self, topic: str | None = None, timeout: float = -1) -> Any: ...

    def get_watermark_offsets(
        self, partition: TopicPartition, timeout: float = -1, cached: bool = False
    ) -> tuple[int, int]: ...

    def assign(self, partitions: list[TopicPartition]) -> None: ...

    def poll(self, timeout: float = -1) -> Message | None: ...


def read_controls(
    consumer: ControlConsumer,
    topic: str,
    timeout: float = READ_TIMEOUT,
    clock: Callable[[], float] = time.monotonic,
) -> dict[str, BusinessControl]:
    """The latest control record of every business in `topic`, read up to the end each
    partition had when the read began; ControlError if that takes over `timeout`."""
    deadline = clock() + timeout

    def left() -> float:
        remaining = deadline - clock()
        if remaining <= 0:
            raise ControlError(f"{topic} was not read to its end within {timeout:g} s")
        return remaining

    partitions = consumer.list_topics(topic, timeout=left()).topics[topic].partitions
    ends: dict[int, int] = {}
    starts = []
    for partition in sorted(partitions):
        low, high = consumer.get_watermark_offsets(
            TopicPartition(topic, partition), timeout=left()
        )
        if high > low:
            ends[partition] = high
            starts.append(TopicPartition(topic, partition, low))
    latest: dict[str, BusinessControl] = {}
    if not starts:
        return latest
    consumer.assign(starts)
    while ends:
        message = consumer.poll(left())
        if message is None:
            continue  # the deadline says whether to go on
        partition, offset, error = message.partition(), message.offset(), message.error()
        if partition not in ends:
            continue
        if error is not None:
            if error.code() == KafkaError._PARTITION_EOF:
                del ends[partition]  # what is left before the end was no record
            continue
        value = message.value()
        if value is not None:
            try:
                control = BusinessControl.decode(value, message.key())
            except InvalidRecord:
                pass
            else:
                latest[control.business_id] = control
        if offset is not None and offset + 1 >= ends[partition]:
            del ends[partition]
    return latest


def current_controls(
    settings: Settings, timeout: float = READ_TIMEOUT
) -> dict[str, BusinessControl]:
    """The latest control record of every business that has one (read to the end)."""
    name = topic_name(BUSINESS_CONTROL, settings.topic_prefix)
    consumer = clients.consumer(settings, READER_GROUP, READER_OPTIONS, quiet=True)
    try:
        return read_controls(consumer, name, timeout)
    except KafkaException as exc:
        raise ControlError(
            f"cannot read {name} on {settings.kafka_bootstrap_servers}: {kafka_reason(exc)}"
        ) from None
    finally:
        consumer.close()


def current_control(
    settings: Settings, business_id: str, timeout: float = READ_TIMEOUT
) -> BusinessControl:
    """The latest control record of a business (defaults when it has none)."""
    return current_controls(settings, timeout).get(
        business_id, BusinessControl(business_id=business_id)
    )


def write_control(settings: Settings, control: BusinessControl) -> None:
    """Send `control` as its business's whole configuration; ControlError if the broker
    did not take it within WRITE_TIMEOUT."""
    producer = clients.producer(settings)
    producer.produce(
        topic_name(BUSINESS_CONTROL, settings.topic_prefix),
        key=record_key(control.business_id),
        value=control.encode(),
    )
    if producer.flush(WRITE_TIMEOUT) != 0:
        raise ControlError(
            f"the control record was not delivered within {WRITE_TIMEOUT:g} s"
        )


def worker_business(settings: Settings, business_id: str) -> dict[str, Any] | None:
    """What the local worker's web view says about one business (None: unreachable)."""
    reply = fetch(
        f"localhost:{settings.worker_web_port}",
        business_path(business_id),
        WORKER_TIMEOUT,
    )
    return reply.body if reply.state == "ok" else None
