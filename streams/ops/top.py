"""`streams top`: a live terminal view of every business, busiest first.

Each refresh asks every worker (the same workers as `streams status`) for
`GET /businesses/` and `GET /counters/`, merges the answers and shows, per business:
active calls ✅, waiting leads ⏳, the oldest wait, dials per minute and whether it is
paused, full or draining; and in the header the totals, the dials granted and the
outcomes (from the workers' decision counters, `outcome-*`) and the consumer lag of the
workers' group, read by `streams.ops.lag.reader`'s `LagReader` in a background thread (the broker
may be slow; the view must not wait for it).

Dials per minute per business are counted from successive snapshots: every dial id seen
active is remembered with its grant time (now - its age) for `DIAL_WINDOW` seconds. A
call that starts and ends between two refreshes is missed, so the figure is a lower
bound; the header's rate comes from the workers' `dial-granted` counters and is exact.

Built for 10,000 businesses: a refresh does one pass over the merged answers, and only
the rows shown are sorted (`heapq.nsmallest`) and rendered. Without a terminal (a pipe,
a test) it prints one plain snapshot, every row unless `--limit-rows`, and exits.
"""

from __future__ import annotations

import collections
import concurrent.futures
import dataclasses
import heapq
import os
import signal
import sys
import threading
import time
from collections.abc import Callable, Iterable, Sequence
from typing import Any

from streams.ops.formatting import format_age
from streams.ops.lag.model import project_groups
from streams.ops.status.model import (
    Merged,
    Reply,
    merge_businesses,
    natural_key,
    require_an_answer,
)
from streams.ops.status.reader import DEFAULT_TIMEOUT, MAX_PARALLEL, fetch
from streams.settings import Settings

#: Sort orders; keys 1-5 choose them in the live view.
SORTS = ("active", "waiting", "oldest", "dials", "business")
SORT_KEYS = {str(n): name for n, name in enumerate(SORTS, 1)}
#: Dials per minute are counted over this many seconds.
DIAL_WINDOW = 60.0
#: Counts up to this many are also drawn as icons.
MAX_ICONS = 5
DEFAULT_INTERVAL = 2.0
#: Lag samples the header's status is judged over (Burrow-style, see streams.ops.lag).
LAG_WINDOW = 10
#: A plain snapshot waits this long for its one lag sample.
LAG_SNAPSHOT_WAIT = 8.0
#: Lines the live view needs besides its rows (header, table rules, totals).
OVERHEAD_LINES = 11
#: The live view shows a worker column (with several workers) from this many columns.
WORKER_COLUMN_WIDTH = 100
ACTIVE, WAITING = "✅", "⏳"
_STATE_STYLES = {"paused": "yellow", "draining": "magenta", "full": "cyan", "idle": "dim"}
_LAG_STYLES = {
    "OK": "green",
    "WARN": "yellow",
    "REWIND": "magenta",
    "STALL": "bold red",
    "STOP": "bold red",
    "ERR": "red",
}
_OUTCOME_STYLES = {
    "completed": "green",
    "no-answer": "yellow",
    "busy": "yellow",
    "failed": "red",
    "canceled": "red",
    "expired": "red",
}


# -- rows --------------------------------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class Row:
    business_id: str
    active: int
    limit: int | None
    waiting: int
    oldest: float | None
    dials: int  # dials granted within the last DIAL_WINDOW seconds (seen)
    paused: bool
    worker: str = ""
    outcomes: tuple[tuple[str, int], ...] = ()  # since the worker started, most first

    @property
    def state(self) -> str:
        if self.paused:
            return "paused"
        if self.limit is not None and self.active > self.limit:
            return "draining"
        if self.limit is not None and self.active >= self.limit and self.waiting:
            return "full"
        if not self.active and not self.waiting:
            return "idle"
        return ""


_SORT_FUNCS: dict[str, Callable[[Row], tuple]] = {
    "active": lambda r: (-r.active, -r.waiting, natural_key(r.business_id)),
    "waiting": lambda r: (
        -r.waiting,
        -(r.oldest if r.oldest is not None else -1.0),
        natural_key(r.business_id),
    ),
    "oldest": lambda r: (
        -(r.oldest if r.oldest is not None else -1.0),
        -r.waiting,
        natural_key(r.business_id),
    ),
    "dials": lambda r: (-r.dials, -r.active, natural_key(r.business_id)),
    "business": lambda r: (natural_key(r.business_id),),
}


def top_rows(rows: Sequence[Row], sort: str, n: int | None) -> list[Row]:
    """The first `n` rows in `sort` order (all with None); only those get sorted fully."""
    key = _SORT_FUNCS[sort]
    if n is None or n >= len(rows):
        return sorted(rows, key=key)
    return heapq.nsmallest(max(0, n), rows, key=key)


@dataclasses.dataclass(frozen=True)
class Totals:
    businesses: int = 0
    active: int = 0
    waiting: int = 0
    oldest: float | None = None
    dials: int = 0
    paused: int = 0


def totals_of(rows: Iterable[Row]) -> Totals:
    n = active = waiting = dials = paused = 0
    oldest: float | None = None
    for row in rows:
        n += 1
        active += row.active
        waiting += row.waiting
        dials += row.dials
        paused += row.paused
        if row.oldest is not None and (oldest is None or row.oldest > oldest):
            oldest = row.oldest
    return Totals(n, active, waiting, oldest, dials, paused)


class DialCounter:
    """Dials granted per business within the last `window` seconds, from snapshots."""

    def __init__(self, window: float = DIAL_WINDOW):
        self.window = window
        self.seen: dict[str, dict[str, float]] = {}  # business -> dial_id -> granted at

    def observe(self, businesses: Iterable[dict], now: float) -> None:
        horizon = now - self.window
        for business in businesses:
            active = business.get("active")
            if not active:
                continue
            bid = str(business.get("business_id"))
            recent = self.seen.get(bid)
            for call in active:
                dial_id = call.get("dial_id")
                if recent is not None and dial_id in recent:
                    continue
                granted = now - float(call.get("age_seconds") or 0.0)
                if granted >= horizon:
                    if recent is None:
                        recent = self.seen[bid] = {}
                    recent[dial_id] = granted
        for bid in list(self.seen):
            recent = self.seen[bid]
            stale = [d for d, at in recent.items() if at < horizon]
            for dial_id in stale:
                del recent[dial_id]
            if not recent:
                del self.seen[bid]

    def count(self, business_id: str) -> int:
        return len(self.seen.get(business_id, ()))


class CounterHistory:
    """Each worker's /counters/ over the last `window` seconds, for rates per minute."""

    def __init__(self, window: float = DIAL_WINDOW):
        self.window = window
        self.samples: dict[str, collections.deque] = {}

    def observe(self, worker: str, counters: dict, now: float) -> None:
        history = self.samples.setdefault(worker, collections.deque())
        if history and any(counters.get(kind, 0) < n for kind, n in history[-1][1].items()):
            history.clear()  # the worker restarted: its counters began again
        history.append((now, dict(counters)))
        while len(history) > 2 and history[1][0] <= now - self.window:
            history.popleft()

    def per_minute(self, kind: str, workers: Iterable[str]) -> float | None:
        """Summed over `workers`; None until some worker has two samples."""
        total, known = 0.0, False
        for worker in workers:
            history = self.samples.get(worker)
            if not history or len(history) < 2 or history[-1][0] <= history[0][0]:
                continue
            (t0, first), (t1, last) = history[0], history[-1]
            total += (last.get(kind, 0) - first.get(kind, 0)) / (t1 - t0) * 60.0
            known = True
        return total if known else None


def build_rows(merged: Merged, dials: DialCounter) -> list[Row]:
    rows = []
    append = rows.append
    for bid, business in merged.businesses.items():
        limit = business.get("limit")
        append(
            Row(
                bid,
                len(business.get("active") or ()),
                limit if isinstance(limit, int) else None,
                int(business.get("waiting") or 0),
                business.get("oldest_waiting_seconds"),
                dials.count(bid),
                bool(business.get("paused")),
                business.get("worker", ""),
                tuple(
                    sorted(
                        (business.get("outcomes") or {}).items(),
                        key=lambda kv: (-kv[1], kv[0]),
                    )
                ),
            )
        )
    return rows


def outcome_text(outcomes: Iterable[tuple[str, int]]) -> str:
    return " ".join(f"{kind} {n:,}" for kind, n in outcomes)


# -- the lag header ------------------------------------------------------------------------


class LagWatcher:
    """The workers' consumer group lag, sampled in a background thread."""

    def __init__(
        self,
        settings: Settings,
        interval: float,
        on_update: Callable[[], None] | None = None,
    ):
        self.group = project_groups(settings)[0]
        self.bootstrap = settings.kafka_bootstrap_servers
        self.interval = interval
        self.on_update = on_update
        self.status = None  # streams.ops.lag.GroupStatus
        self.error: str | None = None
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
        from streams.ops.lag.model import evaluate
        from streams.ops.lag.reader import LagError, LagReader

        window: collections.deque = collections.deque(maxlen=LAG_WINDOW)
        reader = None
        try:
            reader = LagReader(self.bootstrap)
            while not self._stop.is_set():
                try:
                    window.append(reader.sample([self.group])[self.group])
                    self.status, self.error = evaluate(list(window)), None
                except LagError as exc:
                    self.error = str(exc)
                except Exception as exc:  # the view goes on without lag
                    self.error = f"{type(exc).__name__}: {exc}"
                self._updated()
                self._stop.wait(self.interval)
        except Exception as exc:
            self.error = f"{type(exc).__name__}: {exc}"
            self._updated()
        finally:
            if reader is not None:
                reader.close()

    def _updated(self) -> None:
        self.updated.set()
        if self.on_update is not None:
            self.on_update()

    def segments(self) -> list[tuple[str, str]]:
        if self.error is not None:
            return [
                (f"lag {self.group}: ", "bold"),
                ("unavailable: " + self.error, "yellow"),
            ]
        status = self.status
        if status is None:
            return [(f"lag {self.group}: ", "bold"), ("reading...", "dim")]
        parts = [
            (f"lag {self.group} ", "bold"),
            (status.status.value, _LAG_STYLES.get(status.status.value, "")),
            (f"  {status.total_lag:,} records / {format_age(status.max_time_lag)}", ""),
            (
                f"  ({status.state.lower()}, {status.members} member"
                f"{'' if status.members == 1 else 's'})",
                "dim",
            ),
        ]
        if status.status.value != "OK":
            parts.append((f"  {status.reason}", _LAG_STYLES.get(status.status.value, "")))
        return parts


# -- the view ------------------------------------------------------------------------------


class Top:
    """The state of `streams top` between refreshes."""

    def __init__(
        self,
        workers: Sequence[str],
        sort: str = "waiting",
        timeout: float = DEFAULT_TIMEOUT,
        get: Callable[[str, str, float], Reply] = fetch,
        clock: Callable[[], float] = time.time,
    ):
        if sort not in SORTS:
            raise ValueError(f"sort must be one of {', '.join(SORTS)}")
        self.workers = list(workers)
        self.sort = sort
        self.timeout = timeout
        self.get = get
        self.clock = clock
        self.dials = DialCounter()
        self.history = CounterHistory()
        self.merged = Merged([], {}, {})
        self.counters: dict[str, dict] = {}
        self.rows: list[Row] = []
        self.totals = Totals()
        self.at: float | None = None
        self._pool = concurrent.futures.ThreadPoolExecutor(
            min(MAX_PARALLEL, 2 * len(self.workers)), thread_name_prefix="streams-top"
        )
        self._shown: tuple[tuple, list[Row]] | None = None

    def close(self) -> None:
        self._pool.shutdown(wait=False, cancel_futures=True)

    def refresh(self) -> None:
        """Ask every worker (businesses and counters at once) and rebuild the rows."""
        asks = [(w, "/businesses/") for w in self.workers] + [
            (w, "/counters/") for w in self.workers
        ]
        replies = list(self._pool.map(lambda a: self.get(a[0], a[1], self.timeout), asks))
        now = self.clock()
        self.update(replies[: len(self.workers)], replies[len(self.workers) :], now)

    def update(
        self,
        business_replies: Sequence[Reply],
        counter_replies: Sequence[Reply],
        now: float,
    ) -> None:
        self.at = now
        self.merged = merge_businesses(business_replies)
        self.counters = {
            r.worker: r.body
            for r in counter_replies
            if r.code == 200 and isinstance(r.body, dict)
        }
        for worker, counters in self.counters.items():
            self.history.observe(worker, counters, now)
        self.dials.observe(self.merged.businesses.values(), now)
        self.rows = build_rows(self.merged, self.dials)
        self.totals = totals_of(self.rows)
        self._shown = None

    def shown(self, n: int | None) -> list[Row]:
        key = (self.sort, n, self.at)
        if self._shown is None or self._shown[0] != key:
            self._shown = (key, top_rows(self.rows, self.sort, n))
        return self._shown[1]

    # -- header ----------------------------------------------------------------------

    def counter_total(self, kind: str) -> int:
        return sum(int(c.get(kind, 0) or 0) for c in self.counters.values())

    def outcomes(self) -> list[tuple[str, int]]:
        found: collections.Counter[str] = collections.Counter()
        for counters in self.counters.values():
            for kind, n in counters.items():
                if kind.startswith("outcome-"):
                    found[kind[len("outcome-") :]] += int(n or 0)
        return sorted(found.items(), key=lambda kv: (-kv[1], kv[0]))

    def header(
        self,
        lag: LagWatcher | None,
        interval: float | None = None,
        keys: bool = False,
        shown: int = 0,
        plain: bool = False,
    ) -> list[list[tuple[str, str]]]:
        """The header as lines of (text, style) segments."""
        at = time.strftime("%H:%M:%S", time.localtime(self.at or time.time()))
        answering = len(self.merged.answered)
        first = [("streams top", "bold"), (f"  {at}", "")]
        if interval is not None:
            first.append((f"  every {interval:g}s", "dim"))
        first.append(
            (
                f"  workers {answering}/{len(self.workers)} answering",
                "" if answering == len(self.workers) else "bold yellow",
            )
        )
        for reply in self.merged.unanswered:
            first.append((f"  {reply.describe()}", "yellow"))
        t = self.totals
        active_icon, waiting_icon = ("", "") if plain else (f" {ACTIVE}", f" {WAITING}")
        second = [
            (f"businesses {t.businesses:,}", "bold"),
            (f"  active{active_icon} {t.active:,}", "green"),
            (f"  waiting{waiting_icon} {t.waiting:,}", "cyan"),
            (f"  oldest wait {format_age(t.oldest) if t.oldest is not None else '-'}", ""),
        ]
        if t.paused:
            second.append((f"  paused {t.paused:,}", "yellow"))
        granted = self.counter_total("dial-granted")
        rate = self.history.per_minute("dial-granted", self.counters)
        second.append(
            (
                f"  dials granted {granted:,} since start"
                + (f", {rate:,.0f}/min" if rate is not None else ""),
                "",
            )
        )
        third = [("outcomes since start: ", "bold")]
        outcomes = self.outcomes()
        for i, (kind, n) in enumerate(outcomes):
            if i:
                third.append((" · ", "dim"))
            third.append((f"{kind} {n:,}", _OUTCOME_STYLES.get(kind, "")))
        if not outcomes:
            third.append(("none yet", "dim"))
        for kind, label in (
            ("dead-lettered", "dead-lettered"),
            ("lease-expired", "lease expiries"),
        ):
            n = self.counter_total(kind)
            if n:
                third.append((f"  {label} {n:,}", "bold red"))
        lines = [first, second]
        if lag is not None:
            lines.append(lag.segments())
        lines.append(third)
        order = [
            (f"sorted by {self.sort}", "bold"),
            (f", top {shown:,} of {t.businesses:,}", "dim"),
        ]
        if keys:
            order.append(
                (
                    "   keys: "
                    + "  ".join(f"{k} {name}" for k, name in SORT_KEYS.items())
                    + "  q quit",
                    "dim",
                )
            )
        lines.append(order)
        return lines

    # -- rendering -------------------------------------------------------------------

    def columns(self) -> list[str]:
        several = len(self.workers) > 1
        return (
            ["business"]
            + (["worker"] if several else [])
            + ["active", "limit", "waiting", "oldest", "dials/min", "state", "outcomes"]
        )

    def plain(self, n: int | None, lag: LagWatcher | None = None) -> str:
        """One plain-text snapshot (no colours, no icons): for pipes and tests."""
        rows = self.shown(n)
        lines = [
            "".join(text for text, _ in line)
            for line in self.header(lag, shown=len(rows), plain=True)
        ]
        several = len(self.workers) > 1
        table = [self.columns()]
        for r in rows:
            table.append(
                [r.business_id]
                + ([r.worker] if several else [])
                + [
                    f"{r.active:,}",
                    "-" if r.limit is None else str(r.limit),
                    f"{r.waiting:,}",
                    _age(r.oldest),
                    f"{r.dials:,}",
                    r.state,
                    outcome_text(r.outcomes),
                ]
            )
        t = self.totals
        table.append(
            ["total"]
            + ([""] if several else [])
            + [
                f"{t.active:,}",
                "",
                f"{t.waiting:,}",
                _age(t.oldest),
                f"{t.dials:,}",
                "",
                "",
            ]
        )
        widths = [max(len(row[i]) for row in table) for i in range(len(table[0]))]
        left = {0, len(widths) - 2, len(widths) - 1} | ({1} if several else set())
        for row in table:
            lines.append(
                "  ".join(
                    cell.ljust(w) if i in left else cell.rjust(w)
                    for i, (cell, w) in enumerate(zip(row, widths))
                ).rstrip()
            )
        return "\n".join(lines)

    def render(
        self,
        n: int,
        lag: LagWatcher | None = None,
        interval: float | None = None,
        keys: bool = False,
        width: int = 200,
    ):
        """One frame of the live view (rich): header lines, then the top `n` rows; the
        worker column only with several workers and `width` for it."""
        from rich import box
        from rich.console import Group
        from rich.table import Table
        from rich.text import Text

        rows = self.shown(n)
        parts: list[Any] = []
        for line in self.header(lag, interval, keys, shown=len(rows)):
            parts.append(Text.assemble(*line, no_wrap=True, overflow="ellipsis"))
        t = self.totals
        several = len(self.workers) > 1 and width >= WORKER_COLUMN_WIDTH
        count_width = len(f"{max([t.active, t.waiting, 1]):,}")
        icons_active = max(
            (min(r.active, MAX_ICONS) for r in rows if r.active <= MAX_ICONS), default=0
        )
        icons_waiting = max(
            (min(r.waiting, MAX_ICONS) for r in rows if r.waiting <= MAX_ICONS), default=0
        )
        table = Table(
            box=box.SIMPLE,
            show_footer=True,
            header_style="bold",
            footer_style="bold",
            pad_edge=False,
            expand=False,
        )
        # Numbers never wrap nor shrink; a narrow terminal cuts business and worker names.
        table.add_column(
            "business",
            footer="total",
            no_wrap=True,
            overflow="ellipsis",
            min_width=min(16, max((len(r.business_id) for r in rows), default=5)),
            max_width=40,
        )
        if several:
            table.add_column(
                "worker", style="dim", no_wrap=True, overflow="ellipsis", min_width=6
            )
        fixed = dict(no_wrap=True)
        table.add_column(
            "active",
            footer=f"{t.active:>{count_width},}",
            min_width=count_width + (1 + 2 * icons_active if icons_active else 0),
            **fixed,
        )
        table.add_column("limit", justify="right", min_width=5, **fixed)
        table.add_column(
            "waiting",
            footer=f"{t.waiting:>{count_width},}",
            min_width=max(7, count_width + (1 + 2 * icons_waiting if icons_waiting else 0)),
            **fixed,
        )
        table.add_column(
            "oldest", justify="right", footer=_age(t.oldest), min_width=6, **fixed
        )
        table.add_column(
            "dials/min", justify="right", footer=f"{t.dials:,}", min_width=9, **fixed
        )
        table.add_column("state", min_width=8, **fixed)
        table.add_column("outcomes", no_wrap=True, overflow="ellipsis", max_width=40)
        for r in rows:
            over = r.limit is not None and r.active > r.limit
            at_limit = r.limit is not None and r.active >= r.limit and r.active
            active = Text(
                f"{r.active:>{count_width},}",
                style="bold red" if over else "bold" if at_limit else "",
            )
            if 0 < r.active <= MAX_ICONS:
                active.append(" " + ACTIVE * r.active)
            waiting = Text(
                f"{r.waiting:>{count_width},}", style="cyan" if r.waiting else "dim"
            )
            if 0 < r.waiting <= MAX_ICONS:
                waiting.append(" " + WAITING * r.waiting)
            cells = [Text(r.business_id, style="bold")] + ([r.worker] if several else [])
            cells += [
                active,
                "-" if r.limit is None else str(r.limit),
                waiting,
                _age(r.oldest),
                f"{r.dials:,}" if r.dials else Text("0", style="dim"),
                Text(r.state, style=_STATE_STYLES.get(r.state, "")),
                Text.assemble(
                    *[
                        (f"{kind} {n:,} ", _OUTCOME_STYLES.get(kind, ""))
                        for kind, n in r.outcomes
                    ]
                ),
            ]
            table.add_row(*cells)
        parts.append(table)
        return Group(*parts)


def _age(seconds: float | None) -> str:
    return "-" if seconds is None else format_age(seconds)


def rows_for_height(height: int, lag: bool) -> int:
    return max(3, height - OVERHEAD_LINES - (1 if lag else 0))


# -- keyboard --------------------------------------------------------------------------


class Keys:
    """Single key presses from a terminal's stdin, in a thread (cbreak mode: no Enter,
    no echo; Ctrl-C still interrupts). Does nothing when stdin is not a terminal."""

    def __init__(self, stream, on_key: Callable[[str], None]):
        self.stream = stream
        self.on_key = on_key
        self._saved = None
        self._fd: int | None = None
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def __enter__(self) -> Keys:
        try:
            if self.stream is None or not self.stream.isatty():
                return self
            import termios
            import tty

            self._fd = self.stream.fileno()
            self._saved = termios.tcgetattr(self._fd)
            tty.setcbreak(self._fd)
        except (OSError, ValueError, ImportError, AttributeError):
            self._fd = None
            return self
        self._thread = threading.Thread(
            target=self._run, name="streams-top-keys", daemon=True
        )
        self._thread.start()
        return self

    def _run(self) -> None:
        import select

        while not self._stop.is_set():
            try:
                ready, _, _ = select.select([self._fd], [], [], 0.2)
                if ready:
                    data = os.read(self._fd, 32)
                    if not data:
                        return
                    for char in data.decode(errors="ignore"):
                        self.on_key(char)
            except (OSError, ValueError):
                return

    def __exit__(self, *exc: Any) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(1)
        if self._fd is not None and self._saved is not None:
            import termios

            termios.tcsetattr(self._fd, termios.TCSADRAIN, self._saved)


# -- the command ------------------------------------------------------------------------


def run_top(
    settings: Settings,
    workers: Sequence[str],
    sort: str = "waiting",
    limit_rows: int | None = None,
    interval: float = DEFAULT_INTERVAL,
    timeout: float = DEFAULT_TIMEOUT,
    lag: bool = True,
    out=None,
    stdin=None,
    get: Callable[[str, str, float], Reply] = fetch,
) -> int:
    """`streams top`: live until Ctrl-C or q (exit 0); without a terminal one plain
    snapshot (StatusError when no worker answered)."""
    from rich.console import Console

    out = out or sys.stdout
    console = Console(file=out)
    top = Top(workers, sort, timeout, get)
    watcher = LagWatcher(settings, max(interval, 1.0)) if lag else None
    try:
        if watcher is not None:
            watcher.start()
        if not console.is_terminal:
            top.refresh()
            require_an_answer(top.merged.replies)
            if watcher is not None:
                watcher.updated.wait(LAG_SNAPSHOT_WAIT)
            print(top.plain(limit_rows, watcher), file=out, flush=True)
            return 0
        return _live(
            top,
            watcher,
            console,
            limit_rows,
            interval,
            sys.stdin if stdin is None else stdin,
        )
    finally:
        if watcher is not None:
            watcher.stop()
        top.close()


def _live(
    top: Top,
    watcher: LagWatcher | None,
    console,
    limit_rows: int | None,
    interval: float,
    stdin,
) -> int:
    from rich.live import Live

    wake = threading.Event()
    quit_asked = threading.Event()

    def on_key(char: str) -> None:
        if char in SORT_KEYS:
            top.sort = SORT_KEYS[char]
            wake.set()
        elif char in ("q", "Q"):
            quit_asked.set()
            wake.set()

    def interrupt(*_: Any) -> None:
        raise KeyboardInterrupt

    if watcher is not None:
        watcher.on_update = wake.set
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
                    top.refresh()
                    next_refresh = time.monotonic() + interval
                rows = limit_rows or rows_for_height(
                    console.size.height, watcher is not None
                )
                live.update(
                    top.render(
                        rows, watcher, interval, keys=True, width=console.size.width
                    ),
                    refresh=True,
                )
                wake.wait(max(0.0, next_refresh - time.monotonic()))
                wake.clear()
    except KeyboardInterrupt:  # Ctrl-C (or SIGTERM) ends the view cleanly
        pass
    finally:
        if previous is not None:
            signal.signal(signal.SIGTERM, previous)
    return 0
