"""Consumer lag: `streams lag`.

For each consumer group, topic and partition: the committed offset, the log-end offset,
the lag in records (end - committed) and the lag in **time**, the age of the record at the
committed offset (the oldest record the group has not yet processed; 0 when there is no
lag). Per group, a status in the manner of Burrow's evaluator, judged over a short window
of samples:

=======  ===========================================================================
OK       no lag, lag was 0 somewhere in the window, or the group is working it off
WARN     offsets advance but the lag only grows: the consumer is falling behind
REWIND   a committed offset went backwards (someone reset the group's offsets)
STALL    members are in the group but the committed offsets stand still with lag
STOP     commits stopped: the group has no active member and there is lag
ERR      nothing to judge: no such group, or it has no committed offsets
=======  ===========================================================================

The evaluator (`evaluate`, `failures`) is a pure function of `GroupSample`s; everything
that talks to Kafka lives in `LagReader`. A window must span `STAND_STILL_SECONDS` before
"stands still" or "only grows" may be concluded: Faust commits every 2.8 s, so a shorter
look at a healthy worker would see offsets standing still between two commits.

Waiting leads are *not* lag: a lead waiting for a free slot has been consumed and lives in
the limiter table. Lag means the worker (or a dialer) is behind on its input topics.
"""

from __future__ import annotations

import collections
import concurrent.futures
import dataclasses
import enum
import json
import signal
import sys
import threading
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from typing import Any

from streams.errors import StreamsError
from streams.kafka.admin import quiet_client_config
from streams.settings import Settings
from streams.topics import app_id, to_iso

#: A window must span this long before offsets count as standing still or lag as only
#: growing: longer than Faust's commit interval (2.8 s) so that a healthy worker seen
#: between two commits is not called stalled.
STAND_STILL_SECONDS = 5.0

#: Default samples per window: a single look (`streams lag`), and `--watch`.
ONCE_SAMPLES, WATCH_SAMPLES = 3, 10
#: Default seconds between samples: a single look, and `--watch`.
ONCE_INTERVAL, WATCH_INTERVAL = 1.0, 2.0


class LagError(StreamsError):
    """Kafka could not be asked; the message is one line saying why."""


def project_groups(settings: Settings) -> list[str]:
    """The consumer groups of this project: the worker (Faust app id) and the dialers."""
    prefix = settings.topic_prefix
    return [
        app_id(prefix, settings.app_id),
        f"{prefix}sim-dialer",
        f"{prefix}twilio-dialer",
    ]


# -- samples: what one look at the broker saw ----------------------------------------


@dataclasses.dataclass(frozen=True)
class PartitionOffsets:
    """One partition of one group at one moment."""

    topic: str
    partition: int
    committed: int | None  # None: the group has committed nothing here
    end: int | None  # log-end offset (high watermark); None: unknown
    lag: int | None  # records; None when unknown
    time_lag: float | None  # seconds: age of the record at `committed`; 0 when lag is 0


@dataclasses.dataclass(frozen=True)
class GroupSample:
    """One group at one moment (epoch seconds `at`)."""

    group: str
    at: float
    state: str = "UNKNOWN"  # the coordinator's view: STABLE, EMPTY, DEAD, ...
    members: int = 0
    partitions: tuple[PartitionOffsets, ...] = ()
    error: str | None = None  # the group could not be read (e.g. it does not exist)


# -- the evaluator -------------------------------------------------------------------


class Status(str, enum.Enum):
    OK = "OK"
    WARN = "WARN"
    REWIND = "REWIND"
    STALL = "STALL"
    STOP = "STOP"
    ERR = "ERR"


#: Worst last. A group's status is its worst partition's.
SEVERITY = {
    Status.OK: 0,
    Status.WARN: 1,
    Status.REWIND: 2,
    Status.STALL: 3,
    Status.STOP: 4,
    Status.ERR: 5,
}
#: Statuses that make `--fail-over` fail whatever the time lag.
FAILING = (Status.STALL, Status.STOP)


@dataclasses.dataclass(frozen=True)
class PartitionStatus:
    offsets: PartitionOffsets  # the latest sample
    status: Status | None  # None: no committed offset, nothing to judge
    reason: str
    pending: bool = False  # OK for now; the window is too short to judge a suspicion


@dataclasses.dataclass(frozen=True)
class GroupStatus:
    group: str
    status: Status
    reason: str
    state: str
    members: int
    partitions: tuple[PartitionStatus, ...]
    samples: int
    window_seconds: float
    at: float
    pending: bool = False

    @property
    def total_lag(self) -> int:
        return sum(p.offsets.lag for p in self.partitions if p.offsets.lag is not None)

    @property
    def max_time_lag(self) -> float | None:
        known = [
            p.offsets.time_lag for p in self.partitions if p.offsets.time_lag is not None
        ]
        return max(known) if known else None


def evaluate_partition(
    points: Sequence[tuple[float, int, int]],
    members: int,
    min_window: float = STAND_STILL_SECONDS,
) -> tuple[Status, str, bool]:
    """Burrow's rules over one partition's window of (at, committed, lag), oldest first.

    Returns (status, reason, pending). `members` is the group's member count now.
    """
    at = [p[0] for p in points]
    committed = [p[1] for p in points]
    lag = [p[2] for p in points]
    span = at[-1] - at[0]
    if lag[-1] == 0:
        return Status.OK, "caught up", False
    if 0 in lag:
        return Status.OK, f"lag {lag[-1]}, was 0 within the window", False
    for before, after in zip(committed, committed[1:]):
        if after < before:
            return (
                Status.REWIND,
                f"committed offset went back from {before} to {after}",
                False,
            )
    if members == 0:
        return (
            Status.STOP,
            f"no active member: commits stopped at {committed[-1]} with lag {lag[-1]}",
            False,
        )
    still = len(set(committed)) == 1
    growing = lag[-1] > lag[0] and all(
        after >= before for before, after in zip(lag, lag[1:])
    )
    if (still or growing) and span < min_window:
        return (
            Status.OK,
            f"lag {lag[-1]}; {span:.1f} s of samples is too short to judge"
            f" (needs {min_window:g} s)",
            True,
        )
    if still:
        return (
            Status.STALL,
            f"committed offset stood at {committed[-1]} for"
            f" {span:.1f} s with lag {lag[-1]}",
            False,
        )
    if growing:
        return (
            Status.WARN,
            f"lag grew from {lag[0]} to {lag[-1]} over {span:.1f} s while offsets advanced",
            False,
        )
    return Status.OK, f"lag {lag[-1]}, being worked off", False


def _points(
    indexed: Sequence[tuple[float, Mapping[tuple[str, int], PartitionOffsets]]],
    key: tuple[str, int],
) -> list[tuple[float, int, int]]:
    """The trailing run of samples in which the partition had a committed offset and lag."""
    points: list[tuple[float, int, int]] = []
    for at, partitions in indexed:
        offsets = partitions.get(key)
        if offsets is None or offsets.committed is None or offsets.lag is None:
            points = []
        else:
            points.append((at, offsets.committed, offsets.lag))
    return points


def evaluate(
    window: Sequence[GroupSample], min_window: float = STAND_STILL_SECONDS
) -> GroupStatus:
    """The status of one group over its samples, oldest first (all of one group)."""
    if not window:
        raise ValueError("evaluate needs at least one sample")
    latest = window[-1]
    span = latest.at - window[0].at
    common = dict(
        group=latest.group,
        state=latest.state,
        members=latest.members,
        samples=len(window),
        window_seconds=span,
        at=latest.at,
    )
    if latest.error is not None:
        return GroupStatus(status=Status.ERR, reason=latest.error, partitions=(), **common)
    indexed = [(s.at, {(p.topic, p.partition): p for p in s.partitions}) for s in window]
    partitions = []
    for offsets in sorted(latest.partitions, key=lambda p: (p.topic, p.partition)):
        points = _points(indexed, (offsets.topic, offsets.partition))
        if not points:
            reason = "nothing to consume" if offsets.lag == 0 else "no committed offset"
            partitions.append(PartitionStatus(offsets, None, reason))
            continue
        status, reason, pending = evaluate_partition(points, latest.members, min_window)
        partitions.append(PartitionStatus(offsets, status, reason, pending))
    judged = [p for p in partitions if p.status is not None]
    pending = any(p.pending for p in partitions)
    if not judged:
        reason = "no committed offsets" + (
            f" yet ({latest.members} member{'' if latest.members == 1 else 's'})"
            if latest.members
            else ""
        )
        return GroupStatus(
            status=Status.ERR,
            reason=reason,
            partitions=tuple(partitions),
            pending=pending,
            **common,
        )
    worst = max(judged, key=lambda p: SEVERITY[p.status])
    same = [p for p in judged if p.status == worst.status]
    if worst.status == Status.OK:
        lag = sum(p.offsets.lag or 0 for p in judged)
        reason = "caught up" if lag == 0 else f"lag {lag} records, being worked off"
        if pending:
            reason += f" (stand-still not judged before {min_window:g} s of samples)"
    else:
        where = ", ".join(f"{p.offsets.topic}/{p.offsets.partition}" for p in same[:3])
        more = f" and {len(same) - 3} more" if len(same) > 3 else ""
        reason = f"{where}{more}: {worst.reason}"
    return GroupStatus(
        status=worst.status,
        reason=reason,
        partitions=tuple(partitions),
        pending=pending,
        **common,
    )


def failures(statuses: Iterable[GroupStatus], fail_over: float | None) -> list[str]:
    """Why `--fail-over SECONDS` fails: partitions whose time lag exceeds it, and groups
    that are STALL or STOP. Empty when `fail_over` is None or all is well."""
    if fail_over is None:
        return []
    found = []
    for group in statuses:
        if group.status in FAILING:
            found.append(f"{group.group}: {group.status.value}: {group.reason}")
        for part in group.partitions:
            time_lag = part.offsets.time_lag
            if time_lag is not None and time_lag > fail_over:
                found.append(
                    f"{group.group}: {part.offsets.topic}/{part.offsets.partition}"
                    f" time lag {format_age(time_lag)} > {fail_over:g} s"
                )
    return found


# -- output --------------------------------------------------------------------------


def format_age(seconds: float | None) -> str:
    if seconds is None:
        return "?"
    if seconds < 10:
        return f"{seconds:.1f}s" if seconds else "0s"
    if seconds < 120:
        return f"{seconds:.0f}s"
    minutes, secs = divmod(int(seconds), 60)
    if minutes < 60:
        return f"{minutes}m{secs:02d}s"
    hours, minutes = divmod(minutes, 60)
    if hours < 48:
        return f"{hours}h{minutes:02d}m"
    return f"{hours // 24}d{hours % 24:02d}h"


def to_json(statuses: Sequence[GroupStatus], fail_over: float | None = None) -> dict:
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


_STYLES = {
    Status.OK: "green",
    Status.WARN: "yellow",
    Status.REWIND: "magenta",
    Status.STALL: "bold red",
    Status.STOP: "bold red",
    Status.ERR: "red",
}


def render(
    statuses: Sequence[GroupStatus],
    fail_over: float | None = None,
    note: str = "",
    looked_for: Sequence[str] = (),
):
    """The rich renderable of a set of group statuses: one table per group."""
    from rich import box
    from rich.console import Group
    from rich.table import Table
    from rich.text import Text

    parts: list[Any] = []
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
        title = Text()
        title.append(group.group, style="bold")
        title.append("  ")
        title.append(group.status.value, style=_STYLES[group.status])
        title.append(
            f"  {group.state.lower()}, {group.members} member"
            f"{'' if group.members == 1 else 's'}, lag {group.total_lag}"
            f" records / {format_age(group.max_time_lag)}",
            style="dim",
        )
        if not group.partitions:
            parts.append(Text.assemble(title, "\n", (group.reason, "")))
            continue
        table = Table(
            title=title,
            title_justify="left",
            caption=group.reason,
            caption_justify="left",
            box=box.SIMPLE_HEAD,
            pad_edge=False,
        )
        for name, justify in (
            ("topic", "left"),
            ("part", "right"),
            ("committed", "right"),
            ("end", "right"),
            ("lag", "right"),
            ("time lag", "right"),
            ("status", "left"),
        ):
            table.add_column(name, justify=justify)
        for part in group.partitions:
            o = part.offsets
            over = (
                fail_over is not None and o.time_lag is not None and o.time_lag > fail_over
            )
            status = (
                Text("-", style="dim")
                if part.status is None
                else Text(part.status.value, style=_STYLES[part.status])
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
        parts.append(table)
    failed = failures(statuses, fail_over)
    if failed:
        parts.append(
            Text(
                f"over --fail-over {fail_over:g} s:\n  " + "\n  ".join(failed),
                style="bold red",
            )
        )
    return Group(*parts)


def _num(value: int | None) -> str:
    return "-" if value is None else str(value)


# -- reading the broker --------------------------------------------------------------


class LagReader:
    """Samples consumer groups with confluent-kafka's AdminClient and a peek Consumer."""

    def __init__(self, bootstrap: str, timeout: float = 5.0):
        from confluent_kafka import Consumer
        from confluent_kafka.admin import AdminClient

        self.bootstrap = bootstrap
        self.timeout = timeout
        quiet = quiet_client_config(bootstrap)
        self.admin = AdminClient(quiet)
        # Only ever assigned (never subscribed, never commits): it joins no group.
        self.peek = Consumer(
            {
                **quiet,
                "group.id": "streams-lag-peek",
                "enable.auto.commit": False,
                "enable.auto.offset.store": False,
                "auto.offset.reset": "earliest",
                "isolation.level": "read_uncommitted",
                "fetch.wait.max.ms": 100,
                "max.partition.fetch.bytes": 65536,
                "queued.max.messages.kbytes": 4096,
            }
        )
        self._timestamps: dict[tuple[str, int, int], float | None] = {}

    def close(self) -> None:
        self.peek.close()

    def _result(self, future: concurrent.futures.Future, what: str):
        from confluent_kafka import KafkaException

        try:
            return future.result(timeout=self.timeout + 1)
        except concurrent.futures.TimeoutError:
            raise LagError(
                f"Kafka at {self.bootstrap} did not answer {what} within {self.timeout:g} s"
            ) from None
        except KafkaException as exc:
            raise LagError(
                f"cannot {what} on Kafka at {self.bootstrap}: {_kafka_error(exc)}"
            ) from None

    def existing_groups(self) -> set[str]:
        listing = self._result(
            self.admin.list_consumer_groups(request_timeout=self.timeout),
            "list consumer groups",
        )
        if listing.errors and not listing.valid:
            raise LagError(
                f"cannot list consumer groups on Kafka at {self.bootstrap}:"
                f" {_kafka_error(listing.errors[0])}"
            )
        return {g.group_id for g in listing.valid}

    def topics(self) -> set[str]:
        """The topics that exist; the first call to the broker, so it says when the
        broker cannot be reached."""
        from confluent_kafka import KafkaException

        try:
            return set(self.admin.list_topics(timeout=self.timeout).topics)
        except KafkaException as exc:
            raise LagError(
                f"cannot reach Kafka at {self.bootstrap}: {_kafka_error(exc)}"
            ) from None

    def sample(self, groups: Sequence[str]) -> dict[str, GroupSample]:
        """One look at `groups`: offsets, watermarks, members and time lags."""
        from confluent_kafka import ConsumerGroupTopicPartitions

        if not groups:
            return {}
        topics = self.topics()
        existing = self.existing_groups()
        timeout = {"request_timeout": self.timeout}
        describing = self.admin.describe_consumer_groups(list(groups), **timeout)
        listing = {
            g: self.admin.list_consumer_group_offsets(
                [ConsumerGroupTopicPartitions(g)], **timeout
            )[g]
            for g in groups
        }

        committed: dict[str, dict[tuple[str, int], int | None]] = {}
        members: dict[str, tuple[str, int]] = {}
        for group in groups:
            description = self._result(describing[group], f"describe group {group}")
            state = getattr(description.state, "name", str(description.state))
            members[group] = (state, len(description.members))
            offsets = {
                (tp.topic, tp.partition): tp.offset if tp.offset >= 0 else None
                for tp in self._result(
                    listing[group], f"read offsets of group {group}"
                ).topic_partitions
            }
            # Assigned partitions without a commit show too (an idle input partition),
            # but only of topics the group commits on: Faust also assigns its changelog
            # and assignor topics, which it reads without committing.
            committing = {topic for topic, _ in offsets}
            for member in description.members:
                for tp in member.assignment.topic_partitions:
                    if tp.topic in committing:
                        offsets.setdefault((tp.topic, tp.partition), None)
            committed[group] = {
                key: offset for key, offset in offsets.items() if key[0] in topics
            }
        wanted = {key for offsets in committed.values() for key in offsets}
        ends = self._watermarks(wanted, "latest")
        starts = self._watermarks(wanted, "earliest")
        at = time.time()

        lags: dict[str, dict[tuple[str, int], int | None]] = {}
        for group, offsets in committed.items():
            lags[group] = {}
            for key, offset in offsets.items():
                end, start = ends.get(key), starts.get(key)
                if end is None:
                    lags[group][key] = None
                elif offset is None:  # nothing committed: only "nothing to consume" is sure
                    lags[group][key] = 0 if start is not None and start >= end else None
                else:
                    lags[group][key] = max(0, end - offset)
        peeks = {
            (key[0], key[1], offset)
            for group, offsets in committed.items()
            for key, offset in offsets.items()
            if offset is not None and lags[group][key]
        }
        stamps = self._fetch_timestamps(peeks)

        samples = {}
        for group in groups:
            partitions = []
            for key, offset in sorted(committed[group].items()):
                lag = lags[group][key]
                if lag == 0:
                    time_lag: float | None = 0.0
                else:
                    stamp = (
                        stamps.get((key[0], key[1], offset)) if offset is not None else None
                    )
                    time_lag = None if stamp is None else max(0.0, at - stamp)
                partitions.append(
                    PartitionOffsets(key[0], key[1], offset, ends.get(key), lag, time_lag)
                )
            state, count = members[group]
            error = None
            if group not in existing and not partitions and count == 0:
                error = "no such consumer group"
            samples[group] = GroupSample(group, at, state, count, tuple(partitions), error)
        return samples

    def _watermarks(
        self, keys: set[tuple[str, int]], which: str
    ) -> dict[tuple[str, int], int]:
        from confluent_kafka import KafkaException, TopicPartition
        from confluent_kafka.admin import OffsetSpec

        if not keys:
            return {}
        spec = OffsetSpec.latest() if which == "latest" else OffsetSpec.earliest()
        by_topic: dict[str, list[int]] = collections.defaultdict(list)
        for topic, partition in keys:
            by_topic[topic].append(partition)
        futures = {}
        for (
            topic,
            partitions,
        ) in by_topic.items():  # per topic: one bad topic spoils no other
            futures.update(
                self.admin.list_offsets(
                    {TopicPartition(topic, p): spec for p in partitions},
                    request_timeout=self.timeout,
                )
            )
        found = {}
        for tp, future in futures.items():
            try:
                found[(tp.topic, tp.partition)] = future.result(
                    timeout=self.timeout + 1
                ).offset
            except concurrent.futures.TimeoutError:
                raise LagError(
                    f"Kafka at {self.bootstrap} did not answer list offsets"
                    f" within {self.timeout:g} s"
                ) from None
            except KafkaException:
                continue  # e.g. a topic without a leader right now: unknown, not fatal
        return found

    def _fetch_timestamps(
        self, wanted: set[tuple[str, int, int]]
    ) -> dict[tuple[str, int, int], float | None]:
        """Epoch seconds of the record at each (topic, partition, offset), or of the first
        record after it (compaction, retention); cached, a record's time never changes."""
        from confluent_kafka import TIMESTAMP_NOT_AVAILABLE, TopicPartition

        todo: dict[tuple[str, int], list[int]] = collections.defaultdict(list)
        for topic, partition, offset in wanted - self._timestamps.keys():
            todo[(topic, partition)].append(offset)
        deadline = time.monotonic() + self.timeout
        while todo and time.monotonic() < deadline:
            # One offset per partition per round: groups may sit at different offsets.
            pending = {tp: offsets.pop() for tp, offsets in todo.items()}
            todo = {tp: offsets for tp, offsets in todo.items() if offsets}
            self.peek.assign([TopicPartition(t, p, o) for (t, p), o in pending.items()])
            try:
                while pending and time.monotonic() < deadline:
                    for message in self.peek.consume(500, timeout=0.2):
                        key = (message.topic(), message.partition())
                        if (
                            message.error() is not None
                            or key not in pending
                            or message.offset() < pending[key]
                        ):
                            continue
                        kind, stamp = message.timestamp()
                        self._timestamps[(*key, pending.pop(key))] = (
                            None if kind == TIMESTAMP_NOT_AVAILABLE else stamp / 1000
                        )
            finally:
                self.peek.unassign()
        # Keep only what this sample asked for: the cache follows the groups' offsets.
        self._timestamps = {k: v for k, v in self._timestamps.items() if k in wanted}
        return dict(self._timestamps)


def _kafka_error(exc: Exception) -> str:
    err = exc.args[0] if exc.args else None
    return err.str() if hasattr(err, "str") else str(exc)


# -- the command ---------------------------------------------------------------------


def collect(
    take: Callable[[], Mapping[str, GroupSample]],
    samples: int,
    interval: float,
    sleep: Callable[[float], None] = time.sleep,
    min_window: float = STAND_STILL_SECONDS,
) -> list[GroupStatus]:
    """`samples` looks `interval` apart, then more while a suspicion (offsets standing
    still, lag growing) awaits a window of `min_window` seconds; the groups' statuses."""
    windows: dict[str, list[GroupSample]] = collections.defaultdict(list)

    def look() -> None:
        for group, sample in take().items():
            windows[group].append(sample)

    look()
    for _ in range(samples - 1):
        sleep(interval)
        look()
    extra = int(min_window / interval) + 1
    while extra and any(evaluate(w, min_window).pending for w in windows.values()):
        extra -= 1
        sleep(interval)
        look()
    return [evaluate(w, min_window) for w in windows.values()]


def run_lag(
    settings: Settings,
    groups: Sequence[str] | None = None,
    as_json: bool = False,
    watch: bool = False,
    interval: float | None = None,
    samples: int | None = None,
    fail_over: float | None = None,
    out=None,
) -> int:
    """`streams lag`; returns the exit status (1: over --fail-over, or STALL/STOP)."""
    from rich.console import Console

    out = out or sys.stdout
    console = Console(file=out)
    interval = interval or (WATCH_INTERVAL if watch else ONCE_INTERVAL)
    samples = samples or (WATCH_SAMPLES if watch else ONCE_SAMPLES)
    named = list(dict.fromkeys(groups or ()))
    looked_for = named or project_groups(settings)
    reader = LagReader(settings.kafka_bootstrap_servers)

    def chosen() -> list[str]:
        if named:
            return named
        existing = reader.existing_groups()
        return [g for g in project_groups(settings) if g in existing]

    try:
        reader.topics()  # one line and exit 2 when the broker cannot be reached
        if not watch:
            chosen_groups = chosen()
            statuses = (
                collect(lambda: reader.sample(chosen_groups), samples, interval)
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
    console,
    out,
    statuses: Sequence[GroupStatus],
    as_json: bool,
    fail_over: float | None,
    looked_for: Sequence[str] = (),
) -> None:
    if not as_json:
        window = max(statuses, key=lambda s: s.samples, default=None)
        note = (
            ""
            if window is None
            else f"window: {window.samples} sample{'' if window.samples == 1 else 's'}"
            f" over {window.window_seconds:.1f} s"
        )
        console.print(render(statuses, fail_over, note, looked_for))  # failures included
        return
    print(json.dumps(to_json(statuses, fail_over)), file=out, flush=True)
    for line in failures(statuses, fail_over):
        print(f"streams lag: {line}", file=sys.stderr)


def _exit_status(statuses: Sequence[GroupStatus], fail_over: float | None) -> int:
    return 1 if failures(statuses, fail_over) else 0


def _watch(
    console,
    out,
    reader: LagReader,
    chosen: Callable[[], list[str]],
    samples: int,
    interval: float,
    as_json: bool,
    fail_over: float | None,
    looked_for: Sequence[str] = (),
) -> int:
    from rich.live import Live

    windows: dict[str, collections.deque] = {}
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

    def interrupt(*_):
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
