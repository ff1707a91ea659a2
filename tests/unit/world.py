"""A model of everything around the limiter core, for property tests.

Kafka topics are lists (a None entry is an offset without a record, like a transaction
marker), the consumer may skip records and ack them (as faust-streaming can around a
rebalance) while the shell keeps its own account (`streams.progress`), the changelog is
a list of writes of which only a prefix survives a crash, the dialer is an honest one (dedupes on dial_id, honours dial_by,
calls never ring or talk longer than allowed) whose status reports can be duplicated,
delayed (so reordered) or lost. The true calls it places are recorded as intervals,
independently of anything the limiter says.
"""

from __future__ import annotations

import collections
import dataclasses
from typing import Callable

from streams.limiter_table import Effects, Rules, Source, business_key, process
from streams.progress import HandledOffsets
from streams.topics import (
    BUSINESS_CONTROL, CALLS_DIAL, CALLS_STATUS, DIAL_DEADLINE_PASSED, LEADS_DEADLETTER,
    LEADS_OUTCOMES, LEADS_REQUESTS, LIMITER_TICKS, BusinessControl, CallStatus,
    LeadRequest, Tick, from_iso, to_iso,
)

INPUTS = (LEADS_REQUESTS, CALLS_STATUS, LIMITER_TICKS, BUSINESS_CONTROL)


@dataclasses.dataclass
class Call:
    dial_id: str
    business_id: str
    lead_id: str
    placed_at: float
    ended_at: float


class World:
    """One partition's worth of limiter, broker and dialer, stepped by the test."""

    def __init__(self, rules: Rules, choose: Callable[[int], int]):
        self.rules = rules
        self.choose = choose  # choose(n) -> 0..n-1, drawn by hypothesis
        self.now = 1_000.0
        self.logs: dict[str, list] = {t: [] for t in INPUTS}
        self.position = {t: 0 for t in INPUTS}
        self.committed = {t: 0 for t in INPUTS}  # on the broker
        self.handled = HandledOffsets()  # the shell's account; a crash starts a new one
        self.generation = 0
        self.state: dict = {}
        self.durable: dict = {}
        self.pending_writes: list = []
        self.pending_emits: list = []
        self.outputs: dict[str, list] = {CALLS_DIAL: [], LEADS_OUTCOMES: [],
                                          LEADS_DEADLETTER: []}
        self.dialer_position = 0
        self.dialed: set[str] = set()
        self.calls: list[Call] = []
        self.reports: list[tuple[float, CallStatus]] = []  # not yet delivered
        self.leads: dict[str, LeadRequest] = {}
        self.junk_dial_ids: set[str] = set()
        self.notes: list = []
        self.highest_limit = rules.limit
        self.grants_over_limit: list[str] = []

    # -- the CRM -------------------------------------------------------------------

    def request_lead(self, business_id: str, priority: int) -> None:
        lead = LeadRequest(lead_id=f"L{len(self.leads)}", business_id=business_id,
                           phone=f"+1415555{len(self.leads):04d}", priority=priority)
        self.leads[lead.lead_id] = lead
        self.logs[LEADS_REQUESTS].append(lead)

    def repeat_lead(self) -> None:
        if self.leads:
            lead = list(self.leads.values())[self.choose(len(self.leads))]
            self.logs[LEADS_REQUESTS].append(lead)

    def junk_status(self, business_id: str) -> None:
        dial_id = f"{business_id}:ghost{len(self.junk_dial_ids)}:1"
        self.junk_dial_ids.add(dial_id)
        self.logs[CALLS_STATUS].append(CallStatus(
            dial_id=dial_id, lead_id="ghost", business_id=business_id, status="ringing",
            at=to_iso(self.now)))

    def control(self, business_id: str, limit: int | None, paused: bool) -> None:
        if limit is not None:
            self.highest_limit = max(self.highest_limit, limit)
        self.logs[BUSINESS_CONTROL].append(BusinessControl(business_id, limit, paused))

    # -- the worker ----------------------------------------------------------------

    def tick(self) -> None:
        self.logs[LIMITER_TICKS].append(Tick(partition=0, at=to_iso(self.now)))

    def marker(self, topic: str) -> None:
        """An offset with no record for the consumer (a transaction marker)."""
        self.logs[topic].append(None)

    def skip(self, count: int) -> None:
        """The consumer drops the next `count` offsets of a topic unhandled, and acks them."""
        ready = [t for t in INPUTS if self.position[t] < len(self.logs[t])]
        if ready:
            topic = ready[self.choose(len(ready))]
            self.position[topic] = min(self.position[topic] + count, len(self.logs[topic]))

    def process_one(self) -> bool:
        """The consumer delivers the next record of a topic to the shell (streams/app.py)."""
        ready = [t for t in INPUTS if self.position[t] < len(self.logs[t])]
        if not ready:
            return False
        topic = ready[self.choose(len(ready))]
        offset = self.position[topic]
        event = self.logs[topic][offset]
        self.position[topic] += 1
        if event is None:
            return True
        key = (topic, 0)
        if self.handled.needs_start(key, self.generation):
            self.handled.start(key, self.generation, self.committed[topic])
        skipped = self.handled.missing(key, offset)
        if skipped:
            self.recover(key, *skipped)
        self.handle(topic, offset, event)
        if topic == LIMITER_TICKS:
            for tail_key, start, end in self.handled.unrevealed(0):
                self.recover(tail_key, start, end)
        return True

    def recover(self, key: tuple[str, int], start: int, end: int) -> None:
        """Read a skipped range from the 'broker' and handle it in order."""
        for offset in range(start, end):
            if self.logs[key[0]][offset] is not None:
                self.handle(key[0], offset, self.logs[key[0]][offset])
        self.handled.absent_below(key, end)

    def handle(self, topic: str, offset: int, event) -> None:
        effects = process(self.state.get, event, Source(topic, 0, offset, key=b"k",
                                                         value=b"v"),
                          self.now, self.rules)
        self.apply(effects)
        self.handled.handled((topic, 0), offset)

    def apply(self, effects: Effects) -> None:
        for key, value in effects.writes:
            _apply(self.state, key, value)
            self.pending_writes.append((key, value))
        if effects.emits:  # the shell's duty: writes durable before anything is emitted
            self.flush_writes()
            self.pending_emits.extend(effects.emits)
        self.notes.extend(effects.notes)
        for note in effects.notes:  # a grant may only fill a slot below the current limit
            if note.kind == "dial-granted":
                business = self.state.get(business_key(note.business_id))
                limit = business["limit"] if business["limit"] is not None else self.rules.limit
                if len(business["active"]) > limit or business["paused"]:
                    self.grants_over_limit.append(note.message)

    def flush_writes(self) -> None:
        for key, value in self.pending_writes:
            _apply(self.durable, key, value)
        self.pending_writes.clear()

    def commit(self) -> None:
        """Faust's commit: flush everything, then commit offsets, which the shell caps
        at what it handled."""
        self.flush_writes()
        self.deliver_emits(len(self.pending_emits))
        safe = self.handled.cap({(t, 0): offset for t, offset in self.position.items()})
        self.committed.update({t: offset for (t, _), offset in safe.items()})

    def deliver_emits(self, count: int) -> None:
        for emit in self.pending_emits[:count]:
            self.outputs[emit.topic].append(emit.record)
        del self.pending_emits[:count]

    def crash(self) -> None:
        """SIGKILL: a prefix of unflushed writes and of unsent records survives."""
        keep = self.choose(len(self.pending_writes) + 1)
        for key, value in self.pending_writes[:keep]:
            _apply(self.durable, key, value)
        self.pending_writes.clear()
        self.deliver_emits(self.choose(len(self.pending_emits) + 1))
        self.pending_emits.clear()
        self.state = dict(self.durable)
        self.position = dict(self.committed)
        self.handled = HandledOffsets()
        self.generation += 1

    # -- the dialer ----------------------------------------------------------------

    def dialer_consume(self) -> bool:
        if self.dialer_position >= len(self.outputs[CALLS_DIAL]):
            return False
        command = self.outputs[CALLS_DIAL][self.dialer_position]
        self.dialer_position += 1
        if command.dial_id in self.dialed:
            return True
        self.dialed.add(command.dial_id)
        report = dict(dial_id=command.dial_id, lead_id=command.lead_id,
                      business_id=command.business_id)
        if self.now > from_iso(command.dial_by):
            self.reports.append((self.now, CallStatus(
                status="canceled", reason=DIAL_DEADLINE_PASSED, at=to_iso(self.now),
                **report)))
            return True
        ring = self.rules.ring_timeout * self.choose(5) / 4
        talk = self.rules.call_time_limit * self.choose(5) / 4
        answered = self.choose(4) > 0
        ended = self.now + ring + (talk if answered else 0)
        self.calls.append(Call(command.dial_id, command.business_id, command.lead_id,
                               self.now, ended))
        script = [(self.now, "queued"), (self.now + ring / 2, "ringing")]
        script += ([(self.now + ring, "in-progress"), (ended, "completed")] if answered
                   else [(ended, "no-answer")])
        for seq, (at, status) in enumerate(script):
            self.reports.append((at, CallStatus(status=status, sequence=seq,
                                                at=to_iso(at), call_sid=f"CA{seq}",
                                                **report)))
        return True

    def deliver_report(self, fault: int) -> bool:
        """Deliver one due status report.

        fault 1 duplicates it, 2 loses it, 3 delays it a little (reordering), 4 delays it
        past the longest call (a late report).
        """
        due = [i for i, (at, _) in enumerate(self.reports) if at <= self.now]
        if not due:
            return False
        at, status = self.reports.pop(due[self.choose(len(due))])
        if fault in (3, 4):
            delay = 2.0 if fault == 3 else self.rules.ring_timeout + self.rules.call_time_limit
            self.reports.append((self.now + delay, status))
            return True
        if fault != 2:
            self.logs[CALLS_STATUS].append(status)
        if fault == 1:
            self.logs[CALLS_STATUS].append(status)
        return True

    # -- checks --------------------------------------------------------------------

    def peak_concurrency(self) -> dict[str, int]:
        """True concurrent calls per business, from the dialer's intervals alone."""
        moments = collections.defaultdict(list)
        for call in self.calls:
            moments[call.business_id] += [(call.placed_at, 1), (call.ended_at, -1)]
        peaks = {}
        for business, marks in moments.items():
            live = peak = 0
            for _, delta in sorted(marks, key=lambda m: (m[0], m[1])):
                live += delta
                peak = max(peak, live)
            peaks[business] = peak
        return peaks


def _apply(table: dict, key: str, value) -> None:
    if value is None:
        table.pop(key, None)
    else:
        table[key] = value
