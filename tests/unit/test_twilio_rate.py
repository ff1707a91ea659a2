"""The create rate limiter and backoff (streams/dialers/twilio/rate.py), on virtual time:
the event loop's clock jumps to its next timer whenever nothing is ready, so seconds of
waiting take no time and every wait is measured exactly."""

from __future__ import annotations

import asyncio
import random
import selectors
from collections.abc import Coroutine
from typing import Any, TypeVar

import pytest

from streams.dialers.twilio.rate import CreateRateLimiter, backoff_seconds

#: A scenario that never lets virtual time move (a busy loop) fails instead of hanging.
pytestmark = pytest.mark.timeout(30)

T = TypeVar("T")


class _JumpingSelector(selectors.DefaultSelector):
    """Never sleeps: when nothing is ready, moves its loop's clock by the timeout."""

    def __init__(self) -> None:
        super().__init__()
        self.now = 0.0

    def select(
        self, timeout: float | None = None
    ) -> list[tuple[selectors.SelectorKey, int]]:
        events = super().select(0 if timeout is not None else None)
        if not events and timeout:
            self.now += timeout
        return events


class VirtualTimeLoop(asyncio.SelectorEventLoop):
    def __init__(self) -> None:
        self._jumping = _JumpingSelector()
        super().__init__(self._jumping)

    def time(self) -> float:
        return self._jumping.now


def run_virtual(scenario: Coroutine[Any, Any, T]) -> T:
    loop = VirtualTimeLoop()
    try:
        return loop.run_until_complete(scenario)
    finally:
        loop.close()


def test_rate_limiter_allows_cps_creates_in_any_window():
    async def scenario() -> list[float]:
        loop = asyncio.get_running_loop()
        limiter = CreateRateLimiter(2.0, clock=loop.time)
        rng = random.Random(4)
        starts: list[float] = []

        async def create() -> None:
            assert await limiter.acquire()
            starts.append(loop.time())
            await asyncio.sleep(rng.uniform(0.0, 0.05))  # the request's round trip
            limiter.release()

        await asyncio.gather(*(create() for _ in range(7)))
        return starts

    starts = sorted(run_virtual(scenario()))
    assert len(starts) == 7
    for i in range(len(starts) - 2):
        assert starts[i + 2] - starts[i] >= 1.0 - 1e-9, starts
    # ...and no slower than that: two at once, then two a window after each answer.
    assert starts[1] == starts[0] and starts[2] - starts[0] < 1.05, starts


def test_rate_limiter_gives_up_at_the_deadline_and_fractional_cps():
    async def scenario() -> tuple[bool, bool, float, float]:
        loop = asyncio.get_running_loop()
        limiter = CreateRateLimiter(0.5, clock=loop.time)
        assert limiter.tokens == 1 and limiter.window == 2.0
        assert await limiter.acquire()
        limiter.release()
        start = loop.time()
        late = await limiter.acquire(deadline=loop.time() + 0.3)
        waited = loop.time() - start
        stop = asyncio.Event()
        loop.call_later(0.1, stop.set)
        start = loop.time()
        stopped = await limiter.acquire(cancel=stop)
        return late, stopped, waited, loop.time() - start

    late, stopped, waited, until_stopped = run_virtual(scenario())
    assert late is False and stopped is False
    assert 0.25 <= waited < 1.0
    assert waited == pytest.approx(0.3) and until_stopped == pytest.approx(0.1)


def test_a_token_never_used_comes_back_at_once_and_waiters_go_in_order():
    async def scenario() -> tuple[list[int], float]:
        loop = asyncio.get_running_loop()
        limiter = CreateRateLimiter(1.0, clock=loop.time)
        order: list[int] = []
        assert await limiter.acquire()

        async def waiter(n: int) -> None:
            assert await limiter.acquire()
            order.append(n)
            limiter.release(used=False)

        waiters = [asyncio.ensure_future(waiter(n)) for n in range(3)]
        await asyncio.sleep(0.5)
        limiter.release(used=False)  # never sent: the next in line goes now
        await asyncio.gather(*waiters)
        return order, loop.time()

    order, finished = run_virtual(scenario())
    assert order == [0, 1, 2]
    assert finished == pytest.approx(0.5)


def test_backoff_grows_and_is_capped():
    rng = random.Random(1)
    delays = [backoff_seconds(n, rng) for n in range(1, 12)]
    assert delays[0] <= 0.25 and delays[-1] <= 8.0 and delays[6] >= 4.0 * 0.5
