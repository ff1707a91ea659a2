"""The Faust shell: decode, call the core, write the table, wait, emit. Nothing else.

One agent (concurrency 1) consumes the co-partitioned inputs: lead requests, call
statuses and ticks. Each event is decoded (`streams.topics`), handed to
`limiter_table.process` with the table as a read function and the wall clock, and its
writes applied to the table. When the event emits anything, the shell first waits until
the table's changelog has those writes (rule 7 of the core: no record escapes state a
crash could lose), then produces. An exception for one event dead-letters that event;
the agent never dies of it, because Faust would ack the event and lose it.

Ticks come from a timer that only *sends* a tick record to each partition this worker
owns; the agent processes them like any event (timers cannot write tables).
"""

from __future__ import annotations

import asyncio
import collections
import logging
import time
from typing import Any

import faust
from faust.types import EventT

from . import limiter_table as core
from . import metrics
from .settings import Settings
from .topics import (
    INPUT_RECORDS, INPUT_TOPICS, LIMITER_TABLE, LIMITER_TICKS, OUTPUT_TOPICS,
    InvalidRecord, Tick, app_id, to_iso, topic_name,
)

log = logging.getLogger("streams.worker")

#: Notes worth more than INFO: a lease expiring means a status was lost somewhere.
_WARNING_NOTES = {"lease-expired", "dead-lettered", "interrupted-event-completed",
                  "redelivered"}


class DurableTable(faust.Table):
    """A table whose changelog sends can be awaited, so records leave only after them."""

    def __init__(self, *args: Any, **kwargs: Any):
        super().__init__(*args, **kwargs)
        self._unconfirmed: list[asyncio.Future] = []

    def send_changelog(self, *args: Any, **kwargs: Any):  # type: ignore[override]
        future = super().send_changelog(*args, **kwargs)
        self._unconfirmed.append(future)
        return future

    async def changelog_confirmed(self) -> None:
        pending, self._unconfirmed = self._unconfirmed, []
        if pending:
            await asyncio.gather(*pending)

    def guard_commits(self, producer: Any) -> None:
        """Make the producer's flush, which Faust awaits before committing offsets, also
        wait for every changelog write of this table.

        Faust's own flush gives up on its send buffer after 0.1 s without progress
        (faust/transport/producer.py, ProducerBuffer.flush_atmost) and then commits the
        offsets anyway: under load, an event's table writes could still sit in that
        buffer when its offset is committed, and a crash would lose them for good (a
        lead accepted, then forgotten). With this guard an offset is committed only
        after the writes of the events before it are in the changelog.
        """
        if getattr(producer, "_streams_guarded", False):
            return
        flush = producer.flush

        async def flush_then_confirm() -> None:
            await flush()
            await self.changelog_confirmed()

        producer.flush = flush_then_confirm
        producer._streams_guarded = True


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
        self._base_names = {topic_name(b, prefix): b for b in INPUT_TOPICS}
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

    # -- the agent -----------------------------------------------------------------

    async def _agent(self, stream: faust.StreamT) -> None:
        self.table.guard_commits(self.app.producer)
        async for event in stream.events():
            try:
                await self.handle(event)
            except asyncio.CancelledError:
                raise
            except Exception as exc:  # one bad event must not kill the agent
                log.exception("event %s/%s/%s failed; dead-lettering it",
                              event.message.topic, event.message.partition,
                              event.message.offset)
                await self._emit(core.reject(self._source(event), f"internal error: {exc!r}"))

    async def handle(self, event: EventT) -> None:
        source = self._source(event)
        metrics.EVENTS.labels(topic=source.topic).inc()
        with metrics.EVENT_SECONDS.time():
            effects = self._decide(event, source)
            for key, value in effects.writes:
                if value is not None:
                    self.table[key] = value
                elif key in self.table:
                    del self.table[key]
            await self._emit(effects)
        self.lag.processed(source.topic, source.partition, event.message.timestamp)

    def _decide(self, event: EventT, source: core.Source) -> core.Effects:
        base = self._base_names[source.topic]
        try:
            record = INPUT_RECORDS[base].decode(source.value, source.key)
            if isinstance(record, Tick) and record.partition != source.partition:
                raise InvalidRecord(f"tick for partition {record.partition} arrived on"
                                    f" partition {source.partition}")
        except InvalidRecord as exc:
            return core.reject(source, exc.reason, exc.lead_id, exc.business_id)
        return core.process(self.table.get, record, source, time.time(), self.rules)

    async def _emit(self, effects: core.Effects) -> None:
        if effects.emits:
            await self.table.changelog_confirmed()
        for emit in effects.emits:
            await self.outputs[emit.topic].send(key=emit.key.encode("utf-8"),
                                                value=emit.record.encode())
        for note in effects.notes:
            self.counters[note.kind] += 1
            if note.kind.startswith("outcome-") and note.business_id is not None:
                self.outcomes_by_business[note.business_id][note.kind[8:]] += 1
            level = logging.WARNING if note.kind in _WARNING_NOTES else logging.INFO
            log.log(level, "%s", note.message)
        metrics.observe_effects(effects)

    @staticmethod
    def _source(event: EventT) -> core.Source:
        message = event.message
        return core.Source(message.topic, message.partition, message.offset,
                           message.key, message.value)

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
