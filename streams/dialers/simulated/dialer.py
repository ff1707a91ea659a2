"""The simulated dialer's Kafka side: `calls.dial` in, the switchboard's statuses out.

One thread does everything: the consumer poll loop hands each command to the
switchboard (`streams.dialers.simulated.calls`) and, between polls, runs its timed
actions, so a poll never blocks past the next status due. Offsets are committed once
every consumed command is handled. Calls still live when the dialer stops are dropped
without a status (the limiter's lease covers them) and recorded as abandoned.
"""

from __future__ import annotations

import logging
import os
import random
import threading
import time
from collections.abc import Callable

from confluent_kafka import Consumer, KafkaError, KafkaException, Message

from streams.dialers.dial_command import decode_command
from streams.dialers.simulated.calls import CallTimings, Snapshot, Switchboard
from streams.dialers.simulated.ledger import CallLedger
from streams.kafka import clients
from streams.settings import Settings
from streams.topics import (
    CALLS_DIAL,
    CALLS_STATUS,
    CallStatus,
    DialCommand,
    InvalidRecord,
    record_key,
    to_iso,
    topic_name,
)

log = logging.getLogger(__name__)

#: How long one poll may block; also the worst lateness of a scheduled status.
POLL_SECONDS = 0.05


def _span(name: str, bounds: tuple[float, float]) -> tuple[float, float]:
    low, high = bounds
    if not 0 <= low <= high:
        raise ValueError(f"{name} must be (min, max) with 0 <= min <= max, got {bounds!r}")
    return float(low), float(high)


class StatusSender:
    """Produces the switchboard's statuses to `calls.status`, stamped with the time."""

    def __init__(self, settings: Settings):
        self.topic = topic_name(CALLS_STATUS, settings.topic_prefix)
        self.producer = clients.status_producer(settings)

    def __call__(
        self,
        command: DialCommand,
        status: str,
        *,
        sequence: int,
        call_sid: str | None = None,
        reason: str | None = None,
    ) -> None:
        record = CallStatus(
            dial_id=command.dial_id,
            lead_id=command.lead_id,
            business_id=command.business_id,
            status=status,
            at=to_iso(time.time()),
            sequence=sequence,
            call_sid=call_sid,
            reason=reason,
        )

        def delivered(err: KafkaError | None, _message: Message) -> None:
            if err is not None:
                log.error(
                    "status %s of dial %s was not delivered: %s",
                    status,
                    command.dial_id,
                    err,
                )

        while True:
            try:
                self.producer.produce(
                    self.topic,
                    key=record_key(command.business_id),
                    value=record.encode(),
                    on_delivery=delivered,
                )
                return
            except BufferError:  # local queue full: let deliveries drain, then retry
                self.producer.poll(0.1)


class SimulatedDialer:
    """Plays the dialer against Kafka; build it, then `run()` it on one thread."""

    def __init__(
        self,
        settings: Settings,
        *,
        seed: int | None = None,
        talk_seconds: tuple[float, float] = (1.0, 4.0),
        ring_seconds: tuple[float, float] = (0.1, 0.8),
        answer_ratio: float = 0.8,
        ledger_path: str | os.PathLike[str] | None = None,
        group_id: str | None = None,
        clock: Callable[[], float] = time.monotonic,
    ):
        if not 0.0 <= answer_ratio <= 1.0:
            raise ValueError(f"answer_ratio must be within 0..1, got {answer_ratio!r}")
        self.settings = settings
        self.timings = CallTimings(
            ring_seconds=_span("ring_seconds", ring_seconds),
            talk_seconds=_span("talk_seconds", talk_seconds),
            answer_ratio=answer_ratio,
            ring_timeout=settings.ring_timeout_seconds,
            time_limit=settings.call_time_limit_seconds,
        )
        self.group_id = group_id or f"{settings.topic_prefix}sim-dialer"
        self.dial_topic = topic_name(CALLS_DIAL, settings.topic_prefix)
        self._ledger = CallLedger(ledger_path)
        self._statuses = StatusSender(settings)
        self._switchboard = Switchboard(
            timings=self.timings,
            ledger=self._ledger,
            emit=self._statuses,
            rng=random.Random(seed),
            clock=clock,
        )

    def snapshot(self) -> Snapshot:
        """True concurrency and counters (`Switchboard.snapshot`); any thread may ask."""
        return self._switchboard.snapshot()

    def run(
        self, stop: threading.Event | None = None, idle_exit_seconds: float | None = None
    ) -> None:
        """Serve dial commands until `stop` is set, or until nothing arrived and no call
        was live for `idle_exit_seconds`. Live calls are then dropped, not finished."""
        stop = threading.Event() if stop is None else stop
        handled, unended = self._ledger.open()
        try:
            self._switchboard.recover(handled, unended)
            consumer = clients.consumer(
                self.settings,
                self.group_id,
                {"auto.offset.reset": "earliest", "enable.auto.commit": False},
            )
            try:
                self._serve(consumer, stop, idle_exit_seconds)
            finally:
                self._switchboard.abandon_live()
                self._close(consumer)
        finally:
            self._ledger.close()

    def _serve(
        self, consumer: Consumer, stop: threading.Event, idle_exit_seconds: float | None
    ) -> None:
        consumer.subscribe([self.dial_topic])
        switchboard = self._switchboard
        switchboard.touch()
        while not stop.is_set():
            # poll() returns with the first command there is; consume(n, timeout) would
            # wait for n of them or the whole timeout, delaying a lone command.
            due_in = switchboard.next_due_in()
            first = consumer.poll(
                POLL_SECONDS if due_in is None else min(POLL_SECONDS, due_in)
            )
            messages = [first, *consumer.consume(99, timeout=0)] if first else []
            for message in messages:
                self._on_message(message)
            if any(m.error() is None for m in messages):
                # Every consumed command is handled by now, so the positions are safe.
                consumer.commit(asynchronous=True)
            switchboard.run_due()
            self._statuses.producer.poll(0)
            if (
                idle_exit_seconds is not None
                and switchboard.idle_for() >= idle_exit_seconds
            ):
                return

    def _on_message(self, message: Message) -> None:
        if message.error() is not None:
            log.warning("consumer error on %s: %s", self.dial_topic, message.error())
            return
        self._switchboard.touch()
        try:
            command = decode_command(message)
        except InvalidRecord as exc:
            log.warning(
                "skipping unusable dial command at %s[%s]@%s: %s",
                message.topic(),
                message.partition(),
                message.offset(),
                exc.reason,
            )
            return
        self._switchboard.handle(command)

    def _close(self, consumer: Consumer) -> None:
        remaining = self._statuses.producer.flush(10)
        if remaining:
            log.warning("%d call statuses were not delivered before stopping", remaining)
        try:
            consumer.commit(asynchronous=False)
        except KafkaException as exc:
            if exc.args[0].code() != KafkaError._NO_OFFSET:
                log.warning("could not commit dial command offsets: %s", exc)
        consumer.close()
