"""The worker's changes to Faust internals, each for a reason Faust offers no setting for.

* `PromptFetchConsumer`: the consumer's fetch is held open FETCH_MAX_WAIT_MS, not
  Faust's 1,500 ms, so a status is not left waiting before it frees its slot.
* `cap_commits`: no offset is committed past a record this process has not handled
  (`streams/shell/progress.py`): Faust commits what it acked, skipped records included.
* `guard_flush`: Faust commits offsets after flushing its producer; the flush also waits
  for the worker's own units and records (`streams/shell/outbox.py`), so an offset is
  committed only once what its events wrote and emitted is on the broker.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Mapping
from typing import Any

from faust.transport.drivers import aiokafka as faust_aiokafka

#: How long the broker may hold the worker's fetch request open waiting for data. aiokafka
#: keeps one fetch in flight per broker and leaves out of it every partition that still
#: had records to hand over when it was sent; new records of those partitions wait until
#: it returns. Faust opens it for 1,500 ms (faust/transport/drivers/aiokafka.py,
#: `_create_worker_consumer`): a status could wait that long before it freed its slot,
#: refills of about a second. An idle worker fetches this often. It also holds while the
#: table restores, where it costs a large replay ~15% (empty fetches of caught-up
#: partitions) but spares a rebalance's small one seconds of 1.5 s waits.
FETCH_MAX_WAIT_MS = 20


class PromptFetchThread(faust_aiokafka.AIOKafkaConsumerThread):
    """Faust's consumer thread, its fetch held open FETCH_MAX_WAIT_MS at most."""

    def _create_worker_consumer(self, transport: Any) -> Any:
        consumer = super()._create_worker_consumer(transport)
        consumer._fetch_max_wait_ms = FETCH_MAX_WAIT_MS  # read by its start()
        return consumer


class PromptFetchConsumer(faust_aiokafka.Consumer):
    """Faust's consumer, on a `PromptFetchThread`; set as the transport's Consumer."""

    def _new_consumer_thread(self) -> PromptFetchThread:
        return PromptFetchThread(self, loop=self.loop, beacon=self.beacon)


def cap_commits(
    consumer: Any, cap: Callable[[Mapping[Any, int]], Mapping[Any, int]]
) -> None:
    """Commit only `cap(offsets)` of what Faust commits (nothing when that is empty).

    Wraps the driver's `_commit`, which Faust calls after its pre-commit flush with the
    offsets it computed from its acks."""
    if getattr(consumer, "_streams_capped", False):
        return
    commit = consumer._commit

    async def capped_commit(offsets: Mapping[Any, int]) -> bool:
        safe = cap(offsets)
        return bool(await commit(safe)) if safe else False

    consumer._commit = capped_commit
    consumer._streams_capped = True


def guard_flush(producer: Any, confirmed: Callable[[], Awaitable[None]]) -> None:
    """Make the producer's flush, which Faust awaits before committing offsets, also
    await `confirmed()`.

    Faust's own flush gives up on its send buffer after 0.1 s without progress
    (faust/transport/producer.py, ProducerBuffer.flush_atmost) and then commits the
    offsets anyway; and the worker's units do not go through it at all."""
    if getattr(producer, "_streams_guarded", False):
        return
    flush = producer.flush

    async def flush_then_confirm() -> None:
        await flush()
        await confirmed()

    producer.flush = flush_then_confirm
    producer._streams_guarded = True
