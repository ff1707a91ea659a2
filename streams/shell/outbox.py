"""Sending units to the changelog and their records out (`streams/shell/units.py` says why).

For each partition, one unit at a time: a unit is sent as one record batch to its
partition of the table's changelog, and the next unit of that partition only once the
broker acknowledged it. A unit that fails is sent again, the same records, until it
lands; repeated, it lands right behind itself, which changes nothing. (Two units of a
partition in flight could land out of order or one without the other, and a later
unit's cursor would then vouch for writes the changelog lacks.) Once a unit is on the
broker its records go into the store, the way Faust's recovery writes them, and its
emitted records go out; both units and records are sent from one task, so the agent
never waits for the broker unless too much is pending (`room`).

Faust commits input offsets after flushing its producer; the worker makes that flush
wait for `confirmed` (`streams/shell/faust_patches.py`), so an offset is committed only
once what its events wrote and emitted is on the broker.
"""

from __future__ import annotations

import asyncio
import collections
import logging
import time
from collections.abc import Callable
from types import SimpleNamespace
from typing import Any

from aiokafka import AIOKafkaProducer
from aiokafka.errors import KafkaError, MessageSizeTooLargeError, RecordTooLargeError
from aiokafka.structs import TopicPartition

from streams.kafka import clients
from streams.settings import Settings
from streams.shell.units import UNIT_MAX_BYTES, Unit, Units

log = logging.getLogger(__name__)

#: The agent waits for the broker once this many keys await the changelog or this many
#: records await delivery: memory stays bounded when the broker is slow or away. A
#: partition's undelivered records are one table value, rewritten by each unit: it
#: must stay well inside a unit (UNIT_MAX_BYTES).
MAX_PENDING_KEYS = 50_000
MAX_UNDELIVERED_RECORDS = 5_000
MAX_UNDELIVERED_BYTES = UNIT_MAX_BYTES // 2
#: While events keep coming, the sender lets them gather up to this long before it
#: sends their units: fewer, larger units and produce requests (at 20 ms, 50% more
#: events/s than sending after every event); a lone event waits only
#: until the agent has been quiet for QUIET_SECONDS.
LINGER_SECONDS = 0.02
QUIET_SECONDS = 0.001
#: Pause before sending a unit or records again after a failure.
RETRY_SECONDS = 1.0
#: Errors no retry cures: the worker stops, and its restart recovers from the changelog.
FATAL_ERRORS = (MessageSizeTooLargeError, RecordTooLargeError)


class Outbox:
    """One worker's sender of units and records."""

    def __init__(
        self,
        units: Units,
        settings: Settings,
        changelog: str,
        output_topics: dict[str, str],
        store: Callable[[], Any],
        client_id: str,
        on_fatal: Callable[[BaseException], Any],
    ):
        self._units = units
        self._settings = settings
        self._changelog = changelog
        self._outputs = output_topics
        self._store = store
        self._client_id = client_id
        self._on_fatal = on_fatal
        self._producer: AIOKafkaProducer | None = None
        self._lock = asyncio.Lock()
        self._wake = asyncio.Event()
        self._sent: set[asyncio.Future] = set()
        self._unsent: collections.deque[Unit] = collections.deque()
        self._progress = asyncio.Event()
        #: Figures for metrics and bench: units and records sent, per kind.
        self.counts: collections.Counter[str] = collections.Counter()

    # -- the agent's side ----------------------------------------------------------

    def wake(self) -> None:
        """Something was added to the units: send it when the agent next yields."""
        self._wake.set()

    def send_durable(self, unit: Unit) -> None:
        """Records of a unit that is already durable (`Units.resend`): send them."""
        self._unsent.append(unit)
        self._wake.set()

    def full(self) -> bool:
        return (
            self._units.overlay_size() > MAX_PENDING_KEYS
            or self._units.undelivered_count() > MAX_UNDELIVERED_RECORDS
            or self._units.undelivered_bytes() > MAX_UNDELIVERED_BYTES
        )

    async def room(self) -> None:
        """Wait until little enough is pending (backpressure on the agent)."""
        while self.full():
            self._progress.clear()
            self._wake.set()
            await self._progress.wait()

    # -- sending -------------------------------------------------------------------

    async def run(self) -> None:
        """Send what comes: once the agent has nothing more for QUIET_SECONDS, or
        LINGER_SECONDS after it began to come while it keeps coming."""
        while True:
            await self._wake.wait()
            began = time.monotonic()
            seen = self._units.events
            while time.monotonic() - began < LINGER_SECONDS:
                await asyncio.sleep(QUIET_SECONDS)
                if self._units.events == seen:
                    break
                seen = self._units.events
            self._wake.clear()
            await self.flush()

    async def flush(self) -> None:
        """Send every open unit and wait until each is durable and applied; then send
        their records (not waiting for those)."""
        async with self._lock:
            by_partition: dict[int, list[Unit]] = collections.defaultdict(list)
            for unit in self._units.take():
                by_partition[unit.partition].append(unit)
            if not by_partition and not self._unsent:
                self._progress.set()
                return
            producer = await self._client()
            await asyncio.gather(
                *(self._send_units(producer, units) for units in by_partition.values())
            )
            for units in by_partition.values():
                self._unsent.extend(units)
            while self._unsent:
                unit = self._unsent.popleft()
                if unit.emits:
                    await self._send_records(producer, unit)
                else:
                    self._units.delivered(unit)
            self._progress.set()

    async def confirmed(self) -> None:
        """Wait until every unit begun so far is durable and its records delivered;
        units begun meanwhile are not waited for (a commit must not wait for ever)."""
        newest = self._units.newest()
        while True:
            await self.flush()
            oldest = self._units.oldest_pending()
            if oldest is None or oldest > newest:
                return
            self._progress.clear()  # no await since the check: no progress missed
            await self._progress.wait()

    async def _send_units(self, producer: AIOKafkaProducer, units: list[Unit]) -> None:
        for unit in units:
            while True:
                try:
                    batch = producer.create_batch()
                    for _, key, value in unit.records.values():
                        if batch.append(key=key, value=value, timestamp=None) is None:
                            raise RecordTooLargeError(
                                f"unit of {len(unit.records)} records ({unit.size} bytes)"
                                " does not fit one record batch"
                            )
                    metadata = await (
                        await producer.send_batch(
                            batch, self._changelog, partition=unit.partition
                        )
                    )
                    break
                except FATAL_ERRORS as exc:
                    log.critical(
                        "cannot write the changelog of partition %d: %r; stopping",
                        unit.partition,
                        exc,
                    )
                    await self._on_fatal(exc)
                    raise
                except (KafkaError, OSError) as exc:
                    log.warning(
                        "changelog write for partition %d failed (%r); sending the"
                        " same %d records again in %.0f s",
                        unit.partition,
                        exc,
                        len(unit.records),
                        RETRY_SECONDS,
                    )
                    await asyncio.sleep(RETRY_SECONDS)
            self._apply(unit, metadata.offset)
            self.counts["units"] += 1
            self.counts["changelog_records"] += len(unit.records)
            self.counts["events"] += unit.events

    def _apply(self, unit: Unit, base_offset: int) -> None:
        """Write a durable unit into the store as Faust's recovery would have."""
        tp = TopicPartition(self._changelog, unit.partition)
        events = [
            SimpleNamespace(
                key=key,
                value=value,
                message=SimpleNamespace(
                    key=key_bytes,
                    value=value_bytes,
                    partition=unit.partition,
                    offset=base_offset + n,
                    tp=tp,
                ),
            )
            for n, (key, value, key_bytes, value_bytes) in enumerate(
                self._units.durable(unit)
            )
        ]
        self._store().apply_changelog_batch(events, to_key=_same, to_value=_same)

    async def _send_records(self, producer: AIOKafkaProducer, unit: Unit) -> None:
        """Send the unit's records as one record batch per topic and partition, placed by
        the producer's own partitioner (murmur2 of the key, as `producer.send` places a
        record), not waiting for delivery: a future per batch, not per record."""
        batches: dict[tuple[str, int], Any] = {}
        futures: list[asyncio.Future] = []
        try:
            for emit, value in zip(unit.emits, unit.values, strict=True):
                topic = self._outputs[emit.topic]
                key = emit.key.encode("utf-8")
                partition = await self._partition(producer, topic, key)
                batch = batches.get((topic, partition))
                if batch is None:
                    batch = batches[(topic, partition)] = producer.create_batch()
                if batch.append(key=key, value=value, timestamp=None) is None:
                    futures.append(
                        await producer.send_batch(batch, topic, partition=partition)
                    )
                    batch = batches[(topic, partition)] = producer.create_batch()
                    if batch.append(key=key, value=value, timestamp=None) is None:
                        raise RecordTooLargeError(f"a {len(value)}-byte record to {topic}")
            for (topic, partition), batch in batches.items():
                futures.append(await producer.send_batch(batch, topic, partition=partition))
        except FATAL_ERRORS as exc:
            log.critical("cannot send records: %r; stopping", exc)
            await self._on_fatal(exc)
            raise
        except (KafkaError, OSError) as exc:
            log.warning(
                "sending records failed (%r); retrying in %.0f s", exc, RETRY_SECONDS
            )
            for future in futures:
                future.cancel()
            self._unsent.appendleft(unit)
            await asyncio.sleep(RETRY_SECONDS)
            return
        done = asyncio.gather(*futures)
        self._sent.add(done)
        self.counts["records"] += len(unit.emits)

        def delivered(result: asyncio.Future) -> None:
            self._sent.discard(done)
            if result.cancelled() or result.exception() is not None:
                log.warning(
                    "records of partition %d were not delivered (%r); sending them again",
                    unit.partition,
                    None if result.cancelled() else result.exception(),
                )
                self._unsent.append(unit)
                self._wake.set()
            else:
                self._units.delivered(unit)
                self._progress.set()

        done.add_done_callback(delivered)

    async def _partition(self, producer: AIOKafkaProducer, topic: str, key: bytes) -> int:
        """The partition `producer.send` would place a record with `key` in."""
        if not producer._metadata.partitions_for_topic(topic):
            await producer.client._wait_on_metadata(topic)
        return int(producer._partition(topic, None, None, None, key, None))

    async def _client(self) -> AIOKafkaProducer:
        if self._producer is None:
            producer = clients.aiokafka_producer(
                self._settings,
                client_id=self._client_id,
                linger_ms=0,
                max_batch_size=1024 * 1024,
                max_request_size=1024 * 1024,
                request_timeout_ms=30_000,
            )
            started = time.monotonic()
            while True:
                try:
                    await producer.start()
                    break
                except (KafkaError, OSError) as exc:
                    log.warning(
                        "cannot start the changelog producer (%r) after %.0f s; retrying",
                        exc,
                        time.monotonic() - started,
                    )
                    await asyncio.sleep(RETRY_SECONDS)
            self._producer = producer
        return self._producer

    async def stop(self) -> None:
        """Deliver what is pending, then close the producer."""
        if self._producer is not None:
            await self.confirmed()
            await self._producer.stop()
            self._producer = None


def _same(value: Any) -> Any:
    return value
