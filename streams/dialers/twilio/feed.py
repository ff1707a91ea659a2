"""The command feed: a confluent-kafka consumer thread that hands each `calls.dial`
command to the dialer's event loop and commits the offsets of finished commands.

Group `<TOPIC_PREFIX>twilio-dialer`, no auto-commit, static membership (a dialer
restarted after a crash takes its partitions back at once). An offset is committed once
every command up to it has its outcome in the ledger and the status that outcome
produced is delivered; a command that failed unexpectedly keeps its offset uncommitted,
so it comes back after a restart. Beyond `MAX_IN_FLIGHT` unfinished commands, and while
`held()` says so (Twilio refuses the account), the consumer pauses.
"""

from __future__ import annotations

import asyncio
import collections
import concurrent.futures
import logging
import threading
import time
from collections.abc import Callable, Coroutine
from typing import Any

from confluent_kafka import Consumer, KafkaError, KafkaException, Message, TopicPartition

from streams.dialers.dial_command import decode_command
from streams.dialers.twilio.runtime import Stopping
from streams.kafka import clients
from streams.settings import Settings
from streams.topics import DialCommand, InvalidRecord

log = logging.getLogger(__name__)

#: Commands being handled at once at most; the consumer pauses beyond.
MAX_IN_FLIGHT = 2000
#: Offsets are committed at most this often.
COMMIT_INTERVAL_SECONDS = 0.5

Partition = tuple[str, int]
Handle = Callable[[DialCommand], Coroutine[Any, Any, None]]


class Offsets:
    """Per partition: offsets handed out and not finished; the commit position is the
    lowest unfinished offset, or one past the highest seen. Thread-safe."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._pending: dict[Partition, set[int]] = collections.defaultdict(set)
        self._next: dict[Partition, int] = {}
        self._committed: dict[Partition, int] = {}

    def started(self, partition: Partition, offset: int) -> None:
        with self._lock:
            self._pending[partition].add(offset)
            self._next[partition] = max(self._next.get(partition, 0), offset + 1)

    def finished(self, partition: Partition, offset: int) -> None:
        with self._lock:
            self._pending[partition].discard(offset)

    def in_flight(self) -> int:
        with self._lock:
            return sum(len(p) for p in self._pending.values())

    def to_commit(self) -> list[TopicPartition]:
        with self._lock:
            positions = []
            for key, nxt in self._next.items():
                pending = self._pending.get(key)
                position = min(pending) if pending else nxt
                if self._committed.get(key) != position:
                    positions.append(TopicPartition(key[0], key[1], position))
            return positions

    def committed(self, positions: list[TopicPartition]) -> None:
        with self._lock:
            for tp in positions:
                self._committed[(tp.topic, tp.partition)] = tp.offset

    def forget(self, partitions: list[TopicPartition]) -> None:
        with self._lock:
            for tp in partitions:
                key = (tp.topic, tp.partition)
                self._pending.pop(key, None)
                self._next.pop(key, None)
                self._committed.pop(key, None)


class CommandFeed(threading.Thread):
    """The consumer thread: hands each command to `handle` on `loop`, commits finished
    offsets. `fetching` cleared pauses it (`idle` is then set); `closing` ends it."""

    def __init__(
        self,
        *,
        settings: Settings,
        group_id: str,
        instance_id: str,
        dial_topic: str,
        handle: Handle,
        loop: asyncio.AbstractEventLoop,
        held: Callable[[], bool] = lambda: False,
    ):
        super().__init__(name="dialer-consumer", daemon=True)
        self.settings = settings
        self.group_id = group_id
        self.consumer_options = {
            # Static membership: a dialer restarted after a crash takes its partitions
            # back at once, instead of waiting out the dead member's session.
            "group.instance.id": instance_id,
            "auto.offset.reset": "earliest",
            "enable.auto.commit": False,
            "enable.auto.offset.store": False,
        }
        self.dial_topic = dial_topic
        self.handle = handle
        self.loop = loop
        self.held = held
        self.offsets = Offsets()
        self.fetching = threading.Event()
        self.fetching.set()
        self.closing = threading.Event()
        #: Set once fetching stopped and no batch is handed out.
        self.idle = threading.Event()
        self.ready = threading.Event()
        self.error: BaseException | None = None
        self._paused = False

    def run(self) -> None:
        try:
            consumer = clients.consumer(self.settings, self.group_id, self.consumer_options)
            consumer.subscribe(
                [self.dial_topic], on_revoke=self._on_revoke, on_lost=self._on_revoke
            )
        except BaseException as exc:  # reported by the dialer's start
            self.error = exc
            self.ready.set()
            return
        self.ready.set()
        last_commit = 0.0
        try:
            while not self.closing.is_set():
                if (
                    self.fetching.is_set()
                    and not self.held()
                    and self.offsets.in_flight() < MAX_IN_FLIGHT
                ):
                    self._pause(consumer, False)
                    for message in consumer.consume(200, timeout=0.2):
                        self._on_message(message)
                else:
                    self._pause(consumer, True)
                    if not self.fetching.is_set():
                        self.idle.set()
                    consumer.consume(200, timeout=0.1)  # keeps the group session alive
                if time.monotonic() - last_commit >= COMMIT_INTERVAL_SECONDS:
                    self._commit(consumer)
                    last_commit = time.monotonic()
            self._commit(consumer)
        finally:
            consumer.close()

    def _pause(self, consumer: Consumer, pause: bool) -> None:
        if pause == self._paused:
            return
        assignment = consumer.assignment()
        if assignment:
            (consumer.pause if pause else consumer.resume)(assignment)
        self._paused = pause

    def _on_revoke(self, consumer: Consumer, partitions: list[TopicPartition]) -> None:
        self._commit(consumer)
        self.offsets.forget(partitions)
        self._paused = False

    def _commit(self, consumer: Consumer) -> None:
        positions = self.offsets.to_commit()
        if not positions:
            return
        try:
            consumer.commit(offsets=positions, asynchronous=False)
            self.offsets.committed(positions)
        except KafkaException as exc:
            if exc.args[0].code() != KafkaError._NO_OFFSET:
                log.warning("could not commit dial command offsets: %s", exc)

    def _on_message(self, message: Message) -> None:
        error = message.error()
        if error is not None:
            if error.fatal():
                # E.g. fenced: another dialer runs with our group.instance.id.
                self.error = KafkaException(error)
                self.fetching.clear()
                log.error(
                    "consumer stopped by a fatal error on %s: %s", self.dial_topic, error
                )
            elif error.code() != KafkaError._PARTITION_EOF:
                log.warning("consumer error on %s: %s", self.dial_topic, error)
            return
        topic, partition, offset = message.topic(), message.partition(), message.offset()
        if topic is None or partition is None or offset is None:
            return  # only error messages lack them
        at = (topic, partition)
        self.offsets.started(at, offset)
        try:
            command = decode_command(message)
        except InvalidRecord as exc:
            log.warning(
                "skipping unusable dial command at %s[%d]@%d: %s",
                topic,
                partition,
                offset,
                exc.reason,
            )
            self.offsets.finished(at, offset)
            return
        future = asyncio.run_coroutine_threadsafe(self.handle(command), self.loop)

        def done(fut: concurrent.futures.Future[None]) -> None:
            if fut.cancelled():
                return
            error = fut.exception()
            if error is None:
                self.offsets.finished(at, offset)
            elif not isinstance(error, Stopping):
                # Not committed: the command comes back after a restart.
                log.error(
                    "dial %s at %s[%d]@%d failed unexpectedly: %r; its offset stays"
                    " uncommitted",
                    command.dial_id,
                    topic,
                    partition,
                    offset,
                    error,
                )

        future.add_done_callback(done)
