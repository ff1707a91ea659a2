"""The rows of `streams top` and the rates between refreshes: pure, fed by snapshots.

Dials per minute per business are counted from successive snapshots: every dial id seen
active is remembered with its grant time (now - its age) for `DIAL_WINDOW` seconds. A
call that starts and ends between two refreshes is missed, so the figure is a lower
bound; the header's rate comes from the workers' `dial-granted` counters and is exact.

Built for 10,000 businesses: a refresh does one pass over the merged answers, and only
the rows shown are sorted (`heapq.nsmallest`).
"""

from __future__ import annotations

import collections
import dataclasses
import heapq
from collections.abc import Callable, Iterable, Sequence
from typing import Any

from streams.ops.lag.model import GroupStatus
from streams.ops.status.model import Merged, Reply, merge_businesses, natural_key

#: Sort orders; keys 1-5 choose them in the live view.
SORTS = ("active", "waiting", "oldest", "dials", "business")
SORT_KEYS = {str(n): name for n, name in enumerate(SORTS, 1)}
#: Dials per minute are counted over this many seconds.
DIAL_WINDOW = 60.0


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
    scheduled: int = 0  # leads waiting for their time (not_before, a retry's delay)
    runs: int = 0  # runs with leads not yet final

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


SortKey = tuple[Any, ...]
_SORT_FUNCS: dict[str, Callable[[Row], SortKey]] = {
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
    scheduled: int = 0
    runs: int = 0


def totals_of(rows: Iterable[Row]) -> Totals:
    n = active = waiting = dials = paused = scheduled = runs = 0
    oldest: float | None = None
    for row in rows:
        n += 1
        active += row.active
        waiting += row.waiting
        dials += row.dials
        paused += row.paused
        scheduled += row.scheduled
        runs += row.runs
        if row.oldest is not None and (oldest is None or row.oldest > oldest):
            oldest = row.oldest
    return Totals(n, active, waiting, oldest, dials, paused, scheduled, runs)


class DialCounter:
    """Dials granted per business within the last `window` seconds, from snapshots."""

    def __init__(self, window: float = DIAL_WINDOW) -> None:
        self.window = window
        self.seen: dict[str, dict[str, float]] = {}  # business -> dial_id -> granted at

    def observe(self, businesses: Iterable[dict[str, Any]], now: float) -> None:
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


Counters = dict[str, int]


class CounterHistory:
    """Each worker's /counters/ over the last `window` seconds, for rates per minute."""

    def __init__(self, window: float = DIAL_WINDOW) -> None:
        self.window = window
        self.samples: dict[str, collections.deque[tuple[float, Counters]]] = {}

    def observe(self, worker: str, counters: Counters, now: float) -> None:
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
    rows: list[Row] = []
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
                int(business.get("scheduled") or 0),
                int(business.get("open_runs") or 0),
            )
        )
    return rows


@dataclasses.dataclass
class LagState:
    """What the header shows of the workers' group lag: its status, or why not."""

    group: str
    status: GroupStatus | None = None
    error: str | None = None


class Top:
    """The state of `streams top` between refreshes."""

    def __init__(self, workers: Sequence[str], sort: str = "waiting") -> None:
        if sort not in SORTS:
            raise ValueError(f"sort must be one of {', '.join(SORTS)}")
        self.workers = list(workers)
        self.sort = sort
        self.dials = DialCounter()
        self.history = CounterHistory()
        self.merged = Merged([], {}, {})
        self.counters: dict[str, Counters] = {}
        self.rows: list[Row] = []
        self.totals = Totals()
        self.at: float | None = None
        self._shown: tuple[tuple[str, int | None, float | None], list[Row]] | None = None

    def update(
        self,
        business_replies: Sequence[Reply],
        counter_replies: Sequence[Reply],
        now: float,
    ) -> None:
        """Take one refresh's answers (`/businesses/`, `/counters/`) seen at `now`."""
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

    def counter_total(self, kind: str) -> int:
        return sum(int(c.get(kind, 0) or 0) for c in self.counters.values())

    def outcomes(self) -> list[tuple[str, int]]:
        """Outcomes since the workers started (`outcome-*` counters), most first."""
        found: collections.Counter[str] = collections.Counter()
        for counters in self.counters.values():
            for kind, n in counters.items():
                if kind.startswith("outcome-"):
                    found[kind[len("outcome-") :]] += int(n or 0)
        return sorted(found.items(), key=lambda kv: (-kv[1], kv[0]))
