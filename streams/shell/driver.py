"""The worker's per-record procedure, sans-I/O: one copy of it, for the worker and the
property tests alike.

For each record the consumer delivers, the worker takes its partition over when it
is new here (records the last owner may not have delivered go out again, core rule 7),
starts the partition's account of handled offsets at the group's committed offset
(`streams/shell/progress.py`), reads again and handles first any records the consumer
skipped before this one, then handles the record. On a tick it also starts the
partition's quiet input topics and reads again what the consumer skipped with no later
record to reveal it: ranges Faust wanted to commit past, and records beyond a handled
offset that stood still (the consumer dropped them without acking them).

`Driver.record` says what to do as a generator, in the manner of h11: it yields a
request, the runner performs it and sends the answer back. The worker
(`streams/app.py`) runs it against Kafka; the model world of the property tests
(`tests/unit/world.py`) against its model broker. Requests and their answers:

    TakeOver(partition)         -> None: the partition's undelivered records sent again
    ReadCommitted(key)          -> int | None: the group's committed offset (None: the
                                   broker could not say now; the next record tries again)
    ReadAgain(key, start, end)  -> list[Source]: the records [start, end) on the broker,
                                   in order (the runner retries until it has them)
    Handle(source, read_until)  -> None: the record decided and applied (a tick is
                                   decided with `statuses_read_until`, core rule 5)
    IsAssigned(key)             -> bool: whether the consumer owns that partition
    ReadEnd(key)                -> End | None: the partition's end on the broker and when
                                   it was seen (None: not assigned)
"""

from __future__ import annotations

import logging
from collections.abc import Generator, Hashable, Iterable, Mapping
from typing import NamedTuple, cast

from streams.limiter_table import Source
from streams.shell.progress import HandledOffsets, Key
from streams.topics import CALLS_STATUS, LIMITER_TICKS

log = logging.getLogger(__name__)

#: A partition whose handled offset stood still this long while the broker holds
#: records beyond it has had records dropped unacked; they are read again on a tick.
STALLED_PARTITION_SECONDS = 10.0
#: At most this many records are read again at once (the next tick reads on).
STALLED_RECORDS_AT_ONCE = 2000


class TakeOver(NamedTuple):
    partition: int


class ReadCommitted(NamedTuple):
    key: Key


class ReadAgain(NamedTuple):
    key: Key
    start: int
    end: int


class Handle(NamedTuple):
    source: Source
    statuses_read_until: float | None


class IsAssigned(NamedTuple):
    key: Key


class ReadEnd(NamedTuple):
    key: Key


class End(NamedTuple):
    """A partition's end on the broker (its high watermark; None before any fetch of
    it answered), seen at `seen_at` (monotonic seconds)."""

    offset: int | None
    seen_at: float


Request = TakeOver | ReadCommitted | ReadAgain | Handle | IsAssigned | ReadEnd
Answer = None | int | bool | list[Source] | End
#: The procedure for one record: requests out, answers in.
Steps = Generator[Request, Answer, None]


class Driver:
    """One worker process's per-record procedure and its account of handled offsets."""

    def __init__(
        self,
        topics: Mapping[str, str],
        stalled_after: float = STALLED_PARTITION_SECONDS,
        stalled_most: int = STALLED_RECORDS_AT_ONCE,
    ):
        """`topics`: the real name of every input topic -> its base name."""
        self.handled = HandledOffsets()
        self._topics = dict(topics)
        self._statuses = next(name for name, base in topics.items() if base == CALLS_STATUS)
        self._stalled_after = stalled_after
        self._stalled_most = stalled_most
        #: Partitions this process has taken over (their undelivered records resent).
        self._owned: set[int] = set()

    def revoked(self, partitions: Iterable[int]) -> None:
        """The partitions went to another worker; taking them back is a new take-over."""
        self._owned.difference_update(partitions)

    def record(self, source: Source, generation: Hashable) -> Steps:
        """Everything one delivered record asks for, in order. `generation`: the
        consumer generation it was delivered in."""
        key = (source.topic, source.partition)
        if source.partition not in self._owned:
            self._owned.add(source.partition)
            yield TakeOver(source.partition)
        if self.handled.needs_start(key, generation):
            yield from self._start(key, generation)
            if self.handled.needs_start(key, generation):
                return  # read again once the partition starts: gaps before it are unknown
        skipped = self.handled.missing(key, source.offset)
        if skipped:
            yield from self._read_again(key, *skipped)
        yield from self._handle(source)
        if self._topics[source.topic] == LIMITER_TICKS:
            yield from self._start_quiet(source.partition, generation)
            ranges = self.handled.unrevealed(source.partition)
            ranges += yield from self._stalled(source.partition)
            for tail_key, start, end in ranges:
                yield from self._read_again(tail_key, start, end)

    def _start(self, key: Key, generation: Hashable) -> Steps:
        """Start the partition's account at the group's committed offset. If the broker
        cannot say now (its coordinator busy in a rebalance), the partition stays
        unstarted: nothing of it is committed or handled, and the next record (or tick)
        tries again."""
        committed = cast(int | None, (yield ReadCommitted(key)))
        if committed is not None:
            self.handled.start(key, generation, committed)

    def _read_again(self, key: Key, start: int, end: int) -> Steps:
        """Handle offsets [start, end) read from the broker, in order; until the broker
        answers nothing else is handled: going on would hide the gap."""
        sources = cast(list[Source], (yield ReadAgain(key, start, end)))
        log.warning(
            "the consumer skipped %s/%s offsets %d-%d; handling the %d records"
            " the broker has there",
            *key,
            start,
            end - 1,
            len(sources),
        )
        for source in sources:
            yield from self._handle(source)
        self.handled.absent_below(key, end)

    def _handle(self, source: Source) -> Steps:
        read_until = None
        if self._topics[source.topic] == LIMITER_TICKS:
            read_until = yield from self._statuses_read_until(source.partition)
        yield Handle(source, read_until)
        self.handled.handled(
            (source.topic, source.partition), source.offset, source.timestamp
        )

    def _statuses_read_until(
        self, partition: int
    ) -> Generator[Request, Answer, float | None]:
        """Up to when this partition's statuses have been read (core rule 5): all of them
        (None) when the worker has handled up to the status topic's end, else the Kafka
        timestamp of the last status it handled; none (0.0) while that is unknown (no
        status of it handled since its start, or no fetch of it answered): taken as
        "all", a tick after a backlog of leads would resend every silent dial."""
        key = (self._statuses, partition)
        end = cast(End | None, (yield ReadEnd(key)))
        if end is None:  # not assigned (any more): nothing to defer for
            return None
        through = self.handled.through(key)
        if through is None or end.offset is None:
            return 0.0
        if through >= end.offset:
            return None
        return self.handled.last_timestamp(key) or 0.0

    def _start_quiet(self, partition: int, generation: Hashable) -> Steps:
        """Start the account of `partition`'s other input topics in this generation
        even if no record of theirs was delivered yet: one whose every record the
        consumer dropped would otherwise never be watched (`_stalled`)."""
        for topic in self._topics:
            key = (topic, partition)
            if self.handled.needs_start(key, generation) and (yield IsAssigned(key)):
                yield from self._start(key, generation)

    def _stalled(
        self, partition: int
    ) -> Generator[Request, Answer, list[tuple[Key, int, int]]]:
        """Ranges of `partition`'s input topics the consumer dropped unacked: records
        on the broker beyond a handled offset that stood still (`handled.stalled`)."""
        found = []
        for topic in self._topics:
            key = (topic, partition)
            end = cast(End | None, (yield ReadEnd(key)))
            if end is None:
                continue
            stall = self.handled.stalled(
                key, end.offset, end.seen_at, self._stalled_after, self._stalled_most
            )
            if stall and end.offset is not None:
                log.warning(
                    "%s/%s stood still at offset %d with records up to %d on the broker",
                    *key,
                    stall[0],
                    end.offset - 1,
                )
                found.append((key, *stall))
        return found
