"""The Faust shell's consumer wiring against aiokafka's real fetcher and the broker."""

from __future__ import annotations

import asyncio
import contextlib

import aiokafka
import pytest

from streams import app
from streams.settings import Settings

pytestmark = pytest.mark.integration


def test_fetches_are_held_open_briefly_once_restored_and_as_faust_holds_them_before(
        kafka_broker):
    """A status of a partition left out of the fetch in flight waits for it to return:
    1,500 ms with Faust's value, FETCH_MAX_WAIT_MS once the worker handles events."""
    limiter = app.Limiter(Settings.from_env(
        {"KAFKA_BOOTSTRAP_SERVERS": kafka_broker.bootstrap}))
    thread = limiter.app.consumer._thread
    assert isinstance(thread, app._PromptFetchThread)

    async def switch() -> list[int]:
        consumer = aiokafka.AIOKafkaConsumer(bootstrap_servers=kafka_broker.bootstrap,
                                             fetch_max_wait_ms=1500)
        await consumer.start()
        try:
            thread._consumer = consumer
            seen = [consumer._fetcher._fetch_max_wait_ms]
            for prompt in (True, True, False, True):
                seen.append((thread.fetch_promptly(prompt),
                             consumer._fetcher._fetch_max_wait_ms))
            return seen
        finally:
            # aiokafka's stop of a consumer that never subscribed cancels its own
            # coordinator task and lets the CancelledError out
            with contextlib.suppress(asyncio.CancelledError):
                await consumer.stop()

    prompt = app.FETCH_MAX_WAIT_MS
    assert asyncio.run(switch()) == [1500, (True, prompt), (False, prompt), (True, 1500),
                                     (True, prompt)]
    assert app.FETCH_MAX_WAIT_MS < 1500
