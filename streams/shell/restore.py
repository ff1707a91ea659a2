"""How far the worker's table is restored from its changelog.

Before the agent handles anything, Faust replays the changelog into the table: all of it
with the memory store, what was written since this worker last had the partitions with
RocksDB. A long replay looked like a hung worker; fed the records still to replay, this
gives what was replayed of the total, the rate and the time left, for a log line at most
every LOG_SECONDS and for `/ready/`. Pure: the caller reads Faust and the clock.
"""

from __future__ import annotations

import dataclasses
from typing import Any

#: At most one progress line this often while a restore lasts.
LOG_SECONDS = 5.0


@dataclasses.dataclass(frozen=True)
class RestoreFigures:
    """One look at a restore in progress."""

    replayed: int
    total: int
    records_per_second: float | None
    seconds_left: float | None

    def line(self) -> str:
        """The log line: `restoring the table: 1,200 of 10,000 changelog records (12%),
        600 records/s, about 15 s left`."""
        share = 100 * self.replayed // self.total if self.total else 100
        text = f"restoring the table: {self.replayed:,} of {self.total:,} changelog"
        text += f" records ({share}%)"
        if self.records_per_second is not None:
            text += f", {self.records_per_second:,.0f} records/s"
        if self.seconds_left is not None:
            text += f", about {self.seconds_left:,.0f} s left"
        return text

    def as_json(self) -> dict[str, Any]:
        return {
            "replayed": self.replayed,
            "total": self.total,
            "records_per_second": None
            if self.records_per_second is None
            else round(self.records_per_second, 1),
            "seconds_left": None
            if self.seconds_left is None
            else round(self.seconds_left, 1),
        }


class RestoreProgress:
    """Follows the records still to replay across samples; a sample of None (no restore
    running) ends it, and the next restore starts from nothing."""

    def __init__(self, log_seconds: float = LOG_SECONDS) -> None:
        self.log_seconds = log_seconds
        self.figures: RestoreFigures | None = None
        self._began: float | None = None
        self._remaining = 0
        self._replayed = 0
        self._replayed_at_first = 0
        self._logged_at: float | None = None

    def sample(
        self, now: float, remaining: int | None, replayed_before: int = 0
    ) -> str | None:
        """Record the records left to replay at `now` (None: not restoring) and, at a
        restore's first sample, those it replayed before it; return the line to log,
        when one is due: every `log_seconds` while a restore lasts longer, and once at
        the end of one that replayed anything."""
        if remaining is None:
            done = None
            if self._began is not None and self._replayed:
                done = (
                    f"restored the table: {self._replayed:,} changelog records in"
                    f" {now - self._began:.1f} s"
                )
            self.figures, self._began, self._logged_at = None, None, None
            self._remaining = self._replayed = self._replayed_at_first = 0
            return done
        if self._began is None:
            self._began, self._remaining = now, remaining
            self._replayed = self._replayed_at_first = replayed_before
        # Less left is replayed; more left is new work (records written meanwhile).
        self._replayed += max(0, self._remaining - remaining)
        self._remaining = remaining
        elapsed = now - self._began
        since_first = self._replayed - self._replayed_at_first
        rate = since_first / elapsed if elapsed > 0 and since_first else None
        self.figures = RestoreFigures(
            replayed=self._replayed,
            total=self._replayed + remaining,
            records_per_second=rate,
            seconds_left=None if rate is None else remaining / rate,
        )
        if remaining == 0 or elapsed < self.log_seconds:
            return None  # a restore done at once is not worth a line
        if self._logged_at is not None and now - self._logged_at < self.log_seconds:
            return None
        self._logged_at = now
        return self.figures.line()
