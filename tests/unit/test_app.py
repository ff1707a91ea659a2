"""The Faust shell's wiring that no other test reaches without a broker."""

from __future__ import annotations

import asyncio

from streams import app
from streams.settings import Settings


def test_the_workers_fetch_is_held_open_briefly():
    """Faust holds aiokafka's fetch open 1,500 ms, and records of a partition left out of
    it wait that long (FETCH_MAX_WAIT_MS); the worker's consumer must use ours."""
    limiter = app.Limiter(Settings.from_env({}))

    async def build():
        thread = limiter.app.consumer._thread
        return thread._create_worker_consumer(limiter.app.transport)

    consumer = asyncio.run(build())
    assert isinstance(limiter.app.consumer, app._PromptFetchConsumer)
    assert consumer._fetch_max_wait_ms == app.FETCH_MAX_WAIT_MS < 1500


class _Highwaters:
    """A consumer that knows only high watermarks."""

    def __init__(self, highwaters: dict):
        self.highwaters = highwaters

    def highwater(self, tp):
        return self.highwaters[(tp.topic, tp.partition)]


def test_silent_dials_wait_while_it_is_unknown_what_statuses_were_read():
    """Core rule 5 resends a silent dial only once the statuses up to its resend time
    were read. Before any status of the partition is handled in this generation, or
    before a fetch of it answered, that is unknown: nothing counts as read (0.0), never
    everything (None)."""
    limiter = app.Limiter(Settings.from_env({}))
    status = limiter._status_topic
    limiter.app.consumer = _Highwaters({(status, 0): 16_492, (status, 1): None})
    assert limiter._statuses_read_until(0) == 0.0  # not started here yet
    limiter.handled.start((status, 1), "generation", 0)
    assert limiter._statuses_read_until(1) == 0.0  # no fetch answered yet
    limiter.handled.start((status, 0), "generation", 16_000)
    limiter.lag.processed(status, 0, 1_700_000_000.0)
    limiter.handled.handled((status, 0), 16_100)
    assert limiter._statuses_read_until(0) == 1_700_000_000.0  # behind: its last status
    limiter.handled.handled((status, 0), 16_491)
    assert limiter._statuses_read_until(0) is None  # caught up: all of them
