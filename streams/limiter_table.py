"""The limiter: a pure state machine. Every rule of the product lives in this module.

No Faust, Kafka, clock or randomness here: the shell (`streams/app.py`) hands in an
event, where it came from, a read function over the table, and the current time; it
gets back the table writes and the records to emit, and does both.

The rules
=========

1. Per business, never globally. A business holds at most `limit` slots (default 3,
   see `streams.settings`); 1,000 businesses may each hold 3. Nothing counts across
   businesses. A business's own limit (`business.control`) overrides the default;
   lowering it never ends a live call (the business drains down to it); pausing stops
   new dials and keeps the queue; resuming fills every free slot at once.
2. A lead is dialed only into a free slot of its business. Otherwise it waits, in that
   business's queue: highest priority first, then arrival. A slot that frees is refilled
   in the same event, so a waiting lead never waits for a poll.
3. A slot is a lease. Its deadline depends on the call's last known phase (LEASES):
   granted-but-unacknowledged runs to `dial_by` plus the longest ring and call the
   dialer allows, so when it runs out the call cannot be live; every status extends it.
   At expiry the slot frees and the lead ends `expired`, never to be dialed again (the
   call may have happened).
4. A slot frees only on a terminal status, a dialer's refusal (`canceled` with
   `dial-deadline-passed`, after which the lead goes back to the front of the queue as a
   new attempt, up to `max_attempts`), or lease expiry. Terminal is final: later,
   duplicate or reordered statuses change nothing (STATUS_ACTIONS, PHASE_RANK).
5. A dial with no status after `ack_timeout` is resent with the same dial_id and
   dial_by, until dial_by: a dial command lost in a crash is recovered, and the dialer
   dedupes on dial_id. dial_id is deterministic per (business, lead, attempt). Silence
   counts only once the worker has read the status input up to the resend time
   (`statuses_read_until`): a status still waiting in its own backlog is not lost, and
   resending then only adds load to a worker already behind.
6. A lead id seen before never makes a second call, for `lead_retention` after its
   outcome: then its record is forgotten (through the wake buckets), so the table does
   not grow with every lead ever handled; the same id sent again after that is a new
   lead here, granted under the same dial_id, which a dialer deduping on dial_id never
   calls again (the Twilio dialer answers with the first call's status; the simulated
   one stays silent and the lease ends it). (A redelivered record is never applied
   twice, whatever its age: rule 9.)
   A status for a dial we do not know is held for `orphan_hold` (after a crash it may
   arrive before the replayed grant) and applied when the grant happens, or
   dead-lettered.
7. Crash at any instruction. An event's writes are one unit: the shell makes them
   durable all together or not at all (one record batch on the table's changelog
   partition, which the broker appends whole; the shell may put the next events of the
   partition in the same batch), and emits only once they are. A crash therefore
   leaves the state after some event of the partition, never part of one. What the
   shell has emitted but not yet seen delivered stays in the table beside the writes
   (`streams/shell/units.py`) and is sent again when the partition is assigned: outputs are
   at-least-once and re-derivable from the table; consumers dedupe on dial_id or
   lead_id.
8. Per-event cost does not grow with a backlog: waiting leads are one table key each,
   addressed by per-priority head/tail counters in the business's value, and time-based
   work (expiry, resends, held statuses) is found through per-second wake buckets
   delivered by tick events, never by scanning.
9. An input record is applied at most once. The partition's cursor entry holds, per
   input topic, the next offset to apply, and is written in the same unit as the
   event's other writes; a redelivered record below it is ignored (what it emitted is
   in the table, rule 7). (That no record is skipped is the shell's duty:
   `streams/shell/progress.py`.) Rejected records move the cursor like any other.

The state these rules keep, key by key, and its JSON: `streams/limiter_state.py`.
"""

from __future__ import annotations

import dataclasses
import enum
import math
from collections.abc import Callable, Iterable
from typing import Any, Literal, TypedDict, cast

import orjson

from streams.limiter_state import (
    Business,
    Cursors,
    ForgetLead,
    HeldStatus,
    Lead,
    LeadState,
    Phase,
    QueueLevel,
    QueuePosition,
    Read,
    Slot,
    WakeBusiness,
    WakeCursor,
    WakeEntry,
    business_key,
    cursor_key,
    decode_business,
    decode_held,
    decode_lead,
    decode_wake_entry,
    encode_business,
    encode_held,
    encode_lead,
    encode_wake_entry,
    held_key,
    lead_key,
    new_business,
    oldest_waiting_since,
    queue_key,
    read_business,
    read_lead,
    waiting_count,
    wake_cursor_key,
    wake_entry_key,
    wake_size_key,
)
from streams.topics import (
    CALLS_DIAL,
    DIAL_DEADLINE_PASSED,
    LEADS_DEADLETTER,
    LEADS_OUTCOMES,
    MAX_PRIORITY,
    BusinessControl,
    CallStatus,
    DeadLetter,
    DialCommand,
    InputRecord,
    LeadOutcome,
    LeadRequest,
    Outcome,
    Record,
    TerminalStatus,
    Tick,
    to_iso,
)

# -- the tables of rules -------------------------------------------------------------

#: How far a call has got. A status never moves a slot backwards in this order.
PHASE_RANK: dict[str, int] = {
    "granted": 0,
    "queued": 1,
    "initiated": 1,
    "ringing": 2,
    "in-progress": 3,
}

#: Lease deadline per phase: (measured from, durations added). "dial_by" means from the
#: grant's dial_by deadline, "now" from the status that put the slot in this phase.
LEASES: dict[Phase, tuple[Literal["dial_by", "now"], tuple[str, ...]]] = {
    "granted": ("dial_by", ("ring_timeout", "call_time_limit", "lease_grace")),
    "queued": ("now", ("ring_timeout", "call_time_limit", "lease_grace")),
    "initiated": ("now", ("ring_timeout", "call_time_limit", "lease_grace")),
    "ringing": ("now", ("ring_timeout", "call_time_limit", "lease_grace")),
    "in-progress": ("now", ("call_time_limit", "lease_grace")),
}


class StatusAction(enum.Enum):
    """What a status does to the active slot of its dial."""

    ADVANCE = "advance"  # the call goes on, maybe in a later phase
    END = "end"  # the call is over: the slot frees, the lead has its outcome
    RETRY = "retry"  # the dialer refused a stale command: the lead goes back in front


ADVANCE, END, RETRY = StatusAction.ADVANCE, StatusAction.END, StatusAction.RETRY
#: (status, reason) -> what it does to an active slot; reason None matches any reason.
STATUS_ACTIONS: dict[tuple[str, str | None], StatusAction] = {
    ("queued", None): ADVANCE,
    ("initiated", None): ADVANCE,
    ("ringing", None): ADVANCE,
    ("in-progress", None): ADVANCE,
    ("completed", None): END,
    ("busy", None): END,
    ("failed", None): END,
    ("no-answer", None): END,
    ("canceled", None): END,
    ("canceled", DIAL_DEADLINE_PASSED): RETRY,
}

#: Queue level of leads put back after a dialer refused a stale command: above every
#: priority, so they are next.
FRONT_LEVEL = MAX_PRIORITY + 1

#: What a Note is about: its kind is the counter's label and the log line's subject.
NoteKind = Literal[
    "waiting",
    "duplicate-lead",
    "dial-granted",
    "dial-refused",
    "dial-resent",
    "stale-status",
    "status-held",
    "control",
    "lease-expired",
    "lead-forgotten",
    "dead-lettered",
    "redelivered",
    "outcome-completed",
    "outcome-busy",
    "outcome-failed",
    "outcome-no-answer",
    "outcome-canceled",
    "outcome-expired",
    "outcome-rejected",
]
#: The note each outcome is told with.
OUTCOME_NOTES: dict[Outcome, NoteKind] = {
    "completed": "outcome-completed",
    "busy": "outcome-busy",
    "failed": "outcome-failed",
    "no-answer": "outcome-no-answer",
    "canceled": "outcome-canceled",
    "expired": "outcome-expired",
    "rejected": "outcome-rejected",
}


@dataclasses.dataclass(frozen=True)
class Rules:
    """The numbers the rules use; built by `streams.settings.Settings.rules()`."""

    limit: int
    dial_deadline: float
    ack_timeout: float
    ring_timeout: float
    call_time_limit: float
    lease_grace: float
    #: How long statuses for a dial we do not know are held (ORPHAN_STATUS_HOLD_SECONDS).
    orphan_hold: float
    max_attempts: int
    max_wakes_per_tick: int = 256
    lead_retention: float = 7 * 24 * 3600.0


@dataclasses.dataclass(frozen=True)
class Source:
    """Where an event came from; identifies it across redeliveries."""

    topic: str
    partition: int
    offset: int
    key: bytes | None = None
    value: bytes | None = None
    #: The record's Kafka timestamp in seconds: the shell's lag figures and its
    #: `statuses_read_until` (rule 5) come from it; the rules never read it.
    timestamp: float | None = None

    @property
    def id(self) -> str:
        return f"{self.topic}/{self.partition}/{self.offset}"


@dataclasses.dataclass(frozen=True)
class Emit:
    """A record to produce to topic `topic` (base name) keyed by `key`."""

    topic: str
    key: str
    record: Record


@dataclasses.dataclass(frozen=True)
class Note:
    """Something worth a log line and a counter: `kind` is the counter's label."""

    kind: NoteKind
    business_id: str | None
    lead_id: str | None
    message: str


@dataclasses.dataclass
class Effects:
    """What the shell must do for one event: the writes (in order; a None value deletes
    the key), then the emits."""

    writes: list[tuple[str, object]]
    emits: list[Emit]
    notes: list[Note]
    replayed: bool = False


def dial_id_for(business_id: str, lead_id: str, attempt: int) -> str:
    """Deterministic, so a resent or replayed grant is recognisably the same call."""
    return f"{business_id}:{lead_id}:{attempt}"


_RECORD_TYPES: dict[str, type[Record]] = {
    CALLS_DIAL: DialCommand,
    LEADS_OUTCOMES: LeadOutcome,
    LEADS_DEADLETTER: DeadLetter,
}

# -- entry points --------------------------------------------------------------------


def process(
    read: Read,
    event: InputRecord,
    source: Source,
    now: float,
    rules: Rules,
    statuses_read_until: float | None = None,
) -> Effects:
    """Apply one input event. Pure: `read` is only read; the result says what to do.

    The writes are one unit (rule 7): the shell makes all of them durable or none, and
    emits only after. Rule 9: a record below its topic's cursor is never applied again.
    `statuses_read_until`: the time up to which the partition's status input has been
    read (rule 5); None means all of it, i.e. `now`.
    """
    handler = _HANDLERS[type(event)]
    return _once(
        read, source, now, rules, lambda step: handler(step, event), statuses_read_until
    )


def reject(
    read: Read,
    source: Source,
    reason: str,
    now: float,
    rules: Rules,
    lead_id: str | None = None,
    business_id: str | None = None,
) -> Effects:
    """A record we cannot use: dead-letter it, keyed by its business when known. When
    it is a lead request whose ids were readable (`lead_id` and `business_id`) and that
    lead is not known yet, the CRM gets that lead's outcome too: `rejected`. A bad
    record naming a lead we hold (a malformed duplicate) ends nothing: that lead has its
    own outcome to come, and a lead gets one.

    Applied once like any event, so a redelivered bad record is dead-lettered once and
    the cursor moves past it."""

    def dead_letter(step: _Step) -> None:
        step.emit(
            LEADS_DEADLETTER,
            business_id or "",
            DeadLetter.of(
                reason,
                source.topic,
                source.partition,
                source.offset,
                source.key,
                source.value,
            ),
        )
        known = (
            lead_id is not None
            and business_id is not None
            and step.peek(lead_key(business_id, lead_id)) is not None
        )
        if lead_id and business_id and not known:
            step.emit(
                LEADS_OUTCOMES,
                business_id,
                LeadOutcome(
                    lead_id=lead_id,
                    business_id=business_id,
                    outcome="rejected",
                    reason=reason,
                ),
            )
        step.note(
            "dead-lettered", business_id, lead_id, f"{source.id} dead-lettered: {reason}"
        )

    return _once(read, source, now, rules, dead_letter)


def _once(
    read: Read,
    source: Source,
    now: float,
    rules: Rules,
    handle: Callable[[_Step], None],
    statuses_read_until: float | None = None,
) -> Effects:
    """Rule 9 around one handler: skip a record already applied, else apply it and
    move the topic's cursor past it in the same unit of writes."""
    cursors = cast(Cursors, read(cursor_key(source.partition)) or {})
    if source.offset < cursors.get(source.topic, 0):
        return Effects(
            [],
            [],
            [Note("redelivered", None, None, f"{source.id} was applied before; ignored")],
            replayed=True,
        )
    step = _Step(
        read,
        source,
        now,
        rules,
        now if statuses_read_until is None else statuses_read_until,
    )
    handle(step)
    step.put(cursor_key(source.partition), {**cursors, source.topic: source.offset + 1})
    return Effects(list(step.writes.items()), step.emits, step.notes)


def encode_emits(emits: Iterable[Emit]) -> list[list[Any]]:
    """Emits as JSON-ready lists, to keep in the table (rule 7)."""
    return [[e.topic, e.key, e.record.to_dict()] for e in emits]


def decode_emits(encoded: Iterable[list[Any]]) -> list[Emit]:
    return [
        Emit(topic, key, _RECORD_TYPES[topic].from_dict(record))
        for topic, key, record in encoded
    ]


def replay_writes(writes: Iterable[tuple[str, object]]) -> dict[str, object]:
    """Fold writes into a dict (None deletes): how tests and tools apply Effects."""
    state: dict[str, object] = {}
    for key, value in writes:
        if value is None:
            state.pop(key, None)
        else:
            state[key] = value
    return state


class ActiveCall(TypedDict):
    dial_id: str
    lead_id: str
    status: Phase
    age_seconds: float
    lease_left_seconds: float


class BusinessView(TypedDict):
    """What ops see of a business (`/businesses/`)."""

    business_id: str
    limit: int
    paused: bool
    active: list[ActiveCall]
    waiting: int
    oldest_waiting_seconds: float | None
    held_statuses: int


class _LeadViewBase(TypedDict):
    lead_id: str
    business_id: str
    state: LeadState
    attempt: int
    outcome: Outcome | None
    dial_id: str | None


class LeadView(_LeadViewBase, total=False):
    """Where a lead stands (`/businesses/BIZ/?lead=`); a waiting one also says why."""

    ahead: int
    waits_for: str


def describe_business(
    read: Read, business_id: str, now: float, rules: Rules
) -> BusinessView:
    """What ops want to know about one business, from the table alone."""
    business = read_business(read, business_id) or new_business()
    since = oldest_waiting_since(business)
    return {
        "business_id": business_id,
        "limit": _limit(business, rules),
        "paused": business["paused"],
        "active": [
            {
                "dial_id": dial_id,
                "lead_id": slot["lead_id"],
                "status": slot["status"],
                "age_seconds": round(now - slot["granted_at"], 3),
                "lease_left_seconds": round(slot["lease_until"] - now, 3),
            }
            for dial_id, slot in business["active"].items()
        ],
        "waiting": waiting_count(business),
        "oldest_waiting_seconds": None if since is None else round(now - since, 3),
        "held_statuses": len(business["held"]),
    }


def describe_lead(
    read: Read, business_id: str, lead_id: str, rules: Rules
) -> LeadView | None:
    """Where one lead stands and, when it waits, how many are ahead of it and why."""
    lead = read_lead(read, business_id, lead_id)
    if lead is None:
        return None
    view: LeadView = {
        "lead_id": lead_id,
        "business_id": business_id,
        "state": lead["state"],
        "attempt": lead["attempt"],
        "outcome": lead["outcome"],
        "dial_id": lead["dials"][-1] if lead["dials"] else None,
    }
    if lead["state"] == "waiting":
        business = read_business(read, business_id) or new_business()
        level, position = lead["queued_at"]
        ahead = (
            position
            - business["queues"][str(level)].head
            + sum(
                tail - head
                for lvl, (head, tail, _) in business["queues"].items()
                if int(lvl) > level
            )
        )
        view["ahead"] = ahead
        view["waits_for"] = (
            "the business is paused"
            if business["paused"]
            else f"a free slot: {len(business['active'])} of"
            f" {_limit(business, rules)} in use"
            + (f", {ahead} lead(s) ahead" if ahead else "")
        )
    return view


# -- one event's worth of work -------------------------------------------------------


class _Step:
    """Reads through to the table, collects writes and emits; never mutates what it read
    from the table."""

    def __init__(
        self,
        read: Read,
        source: Source,
        now: float,
        rules: Rules,
        statuses_read_until: float,
    ):
        self._read = read
        self.source = source
        self.now = now
        self.rules = rules
        self.statuses_read_until = statuses_read_until
        self.writes: dict[str, object] = {}
        self.emits: list[Emit] = []
        self.notes: list[Note] = []

    def get(self, key: str) -> object:
        """The value of `key` as this event left it so far. The table's own objects are
        copied before a handler can change them; this step's writes are its own."""
        if key in self.writes:
            return self.writes[key]
        return _copy(self._read(key))

    def peek(self, key: str) -> object:
        """Like `get`, for reading only: the caller must not change what it returns."""
        return self.writes[key] if key in self.writes else self._read(key)

    def put(self, key: str, value: object) -> None:
        self.writes[key] = value

    def delete(self, key: str) -> None:
        self.writes[key] = None

    def emit(self, topic: str, key: str, record: Record) -> None:
        self.emits.append(Emit(topic, key, record))

    def note(
        self, kind: NoteKind, business_id: str | None, lead_id: str | None, message: str
    ) -> None:
        self.notes.append(Note(kind, business_id, lead_id, message))


def _copy(value: object) -> object:
    """A deep copy of a JSON value (all the table holds), at a fraction of the cost of
    copy.deepcopy."""
    if type(value) is dict or type(value) is list:
        return orjson.loads(orjson.dumps(value))
    return value


def _limit(business: Business, rules: Rules) -> int:
    return business["limit"] if business["limit"] is not None else rules.limit


def _is_idle(business: Business) -> bool:
    """Nothing live, waiting, held or configured: the business leaves the table."""
    return not (
        business["active"]
        or business["queues"]
        or business["held"]
        or business["limit"] is not None
        or business["paused"]
    )


def _load(step: _Step, business_id: str) -> Business:
    value = step.get(business_key(business_id))
    return new_business() if value is None else decode_business(value)


def _save(step: _Step, business_id: str, business: Business) -> None:
    """Write the business back, scheduling its next wake; drop it when it is idle."""
    if _is_idle(business):
        step.delete(business_key(business_id))
        return
    wake = _next_wake(business)
    if wake is not None:
        bucket = math.ceil(wake)
        if business["wake"] is None or bucket < business["wake"]:
            business["wake"] = _schedule(step, WakeBusiness(business_id), bucket)
    step.put(business_key(business_id), encode_business(business))


def _get_lead(step: _Step, business_id: str, lead_id: str) -> Lead:
    """The record of a lead that must exist (it holds a slot or waits), to change."""
    value = step.get(lead_key(business_id, lead_id))
    if value is None:
        raise LookupError(f"lead {lead_id} of business {business_id} is not in the table")
    return decode_lead(value)


def _peek_lead(step: _Step, business_id: str, lead_id: str) -> Lead | None:
    value = step.peek(lead_key(business_id, lead_id))
    return None if value is None else decode_lead(value)


def _put_lead(step: _Step, business_id: str, lead_id: str, lead: Lead) -> None:
    step.put(lead_key(business_id, lead_id), encode_lead(lead))


def _on_lead(step: _Step, lead: LeadRequest) -> None:
    bid = lead.business_id
    if step.peek(lead_key(bid, lead.lead_id)) is not None:
        step.note(
            "duplicate-lead",
            bid,
            lead.lead_id,
            f"lead {lead.lead_id} of business {bid} was requested before; ignored",
        )
        return
    business = _load(step, bid)
    position = _enqueue(step, business, bid, lead.priority, lead.lead_id, front=False)
    _put_lead(
        step,
        bid,
        lead.lead_id,
        {
            "state": "waiting",
            "phone": lead.phone,
            "priority": lead.priority,
            "attempt": 1,
            "dials": [],
            "outcome": None,
            "queued_at": position,
            "waiting_since": step.now,
        },
    )
    _fill(step, business, bid)
    waiting = _peek_lead(step, bid, lead.lead_id)
    if waiting is not None and waiting["state"] == "waiting":
        step.note(
            "waiting",
            bid,
            lead.lead_id,
            f"lead {lead.lead_id} of business {bid} waits: "
            f"{len(business['active'])}/{_limit(business, step.rules)} calls active,"
            f" {waiting_count(business)} waiting",
        )
    _save(step, bid, business)


def _on_status(step: _Step, status: CallStatus) -> None:
    bid = status.business_id
    business = _load(step, bid)
    if status.dial_id in business["active"]:
        _apply_status(step, business, bid, status)
    else:
        lead = _peek_lead(step, bid, status.lead_id)
        if lead is not None and status.dial_id in lead["dials"]:
            step.note(
                "stale-status",
                bid,
                status.lead_id,
                f"{status.status} for dial {status.dial_id} arrived after the dial"
                f" ended; ignored",
            )
            return
        _hold(step, business, bid, status)
    _fill(step, business, bid)
    _save(step, bid, business)


def _on_tick(step: _Step, tick: Tick) -> None:
    """Visit the businesses whose wake bucket is due, at most max_wakes_per_tick of them."""
    partition = step.source.partition
    cursor = step.get(wake_cursor_key(partition))
    if cursor is None:
        return
    second, index = WakeCursor(*cast(list[int], cursor))
    visited = 0
    while second <= math.floor(step.now) and visited < step.rules.max_wakes_per_tick:
        size = _wake_size(step, partition, second)
        while index < size and visited < step.rules.max_wakes_per_tick:
            entry = wake_entry_key(partition, second, index)
            due = decode_wake_entry(step.get(entry))
            step.delete(entry)
            index += 1
            visited += 1
            match due:
                case WakeBusiness(business_id):
                    _wake(step, business_id, second)
                case ForgetLead(business_id, lead_id):
                    _forget(step, business_id, lead_id)
        if index < size:
            break
        if size:
            step.delete(wake_size_key(partition, second))
        second, index = second + 1, 0
    step.put(wake_cursor_key(partition), [second, index])


def _on_control(step: _Step, control: BusinessControl) -> None:
    bid = control.business_id
    business = _load(step, bid)
    business["limit"] = control.limit
    business["paused"] = control.paused
    step.note(
        "control",
        bid,
        None,
        f"business {bid}: limit {_limit(business, step.rules)}"
        f"{' (default)' if control.limit is None else ''},"
        f" {'paused' if control.paused else 'running'};"
        f" {len(business['active'])} active, {waiting_count(business)} waiting",
    )
    _fill(step, business, bid)
    _save(step, bid, business)


_HANDLERS: dict[type[InputRecord], Callable[[_Step, Any], None]] = {
    LeadRequest: _on_lead,
    CallStatus: _on_status,
    Tick: _on_tick,
    BusinessControl: _on_control,
}


# -- queue ---------------------------------------------------------------------------


def _enqueue(
    step: _Step, business: Business, bid: str, level: int, lead_id: str, front: bool
) -> QueuePosition:
    """Put a lead at the back (or the front) of a queue level; where it now waits."""
    head, tail, since = business["queues"].get(str(level), QueueLevel(0, 0, step.now))
    if front:
        head -= 1
        position = head
        since = step.now
    else:
        position = tail
        tail += 1
    business["queues"][str(level)] = QueueLevel(head, tail, since)
    step.put(queue_key(bid, level, position), lead_id)
    return QueuePosition(level, position)


def _dequeue(step: _Step, business: Business, bid: str) -> str:
    level = max(business["queues"], key=int)
    head, tail, _ = business["queues"][level]
    key = queue_key(bid, level, head)
    lead_id = cast(str, step.get(key))
    step.delete(key)
    if head + 1 == tail:
        del business["queues"][level]
    else:
        following = _peek_lead(
            step, bid, cast(str, step.peek(queue_key(bid, level, head + 1)))
        )
        assert following is not None, "a queued lead has its record"
        business["queues"][level] = QueueLevel(head + 1, tail, following["waiting_since"])
    return lead_id


def _fill(step: _Step, business: Business, bid: str) -> None:
    """Rule 2: refill free slots from the queue, right now."""
    while (
        business["queues"]
        and not business["paused"]
        and len(business["active"]) < _limit(business, step.rules)
    ):
        _grant(step, business, bid, _dequeue(step, business, bid))


def _grant(step: _Step, business: Business, bid: str, lead_id: str) -> None:
    lead = _get_lead(step, bid, lead_id)
    now, rules = step.now, step.rules
    dial_id = dial_id_for(bid, lead_id, lead["attempt"])
    dial_by = now + rules.dial_deadline
    slot: Slot = {
        "lead_id": lead_id,
        "attempt": lead["attempt"],
        "phone": lead["phone"],
        "granted_at": now,
        "dial_by": dial_by,
        "status": "granted",
        "sequence": None,
        "call_sid": None,
        "resends": 0,
        "resend_at": now + rules.ack_timeout if now + rules.ack_timeout < dial_by else None,
        "lease_until": _lease(rules, "granted", dial_by, now),
    }
    business["active"][dial_id] = slot
    lead["state"] = "active"
    lead["dials"] = lead["dials"] + [dial_id]
    _put_lead(step, bid, lead_id, lead)
    step.emit(CALLS_DIAL, bid, _dial_command(bid, dial_id, slot))
    step.note(
        "dial-granted",
        bid,
        lead_id,
        f"lead {lead_id} of business {bid} granted dial {dial_id}"
        f" ({len(business['active'])}/{_limit(business, rules)} active)",
    )
    if dial_id in business["held"]:
        del business["held"][dial_id]
        held = decode_held(step.get(held_key(bid, dial_id)))
        step.delete(held_key(bid, dial_id))
        held.sort(
            key=lambda h: (PHASE_RANK.get(h.status.status, 9), h.status.sequence or -1)
        )
        for entry in held:
            if dial_id in business["active"]:
                _apply_status(step, business, bid, entry.status)


def _dial_command(bid: str, dial_id: str, slot: Slot) -> DialCommand:
    return DialCommand(
        dial_id=dial_id,
        lead_id=slot["lead_id"],
        business_id=bid,
        phone=slot["phone"],
        attempt=slot["attempt"],
        granted_at=to_iso(slot["granted_at"]),
        dial_by=to_iso(slot["dial_by"]),
    )


# -- statuses ------------------------------------------------------------------------


def _lease(rules: Rules, phase: Phase, dial_by: float, now: float) -> float:
    start, durations = LEASES[phase]
    base = dial_by if start == "dial_by" else now
    added: float = sum(getattr(rules, d) for d in durations)
    return base + added


def _apply_status(step: _Step, business: Business, bid: str, status: CallStatus) -> None:
    slot = business["active"][status.dial_id]
    action = (
        STATUS_ACTIONS.get((status.status, status.reason))
        or STATUS_ACTIONS[(status.status, None)]
    )
    if status.call_sid:
        slot["call_sid"] = status.call_sid
    if action is ADVANCE:
        rank, current = PHASE_RANK[status.status], PHASE_RANK[slot["status"]]
        newer = (
            slot["sequence"] is None
            or status.sequence is None
            or status.sequence > slot["sequence"]
        )
        if rank > current or (rank == current and newer):
            slot["status"] = cast(Phase, status.status)  # only live statuses advance
            if status.sequence is not None:
                slot["sequence"] = status.sequence
        slot["resend_at"] = None
        slot["lease_until"] = max(
            slot["lease_until"],
            _lease(step.rules, slot["status"], slot["dial_by"], step.now),
        )
        return
    del business["active"][status.dial_id]
    lead = _get_lead(step, bid, slot["lead_id"])
    if action is RETRY and lead["attempt"] < step.rules.max_attempts:
        position = _enqueue(step, business, bid, FRONT_LEVEL, slot["lead_id"], front=True)
        lead["state"] = "waiting"
        lead["attempt"] += 1
        lead["queued_at"] = position
        lead["waiting_since"] = step.now
        _put_lead(step, bid, slot["lead_id"], lead)
        step.note(
            "dial-refused",
            bid,
            slot["lead_id"],
            f"dial {status.dial_id} was refused ({status.reason}); lead"
            f" {slot['lead_id']} goes back to the front as attempt {lead['attempt']}",
        )
        return
    reason = status.reason
    if action is RETRY:
        reason = f"{status.reason} on all {lead['attempt']} attempts"
    elif status.error_code is not None and not reason:
        reason = f"error {status.error_code}"
    outcome = cast(TerminalStatus, status.status)  # only terminal statuses end a call
    _finish(step, bid, lead, slot, status.dial_id, outcome, reason)


def _finish(
    step: _Step,
    bid: str,
    lead: Lead,
    slot: Slot,
    dial_id: str,
    outcome: Outcome,
    reason: str | None,
) -> None:
    lead["state"] = "done"
    lead["outcome"] = outcome
    _put_lead(step, bid, slot["lead_id"], lead)
    _schedule(
        step,
        ForgetLead(bid, slot["lead_id"]),
        math.ceil(step.now + step.rules.lead_retention),
    )
    step.emit(
        LEADS_OUTCOMES,
        bid,
        LeadOutcome(
            lead_id=slot["lead_id"],
            business_id=bid,
            outcome=outcome,
            dial_id=dial_id,
            call_sid=slot["call_sid"],
            reason=reason,
            attempt=slot["attempt"],
        ),
    )
    step.note(
        OUTCOME_NOTES[outcome],
        bid,
        slot["lead_id"],
        f"lead {slot['lead_id']} of business {bid} ended {outcome}"
        + (f" ({reason})" if reason else "")
        + f"; dial {dial_id} frees its slot",
    )


def _hold(step: _Step, business: Business, bid: str, status: CallStatus) -> None:
    """Rule 6: keep a status for an unknown dial until its grant shows up, for a while."""
    held = decode_held(step.get(held_key(bid, status.dial_id)))
    src = step.source
    held.append(
        HeldStatus(
            status,
            DeadLetter.of("", src.topic, src.partition, src.offset, src.key, src.value),
        )
    )
    step.put(held_key(bid, status.dial_id), encode_held(held))
    business["held"].setdefault(status.dial_id, step.now + step.rules.orphan_hold)
    step.note(
        "status-held",
        bid,
        status.lead_id,
        f"{status.status} for unknown dial {status.dial_id} held for up to"
        f" {step.rules.orphan_hold:g}s until its grant appears",
    )


# -- time ----------------------------------------------------------------------------


def _next_wake(business: Business) -> float | None:
    times: list[float] = list(business["held"].values())
    for slot in business["active"].values():
        times.append(slot["lease_until"])
        if slot["resend_at"] is not None:
            times.append(slot["resend_at"])
    return min(times) if times else None


def _wake_size(step: _Step, partition: int, second: int) -> int:
    return cast(int, step.get(wake_size_key(partition, second)) or 0)


def _schedule(step: _Step, due: WakeEntry, bucket: int) -> int:
    """Append `due` to the wake bucket of second `bucket` of this partition (or of the
    cursor's second, when that one is past); the bucket it went to."""
    partition = step.source.partition
    cursor = step.get(wake_cursor_key(partition))
    if cursor is None:
        step.put(wake_cursor_key(partition), [bucket, 0])
    else:
        bucket = max(bucket, WakeCursor(*cast(list[int], cursor)).second)
    size = _wake_size(step, partition, bucket)
    step.put(wake_entry_key(partition, bucket, size), encode_wake_entry(due))
    step.put(wake_size_key(partition, bucket), size + 1)
    return bucket


def _forget(step: _Step, bid: str, lead_id: str) -> None:
    """Rule 6: a lead's record goes `lead_retention` after its outcome."""
    lead = _peek_lead(step, bid, lead_id)
    if lead is not None and lead["state"] == "done":
        step.delete(lead_key(bid, lead_id))
        step.note(
            "lead-forgotten",
            bid,
            lead_id,
            f"lead {lead_id} of business {bid} forgotten"
            f" {step.rules.lead_retention:g}s after its outcome ({lead['outcome']})",
        )


def _wake(step: _Step, bid: str, bucket: int) -> None:
    """Rules 3, 5, 6 over time: expire leases, resend silent dials, drop held statuses."""
    value = step.get(business_key(bid))
    if value is None:
        return
    business = decode_business(value)
    if business["wake"] == bucket:
        business["wake"] = None
    now = step.now
    for dial_id, slot in list(business["active"].items()):
        if now >= slot["lease_until"]:
            del business["active"][dial_id]
            reason = f"no final status; lease ran out in phase {slot['status']}"
            _finish(
                step,
                bid,
                _get_lead(step, bid, slot["lead_id"]),
                slot,
                dial_id,
                "expired",
                reason,
            )
            step.note(
                "lease-expired",
                bid,
                slot["lead_id"],
                f"lease of dial {dial_id} expired in phase {slot['status']}",
            )
        elif slot["resend_at"] is not None and now >= slot["resend_at"]:
            if now >= slot["dial_by"]:
                slot["resend_at"] = None
            elif step.statuses_read_until < slot["resend_at"]:
                # Its status may be in the backlog: look again a second later, once
                # statuses up to then have been read too.
                slot["resend_at"] = now + 1
            else:
                slot["resends"] += 1
                slot["resend_at"] = now + step.rules.ack_timeout
                step.emit(CALLS_DIAL, bid, _dial_command(bid, dial_id, slot))
                step.note(
                    "dial-resent",
                    bid,
                    slot["lead_id"],
                    f"dial {dial_id} had no status after"
                    f" {now - slot['granted_at']:.1f}s; resent ({slot['resends']})",
                )
    for dial_id, until in list(business["held"].items()):
        if now >= until:
            del business["held"][dial_id]
            held = decode_held(step.get(held_key(bid, dial_id)))
            step.delete(held_key(bid, dial_id))
            for entry in held:
                letter = dataclasses.replace(
                    entry.source,
                    reason=(
                        f"status {entry.status.status} for unknown dial {dial_id}:"
                        f" no grant claimed it within {step.rules.orphan_hold:g}s"
                    ),
                )
                step.emit(LEADS_DEADLETTER, bid, letter)
                step.note("dead-lettered", bid, entry.status.lead_id, letter.reason)
    _fill(step, business, bid)
    _save(step, bid, business)
