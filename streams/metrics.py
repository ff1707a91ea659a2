"""Every Prometheus metric of the project, in one place (prometheus_client).

All names start with `streams_`. The worker (`streams/app.py`) counts its decisions
(the core's `Note` kinds), times each event and refreshes the gauges from a timer; the
dialer-side metrics are defined here so that the alert rules and the dashboard in
`deploy/` can rely on them, and the dialer increments them. `metrics_text()` renders
the registry for a `GET /metrics` endpoint.

Label cardinality is bounded on purpose: `topic` and `partition` by the contract's
topics, `outcome` and `kind` by the core's vocabulary, `code` by Twilio's error codes,
and `business_id` by `TOP_BUSINESSES`: the per-business gauges hold only the busiest
businesses, cleared and set again at each refresh.

Consumer lag, per input partition this worker owns:

* `streams_consumer_lag_records` = the partition's high watermark (as last seen by
  Faust's consumer in a fetch response) minus the offset this worker last committed.
  Faust commits every couple of seconds, so a healthy busy partition shows a small lag.
  Before the group's first commit on a partition the committed offset counts as 0.
* `streams_consumer_lag_seconds` is an approximation: when the lag in records is 0 it
  is 0; otherwise it is now minus the Kafka timestamp of the last event this worker
  processed from that partition (or, before it processed any, since when it has seen
  the lag). The exact figure, the age of the record at the committed offset, needs a
  fetch of that record; ours is a lower bound of it (the last processed record is no
  older than the committed one) that grows one second per second while the worker
  makes no progress, which is what the alerts need. `streams lag` reads the exact one
  from the broker.
"""

from __future__ import annotations

import asyncio
import heapq
import itertools
import time
from collections.abc import AsyncIterator, Iterable
from typing import Any

from prometheus_client import (
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    disable_created_metrics,
    gc_collector,
    generate_latest,
    platform_collector,
    process_collector,
)

from streams.limiter_state import (
    Read,
    business_id_of,
    decode_business,
    is_business_key,
    oldest_waiting_since,
    waiting_count,
)
from streams.limiter_table import Effects, NoteKind

#: How many businesses get their own `business_id` series in the per-business gauges.
TOP_BUSINESSES = 20
#: How often the worker recomputes its gauges (seconds). Scrapes read the last values.
REFRESH_SECONDS = 5.0

#: The classic text format every Prometheus parses (newer clients announce 1.0.0).
CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"

# No `*_created` series: they double the series count and nothing here uses them.
disable_created_metrics()

#: Our registry (not the library's global one): only what this module defines, plus
#: the usual process_* and python_* series.
REGISTRY = CollectorRegistry(auto_describe=True)
process_collector.ProcessCollector(registry=REGISTRY)
platform_collector.PlatformCollector(registry=REGISTRY)
gc_collector.GCCollector(registry=REGISTRY)

# -- worker ----------------------------------------------------------------------------

EVENTS = Counter(
    "streams_events_total",
    "Input events the worker handled, by Kafka topic.",
    ["topic"],
    registry=REGISTRY,
)
EVENT_SECONDS = Histogram(
    "streams_event_processing_seconds",
    "Time to handle one input event: decide, write the table, wait for the changelog,"
    " emit.",
    buckets=(
        0.0005,
        0.001,
        0.0025,
        0.005,
        0.01,
        0.025,
        0.05,
        0.1,
        0.25,
        0.5,
        1.0,
        2.5,
        5.0,
        10.0,
    ),
    registry=REGISTRY,
)
SKIPPED_RECORDS = Counter(
    "streams_skipped_records_recovered_total",
    "Input records the Kafka consumer skipped (faust-streaming, around rebalances) that"
    " the worker read again from the broker and handled (streams/shell/progress.py).",
    ["topic"],
    registry=REGISTRY,
)
DECISIONS = Counter(
    "streams_decisions_total",
    "Every decision of the limiter core, by kind (the same as GET /counters/).",
    ["kind"],
    registry=REGISTRY,
)
DIALS_GRANTED = Counter(
    "streams_dials_granted_total",
    "Dial commands granted (a slot was taken).",
    registry=REGISTRY,
)
OUTCOMES = Counter(
    "streams_outcomes_total",
    "Leads that ended for good, by final outcome (a terminal call status, expired,"
    " rejected or withdrawn).",
    ["outcome"],
    registry=REGISTRY,
)
LEASE_EXPIRIES = Counter(
    "streams_lease_expiries_total",
    "Slots freed because their lease ran out: a call status was lost somewhere.",
    registry=REGISTRY,
)
DIAL_RESENDS = Counter(
    "streams_dial_resends_total",
    "Dial commands resent because the dialer reported nothing in time.",
    registry=REGISTRY,
)
DEAD_LETTERS = Counter(
    "streams_dead_letters_total",
    "Records sent to leads.deadletter (bad input, failed events, orphan statuses).",
    registry=REGISTRY,
)
ACTIVE_CALLS = Gauge(
    "streams_active_calls",
    "Calls in flight (slots taken) on this worker's partitions.",
    registry=REGISTRY,
)
WAITING_LEADS = Gauge(
    "streams_waiting_leads",
    "Leads waiting for a slot on this worker's partitions (not consumer lag).",
    registry=REGISTRY,
)
BUSINESSES = Gauge(
    "streams_businesses",
    "Businesses with state on this worker's partitions.",
    registry=REGISTRY,
)
BUSINESS_ACTIVE_CALLS = Gauge(
    "streams_business_active_calls",
    f"Calls in flight per business, for the {TOP_BUSINESSES} busiest businesses of this"
    " worker only.",
    ["business_id"],
    registry=REGISTRY,
)
BUSINESS_WAITING_LEADS = Gauge(
    "streams_business_waiting_leads",
    f"Waiting leads per business, for the {TOP_BUSINESSES} busiest businesses of this"
    " worker only.",
    ["business_id"],
    registry=REGISTRY,
)
OLDEST_WAITING = Gauge(
    "streams_oldest_waiting_seconds",
    "Age of the longest-waiting lead at the head of a queue on this worker (0: none).",
    registry=REGISTRY,
)
READY = Gauge(
    "streams_worker_ready",
    "1 when the worker's table is recovered and it serves its partitions, else 0.",
    registry=REGISTRY,
)
LAG_RECORDS = Gauge(
    "streams_consumer_lag_records",
    "High watermark minus committed offset, per input partition this worker owns.",
    ["topic", "partition"],
    registry=REGISTRY,
)
LAG_SECONDS = Gauge(
    "streams_consumer_lag_seconds",
    "Approximate lag in time per owned input partition: 0 without lag, else now minus"
    " the timestamp of the last processed event (see streams/metrics.py).",
    ["topic", "partition"],
    registry=REGISTRY,
)
COMMITTED_OFFSET = Gauge(
    "streams_consumer_committed_offset",
    "Offset this worker last committed, per input partition it owns (for STALL"
    " detection: lag with an offset that stands still).",
    ["topic", "partition"],
    registry=REGISTRY,
)

# -- dialer (incremented by the dialer) ---------------------------------------------------

TWILIO_ERRORS = Counter(
    "streams_twilio_errors_total",
    "Twilio REST API errors by Twilio error code (or HTTP status when none).",
    ["code"],
    registry=REGISTRY,
)
TWILIO_CPS_THROTTLED = Counter(
    "streams_twilio_cps_throttled_total",
    "Call creates that waited for the TWILIO_CPS rate limit or got 429/20429.",
    registry=REGISTRY,
)
WEBHOOK_SIGNATURE_FAILURES = Counter(
    "streams_webhook_signature_failures_total",
    "Status callbacks rejected because X-Twilio-Signature did not verify.",
    registry=REGISTRY,
)
DIALER_CALLS_CREATED = Counter(
    "streams_dialer_calls_created_total",
    "Calls the dialer created at Twilio.",
    registry=REGISTRY,
)

DIALER_ACCOUNT_PAUSED = Gauge(
    "streams_dialer_account_paused",
    "1 while the Twilio dialer has paused dialing because Twilio refuses the account.",
    registry=REGISTRY,
)
TWILIO_QUEUE_SECONDS = Histogram(
    "streams_twilio_queue_seconds",
    "How long Twilio said a created call waits in its CPS queue (the create's queue_time).",
    buckets=(0.0, 0.5, 1.0, 2.0, 5.0, 10.0, 20.0, 30.0, 60.0),
    registry=REGISTRY,
)
DIALER_QUEUED_CALLS_CANCELED = Counter(
    "streams_dialer_queued_calls_canceled_total",
    "Calls still queued at Twilio after their dial_by that Twilio confirmed canceled.",
    registry=REGISTRY,
)
DIALER_UNOWNED_CALLS_HUNG_UP = Counter(
    "streams_dialer_unowned_calls_hung_up_total",
    "Live calls to one of our dials' numbers that no ledger row owns, hung up.",
    registry=REGISTRY,
)

#: Every metric above, for `exported_names()`.
ALL = (
    EVENTS,
    EVENT_SECONDS,
    DECISIONS,
    DIALS_GRANTED,
    OUTCOMES,
    LEASE_EXPIRIES,
    DIAL_RESENDS,
    DEAD_LETTERS,
    ACTIVE_CALLS,
    WAITING_LEADS,
    BUSINESSES,
    BUSINESS_ACTIVE_CALLS,
    BUSINESS_WAITING_LEADS,
    OLDEST_WAITING,
    READY,
    LAG_RECORDS,
    LAG_SECONDS,
    COMMITTED_OFFSET,
    TWILIO_ERRORS,
    TWILIO_CPS_THROTTLED,
    WEBHOOK_SIGNATURE_FAILURES,
    DIALER_CALLS_CREATED,
    DIALER_ACCOUNT_PAUSED,
    TWILIO_QUEUE_SECONDS,
    DIALER_QUEUED_CALLS_CANCELED,
    DIALER_UNOWNED_CALLS_HUNG_UP,
)

#: Note kinds with a metric of their own (besides `streams_decisions_total{kind}`).
_NOTE_COUNTERS: dict[NoteKind, Counter] = {
    "dial-granted": DIALS_GRANTED,
    "lease-expired": LEASE_EXPIRIES,
    "dial-resent": DIAL_RESENDS,
    "dead-lettered": DEAD_LETTERS,
}

#: Outcomes that exist from the start, so rate() sees them go from 0.
OUTCOME_VALUES = (
    "completed",
    "busy",
    "failed",
    "no-answer",
    "canceled",
    "expired",
    "rejected",
    "withdrawn",
)
for _outcome in OUTCOME_VALUES:
    OUTCOMES.labels(outcome=_outcome)


def exported_names() -> set[str]:
    """Every sample name our metrics can expose (counters' `_total`, histograms'
    `_bucket`/`_sum`/`_count`, ...), whether or not a series exists yet."""
    suffixes = {
        "counter": ("_total",),
        "gauge": ("",),
        "histogram": ("_bucket", "_sum", "_count"),
    }
    names: set[str] = set()
    for metric in ALL:
        for family in metric.describe():
            names.update(family.name + suffix for suffix in suffixes[family.type])
    return names


def metrics_text() -> tuple[bytes, str]:
    """The registry in Prometheus' text format, and the Content-Type to serve it with."""
    return generate_latest(REGISTRY), CONTENT_TYPE


# -- what the worker calls ---------------------------------------------------------------


def observe_effects(effects: Effects) -> None:
    """Count one event's decisions: each Note kind, and each lead's final outcome (an
    `outcome-*` note; an attempt retried later is not one)."""
    for note in effects.notes:
        DECISIONS.labels(kind=note.kind).inc()
        if note.kind.startswith("outcome-"):
            OUTCOMES.labels(outcome=note.kind[len("outcome-") :]).inc()
        counter = _NOTE_COUNTERS.get(note.kind)
        if counter is not None:
            counter.inc()


class BusinessSummary:
    """Per business of this worker's partitions: active calls, waiting leads and since
    when the longest-waiting head of its queues waits, kept current from the table
    writes (`update`), so that refreshing the gauges never reads the table: reading
    100,000 businesses' views every refresh blocked the worker for seconds. After a
    rebalance it is rebuilt once from the table (`stale`)."""

    def __init__(self) -> None:
        self._rows: dict[str, tuple[int, int, float | None]] = {}
        self.active = 0
        self.waiting = 0
        #: Whether the partitions changed since the rows were built from the table.
        self.stale = True

    def update(self, business_id: str, value: object) -> None:
        """The business's table value was written (None: it left the table)."""
        old = self._rows.pop(business_id, None)
        if old is not None:
            self.active -= old[0]
            self.waiting -= old[1]
        if value is not None:
            business = decode_business(value)
            row = (
                len(business["active"]),
                waiting_count(business),
                oldest_waiting_since(business),
            )
            self._rows[business_id] = row
            self.active += row[0]
            self.waiting += row[1]

    def clear(self) -> None:
        self._rows.clear()
        self.active = self.waiting = 0

    async def rebuild(self, keys: Iterable[str], read: Read) -> None:
        """Build the rows from the table's `keys` (`read` reads their values), once
        after a rebalance; writes keep them current from then on. The keys go in slices,
        so the agent goes on meanwhile."""
        self.stale = False
        self.clear()
        try:
            async for chunk in in_slices(keys, 1000):
                for key in chunk:
                    if is_business_key(key):
                        self.update(business_id_of(key), read(key))
        except RuntimeError:  # the partitions changed meanwhile: try again next time
            self.stale = True

    async def set_gauges(self, now: float, rows_per_slice: int = 2000) -> None:
        """Totals, the busiest businesses (most active plus waiting, ties by id) and
        the oldest wait. The scan goes in slices: in one go it took ~17 ms of CPU every
        refresh at 100,000 businesses, a stall of the agent."""
        ACTIVE_CALLS.set(self.active)
        WAITING_LEADS.set(self.waiting)
        BUSINESSES.set(len(self._rows))
        since: float | None = None
        busiest: list[tuple[str, tuple[int, int, float | None]]] = []
        # a copy: writes go on between the slices
        async for chunk in in_slices(list(self._rows.items()), rows_per_slice):
            oldest = min((row[2] for _, row in chunk if row[2] is not None), default=None)
            if oldest is not None and (since is None or oldest < since):
                since = oldest
            busiest = heapq.nsmallest(
                TOP_BUSINESSES, itertools.chain(busiest, chunk), key=_busiest_first
            )
        OLDEST_WAITING.set(0.0 if since is None else max(0.0, now - since))
        BUSINESS_ACTIVE_CALLS.clear()
        BUSINESS_WAITING_LEADS.clear()
        for business_id, (active, waiting, _) in busiest:
            BUSINESS_ACTIVE_CALLS.labels(business_id=business_id).set(active)
            BUSINESS_WAITING_LEADS.labels(business_id=business_id).set(waiting)


async def in_slices(items: Iterable, size: int) -> AsyncIterator[list]:
    """`items` in lists of `size`, with 2 ms for the agent after each: a scan of the
    whole table in timers (gauges, the summary's rebuild) must not hold the agent up.
    (sleep(0) let the agent take only one step per slice: a 2 s stall at 100,000
    businesses.)"""
    iterator = iter(items)
    while chunk := list(itertools.islice(iterator, size)):
        yield chunk
        await asyncio.sleep(0.002)


def _busiest_first(item: tuple[str, tuple[int, int, float | None]]) -> tuple[int, str]:
    business_id, (active, waiting, _) = item
    return -(active + waiting), business_id


class LagTracker:
    """Consumer lag per owned input partition, from Faust's consumer; see the module
    docstring for what `streams_consumer_lag_seconds` approximates."""

    def __init__(self) -> None:
        self._last_event: dict[tuple[str, int], float] = {}
        self._lag_seen_since: dict[tuple[str, int], float] = {}

    def processed(self, topic: str, partition: int, timestamp: float | None) -> None:
        """Remember the Kafka timestamp (seconds) of the event just processed."""
        if timestamp:
            self._last_event[(topic, partition)] = timestamp

    def refresh(
        self, consumer: Any, topics: Iterable[str], now: float | None = None
    ) -> None:
        """Set the lag gauges for the partitions of `topics` the consumer owns now."""
        now = time.time() if now is None else now
        wanted = set(topics)
        committed_offsets = getattr(consumer, "_committed_offset", {})
        LAG_RECORDS.clear()
        LAG_SECONDS.clear()
        COMMITTED_OFFSET.clear()
        owned = set()
        for tp in consumer.assignment():
            if tp.topic not in wanted:
                continue
            key = (tp.topic, tp.partition)
            owned.add(key)
            try:
                highwater = consumer.highwater(tp)
            except Exception:  # not fetched yet, or the consumer is being rebuilt
                highwater = None
            if highwater is None:
                continue  # unknown until the consumer's first fetch of the partition
            # Faust keeps None for "never committed" (and for offset 0): count from 0.
            committed = committed_offsets.get(tp) or 0
            lag = max(0, highwater - committed)
            if lag == 0:
                seconds = 0.0
                self._lag_seen_since.pop(key, None)
            else:
                since = self._last_event.get(key)
                if since is None:
                    since = self._lag_seen_since.setdefault(key, now)
                seconds = max(0.0, now - since)
            labels = {"topic": tp.topic, "partition": str(tp.partition)}
            LAG_RECORDS.labels(**labels).set(lag)
            LAG_SECONDS.labels(**labels).set(seconds)
            COMMITTED_OFFSET.labels(**labels).set(committed)
        for gone in set(self._last_event) - owned:
            del self._last_event[gone]
        for gone in set(self._lag_seen_since) - owned:
            del self._lag_seen_since[gone]
