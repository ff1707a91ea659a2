"""What the parts of a running Twilio dialer share: the stop signal, the tasks in
flight, the dials this process is creating, the counters, and the ledger's threads.

Ledger calls block, so they run on a small pool (one thread for SQLite, whose writers
are serialized anyway) and are retried while the database is away; a stopping dialer
gives up on them with `Stopping`, leaving the row for the next run's recovery.
"""

from __future__ import annotations

import asyncio
import collections
import concurrent.futures
import functools
import logging
import time
from collections.abc import Callable, Coroutine
from typing import Any, ParamSpec, TypeVar

from sqlalchemy.exc import InterfaceError, OperationalError

log = logging.getLogger(__name__)

P = ParamSpec("P")
T = TypeVar("T")


class Stopping(Exception):
    """The dialer is stopping; leave the row for the next run's recovery."""


class Runtime:
    """Made by the running dialer, inside its event loop, and handed to every part."""

    def __init__(
        self,
        db_pool: concurrent.futures.ThreadPoolExecutor,
        counters: collections.Counter[str],
    ):
        self.loop = asyncio.get_running_loop()
        self.counters = counters
        self.stopping = asyncio.Event()
        #: Dials being created or recovered by this process: nothing else may touch them.
        self.inflight: set[str] = set()
        self._db_pool = db_pool
        self._tasks: set[asyncio.Future[Any]] = set()

    def check(self) -> None:
        """Raise Stopping once the dialer is stopping."""
        if self.stopping.is_set():
            raise Stopping()

    async def wait(self, seconds: float) -> None:
        """Sleep, or raise Stopping when the dialer stops first."""
        try:
            await asyncio.wait_for(self.stopping.wait(), max(0.0, seconds))
        except asyncio.TimeoutError:
            return
        raise Stopping()

    async def db(self, fn: Callable[P, T], *args: P.args, **kwargs: P.kwargs) -> T:
        """Run a ledger call on the ledger's threads; retry while the database is away."""
        delay = 0.2
        while True:
            try:
                return await self.db_once(fn, *args, **kwargs)
            except (OperationalError, InterfaceError) as exc:
                if self.stopping.is_set():
                    raise Stopping() from exc
                log.warning(
                    "ledger unavailable (%s); retrying in %.1fs",
                    str(exc).splitlines()[0],
                    delay,
                )
                await asyncio.sleep(delay)
                delay = min(delay * 2, 5.0)

    async def db_once(self, fn: Callable[P, T], *args: P.args, **kwargs: P.kwargs) -> T:
        """Run a ledger call on the ledger's threads, once."""
        return await self.loop.run_in_executor(
            self._db_pool, functools.partial(fn, *args, **kwargs)
        )

    # -- tasks -----------------------------------------------------------------------

    def track(self, task: asyncio.Future[Any]) -> None:
        """Let the stop wait for this task."""
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    def spawn(self, coro: Coroutine[Any, Any, object], what: str) -> None:
        """Run `coro` as a tracked task; its failure is logged, not raised."""

        async def guarded() -> None:
            try:
                await coro
            except Stopping:
                pass
            except Exception:
                log.exception("%s failed; the reconciler will try again", what)

        self.track(asyncio.ensure_future(guarded()))

    async def finish_tasks(self, grace: float) -> int:
        """Stop, let the tasks in flight end within `grace` seconds, cancel the rest;
        return how many were cut short."""
        self.stopping.set()  # dials waiting for a token or a backoff leave their row
        deadline = time.monotonic() + grace
        while self._tasks and time.monotonic() < deadline:
            await asyncio.wait(set(self._tasks), timeout=deadline - time.monotonic())
        if not self._tasks:
            return 0
        pending = set(self._tasks)
        for task in pending:
            task.cancel()
        await asyncio.wait(pending, timeout=5)
        return len(pending)
