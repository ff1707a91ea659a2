"""How fast the dialer may ask Twilio for calls: the calls-per-second budget, and the
backoff between retried creates."""

from __future__ import annotations

import asyncio
import collections
import math
import random
import time
from collections.abc import Callable

#: Backoff of retried creates: min(cap, base * 2**n) scaled by a random 50-100%.
BACKOFF_BASE_SECONDS, BACKOFF_CAP_SECONDS = 0.25, 8.0


class CreateRateLimiter:
    """Twilio's calls-per-second as a token bucket whose tokens come back one window
    after the request that used them was sent.

    `max(1, floor(cps))` tokens and a window of `max(1, 1/cps)` seconds: a token is taken
    before a create request and returns a window after the request left, so a request
    Twilio never answers holds no token. Hence at most that many creates leave in any
    window, e.g. 2 in any second for `TWILIO_CPS=2`, 1 per 2 s for 0.5; should the
    network bunch them, Twilio queues the extra call for a moment rather than refusing
    it. Waiters are served in arrival order.

    `clock` must be the running loop's clock (or run at its pace): waits are the loop's.
    """

    def __init__(self, cps: float, clock: Callable[[], float] = time.monotonic):
        if not cps > 0:
            raise ValueError(f"cps must be positive, got {cps!r}")
        self.tokens = max(1, math.floor(cps))
        self.window = max(1.0, 1.0 / cps)
        self._clock = clock
        self._held = 0
        self._returning: list[float] = []  # when used tokens come back
        self._queue: collections.deque[object] = collections.deque()  # waiters, in order
        self._changed = asyncio.Event()

    def _available(self, now: float) -> bool:
        self._returning = [t for t in self._returning if t > now]
        return self._held + len(self._returning) < self.tokens

    def _notify(self) -> None:
        """Wake every waiter (each re-checks its turn); later waiters get a new event."""
        self._changed.set()
        self._changed = asyncio.Event()

    async def acquire(
        self, deadline: float | None = None, cancel: asyncio.Event | None = None
    ) -> bool:
        """Take a token; False when `deadline` (a `clock()` time) comes first, or when
        `cancel` is set."""
        ticket = object()
        self._queue.append(ticket)
        try:
            while True:
                now = self._clock()
                if (deadline is not None and now >= deadline) or (
                    cancel is not None and cancel.is_set()
                ):
                    return False
                first = self._queue[0] is ticket
                if first and self._available(now):
                    self._held += 1
                    return True
                wait = min(self._returning) - now if first and self._returning else None
                if deadline is not None:
                    wait = deadline - now if wait is None else min(wait, deadline - now)
                await wait_for_any(self._changed, cancel, timeout=wait)
        finally:
            self._queue.remove(ticket)
            self._notify()  # the next in line may go now

    def release(self, used: bool = True) -> None:
        """The request was sent (`used`), or never will be (token back at once)."""
        self._held -= 1
        if used:
            self._returning.append(self._clock() + self.window)
        self._notify()


def backoff_seconds(failures: int, rng: random.Random) -> float:
    """Exponential backoff with jitter for the `failures`-th failed create (1-based)."""
    return min(
        BACKOFF_CAP_SECONDS, BACKOFF_BASE_SECONDS * 2 ** (failures - 1)
    ) * rng.uniform(0.5, 1.0)


async def wait_for_any(*events: asyncio.Event | None, timeout: float | None) -> None:
    """Return when one of `events` is set or `timeout` seconds have passed."""
    waiters = [asyncio.ensure_future(event.wait()) for event in events if event is not None]
    try:
        await asyncio.wait(waiters, timeout=timeout, return_when=asyncio.FIRST_COMPLETED)
    finally:
        for waiter in waiters:
            waiter.cancel()
