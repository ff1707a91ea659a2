"""Reading `business.control` to its end, writing one record, asking the local worker."""

from __future__ import annotations

from typing import Any

from confluent_kafka import Consumer, KafkaException, Producer, TopicPartition

from streams.errors import StreamsError
from streams.kafka.admin import kafka_reason, quiet_client_config
from streams.ops.status.model import business_path
from streams.ops.status.reader import fetch
from streams.settings import Settings
from streams.topics import (
    BUSINESS_CONTROL,
    BusinessControl,
    InvalidRecord,
    producer_config,
    record_key,
    topic_name,
)

#: Seconds a read of `business.control` may take, and a write's delivery.
READ_TIMEOUT = 15.0
WRITE_TIMEOUT = 30.0
#: Seconds to wait for the local worker's view of a business.
WORKER_TIMEOUT = 3.0


class ControlError(StreamsError):
    """`business.control` could not be read or written; the message says why."""


def consumer_config(bootstrap: str) -> dict[str, Any]:
    """A consumer that joins no group."""
    return {
        **quiet_client_config(bootstrap),
        "group.id": "streams-control-reader",
        "enable.auto.commit": False,
    }


def read_controls(
    consumer: Consumer, topic: str, timeout: float = READ_TIMEOUT
) -> dict[str, BusinessControl]:
    """The latest control record of every business in `topic` (read to the end)."""
    latest: dict[str, BusinessControl] = {}
    metadata = consumer.list_topics(topic, timeout=timeout).topics[topic]
    for partition in metadata.partitions:
        low, high = consumer.get_watermark_offsets(
            TopicPartition(topic, partition), timeout=timeout
        )
        if high <= low:
            continue
        consumer.assign([TopicPartition(topic, partition, low)])
        position = low
        while position < high:
            batch = consumer.consume(500, timeout=timeout)
            if not batch:
                break
            for message in batch:
                offset, value = message.offset(), message.value()
                if message.error() is not None or offset is None or value is None:
                    continue
                position = offset + 1
                try:
                    control = BusinessControl.decode(value, message.key())
                except InvalidRecord:
                    continue
                latest[control.business_id] = control
    return latest


def current_controls(
    settings: Settings, timeout: float = READ_TIMEOUT
) -> dict[str, BusinessControl]:
    """The latest control record of every business that has one (read to the end)."""
    name = topic_name(BUSINESS_CONTROL, settings.topic_prefix)
    consumer = Consumer(consumer_config(settings.kafka_bootstrap_servers))
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
    producer = Producer(producer_config(settings.kafka_bootstrap_servers))
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
