"""The Faust shell: decode, call the core, hand its writes and records on. Nothing else.

One agent (concurrency 1) consumes the co-partitioned inputs: lead requests, call
statuses, ticks and business controls. Each event is decoded (`streams.topics`),
handed to `limiter_table.process` with the table as a read function and the wall
clock, and its writes and records go to `streams.shell.units`: the writes of a partition's
consecutive events become one unit, sent as one record batch to the table's changelog
(core rule 7: all of an event's writes or none), and its records leave once the unit is
on the broker (`streams.shell.outbox`); commits wait for both. Records Faust skips are read
again from the broker and handled (`streams.shell.progress`). An exception for one event
dead-letters that event; the agent never dies of it, because Faust would ack the event
and lose it.

Ticks come from a timer that only *sends* a tick record to each partition this worker
owns; the agent processes them like any event (timers cannot write tables).
"""

from __future__ import annotations

import asyncio
import collections
import gc
import itertools
import logging
import os
import time
from typing import Any

import faust
import orjson
from faust.transport.drivers import aiokafka as faust_aiokafka
from faust.types import TP, EventT

from streams import limiter_state, metrics
from streams import limiter_table as core
from streams.settings import Settings
from streams.shell.outbox import Outbox
from streams.shell.progress import HandledOffsets
from streams.shell.reread import BrokerReader
from streams.shell.units import Units
from streams.topics import (
    CALLS_STATUS,
    INPUT_RECORDS,
    INPUT_TOPICS,
    LEADS_REQUESTS,
    LIMITER_TABLE,
    LIMITER_TICKS,
    OUTPUT_TOPICS,
    InvalidRecord,
    LeadRequest,
    Tick,
    app_id,
    changelog_topic,
    to_iso,
    topic_name,
)

log = logging.getLogger("streams.worker")

#: Fault injection for tests, unset in production: "base_topic:offset:kind,...", a fault
#: on the first delivery of that offset (of the first partition to deliver it). Kinds:
#: "drop", the agent drops it unhandled and Faust acks it; "drop-unacked", Faust's
#: consumer drops it before any stream sees it, never acked (both as faust-streaming
#: itself can around a rebalance); "raise", handling it raises (a bug in our code).
FAULTS_ENV = "STREAMS_WORKER_FAULTS"
FAULT_KINDS = ("drop", "drop-unacked", "raise")

#: A partition whose handled offset stood still this long while the broker holds
#: records beyond it has had records dropped unacked; they are read again on a tick.
STALLED_PARTITION_SECONDS = 10.0
#: At most this many records are read again at once (the next tick reads on).
STALLED_RECORDS_AT_ONCE = 2000

#: How long the broker may hold the worker's fetch request open waiting for data. aiokafka
#: keeps one fetch in flight per broker and leaves out of it every partition that still
#: had records to hand over when it was sent; new records of those partitions wait until
#: it returns. Faust opens it for 1,500 ms (faust/transport/drivers/aiokafka.py,
#: `_create_worker_consumer`): a status could wait that long before it freed its slot,
#: the 0.9-1 s refills of bench/RESULTS.md run 5. An idle worker fetches this often. It
#: also holds while the table restores, where it costs a large replay ~15% (empty fetches
#: of caught-up partitions) but spares a rebalance's small one seconds of 1.5 s waits.
FETCH_MAX_WAIT_MS = 20

#: Notes worth more than INFO: a lease expiring means a status was lost somewhere.
_WARNING_NOTES = {"lease-expired", "dead-lettered", "redelivered"}


def encode_json(value: Any) -> bytes:
    """The table's codec (its schema below), as faust.utils.json calls orjson: changelog
    records must be byte for byte what Faust itself would write, or a RocksDB store
    would not find their keys (tests/unit/test_units.py checks the two agree). Faust's
    own codec wrapper cost four times the encoding."""
    return orjson.dumps(value, option=orjson.OPT_NON_STR_KEYS | orjson.OPT_UTC_Z)


def _freeze_survivors() -> None:
    """Keep what has lived this long, the table above all, out of Python's cyclic GC.

    The table holds millions of small objects; a full collection walks all of them
    (70-890 ms each while 100,000 businesses are restored, bench/RESULTS.md, run 4),
    and such pauses came back as the table turned over. Table
    values are plain JSON, freed by reference counting when replaced, so frozen ones
    are still reclaimed; young garbage cycles are collected first. (A cycle that lived
    past a refresh and dies later is never reclaimed: a small, bounded leak.)"""
    gc.collect(1)
    gc.freeze()


class _PromptFetchThread(faust_aiokafka.AIOKafkaConsumerThread):
    """Faust's consumer thread, its fetch held open FETCH_MAX_WAIT_MS at most."""

    def _create_worker_consumer(self, transport: Any) -> Any:
        consumer = super()._create_worker_consumer(transport)
        consumer._fetch_max_wait_ms = FETCH_MAX_WAIT_MS  # read by its start()
        return consumer


class _PromptFetchConsumer(faust_aiokafka.Consumer):
    def _new_consumer_thread(self) -> _PromptFetchThread:
        return _PromptFetchThread(self, loop=self.loop, beacon=self.beacon)


class Limiter:
    """The worker: a Faust app, its table, topics, agent, tick timer and web views."""

    def __init__(self, settings: Settings):
        self.settings = settings
        self.rules = settings.rules()
        prefix = settings.topic_prefix
        self.counters: collections.Counter[str] = collections.Counter()
        #: Outcomes per business since this worker started, for `streams top`; a
        #: business that finished everything leaves the table but not this.
        self.outcomes_by_business: collections.defaultdict[
            str, collections.Counter[str]
        ] = collections.defaultdict(collections.Counter)
        self.app = faust.App(
            app_id(prefix, settings.app_id),
            broker=f"kafka://{settings.kafka_bootstrap_servers}",
            store=settings.table_store,
            datadir=settings.data_dir,
            topic_partitions=settings.topic_partitions,
            table_standby_replicas=1 if settings.table_store == "rocksdb://" else 0,
            web_port=settings.worker_web_port,
            web_in_thread=False,
            producer_acks=-1,
            broker_session_timeout=15.0,  # a killed worker's partitions move on sooner
            consumer_group_instance_id=settings.worker_instance_id,
            key_serializer="raw",
            value_serializer="raw",
        )
        self.app.transport.Consumer = _PromptFetchConsumer
        self.table = self.app.Table(
            LIMITER_TABLE,
            default=None,
            partitions=settings.topic_partitions,
            schema=faust.Schema(key_serializer="json", value_serializer="json"),
            help="All limiter state: businesses, leads, queues, wake buckets, cursors.",
        )
        self.units = Units(self.table.get, encode_json)
        self.outbox = Outbox(
            self.units,
            settings.kafka_bootstrap_servers,
            changelog_topic(prefix, settings.app_id),
            {b: topic_name(b, prefix) for b in OUTPUT_TOPICS},
            lambda: self.table.data,
            client_id=f"{self.app.conf.id}-units",
            on_fatal=self.app.crash,
        )
        self.app.task(self.outbox.run)
        #: Partitions whose undelivered records this process has taken over (rule 7).
        self._owned: set[int] = set()
        self.app.on_partitions_revoked.connect(self._on_revoked)
        self.app.on_before_shutdown.connect(self._on_shutdown)
        self._base_names = {topic_name(b, prefix): b for b in INPUT_TOPICS}
        self._status_topic = topic_name(CALLS_STATUS, prefix)
        self.inputs = self.app.topic(
            *self._base_names,
            key_type=bytes,
            value_type=bytes,
            partitions=settings.topic_partitions,
        )
        self.ticks = self.app.topic(
            topic_name(LIMITER_TICKS, prefix), key_type=bytes, value_type=bytes
        )
        self.app.agent(self.inputs, name="limiter", concurrency=1)(self._agent)
        self.app.timer(settings.tick_interval_seconds, name="ticks")(self._send_ticks)
        self.lag = metrics.LagTracker()
        self.summary = metrics.BusinessSummary()
        self.reader = BrokerReader(settings.kafka_bootstrap_servers, self.app.conf.id)
        self.handled = HandledOffsets()
        self._faults: dict[tuple[str, int], str] = {}
        for item in os.environ.get(FAULTS_ENV, "").split(","):
            if item:
                base, offset, kind = item.split(":")
                assert kind in FAULT_KINDS, f"{FAULTS_ENV}: unknown fault {kind!r}"
                self._faults[(topic_name(base, prefix), int(offset))] = kind
        if "drop-unacked" in self._faults.values():
            self._drop_in_consumer()
        self.app.timer(metrics.REFRESH_SECONDS, name="metrics")(self._refresh_metrics)

        @self.app.page("/businesses/")
        async def businesses(view: Any, request: Any) -> Any:
            """Every business on this worker's partitions: active calls, waiting leads.

            503 until the table is restored: before that it is empty or half-replayed
            from the changelog, and would show stale slots and queues."""
            if not self.ready():
                return view.json({"ready": False, "businesses": []}, status=503)
            return view.json({"businesses": self.businesses()})

        @self.app.page("/businesses/{business_id}/")
        async def business(view: Any, request: Any, business_id: str) -> Any:
            """One business; with ?lead=ID also where that lead stands and why it waits.

            404 when this worker does not own the business's partition (ask the others)
            or knows nothing of it."""
            if not self.ready():
                return view.json({"ready": False}, status=503)
            found: dict[str, Any] = dict(
                core.describe_business(self.units.get, business_id, time.time(), self.rules)
            )
            lead_id = request.query.get("lead")
            if lead_id:
                found["lead"] = core.describe_lead(
                    self.units.get, business_id, lead_id, self.rules
                )
            known = found["active"] or found["waiting"] or found.get("lead")
            return view.json(found, status=200 if known else 404)

        @self.app.page("/ready/")
        async def ready(view: Any, request: Any) -> Any:
            """200 once the table holds this worker's partitions, else 503: a readiness
            probe that, unlike /businesses/, costs nothing with 100,000 businesses."""
            ready = self.ready()
            return view.json({"ready": ready}, status=200 if ready else 503)

        @self.app.page("/counters/")
        async def counters(view: Any, request: Any) -> Any:
            """How often each kind of decision happened since this worker started."""
            return view.json(dict(self.counters))

        @self.app.page("/metrics")
        async def prometheus(view: Any, request: Any) -> Any:
            """Prometheus text format (streams/metrics.py); gauges refresh on a timer."""
            body, content_type = metrics.metrics_text()
            # aiohttp refuses a charset in content_type=, so the header goes as is.
            return view.bytes(body, headers={"Content-Type": content_type})

    # -- the agent -----------------------------------------------------------------

    async def _agent(self, stream: faust.StreamT) -> None:
        self.outbox.guard_commits(self.app.producer)
        self._cap_commits(self.app.consumer)
        async for event in stream.events():
            source = self._source(event)
            if self._fault(source.topic, source.partition, source.offset, "drop"):
                continue
            key = (source.topic, source.partition)
            generation = event.message.generation_id
            if source.partition not in self._owned:
                self._take_over(source.partition)
            if self.handled.needs_start(key, generation):
                await self._start(key, generation)
            skipped = self.handled.missing(key, source.offset)
            if skipped:
                await self._recover_skipped(key, *skipped)
            await self.handle(source)
            if self._base_names[source.topic] == LIMITER_TICKS:
                await self._start_quiet_partitions(source.partition, generation)
                for tail_key, start, end in self.handled.unrevealed(
                    source.partition
                ) + self._stalled(source.partition):
                    await self._recover_skipped(tail_key, start, end)

    async def handle(self, source: core.Source) -> None:
        """Apply one record; any exception dead-letters it and the agent goes on
        (Faust would otherwise ack the event and lose it). A lead that failed before
        anything of it was applied also gets its outcome, `rejected`."""
        metrics.EVENTS.labels(topic=source.topic).inc()
        decided = False
        try:
            with metrics.EVENT_SECONDS.time():
                effects = self._decide(source)
                decided = True
                self._apply(source, effects)
        except asyncio.CancelledError:
            raise
        except Exception as exc:
            log.exception("event %s failed; dead-lettering it", source.id)
            lead = None if decided else self._lead_of(source)
            self._apply(
                source,
                core.reject(
                    self.units.get,
                    source,
                    f"internal error: {exc!r}",
                    time.time(),
                    self.rules,
                    *(lead or (None, None)),
                ),
            )
        self.handled.handled((source.topic, source.partition), source.offset)
        self.lag.processed(source.topic, source.partition, source.timestamp)
        if self.outbox.full():
            await self.outbox.room()

    def _decide(self, source: core.Source) -> core.Effects:
        if self._fault(source.topic, source.partition, source.offset, "raise"):
            raise RuntimeError(f"injected fault ({FAULTS_ENV})")
        base = self._base_names[source.topic]
        now = time.time()
        try:
            record = INPUT_RECORDS[base](source.value, source.key)
            if isinstance(record, Tick) and record.partition != source.partition:
                raise InvalidRecord(
                    f"tick for partition {record.partition} arrived on"
                    f" partition {source.partition}"
                )
        except InvalidRecord as exc:
            return core.reject(
                self.units.get,
                source,
                exc.reason,
                now,
                self.rules,
                exc.lead_id if base == LEADS_REQUESTS else None,  # a lead to end
                exc.business_id,
            )
        read_until = (
            self._statuses_read_until(source.partition)
            if isinstance(record, Tick)
            else None
        )  # only ticks resend
        return core.process(self.units.get, record, source, now, self.rules, read_until)

    def _apply(self, source: core.Source, effects: core.Effects) -> None:
        """Hand the writes and records on (`streams.shell.units`); count and log the notes.
        Nothing here awaits: no other event can come between a decision and its
        writes."""
        self.units.add(source.partition, effects)
        self.outbox.wake()
        for key, value in effects.writes:
            if limiter_state.is_business_key(key):
                self.summary.update(limiter_state.business_id_of(key), value)
        for note in effects.notes:
            self.counters[note.kind] += 1
            if note.kind.startswith("outcome-") and note.business_id is not None:
                self.outcomes_by_business[note.business_id][note.kind[8:]] += 1
            level = logging.WARNING if note.kind in _WARNING_NOTES else logging.INFO
            log.log(level, "%s", note.message)
        metrics.observe_effects(effects)

    def _lead_of(self, source: core.Source) -> tuple[str, str] | None:
        """(lead_id, business_id) when `source` is a readable lead request."""
        if self._base_names[source.topic] != LEADS_REQUESTS:
            return None
        try:
            lead = LeadRequest.decode(source.value, source.key)
        except InvalidRecord:
            return None
        return lead.lead_id, lead.business_id

    def _statuses_read_until(self, partition: int) -> float | None:
        """Up to when this partition's statuses have been read (core rule 5): all of them
        (None) when the worker has handled up to the status topic's high watermark,
        else the Kafka timestamp of the last status it handled; none (0.0) while that
        is unknown (no status of it handled in this generation yet, or no fetch of it
        answered): taken as "all", a tick after a backlog of leads resent every silent
        dial (bench/RESULTS.md, run 6)."""
        key = (self._status_topic, partition)
        through = self.handled.through(key)
        try:
            highwater = self.app.consumer.highwater(TP(*key))
        except Exception:  # not assigned (any more): nothing to defer for
            return None
        if through is None or highwater is None:
            return 0.0
        if through >= highwater:
            return None
        return self.lag.last_timestamp(*key) or 0.0

    # -- records the consumer skipped (streams/shell/progress.py) ------------------------

    async def _start(self, key: tuple[str, int], generation: Any) -> None:
        """Start the partition's account at the group's committed offset. If the broker
        cannot say now (its coordinator busy in a rebalance), the partition stays
        unstarted: nothing of it is committed, and the next record tries again."""
        try:
            committed = await asyncio.to_thread(self.reader.committed, *key)
        except Exception as exc:
            log.warning(
                "could not read the committed offset of %s/%s (%s); will retry", *key, exc
            )
            return
        self.handled.start(key, generation, committed)

    async def _recover_skipped(self, key: tuple[str, int], start: int, end: int) -> None:
        """Read offsets [start, end) from the broker and handle them, in order. Until
        the broker answers nothing else is handled: going on would hide the gap."""
        while True:
            try:
                sources = await asyncio.to_thread(self.reader.read, *key, start, end)
                break
            except Exception as exc:
                log.warning(
                    "could not read %s/%s offsets %d-%d again (%s); retrying in 1 s",
                    *key,
                    start,
                    end - 1,
                    exc,
                )
                await asyncio.sleep(1)
        log.warning(
            "the consumer skipped %s/%s offsets %d-%d; handling the %d records"
            " the broker has there",
            *key,
            start,
            end - 1,
            len(sources),
        )
        metrics.SKIPPED_RECORDS.labels(topic=key[0]).inc(len(sources))
        for source in sources:
            await self.handle(source)
        self.handled.absent_below(key, end)

    async def _start_quiet_partitions(self, partition: int, generation: Any) -> None:
        """Start the account of `partition`'s other input topics in this generation
        even if no record of theirs was delivered yet: one whose every record the
        consumer dropped would otherwise never be watched (`_stalled`)."""
        assignment = self.app.consumer.assignment()
        for topic in self._base_names:
            key = (topic, partition)
            if TP(*key) in assignment and self.handled.needs_start(key, generation):
                await self._start(key, generation)

    def _stalled(self, partition: int) -> list[tuple[tuple[str, int], int, int]]:
        """Ranges of `partition`'s input topics the consumer dropped unacked: records
        on the broker beyond a handled offset that stood still (`handled.stalled`)."""
        found = []
        for topic in self._base_names:
            key = (topic, partition)
            try:
                end = self.app.consumer.highwater(TP(*key))
            except Exception:  # not assigned (any more)
                continue
            stall = self.handled.stalled(
                key,
                end,
                time.monotonic(),
                STALLED_PARTITION_SECONDS,
                STALLED_RECORDS_AT_ONCE,
            )
            if stall:
                log.warning(
                    "%s/%s stood still at offset %d with records up to %d on the broker",
                    *key,
                    stall[0],
                    end - 1,
                )
                found.append((key, *stall))
        return found

    def _cap_commits(self, consumer: Any) -> None:
        """Commit no offset past a record this process has not handled (`handled.cap`).

        Wraps the driver's `_commit`, which Faust calls after its pre-commit flush with
        the offsets it computed from its acks, skipped records included."""
        if getattr(consumer, "_streams_capped", False):
            return
        commit = consumer._commit

        async def capped_commit(offsets: Any) -> bool:
            safe = self.handled.cap(offsets)
            return await commit(safe) if safe else False

        consumer._commit = capped_commit
        consumer._streams_capped = True

    def _drop_in_consumer(self) -> None:
        """Test fault "drop-unacked" (FAULTS_ENV): Faust's consumer drops the records
        before any stream sees them, as its `getmany` does with the rest of a fetch when
        the generation changes. Patches the class: one worker per process."""
        from faust.transport.consumer import Consumer

        getmany, fault = Consumer.getmany, self._fault

        async def dropping_getmany(consumer: Any, timeout: float) -> Any:
            async for tp, message in getmany(consumer, timeout):
                if not fault(tp.topic, tp.partition, message.offset, "drop-unacked"):
                    yield tp, message

        Consumer.getmany = dropping_getmany  # type: ignore[method-assign]

    def _fault(self, topic: str, partition: int, offset: int, kind: str) -> bool:
        """Whether to inject fault `kind` now (once per record, FAULTS_ENV)."""
        if not self._faults or self._faults.get((topic, offset)) != kind:
            return False
        del self._faults[(topic, offset)]
        log.warning(
            "%s/%d/%d: injected fault %r (%s)", topic, partition, offset, kind, FAULTS_ENV
        )
        return True

    # -- units and records (streams/shell/units.py, streams/shell/outbox.py) ------------------

    def _take_over(self, partition: int) -> None:
        """The partition was assigned here: send again what its last owner may not have
        delivered (core rule 7)."""
        self._owned.add(partition)
        self.summary.stale = True
        _freeze_survivors()  # the table just restored, before a full collection walks it
        unit = self.units.resend(partition)
        if unit is not None:
            log.warning(
                "partition %d: sending again the %d records its last owner may"
                " not have delivered",
                partition,
                len(unit.emits),
            )
            self.outbox.send_durable(unit)

    async def _on_revoked(self, app: Any, revoked: set, **kwargs: Any) -> None:
        self._owned -= {tp.partition for tp in revoked}
        self.summary.stale = True

    async def _on_shutdown(self, app: Any, **kwargs: Any) -> None:
        await self.outbox.stop()

    @staticmethod
    def _source(event: EventT) -> core.Source:
        message = event.message
        return core.Source(
            message.topic,
            message.partition,
            message.offset,
            message.key,
            message.value,
            message.timestamp,
        )

    # -- time ----------------------------------------------------------------------

    async def _send_ticks(self) -> None:
        """Send a tick to every ticks partition this worker owns; the agent does the rest."""
        ticks_name = self.ticks.get_topic_name()
        for tp in self.app.consumer.assignment():
            if tp.topic == ticks_name:
                tick = Tick(partition=tp.partition, at=to_iso(time.time()))
                await self.ticks.send(value=tick.encode(), partition=tp.partition)

    # -- what ops see ------------------------------------------------------------

    async def _refresh_metrics(self) -> None:
        """Recompute the gauges: consumer lag always, the table's figures when it is
        recovered (reads only: timers never write the table)."""
        _freeze_survivors()
        ready = self.ready()
        metrics.READY.set(1 if ready else 0)
        self.lag.refresh(self.app.consumer, self._base_names)
        if ready:
            if self.summary.stale:
                await self._rebuild_summary()
            await self.summary.set_gauges(time.time())

    async def _rebuild_summary(self) -> None:
        """Build the business summary from the table once after a rebalance; writes
        keep it current from then on."""
        self.summary.stale = False
        self.summary.clear()
        raw = getattr(self.table.data, "data", None)  # the memory store's own dict
        # A copy of the memory store's keys takes milliseconds; a RocksDB iterator
        # reads a snapshot, so it may run while the agent writes.
        keys = list(raw) if isinstance(raw, dict) else self.table.keys()
        try:
            async for chunk in metrics.in_slices(
                itertools.chain(keys, self.units.pending_keys()), 1000
            ):
                for key in chunk:
                    if limiter_state.is_business_key(key):
                        self.summary.update(limiter_state.business_id_of(key), self.units.get(key))
        except RuntimeError:  # the partitions changed meanwhile: try again next time
            self.summary.stale = True

    def ready(self) -> bool:
        """Whether the table holds this worker's partitions' current state."""
        app = self.app
        return (
            app.tables.recovery.completed.is_set()
            and not app.rebalancing
            and not app.in_recovery
        )

    def businesses(self) -> list[dict]:
        """Businesses in the table, and those that ended calls here since start."""
        now = time.time()
        keys = set(self.table.keys()) | set(self.units.pending_keys())
        ids = {
            limiter_state.business_id_of(key)
            for key in keys
            if limiter_state.is_business_key(key) and self.units.get(key) is not None
        }
        ids |= set(self.outcomes_by_business)
        return [
            dict(
                core.describe_business(self.units.get, business_id, now, self.rules),
                outcomes=dict(self.outcomes_by_business.get(business_id, {})),
            )
            for business_id in sorted(ids)
        ]
