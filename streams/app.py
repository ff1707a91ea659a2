"""The Faust shell: the worker's app, table, topics, agent and timers, wired together.

One agent (concurrency 1) consumes the co-partitioned inputs: lead requests, call
statuses, ticks and business controls. What it does with each record is the driver's
(`streams/shell/driver.py`): take the partition over, account for handled offsets,
read skipped records again, decide each record (`streams/shell/decide.py`, which calls
the core). This module performs what the driver asks, against Kafka, the table and the
wall clock. The writes of a partition's consecutive events become one unit, sent as
one record batch to the table's changelog (core rule 7: all of an event's writes or
none; `streams/shell/units.py`), and their records leave once the unit is on the broker
(`streams/shell/outbox.py`); commits wait for both. An exception for one event
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
import mode
from faust.types import TP, EventT

from streams import limiter_table as core
from streams import metrics
from streams.kafka import clients
from streams.limiter_state import business_id_of, is_business_key
from streams.settings import Settings
from streams.shell import faust_patches, web
from streams.shell.decide import decide, failed
from streams.shell.decision_log import DecisionLog
from streams.shell.driver import (
    Answer,
    Driver,
    End,
    Handle,
    IsAssigned,
    ReadAgain,
    ReadCommitted,
    ReadEnd,
    Steps,
    TakeOver,
)
from streams.shell.faults import Faults
from streams.shell.outbox import Outbox
from streams.shell.progress import Key
from streams.shell.reread import BrokerReader
from streams.shell.restore import RestoreProgress
from streams.shell.units import Units, encode_json
from streams.topics import (
    INPUT_TOPICS,
    LIMITER_TABLE,
    LIMITER_TICKS,
    OUTPUT_TOPICS,
    Tick,
    app_id,
    base_names,
    changelog_topic,
    to_iso,
    topic_name,
)

log = logging.getLogger(__name__)

#: How often the decision summary is logged when decisions are at DEBUG.
DECISION_SUMMARY_SECONDS = 1.0


def _freeze_survivors() -> None:
    """Keep what has lived this long, the table above all, out of Python's cyclic GC.

    The table holds millions of small objects; a full collection walks all of them
    (70-890 ms each while 100,000 businesses are restored), and such pauses came back
    as the table turned over. Table values are plain JSON, freed by reference counting
    when replaced, so frozen ones are still reclaimed; young garbage cycles are
    collected first. (A cycle that lived past a refresh and dies later is never
    reclaimed: a small, bounded leak.)"""
    gc.collect(1)
    gc.freeze()


class DuringRestore(mode.Service):
    """What runs while Faust restores the table: Faust starts its own timers and web
    server only once the restore is done, so its progress would be seen by nobody."""

    def __init__(self, limiter: Limiter) -> None:
        super().__init__()
        self.limiter = limiter

    async def on_started(self) -> None:
        # Faust starts the web server only when it is not running yet, so this is safe:
        # every table view answers 503 until the worker is ready.
        await self.limiter.app.on_started_init_web_server()

    @mode.Service.timer(1.0)
    async def _follow_restore(self) -> None:
        await self.limiter._follow_restore()


class Limiter:
    """The worker: a Faust app, its table, topics, agent, tick timer and web views."""

    def __init__(self, settings: Settings, replication_factor: int):
        self.settings = settings
        self.rules = settings.rules()
        prefix = settings.topic_prefix
        self.counters: collections.Counter[str] = collections.Counter()
        #: Outcomes per business since this worker started, for `streams top`; a
        #: business that finished everything leaves the table but not this.
        self.outcomes_by_business: collections.defaultdict[
            str, collections.Counter[str]
        ] = collections.defaultdict(collections.Counter)
        self.app = clients.faust_app(
            settings,
            app_id(prefix, settings.app_id),
            replication_factor,
            store=settings.table_store,
            datadir=settings.data_dir,
            topic_partitions=settings.topic_partitions,
            table_standby_replicas=1 if settings.table_store == "rocksdb://" else 0,
            web_port=settings.worker_web_port,
            web_in_thread=False,
            broker_session_timeout=15.0,  # a killed worker's partitions move on sooner
            consumer_group_instance_id=settings.worker_instance_id,
            key_serializer="raw",
            value_serializer="raw",
        )
        self.app.transport.Consumer = faust_patches.PromptFetchConsumer  # type: ignore[misc]
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
            settings,
            changelog_topic(prefix, settings.app_id),
            {b: topic_name(b, prefix) for b in OUTPUT_TOPICS},
            lambda: self.table.data,
            client_id=f"{self.app.conf.id}-units",
            on_fatal=self.app.crash,
        )
        self.app.task(self.outbox.run)
        self.app.on_partitions_revoked.connect(self._on_revoked)  # type: ignore[arg-type]
        self.app.on_before_shutdown.connect(self._on_shutdown)  # type: ignore[arg-type]
        #: real name -> base name of every input topic
        self._base_names = base_names(prefix, INPUT_TOPICS)
        self.driver = Driver(self._base_names)
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
        self.reader = BrokerReader(settings, self.app.conf.id)
        self.faults = Faults.from_env(os.environ, prefix)
        self.faults.install()
        self.app.timer(metrics.REFRESH_SECONDS, name="metrics")(self._refresh_metrics)
        self.restore = RestoreProgress()
        self.app.add_dependency(DuringRestore(self))
        self.decisions = DecisionLog(log, settings.decision_log_level)
        if self.decisions.summarised:
            self.app.timer(DECISION_SUMMARY_SECONDS, name="decisions")(self._log_decisions)
        #: topic -> its child of metrics.EVENTS (labels() costs a lookup per event)
        self._event_counters: dict[str, Any] = {}
        web.add_views(self)

    # -- the agent -----------------------------------------------------------------

    async def _agent(self, stream: faust.StreamT) -> None:
        faust_patches.guard_flush(self.app.producer, self.outbox.confirmed)
        faust_patches.cap_commits(self.app.consumer, self.driver.handled.cap)
        async for event in stream.events():
            source = self._source(event)
            if self.faults.fires(source.topic, source.partition, source.offset, "drop"):
                continue
            await self._run(self.driver.record(source, event.message.generation_id))

    async def _run(self, steps: Steps) -> None:
        """Perform what the driver asks, feeding it the answers, until it is done.
        Whenever too much awaits the broker, the agent waits first (backpressure).
        Handling a record awaits nothing, so it is called, not awaited: most records
        ask for nothing else."""
        answer: Answer = None
        while True:
            try:
                request = steps.send(answer)
            except StopIteration:
                request = None
            if self.outbox.full():
                await self.outbox.room()
            if request is None:
                return
            if isinstance(request, Handle):
                self.handle(request.source, request.statuses_read_until)
                answer = None
            else:
                answer = await self._perform(request)

    async def _perform(
        self, request: TakeOver | ReadCommitted | ReadAgain | IsAssigned | ReadEnd
    ) -> Answer:
        match request:
            case TakeOver(partition):
                self._take_over(partition)
                return None
            case ReadCommitted(key):
                return await self._committed(key)
            case ReadAgain(key, start, end):
                return await self._read_again(key, start, end)
            case IsAssigned(key):
                return TP(*key) in self.app.consumer.assignment()
            case ReadEnd(key):
                try:
                    return End(self.app.consumer.highwater(TP(*key)), time.monotonic())
                except Exception:  # not assigned (any more)
                    return None

    def handle(self, source: core.Source, statuses_read_until: float | None) -> None:
        """Decide one record and apply its effects; any exception dead-letters it and
        the agent goes on (Faust would otherwise ack the event and lose it)."""
        counter = self._event_counters.get(source.topic)
        if counter is None:
            counter = metrics.EVENTS.labels(topic=source.topic)
            self._event_counters[source.topic] = counter
        counter.inc()
        topic = self._base_names[source.topic]
        decided = False
        began = time.perf_counter()
        try:
            self.faults.raise_if_due(source.topic, source.partition, source.offset)
            now = time.time()
            effects = decide(
                self.units.get, source, topic, now, self.rules, statuses_read_until
            )
            decided = True
            self._apply(source, effects)
        except asyncio.CancelledError:
            raise
        except Exception as exc:
            log.exception("event %s failed; dead-lettering it", source.id)
            now = time.time()
            self._apply(
                source, failed(self.units.get, source, topic, exc, now, self.rules, decided)
            )
        metrics.EVENT_SECONDS.observe(time.perf_counter() - began)
        self.lag.processed(source.topic, source.partition, source.timestamp)

    def _apply(self, source: core.Source, effects: core.Effects) -> None:
        """Hand the writes and records on (`streams.shell.units`); count and log the notes.
        Nothing here awaits: no other event can come between a decision and its
        writes."""
        self.units.add(source.partition, effects)
        self.outbox.wake()
        for key, value in effects.writes:
            if is_business_key(key):
                self.summary.update(business_id_of(key), value)
        for note in effects.notes:
            self.counters[note.kind] += 1
            if note.kind.startswith("outcome-") and note.business_id is not None:
                self.outcomes_by_business[note.business_id][note.kind[8:]] += 1
            self.decisions.note(note)
        metrics.observe_effects(effects)

    # -- what the driver asks of Kafka -----------------------------------------------

    async def _committed(self, key: Key) -> int | None:
        try:
            return await asyncio.to_thread(self.reader.committed, *key)
        except Exception as exc:
            log.warning(
                "could not read the committed offset of %s/%s (%s); will retry", *key, exc
            )
            return None

    async def _read_again(self, key: Key, start: int, end: int) -> list[core.Source]:
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
        metrics.SKIPPED_RECORDS.labels(topic=key[0]).inc(len(sources))
        return sources

    def _take_over(self, partition: int) -> None:
        """The partition was assigned here: send again what its last owner may not have
        delivered (core rule 7)."""
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

    async def _on_revoked(self, app: Any, revoked: set[TP], **kwargs: Any) -> None:
        self.driver.revoked(tp.partition for tp in revoked)
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
        """Send a tick to every ticks partition this worker owns; the agent does the
        rest."""
        ticks_name = self.ticks.get_topic_name()
        for tp in self.app.consumer.assignment():
            if tp.topic == ticks_name:
                tick = Tick(partition=tp.partition, at=to_iso(time.time()))
                await self.ticks.send(value=tick.encode(), partition=tp.partition)

    # -- what ops see ------------------------------------------------------------

    async def _log_decisions(self) -> None:
        self.decisions.summary(DECISION_SUMMARY_SECONDS)

    async def _refresh_metrics(self) -> None:
        """Recompute the gauges: consumer lag always, the table's figures when it is
        recovered (reads only: timers never write the table)."""
        _freeze_survivors()
        ready = self.ready()
        metrics.READY.set(1 if ready else 0)
        self.lag.refresh(self.app.consumer, self._base_names)
        if ready:
            if self.summary.stale:
                raw = getattr(self.table.data, "data", None)  # the memory store's dict
                # A copy of the memory store's keys takes milliseconds; a RocksDB
                # iterator reads a snapshot, so it may run while the agent writes.
                keys = list(raw) if isinstance(raw, dict) else self.table.keys()
                await self.summary.rebuild(
                    itertools.chain(keys, self.units.pending_keys()), self.units.get
                )
            await self.summary.set_gauges(time.time())

    async def _follow_restore(self) -> None:
        """Log how far the table's restore from the changelog is, while it lasts."""
        remaining, replayed = self._restore_offsets()
        line = self.restore.sample(time.monotonic(), remaining, replayed)
        if line is not None:
            log.info("%s", line)

    def _restore_offsets(self) -> tuple[int | None, int]:
        """Changelog records still to replay into this worker's active partitions (None
        when no restore runs) and those replayed since the restore began, from where
        each partition's store left off (Faust's recovery: faust/tables/recovery.py)."""
        recovery = self.app.tables.recovery  # type: ignore[attr-defined]
        if not recovery.in_recovery:
            return None, 0
        highwaters, offsets = recovery.active_highwaters, recovery.active_offsets
        remaining = replayed = 0
        for tp in recovery.active_tps:
            if tp not in highwaters or offsets.get(tp) is None:
                continue
            remaining += max(0, highwaters[tp] - offsets[tp])
            began = recovery.tp_to_table[tp].persisted_offset(tp)
            replayed += max(0, offsets[tp] - (-1 if began is None else began))
        return remaining, replayed

    def restore_status(self) -> dict[str, Any] | None:
        """The running restore's figures for `/ready/`; None when there is none."""
        figures = self.restore.figures
        return None if figures is None or self.ready() else figures.as_json()

    def ready(self) -> bool:
        """Whether the table holds this worker's partitions' current state."""
        app = self.app
        return (
            app.tables.recovery.completed.is_set()  # type: ignore[attr-defined]
            and not app.rebalancing
            and not app.in_recovery
        )

    def businesses(self) -> list[dict[str, Any]]:
        """Businesses in the table, and those that ended calls here since start."""
        now = time.time()
        keys = set(self.table.keys()) | set(self.units.pending_keys())
        ids = {
            business_id_of(key)
            for key in keys
            if is_business_key(key) and self.units.get(key) is not None
        }
        ids |= set(self.outcomes_by_business)
        return [
            dict(
                core.describe_business(self.units.get, business_id, now, self.rules),
                outcomes=dict(self.outcomes_by_business.get(business_id, {})),
            )
            for business_id in sorted(ids)
        ]
