"""The simulated dialer's call ledger: JSON lines of what really happened to each call.

One line per event, appended and flushed as it happens, each with the dial's ids and
`at` (epoch seconds): `placed`, `ended` (with the call's final `status`, or "abandoned"
for a call dropped without a status), `refused` (a command past its `dial_by`) and
`duplicate`. A placed/ended pair bounds the time a call could really have been live, so
the peak concurrency read back from the ledger (`concurrency_from_ledger`) checks the
limiter against the truth alone, trusting nothing the limiter says.

`peak_concurrency` is the one sweep over call intervals that every such check uses
(this ledger, the fake Twilio's own record, the demo and the benchmarks).
"""

from __future__ import annotations

import collections
import dataclasses
import json
import os
import time
from collections.abc import Callable, Hashable, Iterable
from pathlib import Path
from typing import IO, Literal, NamedTuple, TypedDict, TypeVar, cast

from streams.topics import DialCommand

Event = Literal["placed", "ended", "refused", "duplicate"]

#: The ids every line carries.
LINE_IDS = ("dial_id", "lead_id", "business_id", "phone")
#: The final status of a call dropped without a status (dialer stopped or crashed).
ABANDONED = "abandoned"


class _Line(TypedDict):
    event: Event
    at: float
    dial_id: str
    lead_id: str
    business_id: str
    phone: str


class LedgerLine(_Line, total=False):
    """One line of the ledger; `ended` lines also carry the call's final `status`."""

    status: str


class CallSpan(NamedTuple):
    """When one call was live, by the ledger: from its placed line to its ended line."""

    business_id: str
    placed_at: float
    ended_at: float | None  # None: never ended


K = TypeVar("K", bound=Hashable)


def peak_concurrency(spans: Iterable[tuple[K, float, float | None]]) -> dict[K, int]:
    """The most intervals open at once, per key, from (key, start, end) intervals.

    An interval without an end stays open. At equal times an end counts before a start,
    so a slot freed and refilled in the same instant is not two calls at once.
    """
    marks: list[tuple[float, int, K]] = []
    for key, start, end in spans:
        marks.append((start, 1, key))
        if end is not None:
            marks.append((end, -1, key))
    marks.sort(key=lambda mark: (mark[0], mark[1]))
    live: collections.Counter[K] = collections.Counter()
    peak: dict[K, int] = {}
    for _, change, key in marks:
        live[key] += change
        if change > 0:
            peak[key] = max(peak.get(key, 0), live[key])
    return peak


def read_lines(path: str | os.PathLike[str]) -> list[LedgerLine]:
    """The ledger's readable lines; a line cut short by a crash is skipped."""
    lines: list[LedgerLine] = []
    with open(path, encoding="utf-8") as f:
        for raw in f:
            try:
                line = json.loads(raw)
            except json.JSONDecodeError:
                continue
            if isinstance(line, dict) and "event" in line and "dial_id" in line:
                lines.append(cast(LedgerLine, line))
    return lines


def call_spans(lines: Iterable[LedgerLine]) -> list[CallSpan]:
    """Each placed call's span, its placed line paired with its dial's next ended line."""
    placed: dict[str, collections.deque[LedgerLine]] = collections.defaultdict(
        collections.deque
    )
    spans: list[CallSpan] = []
    for line in lines:
        if line["event"] == "placed":
            placed[line["dial_id"]].append(line)
        elif line["event"] == "ended" and placed[line["dial_id"]]:
            start = placed[line["dial_id"]].popleft()
            spans.append(CallSpan(start["business_id"], start["at"], line["at"]))
    for open_calls in placed.values():
        spans.extend(CallSpan(line["business_id"], line["at"], None) for line in open_calls)
    return spans


def concurrency_from_ledger(path: str | os.PathLike[str]) -> dict[str, int]:
    """Peak number of calls live at once per business, from the ledger alone."""
    return peak_concurrency(call_spans(read_lines(path)))


def handled_and_unended(lines: Iterable[LedgerLine]) -> tuple[set[str], list[LedgerLine]]:
    """The dial_ids placed or refused, and the placed lines of calls never ended."""
    handled: set[str] = set()
    unended: dict[str, LedgerLine] = {}
    for line in lines:
        if line["event"] in ("placed", "refused"):
            handled.add(line["dial_id"])
        if line["event"] == "placed":
            unended[line["dial_id"]] = line
        elif line["event"] == "ended":
            unended.pop(line["dial_id"], None)
    return handled, list(unended.values())


class CallLedger:
    """The ledger being written: append-only, flushed per line; a no-op without a path."""

    def __init__(
        self, path: str | os.PathLike[str] | None, clock: Callable[[], float] = time.time
    ):
        self.path = None if path is None else Path(path)
        self._clock = clock
        self._file: IO[str] | None = None

    def open(self) -> tuple[set[str], list[LedgerLine]]:
        """Open for appending; return the dial_ids already placed or refused, and the
        placed lines of calls a previous run never ended."""
        if self.path is None:
            return set(), []
        lines = read_lines(self.path) if self.path.exists() else []
        self._file = open(self.path, "a", encoding="utf-8")
        if self._file.tell() > 0 and not _ends_with_newline(self.path):
            self._file.write("\n")  # a crash cut the last line short; keep ours whole
        return handled_and_unended(lines)

    def write(self, event: Event, call: DialCommand | LedgerLine, **extra: str) -> None:
        """One line about the call `call` (a command, or an earlier line about it)."""
        if self._file is None:
            return
        ids = call if isinstance(call, dict) else dataclasses.asdict(call)
        line = {
            "event": event,
            "at": self._clock(),
            **{name: ids.get(name) for name in LINE_IDS},
            **extra,
        }
        self._file.write(json.dumps(line, separators=(",", ":")) + "\n")
        self._file.flush()

    def close(self) -> None:
        if self._file is not None:
            self._file.close()
            self._file = None


def _ends_with_newline(path: Path) -> bool:
    with open(path, "rb") as f:
        f.seek(-1, os.SEEK_END)
        return f.read(1) == b"\n"
