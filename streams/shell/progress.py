"""Which input records this worker process has handled, per partition. Sans-I/O.

faust-streaming can skip input records around a rebalance: records fetched in one
generation are dropped while the consumer's position has moved past them, and their
offsets can still be acked and committed (open faust-streaming bugs; `bench/chaos.py`
lost leads this way). So the worker keeps its own account: since
a partition was assigned, at the group's committed offset, this process has handled
every record below `through` (applied it, or found it applied before: below its
topic's cursor in the table, with whatever it emitted and was not delivered kept in
the table and sent again when the partition was taken over, `streams/shell/units.py`). The
shell (`streams/app.py`) uses it in these ways:

* a delivered record beyond `through` reveals skipped records: the shell reads
  [through, offset) from the broker (`streams/shell/reread.py`) and handles them first;
* the offsets Faust commits are capped at `through`, so no record this process has
  not handled is committed past: after a crash it is delivered again, and applied
  unless its cursor says it was;
* an offset Faust wanted to commit past `through` with no later record to reveal the
  gap (skipped at the tail) is recovered on the partition's next tick;
* records Faust fetched and dropped without acking them (its consumer drops the rest
  of a fetch when the generation changes or flow stops, faust/transport/consumer.py
  `getmany`) are revealed neither by a later record nor by a commit: when the broker
  holds records beyond `through` and `through` stood still for a while, the shell
  reads them itself (`stalled`).
"""

from __future__ import annotations

from collections.abc import Hashable, Mapping

#: (topic, partition); Faust's TP named tuples compare and hash equal to these.
Key = tuple[str, int]


class HandledOffsets:
    """Per input partition: the generation it was assigned in and the offset below which
    this process handled every record."""

    def __init__(self) -> None:
        self._through: dict[Key, int] = {}
        self._generation: dict[Key, Hashable] = {}
        self._wanted: dict[Key, int] = {}
        self._still: dict[Key, tuple[int, float]] = {}
        self._last_timestamp: dict[Key, float] = {}

    def needs_start(self, key: Key, generation: Hashable) -> bool:
        """Whether `key` has no start in this consumer generation: every rebalance
        assigns partitions afresh, at the committed offset."""
        return key not in self._through or self._generation[key] != generation

    def start(self, key: Key, generation: Hashable, committed: int) -> None:
        """The partition was assigned at `committed`: nothing from there is handled."""
        self._through[key] = committed
        self._generation[key] = generation
        self._wanted.pop(key, None)
        self._still.pop(key, None)
        self._last_timestamp.pop(key, None)

    def through(self, key: Key) -> int | None:
        """The offset below which every record was handled (None: not started)."""
        return self._through.get(key)

    def missing(self, key: Key, offset: int) -> tuple[int, int] | None:
        """Offsets [start, end) skipped before the record at `offset`, if any."""
        through = self._through.get(key)
        if through is not None and offset > through:
            return through, offset
        return None

    def handled(self, key: Key, offset: int, timestamp: float | None = None) -> None:
        """The record at `offset`, produced at `timestamp` (Kafka's, in seconds, when
        known), was handled (everything before it was, too)."""
        self.absent_below(key, offset + 1)
        if timestamp:
            self._last_timestamp[key] = timestamp

    def last_timestamp(self, key: Key) -> float | None:
        """The Kafka timestamp of the last record handled since the partition's start."""
        return self._last_timestamp.get(key)

    def absent_below(self, key: Key, offset: int) -> None:
        """The broker holds no record before `offset` that was not handled (what is
        left in a range read again are transaction markers and compacted records)."""
        if key in self._through and offset > self._through[key]:
            self._through[key] = offset

    def cap(self, offsets: Mapping[Key, int]) -> dict[Key, int]:
        """The part of `offsets` (Faust's commit) that is safe to commit: none past a
        record this process has not handled; partitions without a start are left out.
        What Faust wanted beyond is remembered for `unrevealed`."""
        safe = {}
        for key, offset in offsets.items():
            through = self._through.get(key)
            if through is None:
                continue
            if offset > through:
                self._wanted[key] = max(offset, self._wanted.get(key, offset))
            safe[key] = min(offset, through)
        return safe

    def unrevealed(self, partition: int) -> list[tuple[Key, int, int]]:
        """Ranges of `partition`'s topics Faust acked without this process handling
        them, and that no later record revealed: (key, start, end)."""
        return [
            (key, self._through[key], wanted)
            for key, wanted in list(self._wanted.items())
            if key[1] == partition and key in self._through and wanted > self._through[key]
        ]

    def stalled(
        self, key: Key, end: int | None, now: float, after: float, most: int
    ) -> tuple[int, int] | None:
        """Offsets [through, end), at most `most` of them, when the broker holds records
        up to `end` and `through` has not moved for `after` seconds (time is `now`,
        any monotonic clock): records the consumer dropped without acking them."""
        through = self._through.get(key)
        if through is None or end is None or end <= through:
            self._still.pop(key, None)
            return None
        since = self._still.get(key)
        if since is None or since[0] != through:
            self._still[key] = (through, now)
            return None
        if now - since[1] < after:
            return None
        return through, min(end, through + most)
