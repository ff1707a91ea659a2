"""`streams top`: live until Ctrl-C or q; without a terminal, one plain snapshot."""

from __future__ import annotations

import signal
import sys
import threading
import time
from collections.abc import Sequence
from types import FrameType
from typing import TextIO

from rich.console import Console
from rich.live import Live

from streams.ops.status.model import StatusError, check_timeout, require_an_answer
from streams.ops.status.reader import DEFAULT_TIMEOUT, Get, fetch
from streams.ops.top.keys import Keys
from streams.ops.top.model import SORT_KEYS, Top
from streams.ops.top.reader import LagWatcher, WorkerPoller
from streams.ops.top.view import plain, render, rows_for_height
from streams.settings import Settings

DEFAULT_INTERVAL = 2.0
#: A plain snapshot waits this long for its one lag sample.
LAG_SNAPSHOT_WAIT = 8.0


def check_flags(interval: float, limit_rows: int | None, timeout: float) -> None:
    """StatusError (one line) for a flag out of range."""
    if not interval > 0:
        raise StatusError(f"--interval must be more than 0 seconds, got {interval:g}")
    if limit_rows is not None and limit_rows < 1:
        raise StatusError(f"--limit-rows must be at least 1, got {limit_rows}")
    check_timeout(timeout)


def run_top(
    settings: Settings,
    workers: Sequence[str],
    sort: str = "waiting",
    limit_rows: int | None = None,
    interval: float = DEFAULT_INTERVAL,
    timeout: float = DEFAULT_TIMEOUT,
    lag: bool = True,
    out: TextIO | None = None,
    stdin: TextIO | None = None,
    get: Get = fetch,
) -> int:
    """`streams top`: live until Ctrl-C or q (exit 0); without a terminal one plain
    snapshot (StatusError when no worker answered)."""
    check_flags(interval, limit_rows, timeout)
    out = out or sys.stdout
    console = Console(file=out)
    top = Top(workers, sort)
    poller = WorkerPoller(workers, timeout, get)
    watcher = LagWatcher(settings, max(interval, 1.0)) if lag else None
    try:
        if watcher is not None:
            watcher.start()
        if not console.is_terminal:
            top.update(*poller.poll(), now=time.time())
            require_an_answer(top.merged.replies)
            if watcher is not None:
                watcher.updated.wait(LAG_SNAPSHOT_WAIT)
            state = watcher.state if watcher is not None else None
            print(plain(top, limit_rows, state), file=out, flush=True)
            return 0
        return _live(
            top,
            poller,
            watcher,
            console,
            limit_rows,
            interval,
            sys.stdin if stdin is None else stdin,
        )
    finally:
        if watcher is not None:
            watcher.stop()
        poller.close()


def _live(
    top: Top,
    poller: WorkerPoller,
    watcher: LagWatcher | None,
    console: Console,
    limit_rows: int | None,
    interval: float,
    stdin: TextIO,
) -> int:
    wake = threading.Event()
    quit_asked = threading.Event()

    def on_key(char: str) -> None:
        if char in SORT_KEYS:
            top.sort = SORT_KEYS[char]
            wake.set()
        elif char in ("q", "Q"):
            quit_asked.set()
            wake.set()

    def interrupt(_signum: int, _frame: FrameType | None) -> None:
        raise KeyboardInterrupt

    if watcher is not None:
        watcher.on_update = wake.set
    lag = watcher.state if watcher is not None else None
    previous = (
        signal.signal(signal.SIGTERM, interrupt)
        if threading.current_thread() is threading.main_thread()
        else None
    )
    try:
        with (
            Keys(stdin, on_key),
            Live(
                console=console,
                auto_refresh=False,
                screen=True,
                redirect_stdout=False,
                redirect_stderr=False,
            ) as live,
        ):
            next_refresh = 0.0
            while not quit_asked.is_set():
                if time.monotonic() >= next_refresh:
                    top.update(*poller.poll(), now=time.time())
                    next_refresh = time.monotonic() + interval
                rows = limit_rows or rows_for_height(console.size.height, lag is not None)
                frame = render(
                    top, rows, lag, interval, keys=True, width=console.size.width
                )
                live.update(frame, refresh=True)
                wake.wait(max(0.0, next_refresh - time.monotonic()))
                wake.clear()
    except KeyboardInterrupt:  # Ctrl-C (or SIGTERM) ends the view cleanly
        pass
    finally:
        if previous is not None:
            signal.signal(signal.SIGTERM, previous)
    return 0
