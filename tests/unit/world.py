"""A model of everything around the limiter core, for property tests.

Kafka topics are lists (a None entry is an offset without a record, like a transaction
marker). The worker is the shell's own per-record driver (`streams.shell.driver`) and
decisions (`streams.shell.decide`), run against this model instead of Kafka. Its
consumer may skip records and ack them (as faust-streaming can around a rebalance),
drop them without acking them (as its consumer does with the rest of a fetch when the
generation changes), and the group coordinator may be unable to say where the group
stands; the driver's account of handled offsets finds every such record again. The
table's writes go through the shell's units (`streams.shell.units`: the changelog takes
whole units, and a crash keeps those acknowledged plus a prefix of those in flight;
records leave only after their unit, and a crash delivers any prefix of them). The
dialer is an honest one (dedupes on dial_id, honours dial_by, calls never ring or talk
longer than allowed) whose status reports can be duplicated, delayed (so reordered) or
lost. The true calls it places are recorded as intervals, independently of anything
the limiter says.

The CRM sends leads of runs, some scheduled (`not_before`), some expiring, some in a
time zone of their own, and withdraws leads and runs; controls set calling windows
and retry policies. Every grant is checked against the state it was decided on (no
lead granted before its time, after its expiry, outside its window, or withdrawn), and
its `dial_by` against the lead's expiry and its window's close, which an honest dialer
never places a call after.
"""

from __future__ import annotations

import collections
import dataclasses
import datetime
import json
import zoneinfo
from collections.abc import Callable

from streams.limiter_state import read_business, read_lead, read_run
from streams.limiter_table import Rules, Source
from streams.shell.decide import decide
from streams.shell.driver import (
    Answer,
    Driver,
    End,
    Handle,
    IsAssigned,
    ReadAgain,
    ReadCommitted,
    ReadEnd,
    Request,
    Steps,
    TakeOver,
)
from streams.shell.units import Unit, Units
from streams.topics import (
    BUSINESS_CONTROL,
    CALLS_DIAL,
    CALLS_STATUS,
    DIAL_DEADLINE_PASSED,
    LEADS_DEADLETTER,
    LEADS_OUTCOMES,
    LEADS_REQUESTS,
    LIMITER_TICKS,
    BusinessControl,
    CallingWindow,
    CallStatus,
    DialCommand,
    LeadRequest,
    Record,
    RetryPolicy,
    Tick,
    Withdrawal,
    from_iso,
    record_key,
    to_iso,
)

INPUTS = (LEADS_REQUESTS, CALLS_STATUS, LIMITER_TICKS, BUSINESS_CONTROL)


@dataclasses.dataclass
class Appended:
    """A record in a topic's log, and when it was appended (its Kafka timestamp)."""

    record: Record | Malformed
    at: float


@dataclasses.dataclass(frozen=True)
class Malformed:
    """A record as raw bytes the worker cannot use (it names its business)."""

    business_id: str
    value: bytes

    def encode(self) -> bytes:
        return self.value


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
        self.logs: dict[str, list[Appended | None]] = {t: [] for t in INPUTS}
        self.position = {t: 0 for t in INPUTS}  # the consumer's
        self.acked = {t: 0 for t in INPUTS}  # what Faust would commit: below it, all acked
        self.committed = {t: 0 for t in INPUTS}  # on the broker
        self.coordinator_busy = False  # the next committed offset cannot be read
        self.driver = Driver({t: t for t in INPUTS})  # a crash starts a new one
        self.generation = 0
        self.durable: dict = {}  # the changelog, and the store: only acknowledged units
        self.units = Units(self.durable.get, _encode)
        self.in_flight: list[Unit] = []  # taken from the units, not yet acknowledged
        self.to_deliver: list[Unit] = []  # durable units whose records are not yet out
        self.delivered_of_first = 0  # records of to_deliver[0] already out
        self.outputs: dict[str, list] = {
            CALLS_DIAL: [],
            LEADS_OUTCOMES: [],
            LEADS_DEADLETTER: [],
        }
        self.dialer_position = 0
        self.dialed: set[str] = set()
        self.calls: list[Call] = []
        self.reports: list[tuple[float, CallStatus]] = []  # not yet delivered
        self.leads: dict[str, LeadRequest] = {}
        self.junk_dial_ids: set[str] = set()
        self.notes: list = []
        self.highest_limit = rules.limit
        self.grants_over_limit: list[str] = []
        self.highest_attempts = max(
            rules.max_attempts, rules.retry.max_attempts if rules.retry else 0
        )
        #: grants and dial commands that broke a rule of time, window or withdrawal
        self.bad_grants: list[str] = []
        #: grants decided under a calling window, to show the windows were exercised
        self.grants_in_window = 0
        self.runs: set[tuple[str, str]] = set()

    # -- the CRM -------------------------------------------------------------------

    def request_lead(
        self,
        business_id: str,
        priority: int,
        run_id: str | None = None,
        not_before: float | None = None,
        expires_in: float | None = None,
        timezone: str | None = None,
    ) -> None:
        """A lead; `not_before` and `expires_in` are seconds from now."""
        lead = LeadRequest(
            lead_id=f"L{len(self.leads)}",
            business_id=business_id,
            phone=f"+1415555{len(self.leads):04d}",
            priority=priority,
            run_id=run_id,
            not_before=None if not_before is None else to_iso(self.now + not_before),
            expires_at=None
            if expires_in is None
            else to_iso(self.now + (not_before or 0) + expires_in),
            timezone=timezone,
        )
        self.leads[lead.lead_id] = lead
        if run_id is not None:
            self.runs.add((business_id, run_id))
        self.append(LEADS_REQUESTS, lead)

    def malformed_lead(self, known: bool, business_id: str) -> None:
        """A lead request without a phone: naming a lead already sent (which it must not
        end) or a new one (which ends `rejected`, its id spent)."""
        if known and self.leads:
            lead = list(self.leads.values())[self.choose(len(self.leads))]
            lead_id, business_id = lead.lead_id, lead.business_id
        else:
            lead_id = f"L{len(self.leads)}"
            self.leads[lead_id] = LeadRequest(lead_id, business_id, "+14155550100")
        value = json.dumps({"lead_id": lead_id, "business_id": business_id}).encode()
        self.logs[LEADS_REQUESTS].append(Appended(Malformed(business_id, value), self.now))

    def withdraw_lead(self) -> None:
        if self.leads:
            lead = list(self.leads.values())[self.choose(len(self.leads))]
            self.append(LEADS_REQUESTS, Withdrawal(lead.business_id, lead_id=lead.lead_id))

    def withdraw_run(self, business_id: str, run_id: str) -> None:
        self.runs.add((business_id, run_id))
        self.append(LEADS_REQUESTS, Withdrawal(business_id, run_id=run_id))

    def repeat_lead(self) -> None:
        if self.leads:
            lead = list(self.leads.values())[self.choose(len(self.leads))]
            self.append(LEADS_REQUESTS, lead)

    def junk_status(self, business_id: str) -> None:
        dial_id = f"{business_id}:ghost{len(self.junk_dial_ids)}:1"
        self.junk_dial_ids.add(dial_id)
        self.append(
            CALLS_STATUS,
            CallStatus(
                dial_id=dial_id,
                lead_id="ghost",
                business_id=business_id,
                status="ringing",
                at=to_iso(self.now),
            ),
        )

    def control(
        self,
        business_id: str,
        limit: int | None,
        paused: bool,
        window: CallingWindow | None = None,
        retry: RetryPolicy | None = None,
    ) -> None:
        if limit is not None:
            self.highest_limit = max(self.highest_limit, limit)
        if retry is not None:
            self.highest_attempts = max(self.highest_attempts, retry.max_attempts)
        self.append(
            BUSINESS_CONTROL, BusinessControl(business_id, limit, paused, window, retry)
        )

    # -- the worker ----------------------------------------------------------------

    def tick(self) -> None:
        self.append(LIMITER_TICKS, Tick(partition=0, at=to_iso(self.now)))

    def append(self, topic: str, record: Record) -> None:
        self.logs[topic].append(Appended(record, self.now))

    def marker(self, topic: str) -> None:
        """An offset with no record for the consumer (a transaction marker)."""
        self.logs[topic].append(None)

    def skip(self, count: int) -> None:
        """The consumer drops the next `count` offsets of a topic unhandled; Faust acks
        them."""
        topic = self._ready_topic()
        if topic is not None:
            self.position[topic] = min(self.position[topic] + count, len(self.logs[topic]))
            self.acked[topic] = self.position[topic]

    def drop_unacked(self, count: int) -> None:
        """The consumer drops the next `count` offsets of a topic before any stream sees
        them, unacked: Faust commits past them only once a later record is acked."""
        topic = self._ready_topic()
        if topic is not None:
            self.position[topic] = min(self.position[topic] + count, len(self.logs[topic]))

    def busy_coordinator(self) -> None:
        """The group coordinator cannot say where the group stands, once."""
        self.coordinator_busy = True

    def process_one(self) -> bool:
        """The consumer delivers the next record of a topic to the worker."""
        topic = self._ready_topic()
        if topic is None:
            return False
        offset = self.position[topic]
        self.position[topic] += 1
        self.acked[topic] = self.position[topic]
        if self.logs[topic][offset] is not None:
            self._run(self.driver.record(self._source(topic, offset), self.generation))
        return True

    def _ready_topic(self) -> str | None:
        ready = [t for t in INPUTS if self.position[t] < len(self.logs[t])]
        return ready[self.choose(len(ready))] if ready else None

    def _source(self, topic: str, offset: int) -> Source:
        appended = self.logs[topic][offset]
        assert appended is not None
        record = appended.record
        business_id = getattr(record, "business_id", None)
        key = None if business_id is None else record_key(business_id)
        return Source(topic, 0, offset, key, record.encode(), appended.at)

    def _run(self, steps: Steps) -> None:
        """The worker's runner of the driver, against this model."""
        answer: Answer = None
        while True:
            try:
                request = steps.send(answer)
            except StopIteration:
                return
            answer = self._perform(request)

    def _perform(self, request: Request) -> Answer:
        match request:
            case TakeOver():  # send again what the changelog says is undelivered
                resent = self.units.resend(0)
                if resent is not None:
                    self.to_deliver.append(resent)
            case ReadCommitted((topic, _)):
                busy, self.coordinator_busy = self.coordinator_busy, False
                return None if busy else self.committed[topic]
            case ReadAgain((topic, _), start, end):
                return [
                    self._source(topic, offset)
                    for offset in range(start, end)
                    if self.logs[topic][offset] is not None
                ]
            case Handle(source, statuses_read_until):
                self.handle(source, statuses_read_until)
            case IsAssigned():
                return True
            case ReadEnd((topic, _)):
                return End(len(self.logs[topic]), self.now)
        return None

    def handle(self, source: Source, statuses_read_until: float | None) -> None:
        effects = decide(
            self.units.get, source, source.topic, self.now, self.rules, statuses_read_until
        )
        self.units.add(0, effects)
        self.notes.extend(effects.notes)
        for note in effects.notes:  # a grant may only fill a slot below the current limit
            if note.kind == "dial-granted" and note.business_id is not None:
                business = read_business(self.units.get, note.business_id)
                assert business is not None
                limit = (
                    business["limit"] if business["limit"] is not None else self.rules.limit
                )
                if len(business["active"]) > limit or business["paused"]:
                    self.grants_over_limit.append(note.message)
        granted = {n.lead_id for n in effects.notes if n.kind == "dial-granted"}
        for emit in effects.emits:
            if emit.topic == CALLS_DIAL:
                self._check_dial(emit.record, emit.record.lead_id in granted)

    def _check_dial(self, dial: DialCommand, new: bool) -> None:
        """Rules 10-12 at the decision: the lead's time has come and not passed, its
        window is open, it is not withdrawn; and the command cannot be placed later
        than its expiry or its window's close."""
        request = self.leads[dial.lead_id]
        dial_by = from_iso(dial.dial_by)
        expires = None if request.expires_at is None else from_iso(request.expires_at)
        if expires is not None and dial_by > expires + 0.001:
            self.bad_grants.append(f"{dial.dial_id}: dial_by after expires_at")
        business = read_business(self.units.get, dial.business_id)
        window = None
        if business is not None and business["window"] is not None:
            window = CallingWindow.from_dict(business["window"])
        window = window or self.rules.window
        if not new:
            return  # a resend: its dial_by was checked at the grant
        zone = request.timezone or (window.timezone if window else "UTC")
        self.grants_in_window += window is not None
        if window is not None and not window_open(window, zone, self.now):
            self.bad_grants.append(f"{dial.dial_id}: granted outside its window")
        if window is not None and not window_open(window, zone, dial_by - 0.001):
            self.bad_grants.append(f"{dial.dial_id}: dial_by past its window's close")
        if request.not_before is not None and self.now < from_iso(request.not_before):
            self.bad_grants.append(f"{dial.dial_id}: granted before not_before")
        if expires is not None and self.now >= expires:
            self.bad_grants.append(f"{dial.dial_id}: granted at or after expires_at")
        lead = read_lead(self.units.get, dial.business_id, dial.lead_id)
        run = (
            None
            if request.run_id is None
            else read_run(self.units.get, dial.business_id, request.run_id)
        )
        withdrawn = lead is not None and lead["withdrawn"]
        if withdrawn or (run is not None and run["withdrawn"]):
            self.bad_grants.append(f"{dial.dial_id}: granted though withdrawn")

    @property
    def state(self) -> dict:
        """The table as the worker sees it: durable values under its pending writes."""
        view = dict(self.durable)
        for key in self.units.pending_keys():
            _apply(view, key, self.units.get(key))
        return view

    def send_units(self, land: int | None = None) -> None:
        """The outbox: take the open units and send them; `land` of those in flight are
        acknowledged (all by default), in order."""
        self.in_flight += self.units.take()
        count = len(self.in_flight) if land is None else land
        for unit in self.in_flight[:count]:
            for key, value, _, _ in self.units.durable(unit):
                _apply(self.durable, key, value)
            self.to_deliver.append(unit)
        del self.in_flight[:count]

    def deliver(self, count: int) -> None:
        """`count` records of durable units reach their topics, in order."""
        while self.to_deliver:
            unit = self.to_deliver[0]
            for emit in unit.emits[self.delivered_of_first :][:count]:
                self.outputs[emit.topic].append(emit.record)
                self.delivered_of_first += 1
                count -= 1
            if self.delivered_of_first < len(unit.emits):
                break
            self.units.delivered(unit)
            self.to_deliver.pop(0)
            self.delivered_of_first = 0

    def undelivered(self) -> int:
        return sum(len(u.emits) for u in self.to_deliver) - self.delivered_of_first

    def flush(self) -> None:
        """The outbox at some moment: units sent and acknowledged, some records out."""
        self.send_units()
        self.deliver(self.choose(self.undelivered() + 1))

    def drain(self) -> bool:
        """Everything pending lands and gets out; whether there was anything."""
        busy = self.units.has_open() or bool(self.in_flight) or self.undelivered() > 0
        self.send_units()
        self.deliver(self.undelivered())
        return busy

    def commit(self) -> None:
        """Faust's commit: flush everything, then commit offsets, which the shell caps
        at what it handled."""
        self.send_units()
        self.deliver(self.undelivered())
        safe = self.driver.handled.cap({(t, 0): offset for t, offset in self.acked.items()})
        self.committed.update({t: offset for (t, _), offset in safe.items()})

    def crash(self) -> None:
        """SIGKILL: units in flight land or not (whole, in order), open ones are lost,
        any prefix of the records not yet out gets out; the restarted worker starts from
        the changelog and the committed offsets."""
        self.in_flight += self.units.take()
        self.send_units(land=self.choose(len(self.in_flight) + 1))
        self.deliver(self.choose(self.undelivered() + 1))
        self.in_flight.clear()
        self.to_deliver.clear()
        self.delivered_of_first = 0
        self.units = Units(self.durable.get, _encode)
        self.position = dict(self.committed)
        self.acked = dict(self.committed)
        self.driver = Driver({t: t for t in INPUTS})
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
        report = dict(
            dial_id=command.dial_id,
            lead_id=command.lead_id,
            business_id=command.business_id,
        )
        if self.now > from_iso(command.dial_by):
            self.reports.append(
                (
                    self.now,
                    CallStatus(
                        status="canceled",
                        reason=DIAL_DEADLINE_PASSED,
                        at=to_iso(self.now),
                        **report,
                    ),
                )
            )
            return True
        ring = self.rules.ring_timeout * self.choose(5) / 4
        talk = self.rules.call_time_limit * self.choose(5) / 4
        answered = self.choose(4) > 0
        ended = self.now + ring + (talk if answered else 0)
        self.calls.append(
            Call(command.dial_id, command.business_id, command.lead_id, self.now, ended)
        )
        script = [(self.now, "queued"), (self.now + ring / 2, "ringing")]
        script += (
            [(self.now + ring, "in-progress"), (ended, "completed")]
            if answered
            else [(ended, ("no-answer", "busy")[self.choose(2)])]
        )
        for seq, (at, status) in enumerate(script):
            self.reports.append(
                (
                    at,
                    CallStatus(
                        status=status,
                        sequence=seq,
                        at=to_iso(at),
                        call_sid=f"CA{seq}",
                        **report,
                    ),
                )
            )
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
            delay = (
                2.0 if fault == 3 else self.rules.ring_timeout + self.rules.call_time_limit
            )
            self.reports.append((self.now + delay, status))
            return True
        if fault != 2:
            self.append(CALLS_STATUS, status)
        if fault == 1:
            self.append(CALLS_STATUS, status)
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


def window_open(window: CallingWindow, zone: str, at: float) -> bool:
    """The definition of an open window, written apart from the core's calendar: the
    wall clock of `zone` at `at` is on one of its days, within its hours."""
    local = datetime.datetime.fromtimestamp(at, zoneinfo.ZoneInfo(zone))
    second = local.hour * 3600 + local.minute * 60 + local.second + local.microsecond / 1e6
    return local.weekday() in window.days and window.start <= second < window.end


def _apply(table: dict, key: str, value) -> None:
    if value is None:
        table.pop(key, None)
    else:
        table[key] = value


def _encode(value) -> bytes:
    return json.dumps(value).encode()
