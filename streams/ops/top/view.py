"""What `streams top` draws: a rich frame for the live view, plain text for pipes.

Only the rows shown are rendered, so a frame costs the same at 10,000 businesses as at
ten. Without a terminal (a pipe, a test) the command prints one `plain` snapshot.
"""

from __future__ import annotations

import time

from rich import box
from rich.console import Group, RenderableType
from rich.table import Table
from rich.text import Text

from streams.ops.formatting import format_age
from streams.ops.top.model import SORT_KEYS, LagState, Top

#: Counts up to this many are also drawn as icons.
MAX_ICONS = 5
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

#: A header line: (text, style) segments.
Segments = list[tuple[str, str]]


def rows_for_height(height: int, lag: bool) -> int:
    """Rows that fit a terminal of `height` lines under the header."""
    return max(3, height - OVERHEAD_LINES - (1 if lag else 0))


def outcome_text(outcomes: tuple[tuple[str, int], ...]) -> str:
    return " ".join(f"{kind} {n:,}" for kind, n in outcomes)


def _age(seconds: float | None) -> str:
    return "-" if seconds is None else format_age(seconds)


def lag_segments(lag: LagState) -> Segments:
    """The header's lag line: the group's status, lag in records and time, or why not."""
    if lag.error is not None:
        return [
            (f"lag {lag.group}: ", "bold"),
            ("unavailable: " + lag.error, "yellow"),
        ]
    status = lag.status
    if status is None:
        return [(f"lag {lag.group}: ", "bold"), ("reading...", "dim")]
    parts = [
        (f"lag {lag.group} ", "bold"),
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


def header(
    top: Top,
    lag: LagState | None,
    interval: float | None = None,
    keys: bool = False,
    shown: int = 0,
    plain: bool = False,
) -> list[Segments]:
    """The header as lines of (text, style) segments."""
    at = time.strftime("%H:%M:%S", time.localtime(top.at or time.time()))
    answering = len(top.merged.answered)
    first = [("streams top", "bold"), (f"  {at}", "")]
    if interval is not None:
        first.append((f"  every {interval:g}s", "dim"))
    first.append(
        (
            f"  workers {answering}/{len(top.workers)} answering",
            "" if answering == len(top.workers) else "bold yellow",
        )
    )
    for reply in top.merged.unanswered:
        first.append((f"  {reply.describe()}", "yellow"))
    t = top.totals
    active_icon, waiting_icon = ("", "") if plain else (f" {ACTIVE}", f" {WAITING}")
    second = [
        (f"businesses {t.businesses:,}", "bold"),
        (f"  active{active_icon} {t.active:,}", "green"),
        (f"  waiting{waiting_icon} {t.waiting:,}", "cyan"),
        (f"  oldest wait {format_age(t.oldest) if t.oldest is not None else '-'}", ""),
    ]
    if t.scheduled:
        second.append((f"  scheduled {t.scheduled:,}", ""))
    if t.runs:
        second.append((f"  open runs {t.runs:,}", ""))
    if t.paused:
        second.append((f"  paused {t.paused:,}", "yellow"))
    granted = top.counter_total("dial-granted")
    rate = top.history.per_minute("dial-granted", top.counters)
    second.append(
        (
            f"  dials granted {granted:,} since start"
            + (f", {rate:,.0f}/min" if rate is not None else ""),
            "",
        )
    )
    third = [("outcomes since start: ", "bold")]
    outcomes = top.outcomes()
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
        n = top.counter_total(kind)
        if n:
            third.append((f"  {label} {n:,}", "bold red"))
    lines = [first, second]
    if lag is not None:
        lines.append(lag_segments(lag))
    lines.append(third)
    order = [
        (f"sorted by {top.sort}", "bold"),
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


def runs_shown(top: Top) -> bool:
    """The scheduled and runs columns, only when some business has either."""
    return bool(top.totals.scheduled or top.totals.runs)


def columns(top: Top) -> list[str]:
    several = len(top.workers) > 1
    return (
        ["business"]
        + (["worker"] if several else [])
        + ["active", "limit", "waiting"]
        + (["sched", "runs"] if runs_shown(top) else [])
        + ["oldest", "dials/min", "state", "outcomes"]
    )


def plain(top: Top, n: int | None, lag: LagState | None = None) -> str:
    """One plain-text snapshot (no colours, no icons): for pipes and tests."""
    rows = top.shown(n)
    lines = [
        "".join(text for text, _ in line)
        for line in header(top, lag, shown=len(rows), plain=True)
    ]
    several = len(top.workers) > 1
    table = [columns(top)]
    for r in rows:
        table.append(
            [r.business_id]
            + ([r.worker] if several else [])
            + [
                f"{r.active:,}",
                "-" if r.limit is None else str(r.limit),
                f"{r.waiting:,}",
            ]
            + ([f"{r.scheduled:,}", f"{r.runs:,}"] if runs_shown(top) else [])
            + [
                _age(r.oldest),
                f"{r.dials:,}",
                r.state,
                outcome_text(r.outcomes),
            ]
        )
    t = top.totals
    table.append(
        ["total"]
        + ([""] if several else [])
        + [f"{t.active:,}", "", f"{t.waiting:,}"]
        + ([f"{t.scheduled:,}", f"{t.runs:,}"] if runs_shown(top) else [])
        + [_age(t.oldest), f"{t.dials:,}", "", ""]
    )
    widths = [max(len(row[i]) for row in table) for i in range(len(table[0]))]
    left = {0, len(widths) - 2, len(widths) - 1} | ({1} if several else set())
    for row in table:
        lines.append(
            "  ".join(
                cell.ljust(w) if i in left else cell.rjust(w)
                for i, (cell, w) in enumerate(zip(row, widths, strict=True))
            ).rstrip()
        )
    return "\n".join(lines)


def render(
    top: Top,
    n: int,
    lag: LagState | None = None,
    interval: float | None = None,
    keys: bool = False,
    width: int = 200,
) -> Group:
    """One frame of the live view (rich): header lines, then the top `n` rows; the
    worker column only with several workers and `width` for it."""
    rows = top.shown(n)
    parts: list[RenderableType] = []
    for line in header(top, lag, interval, keys, shown=len(rows)):
        parts.append(Text.assemble(*line, no_wrap=True, overflow="ellipsis"))
    t = top.totals
    several = len(top.workers) > 1 and width >= WORKER_COLUMN_WIDTH
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
    table.add_column(
        "active",
        footer=f"{t.active:>{count_width},}",
        min_width=count_width + (1 + 2 * icons_active if icons_active else 0),
        no_wrap=True,
    )
    table.add_column("limit", justify="right", min_width=5, no_wrap=True)
    table.add_column(
        "waiting",
        footer=f"{t.waiting:>{count_width},}",
        min_width=max(7, count_width + (1 + 2 * icons_waiting if icons_waiting else 0)),
        no_wrap=True,
    )
    if runs_shown(top):
        table.add_column(
            "sched", justify="right", footer=f"{t.scheduled:,}", min_width=5, no_wrap=True
        )
        table.add_column(
            "runs", justify="right", footer=f"{t.runs:,}", min_width=4, no_wrap=True
        )
    table.add_column(
        "oldest", justify="right", footer=_age(t.oldest), min_width=6, no_wrap=True
    )
    table.add_column(
        "dials/min", justify="right", footer=f"{t.dials:,}", min_width=9, no_wrap=True
    )
    table.add_column("state", min_width=8, no_wrap=True)
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
        waiting = Text(f"{r.waiting:>{count_width},}", style="cyan" if r.waiting else "dim")
        if 0 < r.waiting <= MAX_ICONS:
            waiting.append(" " + WAITING * r.waiting)
        cells: list[RenderableType] = [Text(r.business_id, style="bold")]
        if several:
            cells.append(r.worker)
        cells += [
            active,
            "-" if r.limit is None else str(r.limit),
            waiting,
        ]
        if runs_shown(top):
            cells += [
                f"{r.scheduled:,}" if r.scheduled else Text("0", style="dim"),
                f"{r.runs:,}" if r.runs else Text("0", style="dim"),
            ]
        cells += [
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
