"""A simulated dialer: consumes `calls.dial`, "places" calls, reports Twilio-like statuses.

Why: the limiter must be exercised end to end without Twilio. This plays the dialer's
part of the contract (`streams.topics`): dedupe on `dial_id`, never place a call after
its `dial_by`, and report each call's statuses in order on `calls.status`.

It also keeps the truth the limiter cannot see: when each call really was live. That
goes to memory (`snapshot()`) and, optionally, to a JSON-lines ledger that tests read
back with `concurrency_from_ledger`. A call's "ended" line is written before its
terminal status is produced, so the ledger never shows a call ending later than the
limiter could have learnt of it.

Calls still live when the dialer stops are dropped without a status (the limiter's
lease covers them); the ledger records them as ended with status "abandoned", as it
does at start for calls a crashed run placed but never ended, so placed/ended pairs
always bound the time a call could really have been live.

Everything runs on one thread: the consumer poll loop also drives a heap of timed
actions, so thousands of concurrent calls cost no threads.
"""

from __future__ import annotations

import collections
import dataclasses
import hashlib
import heapq
import itertools
import json
import logging
import os
import random
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from confluent_kafka import Consumer, KafkaError, KafkaException, Message, Producer

from streams.settings import Settings
from streams.topics import (
    CALLS_DIAL,
    CALLS_STATUS,
    DIAL_DEADLINE_PASSED,
    CallStatus,
    DialCommand,
    InvalidRecord,
    from_iso,
    record_key,
    status_producer_config,
    to_iso,
    topic_name,
)

log = logging.getLogger("streams.dialer")

#: How long one poll may block; also the worst lateness of a scheduled status.
POLL_SECONDS = 0.05
#: Delay before each of `initiated` and `ringing` (Twilio takes about this long to set up).
SETUP_SECONDS = (0.05, 0.3)
#: Relative weights of the final status of an unanswered call.
UNANSWERED = {"no-answer": 6, "busy": 3, "failed": 1}
#: Ledger "ended" status of a call dropped without a status (dialer stopped or crashed).
ABANDONED = "abandoned"


def call_sid(dial_id: str) -> str:
    """A Twilio-shaped call SID, stable per dial_id so that reruns are comparable."""
    return "CA" + hashlib.sha256(dial_id.encode("utf-8")).hexdigest()[:32]


@dataclasses.dataclass
class _Call:
    """One placed call and the script drawn for it when it was placed."""

    command: DialCommand
    sid: str
    ring: float
    talk: float | None  # None: never answered
    final: str
    placed_at: float
    sequence: int = 0


_LEDGER_IDS = ("dial_id", "lead_id", "business_id", "phone")


class _Ledger:
    """Append-only JSON lines of what really happened; a no-op without a path."""

    def __init__(self, path: str | os.PathLike | None):
        self.path = None if path is None else Path(path)
        self._file = None

    def open(self) -> tuple[set[str], list[dict]]:
        """Open for appending; return dial_ids already placed or refused, and the
        "placed" lines of calls a previous run never ended."""
        if self.path is None:
            return set(), []
        handled, unended = _read_ledger(self.path)
        self._file = open(self.path, "a", encoding="utf-8")
        if self._file.tell() > 0 and not _ends_with_newline(self.path):
            self._file.write("\n")  # a crash cut the last line short; keep ours whole
        return handled, list(unended.values())

    def write(self, event: str, call: DialCommand | dict, **extra: Any) -> None:
        """One line about the call `call` (a command, or an earlier line about it)."""
        if self._file is None:
            return
        ids = call if isinstance(call, dict) else dataclasses.asdict(call)
        line = {
            "event": event,
            "at": time.time(),
            **{k: ids.get(k) for k in _LEDGER_IDS},
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


def _ledger_lines(path: str | os.PathLike) -> list[dict]:
    """The ledger's readable lines; a line cut short by a crash is skipped."""
    lines = []
    with open(path, encoding="utf-8") as f:
        for raw in f:
            try:
                line = json.loads(raw)
            except json.JSONDecodeError:
                continue
            if isinstance(line, dict) and "event" in line and "dial_id" in line:
                lines.append(line)
    return lines


def _read_ledger(path: Path) -> tuple[set[str], dict[str, dict]]:
    handled: set[str] = set()
    unended: dict[str, dict] = {}
    if not path.exists():
        return handled, unended
    for line in _ledger_lines(path):
        if line["event"] in ("placed", "refused"):
            handled.add(line["dial_id"])
        if line["event"] == "placed":
            unended[line["dial_id"]] = line
        elif line["event"] == "ended":
            unended.pop(line["dial_id"], None)
    return handled, unended


def concurrency_from_ledger(path: str | os.PathLike) -> dict[str, int]:
    """Peak number of calls live at once per business, from the ledger alone.

    An independent check of the limiter: it trusts nothing but placed/ended times.
    Equal times count the end first (a slot freed and refilled in the same instant).
    """
    events = [line for line in _ledger_lines(path) if line["event"] in ("placed", "ended")]
    events.sort(key=lambda line: (line["at"], line["event"] == "placed"))
    live: collections.Counter[str] = collections.Counter()
    peak: dict[str, int] = {}
    for line in events:
        business = line["business_id"]
        if line["event"] == "placed":
            live[business] += 1
            peak[business] = max(peak.get(business, 0), live[business])
        else:
            live[business] -= 1
    return peak


def _span(name: str, bounds: tuple[float, float]) -> tuple[float, float]:
    low, high = bounds
    if not 0 <= low <= high:
        raise ValueError(f"{name} must be (min, max) with 0 <= min <= max, got {bounds!r}")
    return float(low), float(high)


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
        ledger_path: str | os.PathLike | None = None,
        group_id: str | None = None,
    ):
        if not 0.0 <= answer_ratio <= 1.0:
            raise ValueError(f"answer_ratio must be within 0..1, got {answer_ratio!r}")
        self.settings = settings
        self.talk_seconds = _span("talk_seconds", talk_seconds)
        self.ring_seconds = _span("ring_seconds", ring_seconds)
        self.answer_ratio = answer_ratio
        self.group_id = group_id or f"{settings.topic_prefix}sim-dialer"
        self.dial_topic = topic_name(CALLS_DIAL, settings.topic_prefix)
        self.status_topic = topic_name(CALLS_STATUS, settings.topic_prefix)
        self._rng = random.Random(seed)
        self._ledger = _Ledger(ledger_path)
        self._seen: set[str] = set()
        self._calls: dict[str, _Call] = {}
        self._due: list[tuple[float, int, Callable[[], None]]] = []
        self._order = itertools.count()
        self._producer: Producer | None = None
        self._last_activity = time.monotonic()
        # snapshot() may be called from another thread while run() mutates these.
        self._lock = threading.Lock()
        self._live: dict[str, int] = {}
        self._max_live: dict[str, int] = {}
        self._placed = self._refused = self._duplicates = 0
        self._ended: collections.Counter[str] = collections.Counter()

    # -- public ----------------------------------------------------------------------

    def snapshot(self) -> dict[str, Any]:
        """True concurrency and counters, as plain data. `ended_by_status` counts the
        final statuses, plus "abandoned" for calls cut off by a stop."""
        with self._lock:
            return {
                "live_by_business": {b: n for b, n in self._live.items() if n},
                "max_live_by_business": dict(self._max_live),
                "placed": self._placed,
                "refused": self._refused,
                "duplicates": self._duplicates,
                "ended_by_status": dict(self._ended),
            }

    def run(
        self, stop: threading.Event | None = None, idle_exit_seconds: float | None = None
    ) -> None:
        """Serve dial commands until `stop` is set, or until nothing arrived and no call
        was live for `idle_exit_seconds`. Live calls are then dropped, not finished."""
        stop = threading.Event() if stop is None else stop
        handled, unended = self._ledger.open()
        try:
            self._seen |= handled
            for line in unended:
                log.warning(
                    "ledger shows dial %s placed but never ended (crashed run?);"
                    " recording it as %s",
                    line["dial_id"],
                    ABANDONED,
                )
                self._ledger.write("ended", line, status=ABANDONED)
            self._producer = Producer(
                status_producer_config(self.settings.kafka_bootstrap_servers)
            )
            consumer = Consumer(
                {
                    "bootstrap.servers": self.settings.kafka_bootstrap_servers,
                    "group.id": self.group_id,
                    "auto.offset.reset": "earliest",
                    "enable.auto.commit": False,
                }
            )
            try:
                self._serve(consumer, stop, idle_exit_seconds)
            finally:
                self._abandon_live()
                self._close(consumer)
        finally:
            self._ledger.close()

    def _serve(
        self, consumer: Consumer, stop: threading.Event, idle_exit_seconds: float | None
    ) -> None:
        consumer.subscribe([self.dial_topic])
        self._last_activity = time.monotonic()
        while not stop.is_set():
            # poll() returns with the first command there is; consume(n, timeout) would
            # wait for n of them or the whole timeout, delaying a lone command by up
            # to POLL_SECONDS (bench/RESULTS.md, run 1: 44 ms at p99).
            first = consumer.poll(self._poll_timeout())
            messages = [first] + consumer.consume(99, timeout=0) if first else []
            for message in messages:
                self._on_message(message)
            if any(m.error() is None for m in messages):
                # Every consumed command is handled by now, so the positions are safe.
                consumer.commit(asynchronous=True)
            self._run_due()
            self._producer.poll(0)
            if (
                idle_exit_seconds is not None
                and not self._calls
                and time.monotonic() - self._last_activity >= idle_exit_seconds
            ):
                return

    # -- commands --------------------------------------------------------------------

    def _on_message(self, message: Message) -> None:
        if message.error() is not None:
            log.warning("consumer error on %s: %s", self.dial_topic, message.error())
            return
        self._last_activity = time.monotonic()
        try:
            command = _decode(message)
        except InvalidRecord as exc:
            log.warning(
                "skipping unusable dial command at %s[%d]@%d: %s",
                message.topic(),
                message.partition(),
                message.offset(),
                exc.reason,
            )
            return
        if command.dial_id in self._seen:
            self._ledger.write("duplicate", command)
            with self._lock:
                self._duplicates += 1
            log.debug("ignored duplicate dial %s", command.dial_id)
            return
        self._seen.add(command.dial_id)
        if time.time() > from_iso(command.dial_by):
            self._refuse(command)
        else:
            self._place(command)

    def _refuse(self, command: DialCommand) -> None:
        self._ledger.write("refused", command)
        with self._lock:
            self._refused += 1
        log.info(
            "refused dial %s for lead %s of business %s: dial_by %s has passed",
            command.dial_id,
            command.lead_id,
            command.business_id,
            command.dial_by,
        )
        self._produce(command, "canceled", sequence=0, reason=DIAL_DEADLINE_PASSED)

    def _place(self, command: DialCommand) -> None:
        rng, settings = self._rng, self.settings
        answered = rng.random() < self.answer_ratio
        call = _Call(
            command=command,
            sid=call_sid(command.dial_id),
            ring=min(rng.uniform(*self.ring_seconds), settings.ring_timeout_seconds),
            talk=(
                min(rng.uniform(*self.talk_seconds), settings.call_time_limit_seconds)
                if answered
                else None
            ),
            final=(
                "completed"
                if answered
                else rng.choices(list(UNANSWERED), weights=list(UNANSWERED.values()))[0]
            ),
            placed_at=time.monotonic(),
        )
        business = command.business_id
        self._ledger.write("placed", command)
        with self._lock:
            self._calls[command.dial_id] = call
            self._live[business] = live = self._live.get(business, 0) + 1
            self._max_live[business] = max(self._max_live.get(business, 0), live)
            self._placed += 1
        log.info(
            "placed dial %s for lead %s of business %s to %s (%d live for %s)",
            command.dial_id,
            command.lead_id,
            business,
            command.phone,
            live,
            business,
        )
        self._status(call, "queued")
        self._after(rng.uniform(*SETUP_SECONDS), lambda: self._initiated(call))

    # -- a call's life ---------------------------------------------------------------

    def _initiated(self, call: _Call) -> None:
        self._status(call, "initiated")
        self._after(self._rng.uniform(*SETUP_SECONDS), lambda: self._ringing(call))

    def _ringing(self, call: _Call) -> None:
        self._status(call, "ringing")
        if call.talk is None:
            self._after(call.ring, lambda: self._end(call))
        else:
            self._after(call.ring, lambda: self._answered(call))

    def _answered(self, call: _Call) -> None:
        self._status(call, "in-progress")
        self._after(call.talk, lambda: self._end(call))

    def _end(self, call: _Call) -> None:
        """The call is over before anyone is told: ledger and counters first, then status."""
        live = self._forget(call, call.final)
        log.info(
            "ended dial %s for lead %s of business %s: %s after %.1fs (%d live for %s)",
            call.command.dial_id,
            call.command.lead_id,
            call.command.business_id,
            call.final,
            time.monotonic() - call.placed_at,
            live,
            call.command.business_id,
        )
        self._status(call, call.final)

    def _abandon_live(self) -> None:
        for call in list(self._calls.values()):
            live = self._forget(call, ABANDONED)
            log.info(
                "abandoned dial %s for lead %s of business %s: dialer stopping"
                " (%d live for %s)",
                call.command.dial_id,
                call.command.lead_id,
                call.command.business_id,
                live,
                call.command.business_id,
            )
        self._due.clear()

    def _forget(self, call: _Call, status: str) -> int:
        """Record the call's end; return how many calls its business still has live."""
        business = call.command.business_id
        self._ledger.write("ended", call.command, status=status)
        with self._lock:
            del self._calls[call.command.dial_id]
            self._live[business] = live = self._live[business] - 1
            if not live:
                del self._live[business]
            self._ended[status] += 1
        self._last_activity = time.monotonic()
        return live

    # -- plumbing --------------------------------------------------------------------

    def _status(self, call: _Call, status: str) -> None:
        self._produce(call.command, status, sequence=call.sequence, call_sid=call.sid)
        call.sequence += 1

    def _produce(self, command: DialCommand, status: str, **fields: Any) -> None:
        record = CallStatus(
            dial_id=command.dial_id,
            lead_id=command.lead_id,
            business_id=command.business_id,
            status=status,
            at=to_iso(time.time()),
            **fields,
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
                self._producer.produce(
                    self.status_topic,
                    key=record_key(command.business_id),
                    value=record.encode(),
                    on_delivery=delivered,
                )
                return
            except BufferError:  # local queue full: let deliveries drain, then retry
                self._producer.poll(0.1)

    def _after(self, delay: float, action: Callable[[], None]) -> None:
        heapq.heappush(self._due, (time.monotonic() + delay, next(self._order), action))

    def _run_due(self) -> None:
        while self._due and self._due[0][0] <= time.monotonic():
            heapq.heappop(self._due)[2]()

    def _poll_timeout(self) -> float:
        if not self._due:
            return POLL_SECONDS
        return min(POLL_SECONDS, max(0.0, self._due[0][0] - time.monotonic()))

    def _close(self, consumer: Consumer) -> None:
        remaining = self._producer.flush(10)
        if remaining:
            log.warning("%d call statuses were not delivered before stopping", remaining)
        try:
            consumer.commit(asynchronous=False)
        except KafkaException as exc:
            if exc.args[0].code() != KafkaError._NO_OFFSET:
                log.warning("could not commit dial command offsets: %s", exc)
        consumer.close()


def _decode(message: Message) -> DialCommand:
    """A dial command with usable ids, or InvalidRecord.

    `DialCommand.decode` does not check field types, and a non-string id would only
    fail later, half-handled.
    """
    try:
        command = DialCommand.decode(message.value(), message.key())
    except InvalidRecord:
        raise
    except (ValueError, TypeError, AttributeError) as exc:  # e.g. a non-string dial_by
        raise InvalidRecord(f"unreadable dial command: {exc}") from None
    for name in ("dial_id", "lead_id", "business_id", "phone", "dial_by"):
        value = getattr(command, name)
        if not isinstance(value, str) or not value:
            raise InvalidRecord(f"{name} must be a non-empty string, got {value!r}")
    return command
