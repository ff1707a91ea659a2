"""Sampling consumer groups from Kafka: offsets, watermarks, members and time lags.

One `LagReader.sample` is one look at the broker through confluent-kafka's AdminClient
(groups, committed offsets, watermarks) and a peek consumer that reads the timestamp of
the record at each committed offset, the oldest record a group has not processed.
"""

from __future__ import annotations

import collections
import concurrent.futures
import time
from collections.abc import Sequence
from typing import Any, TypeVar

from confluent_kafka import (
    TIMESTAMP_NOT_AVAILABLE,
    ConsumerGroupTopicPartitions,
    KafkaException,
    TopicPartition,
)
from confluent_kafka.admin import OffsetSpec

from streams.errors import StreamsError
from streams.kafka import clients
from streams.kafka.clients import kafka_reason
from streams.ops.lag.model import GroupSample, PartitionOffsets
from streams.settings import Settings

T = TypeVar("T")
#: A partition and the offset the group committed on it.
Position = tuple[str, int, int]


class LagError(StreamsError):
    """Kafka could not be asked; the message is one line saying why."""


class LagReader:
    """Samples consumer groups with confluent-kafka's AdminClient and a peek Consumer."""

    def __init__(self, settings: Settings, timeout: float = 5.0) -> None:
        self.bootstrap = settings.kafka_bootstrap_servers
        self.timeout = timeout
        self.admin = clients.admin(settings)
        # Only ever assigned (never subscribed, never commits): it joins no group.
        self.peek = clients.consumer(
            settings,
            "streams-lag-peek",
            {
                "enable.auto.commit": False,
                "enable.auto.offset.store": False,
                "auto.offset.reset": "earliest",
                "isolation.level": "read_uncommitted",
                "fetch.wait.max.ms": 100,
                "max.partition.fetch.bytes": 65536,
                "queued.max.messages.kbytes": 4096,
            },
            quiet=True,
        )
        self._timestamps: dict[Position, float | None] = {}

    def close(self) -> None:
        self.peek.close()

    def _result(self, future: concurrent.futures.Future[T], what: str) -> T:
        try:
            return future.result(timeout=self.timeout + 1)
        except concurrent.futures.TimeoutError:
            raise LagError(
                f"Kafka at {self.bootstrap} did not answer {what} within {self.timeout:g} s"
            ) from None
        except KafkaException as exc:
            raise LagError(
                f"cannot {what} on Kafka at {self.bootstrap}: {kafka_reason(exc)}"
            ) from None

    def existing_groups(self) -> set[str]:
        listing = self._result(
            self.admin.list_consumer_groups(request_timeout=self.timeout),
            "list consumer groups",
        )
        if listing.errors and not listing.valid:
            raise LagError(
                f"cannot list consumer groups on Kafka at {self.bootstrap}:"
                f" {kafka_reason(listing.errors[0])}"
            )
        return {g.group_id for g in listing.valid}

    def topics(self) -> set[str]:
        """The topics that exist; the first call to the broker, so it says when the
        broker cannot be reached."""
        try:
            return set(self.admin.list_topics(timeout=self.timeout).topics)
        except KafkaException as exc:
            raise LagError(
                f"cannot reach Kafka at {self.bootstrap}: {kafka_reason(exc)}"
            ) from None

    def sample(self, groups: Sequence[str]) -> dict[str, GroupSample]:
        """One look at `groups`: offsets, watermarks, members and time lags."""
        if not groups:
            return {}
        topics = self.topics()
        existing = self.existing_groups()
        describing = self.admin.describe_consumer_groups(
            list(groups), request_timeout=self.timeout
        )
        listing = {
            g: self.admin.list_consumer_group_offsets(
                [ConsumerGroupTopicPartitions(g)], request_timeout=self.timeout
            )[g]
            for g in groups
        }

        committed: dict[str, dict[tuple[str, int], int | None]] = {}
        members: dict[str, tuple[str, int]] = {}
        for group in groups:
            description = self._result(describing[group], f"describe group {group}")
            state = getattr(description.state, "name", str(description.state))
            members[group] = (state, len(description.members))
            offsets: dict[tuple[str, int], int | None] = {
                (tp.topic, tp.partition): tp.offset if tp.offset >= 0 else None
                for tp in self._result(
                    listing[group], f"read offsets of group {group}"
                ).topic_partitions
                or ()
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
        ends = self._watermarks(wanted, OffsetSpec.latest())
        starts = self._watermarks(wanted, OffsetSpec.earliest())
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
                time_lag: float | None
                if lag == 0:
                    time_lag = 0.0
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
        self, keys: set[tuple[str, int]], spec: OffsetSpec
    ) -> dict[tuple[str, int], int]:
        if not keys:
            return {}
        by_topic: dict[str, list[int]] = collections.defaultdict(list)
        for topic, partition in keys:
            by_topic[topic].append(partition)
        futures: dict[TopicPartition, concurrent.futures.Future[Any]] = {}
        for topic, partitions in by_topic.items():  # per topic: one bad topic spoils none
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

    def _fetch_timestamps(self, wanted: set[Position]) -> dict[Position, float | None]:
        """Epoch seconds of the record at each (topic, partition, offset), or of the first
        record after it (compaction, retention); cached, a record's time never changes."""
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
                        where = (message.topic(), message.partition(), message.offset())
                        name, number, at = where
                        if message.error() is not None or name is None or number is None:
                            continue
                        key = (name, number)
                        if key not in pending or at is None or at < pending[key]:
                            continue
                        kind, stamp = message.timestamp()
                        self._timestamps[(name, number, pending.pop(key))] = (
                            None if kind == TIMESTAMP_NOT_AVAILABLE else stamp / 1000
                        )
            finally:
                self.peek.unassign()
        # Keep only what this sample asked for: the cache follows the groups' offsets.
        self._timestamps = {k: v for k, v in self._timestamps.items() if k in wanted}
        return dict(self._timestamps)
