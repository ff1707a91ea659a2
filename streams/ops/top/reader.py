"""What `streams top` reads: the workers' answers, and the lag of their group."""

from __future__ import annotations

import collections
import concurrent.futures
import threading
from collections.abc import Callable, Sequence

from streams.ops.lag.model import GroupSample, evaluate, project_groups
from streams.ops.lag.reader import LagError, LagReader
from streams.ops.status.model import Reply
from streams.ops.status.reader import DEFAULT_TIMEOUT, MAX_PARALLEL, Get, fetch
from streams.ops.top.model import LagState
from streams.settings import Settings

#: Lag samples the header's status is judged over (Burrow-style, see streams.ops.lag).
LAG_WINDOW = 10


class WorkerPoller:
    """Asks every worker for `/businesses/` and `/counters/` at once."""

    def __init__(
        self, workers: Sequence[str], timeout: float = DEFAULT_TIMEOUT, get: Get = fetch
    ) -> None:
        self.workers = list(workers)
        self.timeout = timeout
        self.get = get
        self._pool = concurrent.futures.ThreadPoolExecutor(
            min(MAX_PARALLEL, 2 * len(self.workers)), thread_name_prefix="streams-top"
        )

    def poll(self) -> tuple[list[Reply], list[Reply]]:
        """The workers' businesses and counters, each in the workers' order."""
        asks = [(w, "/businesses/") for w in self.workers] + [
            (w, "/counters/") for w in self.workers
        ]
        replies = list(self._pool.map(lambda a: self.get(a[0], a[1], self.timeout), asks))
        return replies[: len(self.workers)], replies[len(self.workers) :]

    def close(self) -> None:
        self._pool.shutdown(wait=False, cancel_futures=True)


class LagWatcher:
    """The workers' consumer group lag, sampled in a background thread into `state`."""

    def __init__(
        self,
        settings: Settings,
        interval: float,
        on_update: Callable[[], None] | None = None,
    ) -> None:
        self.state = LagState(project_groups(settings)[0])
        self.settings = settings
        self.interval = interval
        self.on_update = on_update
        self.updated = threading.Event()
        self._stop = threading.Event()
        self._thread = threading.Thread(
            target=self._run, name="streams-top-lag", daemon=True
        )

    def start(self) -> None:
        self._thread.start()

    def stop(self, wait: float = 0.5) -> None:
        self._stop.set()
        if self._thread.is_alive():
            self._thread.join(wait)

    def _run(self) -> None:
        group = self.state.group
        window: collections.deque[GroupSample] = collections.deque(maxlen=LAG_WINDOW)
        reader = None
        try:
            reader = LagReader(self.settings)
            while not self._stop.is_set():
                try:
                    window.append(reader.sample([group])[group])
                    self.state.status, self.state.error = evaluate(list(window)), None
                except LagError as exc:
                    self.state.error = str(exc)
                except Exception as exc:  # the view goes on without lag
                    self.state.error = f"{type(exc).__name__}: {exc}"
                self._updated()
                self._stop.wait(self.interval)
        except Exception as exc:
            self.state.error = f"{type(exc).__name__}: {exc}"
            self._updated()
        finally:
            if reader is not None:
                reader.close()

    def _updated(self) -> None:
        self.updated.set()
        if self.on_update is not None:
            self.on_update()
