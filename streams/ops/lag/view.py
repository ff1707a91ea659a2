"""Group statuses as people and scripts read them: a rich table per group, or JSON."""

from __future__ import annotations

import time
from collections.abc import Sequence
from typing import Any, Literal

from rich import box
from rich.console import Group, RenderableType
from rich.table import Table
from rich.text import Text

from streams.ops.formatting import format_age
from streams.ops.lag.model import GroupStatus, Status, failures
from streams.topics import to_iso

STYLES = {
    Status.OK: "green",
    Status.WARN: "yellow",
    Status.REWIND: "magenta",
    Status.STALL: "bold red",
    Status.STOP: "bold red",
    Status.ERR: "red",
}
_COLUMNS: tuple[tuple[str, Literal["left", "right"]], ...] = (
    ("topic", "left"),
    ("part", "right"),
    ("committed", "right"),
    ("end", "right"),
    ("lag", "right"),
    ("time lag", "right"),
    ("status", "left"),
)


def to_json(
    statuses: Sequence[GroupStatus], fail_over: float | None = None
) -> dict[str, Any]:
    """The statuses as one JSON document, with the `--fail-over` verdict."""
    failed = failures(statuses, fail_over)
    return {
        "at": to_iso(max((s.at for s in statuses), default=time.time())),
        "groups": [
            {
                "group": s.group,
                "status": s.status.value,
                "reason": s.reason,
                "state": s.state,
                "members": s.members,
                "total_lag": s.total_lag,
                "max_time_lag_seconds": _round(s.max_time_lag),
                "window": {"samples": s.samples, "seconds": round(s.window_seconds, 3)},
                "partitions": [
                    {
                        "topic": p.offsets.topic,
                        "partition": p.offsets.partition,
                        "committed": p.offsets.committed,
                        "end": p.offsets.end,
                        "lag": p.offsets.lag,
                        "time_lag_seconds": _round(p.offsets.time_lag),
                        "status": None if p.status is None else p.status.value,
                        "reason": p.reason,
                    }
                    for p in s.partitions
                ],
            }
            for s in statuses
        ],
        "fail_over_seconds": fail_over,
        "failures": failed,
        "ok": not failed,
    }


def _round(value: float | None) -> float | None:
    return None if value is None else round(value, 3)


def window_note(statuses: Sequence[GroupStatus]) -> str:
    """How many samples over how long the widest window of `statuses` spans."""
    window = max(statuses, key=lambda s: s.samples, default=None)
    if window is None:
        return ""
    return (
        f"window: {window.samples} sample{'' if window.samples == 1 else 's'}"
        f" over {window.window_seconds:.1f} s"
    )


def render(
    statuses: Sequence[GroupStatus],
    fail_over: float | None = None,
    note: str = "",
    looked_for: Sequence[str] = (),
) -> Group:
    """The rich renderable of a set of group statuses: one table per group."""
    parts: list[RenderableType] = []
    at = max((s.at for s in statuses), default=time.time())
    header = Text(
        f"consumer lag at {time.strftime('%H:%M:%S', time.localtime(at))}", style="bold"
    )
    if note:
        header.append(f"  {note}", style="dim")
    parts.append(header)
    if not statuses:
        parts.append(
            Text(
                "no consumer group of this project exists yet"
                + (f" ({', '.join(looked_for)})" if looked_for else "")
                + "; name one with --group",
                style="yellow",
            )
        )
    for group in statuses:
        parts.append(_group(group, fail_over))
    failed = failures(statuses, fail_over)
    if failed:
        parts.append(
            Text(
                f"over --fail-over {fail_over:g} s:\n  " + "\n  ".join(failed),
                style="bold red",
            )
        )
    return Group(*parts)


def _group(group: GroupStatus, fail_over: float | None) -> RenderableType:
    title = Text()
    title.append(group.group, style="bold")
    title.append("  ")
    title.append(group.status.value, style=STYLES[group.status])
    title.append(
        f"  {group.state.lower()}, {group.members} member"
        f"{'' if group.members == 1 else 's'}, lag {group.total_lag}"
        f" records / {format_age(group.max_time_lag)}",
        style="dim",
    )
    if not group.partitions:
        return Text.assemble(title, "\n", (group.reason, ""))
    table = Table(
        title=title,
        title_justify="left",
        caption=group.reason,
        caption_justify="left",
        box=box.SIMPLE_HEAD,
        pad_edge=False,
    )
    for name, justify in _COLUMNS:
        table.add_column(name, justify=justify)
    for part in group.partitions:
        o = part.offsets
        over = fail_over is not None and o.time_lag is not None and o.time_lag > fail_over
        status = (
            Text("-", style="dim")
            if part.status is None
            else Text(part.status.value, style=STYLES[part.status])
        )
        table.add_row(
            o.topic,
            str(o.partition),
            _num(o.committed),
            _num(o.end),
            _num(o.lag),
            Text(format_age(o.time_lag), style="bold red" if over else ""),
            status,
        )
    return table


def _num(value: int | None) -> str:
    return "-" if value is None else str(value)
