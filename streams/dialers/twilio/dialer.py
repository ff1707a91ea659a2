"""The Twilio dialer: `calls.dial` -> Twilio calls, status callbacks -> `calls.status`.

It plays the dialer's part of the contract (`streams.topics`) against the real Twilio
REST API through the `twilio` library (its async client), with a SQL ledger
(`streams.dialers.twilio.ledger`) as the truth about every dial:

* **Commands.** A confluent-kafka consumer (group `<TOPIC_PREFIX>twilio-dialer`, no
  auto-commit) reads `calls.dial`. A command past its `dial_by` is never dialed: its row
  is written `canceled` and `canceled`/`dial-deadline-passed` is reported. Otherwise its
  row is written `dialing` (unique `dial_id`) *before* any request to Twilio; a command
  whose `dial_id` is already in the ledger is a duplicate (a resend by the limiter, or a
  redelivery): it is not dialed, and the last status delivered for that dial is reported
  again (the limiter resends only when it heard nothing, and ignores statuses of dials
  it has closed). An offset is committed once every command up to it has its outcome
  in the ledger (call SID recorded, or row ended, or duplicate) and the status that
  outcome produced is delivered.
* **Creates.** `calls.create` with our status callback (`PUBLIC_BASE_URL/twilio/status`
  carrying `dial_id`, `business_id` and `lead_id`), the events initiated, ringing,
  answered and completed, `time_limit` = `CALL_TIME_LIMIT_SECONDS` and ring `timeout` =
  `RING_TIMEOUT_SECONDS`, so no call outlives the limiter's lease. The create's answer
  is reported as `queued`. Creates share `TWILIO_CPS` through `CreateRateLimiter`.
  429/20429 and connection failures (the request never left) are retried with
  exponential backoff and jitter; so are 5xx answers and timeouts, but only once a
  lookup (below) shows Twilio has no call for the dial (after a timeout, once the
  request cannot be in flight any more). Never past `dial_by` (then `canceled` /
  `dial-deadline-passed`), at most `MAX_CREATE_REQUESTS` requests. Any other rejection
  ends the row `failed` and reports `failed` with Twilio's error code and message (the
  lead's outcome carries the reason).
* **The crash window** between "Twilio accepted the call" and "the ledger has its
  CallSid". Right before each create request the row's `create_requests` is bumped
  (compare-and-set, `Ledger.begin_create`). A live row without `call_sid` found at start
  (or by the reconciler, and not being dialed by this process) is recovered so:
    - `create_requests == 0`: no request ever left for it, so it is dialed now (or
      reported stale past `dial_by`). The compare-and-set stops two processes from both
      sending.
    - otherwise Twilio may have the call, and we find out before anything else: the
      calls to the row's phone from our number are listed (`calls.list(to, from_)`,
      newest first) and a call created between the row's creation (minus
      `LOOKUP_SKEW_SECONDS`) and its last create request plus the request timeout is
      adopted, unless another ledger row owns that SID (earliest such call wins). Twilio's
      Call resource does not return the StatusCallback URL, so the `dial_id` cannot be
      matched there; a callback carrying the `dial_id` also adopts the call.
    - not found: the create is not known to have failed until its request could no
      longer be in flight (`create_sent_at` + `REQUEST_TIMEOUT_SECONDS` +
      `SETTLE_SECONDS`); after that the dial is sent again if `dial_by` allows, or
      reported `canceled`/`dial-deadline-passed` (never dialed).
  So a dial_id is never created twice unless Twilio's list lags its creates by more than
  `SETTLE_SECONDS`, or another system calls the same number from our number in the
  same seconds.
* **Status callbacks** (`POST /twilio/status`, aiohttp on `DIALER_WEB_PORT`): the
  `X-Twilio-Signature` is checked with the library's `RequestValidator` against
  `PUBLIC_BASE_URL` + `/twilio/status` + the query string as received (403 and nothing
  written when it fails); the status goes to the ledger (`Ledger.apply_status`: terminal
  is final, live only moves forward), a change is produced to `calls.status` (with
  Twilio's `SequenceNumber`, `Timestamp` and `ErrorCode`), and the answer (204) is sent
  once the broker has the event. A duplicate or stale callback is answered 204 and
  produces nothing. A callback for a dial we reported stale (Twilio had the call after
  all) is logged as an error: a call the limiter is not counting. `GET /healthz`
  answers 200 when the ledger and Kafka answer, else 503; `GET /metrics` serves the
  Prometheus counters of `streams/metrics.py`.
* **The reconciler** fetches (`calls(sid).fetch()`) every live call that has heard
  nothing for `RECONCILE_AFTER_SECONDS` and reports its true status; it also recovers
  rows without a CallSid (above) and reports terminal rows whose report never got
  through. A lost webhook therefore costs seconds of a slot, not a lease.

The ledger row changes before its status is produced, and a row ends before the limiter
can hear that its call ended; so the design note's query `SELECT business_id, COUNT(*)
FROM outbound_call_jobs WHERE status IN ('dialing','calling') GROUP BY business_id`
never counts more calls for a business than the limiter granted.

Threads: the asyncio loop (web server, dial tasks, reconciler) runs in `run()`'s
thread; the consumer has its own thread, the producer a poll thread, the ledger a
small pool (one thread for SQLite, whose writers are serialized anyway).
"""

from __future__ import annotations

import asyncio
import collections
import concurrent.futures
import contextlib
import dataclasses
import datetime as _dt
import email.utils
import functools
import logging
import math
import os
import random
import re
import socket
import sys
import threading
import time
import urllib.parse
from collections.abc import Awaitable, Callable
from typing import Any, TypeVar

import aiohttp
from aiohttp import web
from confluent_kafka import (
    Consumer,
    KafkaError,
    KafkaException,
    Message,
    Producer,
    TopicPartition,
)
from sqlalchemy.exc import InterfaceError, OperationalError
from twilio.base.exceptions import (
    TwilioException,
    TwilioRestException,
    TwilioServiceException,
)
from twilio.http.async_http_client import AsyncTwilioHttpClient
from twilio.request_validator import RequestValidator
from twilio.rest import Client

from streams import metrics
from streams.dialers.twilio.ledger import Job, Ledger, from_epoch, utcnow
from streams.errors import StreamsError
from streams.settings import Settings
from streams.topics import (
    CALL_STATUSES,
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

STATUS_PATH = "/twilio/status"
HEALTH_PATH = "/healthz"
CALLBACK_EVENTS = ["initiated", "ringing", "answered", "completed"]
#: What an answered call does when neither TWILIO_VOICE_URL nor TWILIO_TWIML is set.
DEFAULT_TWIML = '<Response><Pause length="1"/></Response>'

#: One Twilio REST request may take this long.
REQUEST_TIMEOUT_SECONDS = 15.0
#: After a create request could no longer be in flight, how long Twilio's call list may
#: take to show the call.
SETTLE_SECONDS = 5.0
#: Clock skew allowed between us and Twilio when matching a call to a dial.
LOOKUP_SKEW_SECONDS = 5.0
#: Newest calls to a number looked at when matching.
LOOKUP_LIMIT = 50
#: Create requests sent for one dial at most (retries included).
MAX_CREATE_REQUESTS = 12
#: Backoff of retried creates: min(cap, base * 2**n) scaled by a random 50-100%.
BACKOFF_BASE_SECONDS, BACKOFF_CAP_SECONDS = 0.25, 8.0
#: A row without CallSid not being dialed by us is recovered once this old.
RECOVER_AFTER_SECONDS = 10.0
#: A terminal row whose report failed is reported again once this old.
REREPORT_AFTER_SECONDS = 5.0
#: Commands being handled at once at most; the consumer pauses beyond.
MAX_IN_FLIGHT = 2000
#: Offsets are committed at most this often.
COMMIT_INTERVAL_SECONDS = 0.5
#: How long a status may take to reach the broker before a webhook answers 500.
DELIVERY_TIMEOUT_SECONDS = 20.0
#: On stop, how long in-flight work may take to finish.
SHUTDOWN_GRACE_SECONDS = REQUEST_TIMEOUT_SECONDS + 2.0
#: Test hook: exit(137) right after this many successful creates, before the ledger
#: write, to open the crash window on purpose.
CRASH_AFTER_CREATE_ENV = "STREAMS_DIALER_CRASH_AFTER_CREATE"

T = TypeVar("T")


class DialerError(StreamsError):
    """The dialer cannot start; the message is one line."""


class Stopping(Exception):
    """The dialer is stopping; leave the row for the next run's recovery."""


# -- Twilio errors ---------------------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class TwilioFailure:
    """A Twilio error answer reduced to what we report."""

    status: int
    code: int | None
    message: str

    @property
    def rate_limited(self) -> bool:
        return self.status == 429 or self.code == 20429

    @property
    def server_error(self) -> bool:
        return self.status >= 500

    @classmethod
    def of(cls, exc: TwilioException) -> TwilioFailure:
        if isinstance(exc, TwilioRestException):
            message = re.sub(r"^Unable to \w+ record: ", "", str(exc.msg or ""))
            code = exc.code if isinstance(exc.code, int) else None
            return cls(status=int(exc.status), code=code, message=message)
        if isinstance(exc, TwilioServiceException):
            return cls(
                status=int(exc.status), code=exc.code, message=exc.detail or exc.title
            )
        return cls(status=0, code=None, message=str(exc))


# -- rate ------------------------------------------------------------------------------


class CreateRateLimiter:
    """Twilio's calls-per-second as a token bucket whose tokens come back one window
    after the request that used them has been answered.

    `max(1, floor(cps))` tokens and a window of `max(1, 1/cps)` seconds: a token is taken
    before a create request and returns a window after Twilio's answer arrived (so a
    window after Twilio received the request, whatever the network did). Hence at most
    that many creates reach Twilio in any window, e.g. 2 in any second for
    `TWILIO_CPS=2`, 1 per 2 s for 0.5. Waiters are served in arrival order.
    """

    def __init__(self, cps: float, clock: Callable[[], float] = time.monotonic):
        if not cps > 0:
            raise ValueError(f"cps must be positive, got {cps!r}")
        self.tokens = max(1, math.floor(cps))
        self.window = max(1.0, 1.0 / cps)
        self._clock = clock
        self._held = 0
        self._returning: list[float] = []  # when used tokens come back
        self._queue: collections.deque[object] = collections.deque()  # waiters, in order
        self._changed = asyncio.Event()

    def _available(self, now: float) -> bool:
        self._returning = [t for t in self._returning if t > now]
        return self._held + len(self._returning) < self.tokens

    def _notify(self) -> None:
        """Wake every waiter (each re-checks its turn); later waiters get a new event."""
        self._changed.set()
        self._changed = asyncio.Event()

    async def acquire(
        self, deadline: float | None = None, cancel: asyncio.Event | None = None
    ) -> bool:
        """Take a token; False when `deadline` (a `clock()` time) comes first, or when
        `cancel` is set."""
        ticket = object()
        self._queue.append(ticket)
        try:
            while True:
                now = self._clock()
                if (deadline is not None and now >= deadline) or (
                    cancel and cancel.is_set()
                ):
                    return False
                first = self._queue[0] is ticket
                if first and self._available(now):
                    self._held += 1
                    return True
                wait = min(self._returning) - now if first and self._returning else None
                if deadline is not None:
                    wait = deadline - now if wait is None else min(wait, deadline - now)
                waiters = [asyncio.ensure_future(self._changed.wait())]
                if cancel is not None:
                    waiters.append(asyncio.ensure_future(cancel.wait()))
                try:
                    await asyncio.wait(
                        waiters, timeout=wait, return_when=asyncio.FIRST_COMPLETED
                    )
                finally:
                    for waiter in waiters:
                        waiter.cancel()
        finally:
            self._queue.remove(ticket)
            self._notify()  # the next in line may go now

    def release(self, used: bool = True) -> None:
        """The request is answered (`used`), or was never sent (token back at once)."""
        self._held -= 1
        if used:
            self._returning.append(self._clock() + self.window)
        self._notify()


def backoff_seconds(failures: int, rng: random.Random) -> float:
    """Exponential backoff with jitter for the `failures`-th failed create (1-based)."""
    return min(
        BACKOFF_CAP_SECONDS, BACKOFF_BASE_SECONDS * 2 ** (failures - 1)
    ) * rng.uniform(0.5, 1.0)


# -- Kafka -----------------------------------------------------------------------------


class StatusProducer:
    """The `calls.status` producer (murmur2_random, business_id keys) with a poll thread;
    `send()` resolves once the broker has acknowledged the record."""

    def __init__(self, settings: Settings):
        self.topic = topic_name(CALLS_STATUS, settings.topic_prefix)
        self.producer = Producer(status_producer_config(settings.kafka_bootstrap_servers))
        self._running = True
        self._thread = threading.Thread(
            target=self._poll, name="dialer-producer", daemon=True
        )
        self._thread.start()

    def _poll(self) -> None:
        while self._running:
            self.producer.poll(0.1)

    def produce(self, status: CallStatus) -> asyncio.Future:
        """Hand the record to the producer now (order per dial = call order); the
        future resolves on delivery."""
        loop = asyncio.get_running_loop()
        future: asyncio.Future = loop.create_future()

        def resolve(err: KafkaError | None) -> None:
            if future.done():
                return
            if err is None:
                future.set_result(None)
            else:
                future.set_exception(KafkaException(err))

        def delivered(err: KafkaError | None, _message: Message) -> None:
            loop.call_soon_threadsafe(resolve, err)

        while True:
            try:
                self.producer.produce(
                    self.topic,
                    key=record_key(status.business_id),
                    value=status.encode(),
                    on_delivery=delivered,
                )
                return future
            except BufferError:  # local queue full: let deliveries drain
                self.producer.poll(0.05)

    def check(self, timeout: float = 2.0) -> None:
        """Raise unless the broker answers a metadata request for our topic."""
        metadata = self.producer.list_topics(self.topic, timeout=timeout)
        topic = metadata.topics.get(self.topic)
        if topic is None or topic.error is not None:
            raise KafkaException(topic.error if topic else f"no topic {self.topic}")

    def close(self, timeout: float = 10.0) -> int:
        remaining = self.producer.flush(timeout)
        self._running = False
        self._thread.join(5)
        return remaining


class _Offsets:
    """Per partition: offsets handed out and not finished; the commit position is the
    lowest unfinished offset, or one past the highest seen."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._pending: dict[tuple[str, int], set[int]] = collections.defaultdict(set)
        self._next: dict[tuple[str, int], int] = {}
        self._committed: dict[tuple[str, int], int] = {}

    def started(self, topic: str, partition: int, offset: int) -> None:
        with self._lock:
            key = (topic, partition)
            self._pending[key].add(offset)
            self._next[key] = max(self._next.get(key, 0), offset + 1)

    def finished(self, topic: str, partition: int, offset: int) -> None:
        with self._lock:
            self._pending[(topic, partition)].discard(offset)

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


class _CommandFeed(threading.Thread):
    """The consumer thread: hands each command to the loop, commits finished offsets."""

    def __init__(self, dialer: TwilioDialer, loop: asyncio.AbstractEventLoop):
        super().__init__(name="dialer-consumer", daemon=True)
        self.dialer = dialer
        self.loop = loop
        self.offsets = _Offsets()
        self.fetching = threading.Event()
        self.fetching.set()
        self.closing = threading.Event()
        self.idle = (
            threading.Event()
        )  # set once fetching stopped and no batch is handed out
        self.ready = threading.Event()
        self.error: BaseException | None = None
        self._paused = False

    def run(self) -> None:
        settings = self.dialer.settings
        try:
            consumer = Consumer(
                {
                    "bootstrap.servers": settings.kafka_bootstrap_servers,
                    "group.id": self.dialer.group_id,
                    # Static membership: a dialer restarted after a crash takes its partitions
                    # back at once, instead of waiting out the dead member's session.
                    "group.instance.id": self.dialer.instance_id,
                    "auto.offset.reset": "earliest",
                    "enable.auto.commit": False,
                    "enable.auto.offset.store": False,
                }
            )
            consumer.subscribe(
                [self.dialer.dial_topic], on_revoke=self._on_revoke, on_lost=self._on_revoke
            )
        except BaseException as exc:  # reported by the dialer's start
            self.error = exc
            self.ready.set()
            return
        self.ready.set()
        last_commit = 0.0
        try:
            while not self.closing.is_set():
                if self.fetching.is_set() and self.offsets.in_flight() < MAX_IN_FLIGHT:
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
        if message.error() is not None:
            error = message.error()
            if error.fatal():
                # E.g. fenced: another dialer runs with our group.instance.id.
                self.error = KafkaException(error)
                self.fetching.clear()
                log.error(
                    "consumer stopped by a fatal error on %s: %s",
                    self.dialer.dial_topic,
                    error,
                )
            elif error.code() != KafkaError._PARTITION_EOF:
                log.warning("consumer error on %s: %s", self.dialer.dial_topic, error)
            return
        topic, partition, offset = message.topic(), message.partition(), message.offset()
        self.offsets.started(topic, partition, offset)
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
            self.offsets.finished(topic, partition, offset)
            return
        future = asyncio.run_coroutine_threadsafe(
            self.dialer.handle_command(command), self.loop
        )

        def done(fut: concurrent.futures.Future) -> None:
            if fut.cancelled():
                return
            error = fut.exception()
            if error is None:
                self.offsets.finished(topic, partition, offset)
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


def decode_command(message: Message) -> DialCommand:
    """A dial command with usable fields, or InvalidRecord."""
    try:
        command = DialCommand.decode(message.value(), message.key())
    except InvalidRecord:
        raise
    except (ValueError, TypeError, AttributeError) as exc:
        raise InvalidRecord(f"unreadable dial command: {exc}") from None
    for name in ("dial_id", "lead_id", "business_id", "phone", "dial_by"):
        value = getattr(command, name)
        if not isinstance(value, str) or not value:
            raise InvalidRecord(f"{name} must be a non-empty string, got {value!r}")
    if not isinstance(command.attempt, int) or isinstance(command.attempt, bool):
        raise InvalidRecord(f"attempt must be an integer, got {command.attempt!r}")
    return command


# -- the dialer ------------------------------------------------------------------------


def _rfc2822(text: str | None) -> float | None:
    if not text:
        return None
    try:
        return email.utils.parsedate_to_datetime(text).timestamp()
    except (TypeError, ValueError):
        return None


def _int_or_none(text: str | None) -> int | None:
    return int(text) if text is not None and re.fullmatch(r"-?\d+", text.strip()) else None


class TwilioDialer:
    """Build it (validates settings, opens and migrates the ledger), then `run(stop)`."""

    def __init__(
        self,
        settings: Settings,
        *,
        ledger: Ledger | None = None,
        group_id: str | None = None,
        instance_id: str | None = None,
        crash_after_create: int | None = None,
        seed: int | None = None,
    ):
        self.settings = settings.require_twilio()
        self.group_id = group_id or f"{settings.topic_prefix}twilio-dialer"
        # Two dialers on one host cannot share a web port, so this names one dialer.
        self.instance_id = instance_id or (
            f"{self.group_id}@{socket.gethostname()}:{settings.dialer_web_port}"
        )
        self.dial_topic = topic_name(CALLS_DIAL, settings.topic_prefix)
        #: The answered call's voice flow, as calls.create takes it.
        self.voice = (
            {"url": settings.twilio_voice_url}
            if settings.twilio_voice_url
            else {"twiml": settings.twilio_twiml or DEFAULT_TWIML}
        )
        if crash_after_create is None and os.environ.get(CRASH_AFTER_CREATE_ENV):
            crash_after_create = int(os.environ[CRASH_AFTER_CREATE_ENV])
        self.crash_after_create = crash_after_create
        self._rng = random.Random(seed)
        self._owns_ledger = ledger is None
        try:
            self.ledger = ledger or Ledger(settings.database_url)
            applied = self.ledger.migrate()
        except Exception as exc:  # one line, whatever the driver says
            raise DialerError(
                f"cannot open the ledger at {_safe_url(settings.database_url)}:"
                f" {str(exc).splitlines()[0]}"
            ) from None
        if applied:
            log.info(
                "ledger %s: applied schema migrations %s",
                _safe_url(settings.database_url),
                applied,
            )
        self._validator = RequestValidator(settings.twilio_auth_token)
        self._db_pool = concurrent.futures.ThreadPoolExecutor(
            max_workers=1 if self.ledger.is_sqlite else 4, thread_name_prefix="dialer-db"
        )
        self._creates = 0
        self._inflight: set[str] = set()
        self._dial_locks: dict[str, tuple[asyncio.Lock, int]] = {}
        self._tasks: set[asyncio.Task] = set()
        self._stopping: asyncio.Event | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self.producer: StatusProducer | None = None
        self.client: Client | None = None
        self.limiter: CreateRateLimiter | None = None
        self.web_port: int | None = None
        self.started = threading.Event()
        self.counters: collections.Counter[str] = collections.Counter()

    # -- running ---------------------------------------------------------------------

    def run(self, stop: threading.Event | None = None) -> None:
        """Serve until `stop` is set (SIGINT/SIGTERM in the CLI), then shut down cleanly."""
        stop = threading.Event() if stop is None else stop
        try:
            asyncio.run(self._main(stop))
        finally:
            self._db_pool.shutdown(wait=True)
            if self._owns_ledger:
                self.ledger.close()

    async def _main(self, stop: threading.Event) -> None:
        self._loop = asyncio.get_running_loop()
        self._stopping = asyncio.Event()
        self.limiter = CreateRateLimiter(self.settings.twilio_cps)
        http = AsyncTwilioHttpClient(timeout=REQUEST_TIMEOUT_SECONDS)
        self.client = Client(
            self.settings.twilio_account_sid,
            self.settings.twilio_auth_token,
            http_client=http,
        )
        if self.settings.twilio_api_base_url:
            self.client.api.base_url = self.settings.twilio_api_base_url
        self.producer = StatusProducer(self.settings)
        runner = web.AppRunner(self._web_app(), access_log=None)
        await runner.setup()
        feed: _CommandFeed | None = None
        reconciler: asyncio.Task | None = None
        try:
            site = web.TCPSite(runner, "0.0.0.0", self.settings.dialer_web_port)
            try:
                await site.start()
            except OSError as exc:
                raise DialerError(
                    f"cannot serve webhooks on port"
                    f" {self.settings.dialer_web_port}: {exc.strerror}"
                ) from None
            self.web_port = runner.addresses[0][1] if runner.addresses else None
            log.info(
                "twilio dialer: %s -> Twilio (%s, %g calls/s) -> %s; webhooks on :%s"
                " at %s%s; ledger %s",
                self.dial_topic,
                self.settings.twilio_api_base_url or "api.twilio.com",
                self.settings.twilio_cps,
                self.producer.topic,
                self.web_port,
                self.settings.public_base_url,
                STATUS_PATH,
                _safe_url(self.settings.database_url),
            )
            await self._recover_at_start()
            feed = _CommandFeed(self, self._loop)
            feed.start()
            await asyncio.to_thread(feed.ready.wait, 30)
            if feed.error is not None:
                raise DialerError(f"cannot consume {self.dial_topic}: {feed.error}")
            reconciler = asyncio.create_task(self._reconcile_forever())
            self.started.set()
            while not stop.is_set():
                if feed.error is not None:
                    raise DialerError(f"stopped consuming {self.dial_topic}: {feed.error}")
                await asyncio.sleep(0.1)
            log.info(
                "twilio dialer stopping: no new commands; finishing %d dials in flight",
                len(self._inflight),
            )
        finally:
            await self._shutdown(feed, reconciler, runner, http)

    async def _shutdown(
        self,
        feed: _CommandFeed | None,
        reconciler: asyncio.Task | None,
        runner: web.AppRunner,
        http: AsyncTwilioHttpClient,
    ) -> None:
        if feed is not None:
            feed.fetching.clear()
            await asyncio.to_thread(feed.idle.wait, 5)
        self._stopping.set()  # dials waiting for a token or a backoff leave their row
        deadline = time.monotonic() + SHUTDOWN_GRACE_SECONDS
        while self._tasks and time.monotonic() < deadline:
            await asyncio.wait(set(self._tasks), timeout=deadline - time.monotonic())
        if self._tasks:
            pending = set(self._tasks)
            for task in pending:
                task.cancel()
            await asyncio.wait(pending, timeout=5)
            log.warning(
                "%d dials were cut short by the stop; the next start recovers"
                " them from the ledger",
                len(pending),
            )
        if reconciler is not None:
            reconciler.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await reconciler
        if feed is not None:
            feed.closing.set()
            await asyncio.to_thread(feed.join, 30)
        await runner.cleanup()
        if self.producer is not None:
            remaining = await asyncio.to_thread(self.producer.close, 10)
            if remaining:
                log.warning(
                    "%d call statuses were not delivered before stopping;"
                    " the reconciler reports terminal ones after restart",
                    remaining,
                )
        await http.close()
        log.info("twilio dialer stopped: %s", dict(self.counters))

    def _spawn(self, coro: Awaitable[Any], what: str) -> asyncio.Task:
        async def guarded() -> None:
            try:
                await coro
            except Stopping:
                pass
            except Exception:
                log.exception("%s failed; the reconciler will try again", what)

        task = asyncio.ensure_future(guarded())
        self._track(task)
        return task

    def _track(self, task: asyncio.Task) -> None:
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _db(self, fn: Callable[..., T], *args: Any, **kwargs: Any) -> T:
        """Run a ledger call on the ledger's threads; retry while the database is away."""
        delay = 0.2
        while True:
            try:
                return await self._loop.run_in_executor(
                    self._db_pool, functools.partial(fn, *args, **kwargs)
                )
            except (OperationalError, InterfaceError) as exc:
                if self._stopping.is_set():
                    raise Stopping() from exc
                log.warning(
                    "ledger unavailable (%s); retrying in %.1fs",
                    str(exc).splitlines()[0],
                    delay,
                )
                await asyncio.sleep(delay)
                delay = min(delay * 2, 5.0)

    @contextlib.asynccontextmanager
    async def _dial_lock(self, dial_id: str):
        """Serializes ledger change + produce per dial, so Kafka order = ledger order."""
        lock, users = self._dial_locks.get(dial_id, (None, 0))
        if lock is None:
            lock = asyncio.Lock()
        self._dial_locks[dial_id] = (lock, users + 1)
        try:
            async with lock:
                yield
        finally:
            lock, users = self._dial_locks[dial_id]
            if users <= 1:
                del self._dial_locks[dial_id]
            else:
                self._dial_locks[dial_id] = (lock, users - 1)

    # -- reporting -------------------------------------------------------------------

    def _status_of(
        self, job: Job, at: float | None = None, *, reported: bool = False
    ) -> CallStatus:
        status = job.reported_status if reported else job.twilio_status
        sequence = job.reported_sequence if reported else job.sequence
        terminal_failure = status in ("failed", "canceled", "busy", "no-answer")
        return CallStatus(
            dial_id=job.dial_id,
            lead_id=job.lead_id,
            business_id=job.business_id,
            status=status,
            at=to_iso(time.time() if at is None else at),
            call_sid=job.call_sid,
            sequence=sequence,
            reason=job.error_message if terminal_failure else None,
            error_code=job.error_code if terminal_failure else None,
        )

    async def _change(
        self,
        dial_id: str,
        change: Callable[[], tuple[bool, Job | None]],
        at: float | None = None,
    ) -> tuple[bool, Job | None]:
        """Apply a ledger change; report the row's status if it changed (or if its
        terminal status was never reported), after the broker has it."""
        async with self._dial_lock(dial_id):
            changed, job = await self._db(change)
            if job is None or job.twilio_status is None:
                return changed, job
            if not (changed or (job.terminal and job.unreported)):
                return False, job
            status = self._status_of(job, at)
            delivery = self.producer.produce(status)
        await asyncio.wait_for(delivery, DELIVERY_TIMEOUT_SECONDS)
        await self._db(
            self.ledger.mark_reported, job.dial_id, status.status, status.sequence
        )
        return True, job

    # -- commands --------------------------------------------------------------------

    async def handle_command(self, command: DialCommand) -> None:
        """One dial command, to its durable outcome (called from the consumer thread)."""
        if self._stopping.is_set():
            raise Stopping()
        self._track(asyncio.current_task())
        dial_by = from_iso(command.dial_by)
        ids = dict(
            dial_id=command.dial_id,
            lead_id=command.lead_id,
            business_id=command.business_id,
            phone=command.phone,
            attempt=command.attempt,
            dial_by=from_epoch(dial_by),
        )
        if time.time() > dial_by:
            inserted, job = await self._db(
                self.ledger.claim, **ids, refused_reason=DIAL_DEADLINE_PASSED
            )
            if inserted:
                self.counters["refused-stale"] += 1
                log.info(
                    "refused stale dial %s for lead %s of business %s: dial_by %s has"
                    " passed; reported canceled (%s)",
                    command.dial_id,
                    command.lead_id,
                    command.business_id,
                    command.dial_by,
                    DIAL_DEADLINE_PASSED,
                )
                await self._change(job.dial_id, lambda: (True, job))
                return
        else:
            inserted, job = await self._db(self.ledger.claim, **ids)
            if inserted:
                await self._dial(job)
                return
        await self._duplicate(job)

    async def _duplicate(self, job: Job) -> None:
        self.counters["duplicate"] += 1
        async with self._dial_lock(job.dial_id):
            job = await self._db(self.ledger.get, job.dial_id) or job
            delivery = None
            if job.reported_status is not None:
                delivery = self.producer.produce(self._status_of(job, reported=True))
        log.info(
            "ignored duplicate dial %s for lead %s of business %s (ledger: %s%s); %s",
            job.dial_id,
            job.lead_id,
            job.business_id,
            job.status,
            f", call {job.call_sid}" if job.call_sid else "",
            f"re-reported {job.reported_status}" if delivery else "nothing to re-report",
        )
        if delivery is not None:
            await asyncio.wait_for(delivery, DELIVERY_TIMEOUT_SECONDS)

    async def _dial(self, job: Job) -> None:
        """Create the call for a claimed row; owns the row while it runs."""
        self._inflight.add(job.dial_id)
        try:
            await self._create(job)
        finally:
            self._inflight.discard(job.dial_id)

    async def _wait(self, seconds: float) -> None:
        """Sleep, or raise Stopping when the dialer stops first."""
        try:
            await asyncio.wait_for(self._stopping.wait(), max(0.0, seconds))
        except asyncio.TimeoutError:
            return
        raise Stopping()

    async def _create(self, job: Job) -> None:
        dial_by = job.dial_by.timestamp()
        expected = job.create_requests
        failures = 0
        failure: TwilioFailure | None = None
        while True:
            if self._stopping.is_set():
                raise Stopping()
            deadline = time.monotonic() + (dial_by - time.time())
            asked = time.monotonic()
            got = await self.limiter.acquire(deadline, self._stopping)
            if time.monotonic() - asked > 0.005:
                metrics.TWILIO_CPS_THROTTLED.inc()
            if not got:
                if self._stopping.is_set():
                    raise Stopping()
                await self._deadline_passed(job, failure, "waiting for Twilio's rate")
                return
            sent_at = time.time()
            if sent_at > dial_by:
                self.limiter.release(used=False)
                await self._deadline_passed(job, failure, "waiting for Twilio's rate")
                return
            try:
                claimed = await self._db(self.ledger.begin_create, job.dial_id, expected)
            except BaseException:
                self.limiter.release(used=False)
                raise
            if claimed is None:
                self.limiter.release(used=False)
                log.info(
                    "dial %s is no longer ours to create (another dialer took it, or it"
                    " ended)",
                    job.dial_id,
                )
                return
            expected += 1
            kind = "ok"
            try:
                call = await self.client.calls.create_async(
                    to=job.phone,
                    from_=self.settings.twilio_from_number,
                    **self.voice,
                    status_callback=self.status_callback_url(job),
                    status_callback_event=CALLBACK_EVENTS,
                    status_callback_method="POST",
                    time_limit=int(self.settings.call_time_limit_seconds),
                    timeout=int(self.settings.ring_timeout_seconds),
                )
            except TwilioException as exc:
                failure = TwilioFailure.of(exc)
                kind = (
                    "retry"
                    if failure.rate_limited
                    else "unknown"
                    if failure.server_error
                    else "rejected"
                )
                metrics.TWILIO_ERRORS.labels(code=str(failure.code or failure.status)).inc()
                if failure.rate_limited:
                    metrics.TWILIO_CPS_THROTTLED.inc()
            except aiohttp.ClientConnectorError as exc:  # never reached Twilio
                failure, kind = TwilioFailure(0, None, f"cannot connect: {exc}"), "retry"
            except (asyncio.TimeoutError, aiohttp.ClientError, OSError) as exc:
                failure = TwilioFailure(0, None, f"no answer: {exc!r}")
                kind = "unknown"
            finally:
                self.limiter.release(used=True)
            if kind == "ok":
                metrics.DIALER_CALLS_CREATED.inc()
                self._created()
                self.counters["dialed"] += 1
                await self._change(
                    job.dial_id,
                    lambda: self.ledger.adopt_call(
                        job.dial_id, call.sid, call.status or "queued"
                    ),
                )
                log.info(
                    "dialed dial %s for lead %s of business %s to %s: call %s (%s)",
                    job.dial_id,
                    job.lead_id,
                    job.business_id,
                    job.phone,
                    call.sid,
                    call.status or "queued",
                )
                return
            if kind == "rejected":
                await self._failed(job, failure)
                return
            failures += 1
            if kind == "unknown":
                # Twilio may have the call: look before ever sending again.
                settle = 0.0 if failure.server_error else SETTLE_SECONDS
                await self._wait(settle)
                try:
                    found = await self._lookup(job)
                except (
                    TwilioException,
                    aiohttp.ClientError,
                    asyncio.TimeoutError,
                    OSError,
                ) as exc:
                    log.warning(
                        "dial %s: create failed (%s) and Twilio cannot be asked"
                        " whether the call exists (%r); the reconciler will",
                        job.dial_id,
                        failure.message,
                        exc,
                    )
                    return
                if found is not None:
                    await self._adopt(job, found, "after a failed create answer")
                    return
            if failures >= MAX_CREATE_REQUESTS:
                await self._failed(job, failure, gave_up=failures)
                return
            delay = backoff_seconds(failures, self._rng)
            self.counters["create-retried"] += 1
            log.info(
                "dial %s: create answered %s %s (%s); retry %d in %.2fs",
                job.dial_id,
                failure.status or "-",
                failure.code or "",
                failure.message,
                failures,
                delay,
            )
            if time.time() + delay > dial_by:
                await self._deadline_passed(job, failure, "retrying the create")
                return
            await self._wait(delay)

    def _created(self) -> None:
        self._creates += 1
        if self.crash_after_create is not None and self._creates >= self.crash_after_create:
            sys.stderr.write(
                f"{CRASH_AFTER_CREATE_ENV}: exiting after create"
                f" #{self._creates}, before the ledger write\n"
            )
            sys.stderr.flush()
            os._exit(137)

    async def _deadline_passed(
        self, job: Job, failure: TwilioFailure | None, doing: str
    ) -> None:
        changed, _ = await self._change(
            job.dial_id,
            lambda: self.ledger.finish(
                job.dial_id,
                "canceled",
                error_message=DIAL_DEADLINE_PASSED,
                only_without_call=True,
            ),
        )
        if changed:
            self.counters["refused-stale"] += 1
            log.info(
                "refused stale dial %s for lead %s of business %s: dial_by passed while"
                " %s%s; reported canceled (%s)",
                job.dial_id,
                job.lead_id,
                job.business_id,
                doing,
                f" (last answer: {failure.message})" if failure else "",
                DIAL_DEADLINE_PASSED,
            )

    async def _failed(self, job: Job, failure: TwilioFailure, gave_up: int = 0) -> None:
        message = failure.message or f"HTTP {failure.status}"
        if gave_up:
            message = f"gave up after {gave_up} create requests: {message}"
        changed, _ = await self._change(
            job.dial_id,
            lambda: self.ledger.finish(
                job.dial_id,
                "failed",
                error_code=failure.code,
                error_message=message,
                only_without_call=True,
            ),
        )
        if changed:
            self.counters["failed"] += 1
            log.info(
                "failed dial %s for lead %s of business %s to %s: Twilio error %s: %s",
                job.dial_id,
                job.lead_id,
                job.business_id,
                job.phone,
                failure.code or failure.status,
                message,
            )

    def status_callback_url(self, job: Job) -> str:
        query = urllib.parse.urlencode(
            {"dial_id": job.dial_id, "business_id": job.business_id, "lead_id": job.lead_id}
        )
        return f"{self.settings.public_base_url}{STATUS_PATH}?{query}"

    # -- finding a call at Twilio ----------------------------------------------------

    async def _lookup(self, job: Job) -> Any | None:
        """The call Twilio has for this row, if any (see the module doc for the rule)."""
        calls = await self.client.calls.list_async(
            to=job.phone,
            from_=self.settings.twilio_from_number,
            limit=LOOKUP_LIMIT,
            page_size=LOOKUP_LIMIT,
        )
        low = job.created_at.timestamp() - LOOKUP_SKEW_SECONDS - 1.0  # 1 s resolution
        last_sent = (job.create_sent_at or job.created_at).timestamp()
        high = max(last_sent, time.time()) + REQUEST_TIMEOUT_SECONDS + LOOKUP_SKEW_SECONDS
        candidates = [
            c
            for c in calls
            if c.date_created is not None and low <= c.date_created.timestamp() <= high
        ]
        if not candidates:
            return None
        owned = await self._db(
            self.ledger.known_call_sids,
            [c.sid for c in candidates],
            except_dial_id=job.dial_id,
        )
        candidates = [c for c in candidates if c.sid not in owned]
        if not candidates:
            return None
        return min(candidates, key=lambda c: (c.date_created, c.sid))

    async def _adopt(self, job: Job, call: Any, how: str) -> None:
        status = call.status if call.status in CALL_STATUSES else "queued"
        await self._change(
            job.dial_id, lambda: self.ledger.adopt_call(job.dial_id, call.sid, status)
        )
        self.counters["recovered"] += 1
        log.info(
            "recovered dial %s for lead %s of business %s %s: Twilio has call %s (%s)",
            job.dial_id,
            job.lead_id,
            job.business_id,
            how,
            call.sid,
            status,
        )

    async def _recover(self, job: Job) -> None:
        """A live row without CallSid that nobody here is dialing (module doc)."""
        if job.dial_id in self._inflight:
            return
        self._inflight.add(job.dial_id)
        try:
            now, dial_by = time.time(), job.dial_by.timestamp()
            if job.create_requests > 0:
                try:
                    found = await self._lookup(job)
                except (
                    TwilioException,
                    aiohttp.ClientError,
                    asyncio.TimeoutError,
                    OSError,
                ) as exc:
                    log.warning(
                        "dial %s: cannot ask Twilio whether its call exists (%r);"
                        " will ask again",
                        job.dial_id,
                        exc,
                    )
                    return
                if found is not None:
                    await self._adopt(job, found, "after a crash or lost answer")
                    return
                settled = (
                    job.create_sent_at.timestamp()
                    + REQUEST_TIMEOUT_SECONDS
                    + SETTLE_SECONDS
                )
                if now < settled:
                    return  # its create may still be on its way; ask again later
            if now > dial_by:
                await self._deadline_passed(job, None, "recovering it (Twilio has no call)")
                return
            log.info(
                "resuming dial %s for lead %s of business %s: Twilio has no call for it"
                " (%d create requests sent before)",
                job.dial_id,
                job.lead_id,
                job.business_id,
                job.create_requests,
            )
            await self._create(job)
        finally:
            self._inflight.discard(job.dial_id)

    async def _recover_at_start(self) -> None:
        rows = await self._db(self.ledger.without_call_sid)
        if rows:
            log.info(
                "recovering %d dials that a previous run left without a CallSid", len(rows)
            )
        for job in rows:
            self._spawn(self._recover(job), f"recovering dial {job.dial_id}")

    # -- the reconciler --------------------------------------------------------------

    async def _reconcile_forever(self) -> None:
        interval = min(5.0, max(0.5, self.settings.reconcile_after_seconds / 3))
        while not self._stopping.is_set():
            try:
                await self.reconcile_once()
            except Stopping:
                return
            except Exception:
                log.exception("reconciler pass failed; next pass in %.1fs", interval)
            try:
                await self._wait(interval)
            except Stopping:
                return

    async def reconcile_once(self) -> None:
        now = utcnow()
        silent = await self._db(
            self.ledger.silent_live,
            now - _dt.timedelta(seconds=self.settings.reconcile_after_seconds),
        )
        gate = asyncio.Semaphore(8)

        async def fetch(job: Job) -> None:
            async with gate:
                await self._reconcile_call(job)

        await asyncio.gather(
            *(fetch(job) for job in silent if job.dial_id not in self._inflight)
        )
        orphans = await self._db(
            self.ledger.without_call_sid, now - _dt.timedelta(seconds=RECOVER_AFTER_SECONDS)
        )
        for job in orphans:
            if job.dial_id not in self._inflight:
                self._spawn(self._recover(job), f"recovering dial {job.dial_id}")
        for job in await self._db(
            self.ledger.unreported_terminal,
            now - _dt.timedelta(seconds=REREPORT_AFTER_SECONDS),
        ):
            changed, _ = await self._change(job.dial_id, lambda job=job: (False, job))
            if changed:
                log.info(
                    "re-reported dial %s's %s (its first report never got through)",
                    job.dial_id,
                    job.twilio_status,
                )

    async def _reconcile_call(self, job: Job) -> None:
        try:
            call = await self.client.calls(job.call_sid).fetch_async()
        except TwilioException as exc:
            failure = TwilioFailure.of(exc)
            log.warning(
                "reconciler: cannot fetch call %s of dial %s: %s %s",
                job.call_sid,
                job.dial_id,
                failure.status,
                failure.message,
            )
            if failure.status == 404:
                await self._db(self.ledger.touch, job.dial_id)
            return
        except (aiohttp.ClientError, asyncio.TimeoutError, OSError) as exc:
            log.warning(
                "reconciler: cannot reach Twilio for call %s: %r", job.call_sid, exc
            )
            return
        if call.status not in CALL_STATUSES:
            await self._db(self.ledger.touch, job.dial_id)
            return
        changed, after = await self._change(
            job.dial_id,
            lambda: self.ledger.apply_status(
                job.dial_id, call.status, call_sid=job.call_sid
            ),
        )
        if changed:
            self.counters["reconciled"] += 1
            log.info(
                "reconciled dial %s for lead %s of business %s: no word for %gs; Twilio"
                " says call %s is %s (ledger had %s)",
                job.dial_id,
                job.lead_id,
                job.business_id,
                self.settings.reconcile_after_seconds,
                job.call_sid,
                call.status,
                job.twilio_status,
            )

    # -- web -------------------------------------------------------------------------

    def _web_app(self) -> web.Application:
        app = web.Application()
        app.router.add_post(STATUS_PATH, self._on_status_callback)
        app.router.add_get(HEALTH_PATH, self._on_health)
        app.router.add_get("/metrics", self._on_metrics)
        return app

    async def _on_metrics(self, request: web.Request) -> web.Response:
        body, content_type = metrics.metrics_text()
        return web.Response(body=body, headers={"Content-Type": content_type})

    def expected_url(self, request: web.Request) -> str:
        """The URL Twilio signed: our public base URL, the status path, the query as sent
        (behind a proxy, the Host header and path prefix may differ)."""
        query = request.rel_url.raw_query_string
        return f"{self.settings.public_base_url}{STATUS_PATH}" + (
            f"?{query}" if query else ""
        )

    async def _on_status_callback(self, request: web.Request) -> web.Response:
        form = await request.post()
        params: dict[str, Any] = {}
        for key in form.keys():
            values = form.getall(key)
            params[key] = values if len(values) > 1 else values[0]
        signature = request.headers.get("X-Twilio-Signature", "")
        if not signature or not self._validator.validate(
            self.expected_url(request), params, signature
        ):
            self.counters["callback-forbidden"] += 1
            metrics.WEBHOOK_SIGNATURE_FAILURES.inc()
            log.warning(
                "refused a status callback with %s X-Twilio-Signature (from %s)",
                "no" if not signature else "an invalid",
                request.remote,
            )
            return web.Response(status=403, text="invalid X-Twilio-Signature\n")
        status = params.get("CallStatus")
        call_sid = params.get("CallSid")
        if status not in CALL_STATUSES or not isinstance(call_sid, str) or not call_sid:
            log.warning("status callback without a known CallStatus/CallSid: %r", params)
            return web.Response(status=400, text="CallStatus and CallSid are required\n")
        sequence = _int_or_none(params.get("SequenceNumber"))
        error_code = _int_or_none(params.get("ErrorCode"))
        at = _rfc2822(params.get("Timestamp"))
        dial_id = request.query.get("dial_id")
        if not dial_id:
            job = await self._db(self.ledger.by_call_sid, call_sid)
            dial_id = job.dial_id if job is not None else None
        if dial_id is None:
            log.warning(
                "status callback for call %s, which the ledger does not know;"
                " acknowledged, nothing reported",
                call_sid,
            )
            return web.Response(status=204)
        try:
            changed, job = await self._change(
                dial_id,
                lambda: self.ledger.apply_status(
                    dial_id,
                    status,
                    sequence=sequence,
                    call_sid=call_sid,
                    error_code=error_code,
                    error_message=params.get("ErrorMessage") or None,
                ),
                at=at,
            )
        except (KafkaException, asyncio.TimeoutError) as exc:
            log.error(
                "status %s of dial %s not delivered to Kafka (%s); answering 500 so"
                " that Twilio may retry",
                status,
                dial_id,
                exc,
            )
            return web.Response(status=500, text="status not delivered\n")
        except Stopping:
            return web.Response(status=503, text="stopping\n")
        if job is None:
            log.warning(
                "status callback for dial %s (call %s), which the ledger does not"
                " know; acknowledged, nothing reported",
                dial_id,
                call_sid,
            )
        elif job.call_sid not in (None, call_sid):
            log.error(
                "status callback for dial %s names call %s, but the ledger has call %s;"
                " ignored",
                dial_id,
                call_sid,
                job.call_sid,
            )
        elif job.twilio_status == "canceled" and job.error_message == DIAL_DEADLINE_PASSED:
            self.counters["callback-for-refused-dial"] += 1
            log.error(
                "Twilio reports call %s (%s) for dial %s, which we reported stale and"
                " never dialed: a call the limiter is not counting",
                call_sid,
                status,
                dial_id,
            )
        elif changed:
            self.counters["callback"] += 1
            log.debug("dial %s: %s (sequence %s)", dial_id, status, sequence)
        else:
            self.counters["callback-duplicate"] += 1
            log.debug(
                "dial %s: duplicate or stale %s (sequence %s) acknowledged",
                dial_id,
                status,
                sequence,
            )
        return web.Response(status=204)

    async def _on_health(self, request: web.Request) -> web.Response:
        checks: dict[str, str] = {}
        try:
            await asyncio.wait_for(
                self._loop.run_in_executor(self._db_pool, self.ledger.ping), 3
            )
            checks["ledger"] = "ok"
        except Exception as exc:
            checks["ledger"] = (
                f"error: {str(exc).splitlines()[0] if str(exc) else repr(exc)}"
            )
        try:
            await asyncio.wait_for(asyncio.to_thread(self.producer.check, 2.0), 3)
            checks["kafka"] = "ok"
        except Exception as exc:
            checks["kafka"] = f"error: {exc}"
        healthy = all(v == "ok" for v in checks.values())
        return web.json_response(
            {"status": "ok" if healthy else "unhealthy", **checks},
            status=200 if healthy else 503,
        )


def _safe_url(url: str) -> str:
    """A database URL without its password, for logs."""
    try:
        from sqlalchemy.engine import make_url

        return make_url(url).render_as_string(hide_password=True)
    except Exception:
        return "<database url>"
