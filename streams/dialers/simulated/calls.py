"""The simulated calls: what happens to each dial command, played on a clock.

A command is deduplicated on `dial_id`, refused past its `dial_by`, or placed: its script
(ring time, talk time or none, final status) is drawn at once, and its statuses follow
Twilio's order (queued, initiated, ringing, in-progress, final) at the script's times on
a heap of timed actions, so thousands of concurrent calls cost no threads. A call's
"ended" line is written before its final status is emitted, so the ledger never shows a
call ending later than the limiter could have learnt of it.

No Kafka and no wall clock here: statuses leave through `emit`, time comes from `clock`.
"""

from __future__ import annotations

import collections
import dataclasses
import hashlib
import heapq
import itertools
import logging
import random
import threading
import time
from collections.abc import Callable
from typing import Protocol, TypedDict

from streams.dialers.simulated.ledger import ABANDONED, CallLedger, LedgerLine
from streams.topics import DIAL_DEADLINE_PASSED, DialCommand, from_iso

log = logging.getLogger(__name__)

#: Delay before each of `initiated` and `ringing` (Twilio takes about this long to set up).
SETUP_SECONDS = (0.05, 0.3)
#: Relative weights of the final status of an unanswered call.
UNANSWERED = {"no-answer": 6, "busy": 3, "failed": 1}


def call_sid(dial_id: str) -> str:
    """A Twilio-shaped call SID, stable per dial_id so that reruns are comparable."""
    return "CA" + hashlib.sha256(dial_id.encode("utf-8")).hexdigest()[:32]


@dataclasses.dataclass(frozen=True)
class CallScript:
    """How a placed call goes, drawn when it is placed."""

    ring: float
    talk: float | None  # None: never answered
    final: str


@dataclasses.dataclass(frozen=True)
class CallTimings:
    """The ranges scripts are drawn from, and the caps the limiter's leases rely on."""

    ring_seconds: tuple[float, float]
    talk_seconds: tuple[float, float]
    answer_ratio: float
    ring_timeout: float
    time_limit: float


def draw_script(rng: random.Random, timings: CallTimings) -> CallScript:
    """A call's script: it never rings past `ring_timeout` nor talks past `time_limit`."""
    answered = rng.random() < timings.answer_ratio
    ring = min(rng.uniform(*timings.ring_seconds), timings.ring_timeout)
    talk = min(rng.uniform(*timings.talk_seconds), timings.time_limit) if answered else None
    final = (
        "completed"
        if answered
        else rng.choices(list(UNANSWERED), weights=list(UNANSWERED.values()))[0]
    )
    return CallScript(ring=ring, talk=talk, final=final)


class Emit(Protocol):
    """Where a call's statuses go (the dialer produces them to `calls.status`)."""

    def __call__(
        self,
        command: DialCommand,
        status: str,
        *,
        sequence: int,
        call_sid: str | None = None,
        reason: str | None = None,
    ) -> None: ...


class Snapshot(TypedDict):
    """What really happened so far. `ended_by_status` counts the final statuses, plus
    "abandoned" for calls cut off by a stop."""

    live_by_business: dict[str, int]
    max_live_by_business: dict[str, int]
    placed: int
    refused: int
    duplicates: int
    ended_by_status: dict[str, int]


@dataclasses.dataclass
class _Call:
    """One placed call, its script and how far it got."""

    command: DialCommand
    sid: str
    script: CallScript
    placed_at: float
    sequence: int = 0


class Switchboard:
    """Takes dial commands, plays each placed call's script; one thread drives it
    (`handle`, `run_due`), any thread may read `snapshot()`."""

    def __init__(
        self,
        *,
        timings: CallTimings,
        ledger: CallLedger,
        emit: Emit,
        rng: random.Random,
        clock: Callable[[], float] = time.monotonic,
        now: Callable[[], float] = time.time,
    ):
        self.timings = timings
        self._ledger = ledger
        self._emit = emit
        self._rng = rng
        self._clock = clock
        self._now = now  # wall time, only to compare with a command's dial_by
        self._seen: set[str] = set()
        self._calls: dict[str, _Call] = {}
        self._due: list[tuple[float, int, Callable[[], None]]] = []
        self._order = itertools.count()
        self.last_activity = clock()
        # snapshot() may be called from another thread while the driver mutates these.
        self._lock = threading.Lock()
        self._live: dict[str, int] = {}
        self._max_live: dict[str, int] = {}
        self._placed = self._refused = self._duplicates = 0
        self._ended: collections.Counter[str] = collections.Counter()

    # -- reading ---------------------------------------------------------------------

    def snapshot(self) -> Snapshot:
        """True concurrency and counters, as plain data."""
        with self._lock:
            return Snapshot(
                live_by_business={b: n for b, n in self._live.items() if n},
                max_live_by_business=dict(self._max_live),
                placed=self._placed,
                refused=self._refused,
                duplicates=self._duplicates,
                ended_by_status=dict(self._ended),
            )

    def idle_for(self) -> float:
        """How long nothing happened and no call was live (0 while one is)."""
        return 0.0 if self._calls else self._clock() - self.last_activity

    def next_due_in(self) -> float | None:
        """Seconds until the next timed action (None: nothing scheduled)."""
        return max(0.0, self._due[0][0] - self._clock()) if self._due else None

    # -- driving ---------------------------------------------------------------------

    def touch(self) -> None:
        """Something arrived: the switchboard is not idle."""
        self.last_activity = self._clock()

    def recover(self, handled: set[str], unended: list[LedgerLine]) -> None:
        """Start from an earlier run's ledger: its dials are not placed again, and its
        calls left without an end are recorded as abandoned."""
        self._seen |= handled
        for line in unended:
            log.warning(
                "ledger shows dial %s placed but never ended (crashed run?);"
                " recording it as %s",
                line["dial_id"],
                ABANDONED,
            )
            self._ledger.write("ended", line, status=ABANDONED)

    def handle(self, command: DialCommand) -> None:
        if command.dial_id in self._seen:
            self._ledger.write("duplicate", command)
            with self._lock:
                self._duplicates += 1
            log.debug("ignored duplicate dial %s", command.dial_id)
            return
        self._seen.add(command.dial_id)
        if self._now() > from_iso(command.dial_by):
            self._refuse(command)
        else:
            self._place(command)

    def run_due(self) -> None:
        while self._due and self._due[0][0] <= self._clock():
            heapq.heappop(self._due)[2]()

    def abandon_live(self) -> None:
        """Drop every live call without a status (the limiter's lease covers them)."""
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

    # -- commands --------------------------------------------------------------------

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
        self._emit(command, "canceled", sequence=0, reason=DIAL_DEADLINE_PASSED)

    def _place(self, command: DialCommand) -> None:
        call = _Call(
            command=command,
            sid=call_sid(command.dial_id),
            script=draw_script(self._rng, self.timings),
            placed_at=self._clock(),
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
        self._after(self._rng.uniform(*SETUP_SECONDS), lambda: self._initiated(call))

    # -- a call's life ---------------------------------------------------------------

    def _initiated(self, call: _Call) -> None:
        self._status(call, "initiated")
        self._after(self._rng.uniform(*SETUP_SECONDS), lambda: self._ringing(call))

    def _ringing(self, call: _Call) -> None:
        self._status(call, "ringing")
        talk = call.script.talk
        if talk is None:
            self._after(call.script.ring, lambda: self._end(call))
        else:
            self._after(call.script.ring, lambda: self._answered(call, talk))

    def _answered(self, call: _Call, talk: float) -> None:
        self._status(call, "in-progress")
        self._after(talk, lambda: self._end(call))

    def _end(self, call: _Call) -> None:
        """The call is over before anyone is told: ledger and counters, then status."""
        final = call.script.final
        live = self._forget(call, final)
        log.info(
            "ended dial %s for lead %s of business %s: %s after %.1fs (%d live for %s)",
            call.command.dial_id,
            call.command.lead_id,
            call.command.business_id,
            final,
            self._clock() - call.placed_at,
            live,
            call.command.business_id,
        )
        self._status(call, final)

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
        self.last_activity = self._clock()
        return live

    def _status(self, call: _Call, status: str) -> None:
        self._emit(call.command, status, sequence=call.sequence, call_sid=call.sid)
        call.sequence += 1

    def _after(self, delay: float, action: Callable[[], None]) -> None:
        heapq.heappush(self._due, (self._clock() + delay, next(self._order), action))
