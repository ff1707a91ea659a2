"""The outbox (streams/shell/outbox.py) against the real broker: a unit's records leave as
one batch per topic and partition, each where the producer's partitioner places its key."""

from __future__ import annotations

import asyncio
import collections
import uuid
from typing import Any

import pytest
from aiokafka import AIOKafkaProducer
from aiokafka.partitioner import DefaultPartitioner
from confluent_kafka import Consumer, TopicPartition
from confluent_kafka.admin import AdminClient, NewTopic

from streams.limiter_table import Effects, Emit
from streams.settings import Settings
from streams.shell.outbox import Outbox
from streams.shell.units import Units, encode_json
from streams.topics import LEADS_OUTCOMES, LeadOutcome

pytestmark = pytest.mark.integration

PARTITIONS = 8


class _Store:
    """What the outbox writes durable units into (Faust's store, by its one method)."""

    def __init__(self) -> None:
        self.values: dict[Any, Any] = {}

    def apply_changelog_batch(self, events: list, to_key: Any, to_value: Any) -> None:
        for event in events:
            self.values[to_key(event.key)] = to_value(event.value)


def _create(bootstrap: str, *topics: str) -> None:
    admin = AdminClient({"bootstrap.servers": bootstrap})
    futures = admin.create_topics([NewTopic(t, PARTITIONS, 1) for t in topics])
    for future in futures.values():
        future.result(30)


def _outcomes(first: int, count: int) -> list[Emit]:
    return [
        Emit(
            LEADS_OUTCOMES,
            f"business-{n}",
            LeadOutcome(lead_id=f"L{n}", business_id=f"business-{n}", outcome="completed"),
        )
        for n in range(first, first + count)
    ]


def _read(bootstrap: str, topic: str, count: int) -> dict[int, list[bytes]]:
    consumer = Consumer(
        {"bootstrap.servers": bootstrap, "group.id": "check", "enable.auto.commit": False}
    )
    consumer.assign([TopicPartition(topic, p, 0) for p in range(PARTITIONS)])
    keys: dict[int, list[bytes]] = collections.defaultdict(list)
    read = 0
    for _ in range(20):
        for message in consumer.consume(count, timeout=1):
            assert message.error() is None, message.error()
            key, partition = message.key(), message.partition()
            assert key is not None and partition is not None
            keys[partition].append(key)
            read += 1
        if read >= count:
            break
    consumer.close()
    return keys


def test_a_unit_s_records_leave_as_one_batch_per_partition_where_murmur2_puts_them(
    kafka_broker, monkeypatch
):
    bootstrap = kafka_broker.bootstrap
    changelog, outcomes = (f"outbox-{uuid.uuid4().hex[:8]}-{n}" for n in ("cl", "out"))
    _create(bootstrap, changelog, outcomes)
    sends: list[str] = []
    batches: list[tuple[str, int]] = []
    send, send_batch = AIOKafkaProducer.send, AIOKafkaProducer.send_batch

    async def counted_send(
        self: AIOKafkaProducer, topic: str, *args: Any, **kw: Any
    ) -> Any:
        sends.append(topic)
        return await send(self, topic, *args, **kw)

    async def counted_batch(
        self: AIOKafkaProducer, batch: Any, topic: str, *, partition: int
    ) -> Any:
        batches.append((topic, partition))
        return await send_batch(self, batch, topic, partition=partition)

    monkeypatch.setattr(AIOKafkaProducer, "send", counted_send)
    monkeypatch.setattr(AIOKafkaProducer, "send_batch", counted_batch)
    store = _Store()
    units = Units(lambda key: store.values.get(key), encode_json)
    emitted = {0: _outcomes(0, 60), 1: _outcomes(60, 40)}
    for partition, emits in emitted.items():
        units.add(partition, Effects([(f"k{partition}", partition)], emits, []))
    fatal: list[BaseException] = []

    async def on_fatal(exc: BaseException) -> None:
        fatal.append(exc)

    async def send_all() -> None:
        outbox = Outbox(
            units,
            Settings.from_env({"KAFKA_BOOTSTRAP_SERVERS": bootstrap}),
            changelog,
            {LEADS_OUTCOMES: outcomes},
            lambda: store,
            "outbox-test",
            on_fatal,
        )
        try:
            await outbox.confirmed()
        finally:
            await outbox.stop()

    asyncio.run(send_all())

    assert not fatal and units.undelivered_count() == 0
    murmur2 = DefaultPartitioner()
    every = list(range(PARTITIONS))
    placed = {
        p: [
            e.key.encode()
            for unit in emitted.values()
            for e in unit
            if murmur2(e.key.encode(), every, every) == p
        ]
        for p in every
    }
    assert _read(bootstrap, outcomes, 100) == {
        p: keys for p, keys in placed.items() if keys
    }
    assert sends == [], "no record goes out on its own"
    per_unit = [
        {murmur2(e.key.encode(), every, every) for e in emits} for emits in emitted.values()
    ]
    assert sorted(b for b in batches if b[0] == outcomes) == sorted(
        (outcomes, p) for partitions in per_unit for p in partitions
    ), "one batch per unit, topic and partition"
