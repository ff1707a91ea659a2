"""Reading and writing `business.control`, the compacted per-business configuration.

Each record is a business's whole configuration, so a change reads the current record
first and writes a complete new one; compaction then keeps exactly the latest.
"""

from __future__ import annotations

import dataclasses

from confluent_kafka import Consumer, Producer, TopicPartition

from streams.kafka.admin import quiet_client_config
from streams.settings import Settings
from streams.topics import (
    BUSINESS_CONTROL,
    BusinessControl,
    InvalidRecord,
    producer_config,
    record_key,
    topic_name,
)


def current_controls(
    settings: Settings, timeout: float = 15.0
) -> dict[str, BusinessControl]:
    """The latest control record of every business that has one (read to the end)."""
    name = topic_name(BUSINESS_CONTROL, settings.topic_prefix)
    consumer = Consumer(
        {
            **quiet_client_config(settings.kafka_bootstrap_servers),
            "group.id": "streams-control-reader",
            "enable.auto.commit": False,
        }
    )
    latest: dict[str, BusinessControl] = {}
    try:
        metadata = consumer.list_topics(name, timeout=timeout).topics[name]
        for partition in metadata.partitions:
            low, high = consumer.get_watermark_offsets(
                TopicPartition(name, partition), timeout=timeout
            )
            if high <= low:
                continue
            consumer.assign([TopicPartition(name, partition, low)])
            position = low
            while position < high:
                batch = consumer.consume(500, timeout=timeout)
                if not batch:
                    break
                for message in batch:
                    if message.error() is not None:
                        continue
                    position = message.offset() + 1
                    try:
                        control = BusinessControl.decode(message.value(), message.key())
                    except InvalidRecord:
                        continue
                    latest[control.business_id] = control
    finally:
        consumer.close()
    return latest


def current_control(
    settings: Settings, business_id: str, timeout: float = 15.0
) -> BusinessControl:
    """The latest control record of a business (defaults when it has none)."""
    return current_controls(settings, timeout).get(
        business_id, BusinessControl(business_id=business_id)
    )


def change_control(settings: Settings, business_id: str, **changes) -> BusinessControl:
    """Write the business's configuration with `changes` applied; return it."""
    control = dataclasses.replace(current_control(settings, business_id), **changes)
    producer = Producer(producer_config(settings.kafka_bootstrap_servers))
    producer.produce(
        topic_name(BUSINESS_CONTROL, settings.topic_prefix),
        key=record_key(business_id),
        value=control.encode(),
    )
    if producer.flush(30) != 0:
        raise RuntimeError("the control record was not delivered within 30 s")
    return control
