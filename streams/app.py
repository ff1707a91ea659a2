"""The Faust shell: decode, call the core, write the table, emit. Nothing else.

One agent (concurrency 1) consumes the co-partitioned inputs: lead requests, call
statuses and ticks. Each event is decoded (`streams.topics`), handed to
`limiter_table.process` with the table as a read function and the wall clock, and its
writes applied to the table. Records to emit go to an outbox that sends them only once
the table's changelog has every write made before them (rule 7 of the core: no record
escapes state a crash could lose), in batches, so the agent never waits for the broker
per event; commits wait for the outbox. Records Faust skips are read again from the
broker and handled (`streams.progress`). An exception for one event dead-letters that event;
the agent never dies of it, because Faust would ack the event and lose it.

Ticks come from a timer that only *sends* a tick record to each partition this worker
owns; the agent processes them like any event (timers cannot write tables).
"""

from __future__ import annotations

import asyncio
import collections
import logging
import os
import shutil
import time
from pathlib import Path
from typing import Any, Awaitable, Callable

import faust
from faust.types import TP, EventT

from . import limiter_table as core
from . import metrics
from .progress import HandledOffsets
from .reread import BrokerReader
from .settings import Settings
from .topics import (
    CALLS_STATUS, INPUT_RECORDS, INPUT_TOPICS, LEADS_REQUESTS, LIMITER_TABLE, LIMITER_TICKS,
    OUTPUT_TOPICS, InvalidRecord, Tick, app_id, to_iso, topic_name,
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

#: Notes worth more than INFO: a lease expiring means a status was lost somewhere.
_WARNING_NOTES = {"lease-expired", "dead-lettered", "interrupted-event-completed",
                  "redelivered"}


class DurableTable(faust.Table):
    """A table whose changelog sends can be awaited, so records leave only after them."""

    def __init__(self, *args: Any, **kwargs: Any):
        super().__init__(*args, **kwargs)
        self._unconfirmed: list[asyncio.Future] = []

    def send_changelog(self, partition: int | None, key: Any, value: Any,  # type: ignore[override]
                       *args: Any, **kwargs: Any):
        future = super().send_changelog(partition, key, value, *args, **kwargs)
        self._unconfirmed.append(future)
        self._remember_partition(partition, key, value)
        return future

    def _remember_partition(self, partition: int | None, key: Any, value: Any) -> None:
        """Note each key's partition in the memory store's own bookkeeping.

        Faust's memory store drops the keys of partitions this worker no longer owns
        after each rebalance, but knows the partition only of keys it read from the
        changelog (faust/stores/memory.py): keys written here stayed behind when their
        partition moved, stale. They showed in /businesses/ (a slot the new owner had
        long freed), and could come back into the table if the partition returned after
        the broker compacted their tombstones away."""
        key_partitions = getattr(self.data, "_key_partition", None)
        if key_partitions is None or partition is None:
            return
        if value is None:
            key_partitions.pop(key, None)
        else:
            key_partitions[key] = partition

    async def changelog_confirmed(self) -> None:
        pending, self._unconfirmed = self._unconfirmed, []
        if pending:
            await asyncio.gather(*pending)


class Outbox:
    """Records to emit, each sent only once the changelog has every write made before it
    (core rule 7), in batches.

    Waiting for the changelog before each event's records cost a broker round trip per
    event, a quarter of the worker's time (bench/RESULTS.md); with the outbox the agent
    goes on while a batch waits, and the next batch collects meanwhile. Commits wait
    until everything queued is sent and acknowledged (`guard_commits`)."""

    def __init__(self, table: DurableTable,
                 send: Callable[[core.Emit], Awaitable[asyncio.Future]]):
        self._table = table
        self._send = send
        self._queued: list[core.Emit] = []
        self._sent: list[asyncio.Future] = []
        self._lock = asyncio.Lock()
        self._waiting = asyncio.Event()

    def queue(self, emits: list[core.Emit]) -> None:
        self._queued.extend(emits)
        self._waiting.set()

    async def flush(self) -> None:
        """Send what is queued, once the changelog has the writes made before it."""
        async with self._lock:
            batch, self._queued = self._queued, []
            sent = 0
            try:
                await self._table.changelog_confirmed()
                for emit in batch:
                    self._sent.append(await self._send(emit))
                    sent += 1
            finally:  # what could not be sent stays first in line
                self._queued[:0] = batch[sent:]

    async def confirmed(self) -> None:
        """Flush, then wait until the broker acknowledged every record sent."""
        await self.flush()
        sent, self._sent = self._sent, []
        if sent:
            await asyncio.gather(*sent)

    async def run(self) -> None:
        """Send batches as they come; the agent only queues."""
        while True:
            await self._waiting.wait()
            self._waiting.clear()
            try:
                await self.flush()
            except asyncio.CancelledError:
                raise
            except Exception:
                log.exception("sending records failed; retrying in 1 s")
                self._waiting.set()
                await asyncio.sleep(1)

    def guard_commits(self, producer: Any) -> None:
        """Make the producer's flush, which Faust awaits before committing offsets, also
        wait for every changelog write and every record queued before it.

        Faust's own flush gives up on its send buffer after 0.1 s without progress
        (faust/transport/producer.py, ProducerBuffer.flush_atmost) and then commits the
        offsets anyway: under load, an event's table writes or records could still sit
        in that buffer when its offset is committed, and a crash would lose them for
        good (a lead accepted, then forgotten; an outcome never told). With this guard
        an offset is committed only after the writes and records of the events before
        it are on the broker.
        """
        if getattr(producer, "_streams_guarded", False):
            return
        flush = producer.flush

        async def flush_then_confirm() -> None:
            await flush()
            await self.confirmed()

        producer.flush = flush_then_confirm
        producer._streams_guarded = True


#: Written in the worker's data dir when it stops cleanly, removed when it starts.
CLEAN_STOP_MARKER = "stopped-cleanly"


class Limiter:
    """The worker: a Faust app, its table, topics, agent, tick timer and web views."""

    def __init__(self, settings: Settings):
        self.settings = settings
        self.rules = settings.rules()
        prefix = settings.topic_prefix
        self.counters: collections.Counter[str] = collections.Counter()
        #: Outcomes per business since this worker started, for `streams top`; a
        #: business that finished everything leaves the table but not this.
        self.outcomes_by_business: collections.defaultdict[str, collections.Counter[str]] = (
            collections.defaultdict(collections.Counter))
        self.app = faust.App(
            app_id(prefix, settings.app_id),
            broker=f"kafka://{settings.kafka_bootstrap_servers}",
            store=settings.table_store,
            datadir=settings.data_dir,
            topic_partitions=settings.topic_partitions,
            table_standby_replicas=1 if settings.table_store == "rocksdb://" else 0,
            broker_commit_every=self.rules.journal_slots // 4,
            web_port=settings.worker_web_port,
            web_in_thread=False,
            producer_acks=-1,
            broker_session_timeout=15.0,  # a killed worker's partitions move on sooner
            key_serializer="raw",
            value_serializer="raw",
        )
        self.table = self.app.tables.add(DurableTable(
            self.app, name=LIMITER_TABLE, default=None, beacon=self.app.tables.beacon,
            partitions=settings.topic_partitions,
            schema=faust.Schema(key_serializer="json", value_serializer="json"),
            help="All limiter state: businesses, leads, queues, wake buckets, journal."))
        self.outbox = Outbox(self.table, self._send)
        self.app.task(self.outbox.run)
        self._base_names = {topic_name(b, prefix): b for b in INPUT_TOPICS}
        self._status_topic = topic_name(CALLS_STATUS, prefix)
        self.inputs = self.app.topic(*self._base_names, key_type=bytes, value_type=bytes,
                                     partitions=settings.topic_partitions)
        self.outputs = {b: self.app.topic(topic_name(b, prefix), key_type=bytes,
                                          value_type=bytes)
                        for b in OUTPUT_TOPICS}
        self.ticks = self.app.topic(topic_name(LIMITER_TICKS, prefix), key_type=bytes,
                                    value_type=bytes)
        self.app.agent(self.inputs, name="limiter", concurrency=1)(self._agent)
        self.app.timer(settings.tick_interval_seconds, name="ticks")(self._send_ticks)
        self.lag = metrics.LagTracker()
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
            found = core.describe_business(self.table.get, business_id, time.time(),
                                           self.rules)
            lead_id = request.query.get("lead")
            if lead_id:
                found["lead"] = core.describe_lead(self.table.get, business_id, lead_id,
                                                   self.rules)
            known = found["active"] or found["waiting"] or found.get("lead")
            return view.json(found, status=200 if known else 404)

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

    # -- local state across restarts ------------------------------------------------

    def discard_local_state_after_crash(self) -> None:
        """Drop the local RocksDB tables unless the last run stopped cleanly.

        RocksDB applies a table write locally before the changelog has it, and Faust
        replays the changelog only from the offset it last recorded: after a SIGKILL the
        local store can hold writes the changelog never got next to older, replayed
        values of other keys, a state no sequence of events produced (we saw a queue
        naming a lead that had no record). Recovering from the changelog alone is
        slower and right. A clean stop flushes and commits everything, so its local
        state is kept."""
        if self.settings.table_store != "rocksdb://":
            return
        tables = Path(self.app.conf.tabledir)
        marker = Path(self.app.conf.appdir) / CLEAN_STOP_MARKER
        if tables.exists() and not marker.exists():
            log.warning("the last run did not stop cleanly: discarding local tables in"
                        " %s and recovering them from the changelog", tables)
            shutil.rmtree(tables)
        marker.unlink(missing_ok=True)

    def mark_clean_stop(self) -> None:
        """Note that the worker stopped cleanly, so its local state can be kept."""
        appdir = Path(self.app.conf.appdir)
        appdir.mkdir(parents=True, exist_ok=True)
        (appdir / CLEAN_STOP_MARKER).touch()

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
            if self.handled.needs_start(key, generation):
                await self._start(key, generation)
            skipped = self.handled.missing(key, source.offset)
            if skipped:
                await self._recover_skipped(key, *skipped)
            await self.handle(source)
            if self._base_names[source.topic] == LIMITER_TICKS:
                await self._start_quiet_partitions(source.partition, generation)
                for tail_key, start, end in (self.handled.unrevealed(source.partition)
                                             + self._stalled(source.partition)):
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
                await self._apply(effects)
        except asyncio.CancelledError:
            raise
        except Exception as exc:
            log.exception("event %s failed; dead-lettering it", source.id)
            lead = None if decided else self._lead_of(source)
            await self._apply(core.reject(self.table.get, source,
                                          f"internal error: {exc!r}", time.time(),
                                          self.rules, *(lead or (None, None))))
        self.handled.handled((source.topic, source.partition), source.offset)
        self.lag.processed(source.topic, source.partition, source.timestamp)

    def _decide(self, source: core.Source) -> core.Effects:
        if self._fault(source.topic, source.partition, source.offset, "raise"):
            raise RuntimeError(f"injected fault ({FAULTS_ENV})")
        base = self._base_names[source.topic]
        now = time.time()
        try:
            record = INPUT_RECORDS[base].decode(source.value, source.key)
            if isinstance(record, Tick) and record.partition != source.partition:
                raise InvalidRecord(f"tick for partition {record.partition} arrived on"
                                    f" partition {source.partition}")
        except InvalidRecord as exc:
            return core.reject(self.table.get, source, exc.reason, now, self.rules,
                               exc.lead_id, exc.business_id)
        read_until = (self._statuses_read_until(source.partition)
                      if isinstance(record, Tick) else None)  # only ticks resend
        return core.process(self.table.get, record, source, now, self.rules, read_until)

    async def _apply(self, effects: core.Effects) -> None:
        for key, value in effects.writes:
            if value is not None:
                self.table[key] = value
            elif key in self.table:
                del self.table[key]
        if effects.emits:
            self.outbox.queue(effects.emits)
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
            lead = INPUT_RECORDS[LEADS_REQUESTS].decode(source.value, source.key)
        except InvalidRecord:
            return None
        return lead.lead_id, lead.business_id

    def _statuses_read_until(self, partition: int) -> float | None:
        """Up to when this partition's statuses have been read (core rule 5): all of them
        (None) when the worker has handled up to the status topic's high watermark,
        else the Kafka timestamp of the last status it handled."""
        key = (self._status_topic, partition)
        through = self.handled.through(key)
        try:
            highwater = self.app.consumer.highwater(TP(*key))
        except Exception:  # not assigned (any more): nothing to defer for
            return None
        if through is None or highwater is None or through >= highwater:
            return None
        return self.lag.last_timestamp(*key) or 0.0

    # -- records the consumer skipped (streams/progress.py) ------------------------

    async def _start(self, key: tuple[str, int], generation: Any) -> None:
        """Start the partition's account at the group's committed offset. If the broker
        cannot say now (its coordinator busy in a rebalance), the partition stays
        unstarted: nothing of it is committed, and the next record tries again."""
        try:
            committed = await asyncio.to_thread(self.reader.committed, *key)
        except Exception as exc:
            log.warning("could not read the committed offset of %s/%s (%s); will retry",
                        *key, exc)
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
                log.warning("could not read %s/%s offsets %d-%d again (%s); retrying in"
                            " 1 s", *key, start, end - 1, exc)
                await asyncio.sleep(1)
        log.warning("the consumer skipped %s/%s offsets %d-%d; handling the %d records"
                    " the broker has there", *key, start, end - 1, len(sources))
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
            stall = self.handled.stalled(key, end, time.monotonic(),
                                         STALLED_PARTITION_SECONDS, STALLED_RECORDS_AT_ONCE)
            if stall:
                log.warning("%s/%s stood still at offset %d with records up to %d on the"
                            " broker", *key, stall[0], end - 1)
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
        log.warning("%s/%d/%d: injected fault %r (%s)", topic, partition, offset, kind,
                    FAULTS_ENV)
        return True

    async def _send(self, emit: core.Emit) -> asyncio.Future:
        return await self.outputs[emit.topic].send(key=emit.key.encode("utf-8"),
                                                   value=emit.record.encode())

    @staticmethod
    def _source(event: EventT) -> core.Source:
        message = event.message
        return core.Source(message.topic, message.partition, message.offset,
                           message.key, message.value, message.timestamp)

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
        ready = self.ready()
        metrics.READY.set(1 if ready else 0)
        self.lag.refresh(self.app.consumer, self._base_names)
        if ready:
            metrics.set_business_gauges(self.businesses())

    def ready(self) -> bool:
        """Whether the table holds this worker's partitions' current state."""
        app = self.app
        return (app.tables.recovery.completed.is_set() and not app.rebalancing
                and not app.in_recovery)

    def businesses(self) -> list[dict]:
        """Businesses in the table, and those that ended calls here since start."""
        now = time.time()
        ids = {core.business_id_of(key) for key in list(self.table.keys())
               if core.is_business_key(key)} | set(self.outcomes_by_business)
        return [dict(core.describe_business(self.table.get, business_id, now, self.rules),
                     outcomes=dict(self.outcomes_by_business.get(business_id, {})))
                for business_id in sorted(ids)]
