"""`streams lag`: one look (a short window of samples) or a watch until Ctrl-C."""

from __future__ import annotations

import collections
import json
import signal
import sys
import threading
import time
from collections.abc import Callable, Sequence
from types import FrameType
from typing import TextIO

from rich.console import Console
from rich.live import Live

from streams.kafka import preflight
from streams.ops.lag.model import (
    GroupSample,
    GroupStatus,
    collect,
    evaluate,
    failures,
    project_groups,
)
from streams.ops.lag.reader import LagError, LagReader
from streams.ops.lag.view import render, to_json, window_note
from streams.settings import Settings

#: Default samples per window: a single look (`streams lag`), and `--watch`.
ONCE_SAMPLES, WATCH_SAMPLES = 3, 10
#: Default seconds between samples: a single look, and `--watch`.
ONCE_INTERVAL, WATCH_INTERVAL = 1.0, 2.0


def check_flags(
    interval: float | None, samples: int | None, fail_over: float | None
) -> None:
    """LagError (one line) for a flag out of range."""
    if interval is not None and not interval > 0:
        raise LagError(f"--interval must be more than 0 seconds, got {interval:g}")
    if samples is not None and samples < 1:
        raise LagError(f"--samples must be at least 1, got {samples}")
    if fail_over is not None and not fail_over >= 0:
        raise LagError(f"--fail-over must be 0 seconds or more, got {fail_over:g}")


def run_lag(
    settings: Settings,
    groups: Sequence[str] | None = None,
    as_json: bool = False,
    watch: bool = False,
    interval: float | None = None,
    samples: int | None = None,
    fail_over: float | None = None,
    out: TextIO | None = None,
) -> int:
    """`streams lag`; returns the exit status (1: over --fail-over, or STALL/STOP)."""
    check_flags(interval, samples, fail_over)
    preflight.connect(settings)  # one line and exit 2 when Kafka cannot be used
    out = out or sys.stdout
    console = Console(file=out)
    interval = interval or (WATCH_INTERVAL if watch else ONCE_INTERVAL)
    samples = samples or (WATCH_SAMPLES if watch else ONCE_SAMPLES)
    named = list(dict.fromkeys(groups or ()))
    looked_for = named or project_groups(settings)
    reader = LagReader(settings)

    def chosen() -> list[str]:
        if named:
            return named
        existing = reader.existing_groups()
        return [g for g in project_groups(settings) if g in existing]

    try:
        if not watch:
            chosen_groups = chosen()
            statuses = (
                collect(lambda: reader.sample(chosen_groups), samples, interval, time.sleep)
                if chosen_groups
                else []
            )
            _show(console, out, statuses, as_json, fail_over, looked_for)
            return _exit_status(statuses, fail_over)
        return _watch(
            console, out, reader, chosen, samples, interval, as_json, fail_over, looked_for
        )
    finally:
        reader.close()


def _show(
    console: Console,
    out: TextIO,
    statuses: Sequence[GroupStatus],
    as_json: bool,
    fail_over: float | None,
    looked_for: Sequence[str] = (),
) -> None:
    if not as_json:
        console.print(render(statuses, fail_over, window_note(statuses), looked_for))
        return
    print(json.dumps(to_json(statuses, fail_over)), file=out, flush=True)
    for line in failures(statuses, fail_over):
        print(f"streams lag: {line}", file=sys.stderr)


def _exit_status(statuses: Sequence[GroupStatus], fail_over: float | None) -> int:
    return 1 if failures(statuses, fail_over) else 0


def _watch(
    console: Console,
    out: TextIO,
    reader: LagReader,
    chosen: Callable[[], list[str]],
    samples: int,
    interval: float,
    as_json: bool,
    fail_over: float | None,
    looked_for: Sequence[str] = (),
) -> int:
    windows: dict[str, collections.deque[GroupSample]] = {}
    statuses: list[GroupStatus] = []

    def refresh() -> list[GroupStatus]:
        groups = chosen()
        for group, sample in reader.sample(groups).items():
            windows.setdefault(group, collections.deque(maxlen=samples)).append(sample)
        return [evaluate(list(windows[g])) for g in groups if g in windows]

    def note(current: list[GroupStatus]) -> str:
        return (
            f"every {interval:g} s, window {samples} samples; Ctrl-C to stop"
            if current
            else ""
        )

    def interrupt(_signum: int, _frame: FrameType | None) -> None:
        raise KeyboardInterrupt

    live = None
    previous = (
        signal.signal(signal.SIGTERM, interrupt)
        if threading.current_thread() is threading.main_thread()
        else None
    )
    try:
        if not as_json and console.is_terminal:
            live = Live(console=console, auto_refresh=False, transient=False)
            live.start()
        while True:
            started = time.monotonic()
            statuses = refresh()
            if as_json:
                print(json.dumps(to_json(statuses, fail_over)), file=out, flush=True)
            elif live is not None:
                live.update(
                    render(statuses, fail_over, note(statuses), looked_for), refresh=True
                )
            else:
                console.print(render(statuses, fail_over, note(statuses), looked_for))
            time.sleep(max(0.0, interval - (time.monotonic() - started)))
    except KeyboardInterrupt:  # Ctrl-C (or SIGTERM) ends a watch cleanly
        pass
    finally:
        if live is not None:
            live.stop()
        if previous is not None:
            signal.signal(signal.SIGTERM, previous)
    return _exit_status(statuses, fail_over)
