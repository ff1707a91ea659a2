"""Consumer lag samples and the Burrow-style evaluator: pure functions of samples.

For each consumer group, topic and partition: the committed offset, the log-end offset,
the lag in records (end - committed) and the lag in **time**, the age of the record at the
committed offset (the oldest record the group has not yet processed; 0 when there is no
lag). Per group, a status judged over a short window of samples:

=======  ===========================================================================
OK       no lag, lag was 0 somewhere in the window, or the group is working it off
WARN     offsets advance but the lag only grows: the consumer is falling behind
REWIND   a committed offset went backwards (someone reset the group's offsets)
STALL    members are in the group but the committed offsets stand still with lag
STOP     commits stopped: the group has no active member and there is lag
ERR      nothing to judge: no such group, or it has no committed offsets
=======  ===========================================================================

A window must span `STAND_STILL_SECONDS` before "stands still" or "only grows" may be
concluded: Faust commits every 2.8 s, so a shorter look at a healthy worker would see
offsets standing still between two commits.

Waiting leads are *not* lag: a lead waiting for a free slot has been consumed and lives in
the limiter table. Lag means the worker (or a dialer) is behind on its input topics.
"""

from __future__ import annotations

import collections
import dataclasses
import enum
from collections.abc import Callable, Iterable, Mapping, Sequence

from streams.ops.formatting import format_age
from streams.settings import Settings
from streams.topics import app_id

#: A window must span this long before offsets count as standing still or lag as only
#: growing: longer than Faust's commit interval (2.8 s) so that a healthy worker seen
#: between two commits is not called stalled.
STAND_STILL_SECONDS = 5.0


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
    for before, after in zip(committed, committed[1:], strict=False):
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
        after >= before for before, after in zip(lag, lag[1:], strict=False)
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

    def status(
        status: Status,
        reason: str,
        partitions: tuple[PartitionStatus, ...] = (),
        pending: bool = False,
    ) -> GroupStatus:
        return GroupStatus(
            group=latest.group,
            status=status,
            reason=reason,
            state=latest.state,
            members=latest.members,
            partitions=partitions,
            samples=len(window),
            window_seconds=latest.at - window[0].at,
            at=latest.at,
            pending=pending,
        )

    if latest.error is not None:
        return status(Status.ERR, latest.error)
    indexed = [(s.at, {(p.topic, p.partition): p for p in s.partitions}) for s in window]
    partitions = []
    judged: list[tuple[PartitionStatus, Status]] = []
    for offsets in sorted(latest.partitions, key=lambda p: (p.topic, p.partition)):
        points = _points(indexed, (offsets.topic, offsets.partition))
        if not points:
            reason = "nothing to consume" if offsets.lag == 0 else "no committed offset"
            partitions.append(PartitionStatus(offsets, None, reason))
            continue
        verdict, reason, pending = evaluate_partition(points, latest.members, min_window)
        partitions.append(PartitionStatus(offsets, verdict, reason, pending))
        judged.append((partitions[-1], verdict))
    any_pending = any(p.pending for p in partitions)
    if not judged:
        reason = "no committed offsets" + (
            f" yet ({latest.members} member{'' if latest.members == 1 else 's'})"
            if latest.members
            else ""
        )
        return status(Status.ERR, reason, tuple(partitions), any_pending)
    worst_part, worst = max(judged, key=lambda judgement: SEVERITY[judgement[1]])
    if worst == Status.OK:
        lag = sum(p.offsets.lag or 0 for p, _ in judged)
        reason = "caught up" if lag == 0 else f"lag {lag} records, being worked off"
        if any_pending:
            reason += f" (stand-still not judged before {min_window:g} s of samples)"
    else:
        same = [p for p, verdict in judged if verdict == worst]
        where = ", ".join(f"{p.offsets.topic}/{p.offsets.partition}" for p in same[:3])
        more = f" and {len(same) - 3} more" if len(same) > 3 else ""
        reason = f"{where}{more}: {worst_part.reason}"
    return status(worst, reason, tuple(partitions), any_pending)


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


def collect(
    take: Callable[[], Mapping[str, GroupSample]],
    samples: int,
    interval: float,
    sleep: Callable[[float], None],
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
