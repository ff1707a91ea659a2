"""The Faust shell's wiring that no other test reaches without a broker."""

from __future__ import annotations

import asyncio

from streams import app
from streams.settings import Settings
from streams.shell import faust_patches


def test_the_workers_fetch_is_held_open_briefly():
    """Faust holds aiokafka's fetch open 1,500 ms, and records of a partition left out of
    it wait that long (FETCH_MAX_WAIT_MS); the worker's consumer must use ours."""
    limiter = app.Limiter(Settings.from_env({}), 1)

    async def build():
        thread = limiter.app.consumer._thread
        return thread._create_worker_consumer(limiter.app.transport)

    consumer = asyncio.run(build())
    assert isinstance(limiter.app.consumer, faust_patches.PromptFetchConsumer)
    assert consumer._fetch_max_wait_ms == faust_patches.FETCH_MAX_WAIT_MS < 1500


def test_the_worker_reads_every_input_topic_under_its_prefix():
    limiter = app.Limiter(Settings.from_env({"TOPIC_PREFIX": "t7."}), 1)
    assert set(limiter.inputs.topics) == {
        "t7.leads.requests",
        "t7.calls.status",
        "t7.limiter.ticks",
        "t7.business.control",
    }


def test_the_worker_runs_on_uvloop(monkeypatch):
    """Measured faster for less CPU per record; Faust's own `--loop uvloop` does this."""
    import uvloop

    from streams import worker

    class Stop(Exception):
        pass

    def stop(settings):
        raise Stop

    # The first thing after the loop policy: Kafka is not needed to see it.
    monkeypatch.setattr(worker.preflight, "connect", stop)
    before = asyncio.get_event_loop_policy()
    try:
        try:
            worker.run_worker(Settings.from_env({}))
        except Stop:
            pass
        assert isinstance(asyncio.get_event_loop_policy(), uvloop.EventLoopPolicy)
    finally:
        asyncio.set_event_loop_policy(before)
