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
8. Per-event cost does not grow with a backlog: waiting leads are one table key each
   (consecutive leads of one run share one: a segment of the run's list), addressed
   by per-queue head/tail counters in the business's value, and time-based work
   (expiry, resends, held statuses, scheduled leads, window openings, withdrawals) is
   found through per-second wake buckets delivered by tick events, never by scanning:
   a tick does at most `max_wakes_per_tick` pieces of it, the next tick goes on. Queue
   entries whose lead no longer waits are skipped when they reach a head, at most
   `max_skips_per_event` per event; the next tick goes on.
9. An input record is applied at most once. The partition's cursor entry holds, per
   input topic, the next offset to apply, and is written in the same unit as the
   event's other writes; a redelivered record below it is ignored (what it emitted is
   in the table, rule 7). (That no record is skipped is the shell's duty:
   `streams/shell/progress.py`.) Rejected records move the cursor like any other.
10. A lead's time. A lead whose `not_before` is still to come, or whose retry waits
   out its delay, is scheduled: in no queue, holding no slot. Its wake entry puts it
   at the back of its queue (its priority, its zone) when its time comes, within one
   tick. A lead is never granted at or after its `expires_at`, and a grant's `dial_by`
   never passes it; a lead not dialed by then ends `expired`
   (`not-dialed-before-expiry`). A lead's states move only as LEAD_MOVES says.
11. Calling windows. A business's window (its own from `business.control`, or the
   default) says when its leads may be dialed, judged in the lead's own `timezone`,
   or else in the window's (`streams/limiter_calendar.py`: wall-clock time, so
   daylight saving moves it with the clocks). A business keeps one queue per priority
   and zone; a queue whose window is closed is passed over, so a lead outside its
   window never blocks one inside its own, and the business is woken when the window
   opens. A grant's `dial_by` never passes the window's close; a window closing never
   ends a live call.
12. Withdrawals. Withdrawing a lead, or a run (`run_id`), ends each of its leads not yet
   dialed `withdrawn`, including a run's leads that arrive later (while the run is
   kept: `lead_retention` after its last lead ended). A lead on a call is not hung up:
   it ends with its call's outcome and is never retried. A run's withdrawal is one
   step: the run is marked; its waiting leads' segments are skipped whole as they reach
   a queue's head; their outcomes go out in slices on the ticks (rule 8); a lead of a
   withdrawn run is never granted in between (every grant checks).
13. Retries. A call ending with a status its business's retry policy names (its own, or
   the default) is tried again after the policy's delay (the last one repeats), as the
   next attempt (a new dial_id), while the attempts stay within `max_attempts` (the
   policy's, else MAX_DIAL_ATTEMPTS; dialer refusals count too), the lead is not
   withdrawn and the retry is due before its `expires_at`. That attempt's outcome says
   `final: false`; every lead gets exactly one outcome with `final: true`.
14. One lead, one final outcome. A record that cannot be used is dead-lettered; if it
   is a lead request naming a lead not known here, that lead ends `rejected` and its
   id is spent like any finished lead's (rule 6); naming a lead known here, or if it is
   a withdrawal, it ends nothing.

The state these rules keep, key by key, and its JSON: `streams/limiter_state.py`.
"""

from __future__ import annotations

import dataclasses
import enum
import math
from collections.abc import Callable, Iterable
from typing import Any, Literal, TypedDict, cast

import orjson

from streams.limiter_calendar import closes_at, is_open, next_open
from streams.limiter_state import (
    MAX_LISTED_RUNS,
    Business,
    Cursors,
    ExpireLead,
    ForgetLead,
    ForgetRun,
    HeldStatus,
    Lead,
    LeadState,
    Phase,
    QueueLevel,
    QueuePosition,
    Read,
    ReleaseLead,
    Run,
    Slot,
    SweepRun,
    WakeBusiness,
    WakeCursor,
    WakeEntry,
    business_key,
    cursor_key,
    decode_business,
    decode_held,
    decode_lead,
    decode_run,
    decode_wake_entry,
    encode_business,
    encode_held,
    encode_lead,
    encode_wake_entry,
    held_key,
    lead_key,
    new_business,
    new_run,
    oldest_waiting_since,
    open_leads,
    queue_entry_leads,
    queue_key,
    queue_name,
    queue_order,
    queue_parts,
    read_business,
    read_lead,
    read_run,
    run_key,
    run_lead_key,
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
    NOT_DIALED_BEFORE_EXPIRY,
    BusinessControl,
    CallingWindow,
    CallStatus,
    DeadLetter,
    DialCommand,
    InputRecord,
    LeadOutcome,
    LeadRequest,
    Outcome,
    Record,
    RetryPolicy,
    TerminalStatus,
    Tick,
    Withdrawal,
    from_iso,
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

#: A business waiting for a calling window to open is woken this often at least (it
#: looks again): a wake entry never outlives its business by more than this.
WINDOW_WAKE_AT_MOST = 600.0

#: How a lead's state may move (None: not known yet), and on what. Any other move is a
#: bug, and raises.
LEAD_MOVES: dict[tuple[LeadState | None, LeadState], str] = {
    (None, "waiting"): "it arrives and its time has come",
    (None, "scheduled"): "it arrives before its not_before",
    (None, "done"): "it arrives past its expires_at, for a withdrawn run, or invalid",
    ("scheduled", "waiting"): "its time comes (not_before, a retry's delay)",
    ("scheduled", "done"): "it is withdrawn, or expires",
    ("waiting", "active"): "it is granted a slot",
    ("waiting", "done"): "it is withdrawn, or expires",
    ("active", "done"): "its call ends for good, or its lease runs out",
    ("active", "waiting"): "the dialer refused a stale command: it goes back in front",
    ("active", "scheduled"): "its call ended with a status retried later",
}

#: The count each state adds to, in a business and in a run ("active" counts as a
#: business's slots, a run's "live").
_RUN_COUNTS: dict[LeadState, Literal["waiting", "scheduled", "live"]] = {
    "waiting": "waiting",
    "scheduled": "scheduled",
    "active": "live",
}

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
    "outcome-withdrawn",
    "lead-scheduled",
    "lead-released",
    "retry-scheduled",
    "withdrawal",
    "run-withdrawn",
    "run-forgotten",
    "refill-deferred",
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
    "withdrawn": "outcome-withdrawn",
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
    #: The calling window and retry policy of a business without its own (None: off).
    window: CallingWindow | None = None
    retry: RetryPolicy | None = None
    #: Queue entries whose lead no longer waits skipped per event at most (rule 8).
    max_skips_per_event: int = 64


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
    lead is not known yet, the CRM gets that lead's outcome too: `rejected`, and the
    lead's id is spent (rule 14). A bad record naming a lead we hold (a malformed
    duplicate) ends nothing: that lead has its own outcome to come, and a lead gets one.

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
        step.note(
            "dead-lettered", business_id, lead_id, f"{source.id} dead-lettered: {reason}"
        )
        if lead_id and business_id and step.peek(lead_key(business_id, lead_id)) is None:
            business = _load(step, business_id)
            lead = _new_lead(phone="", priority=0, waiting_since=step.now)
            _end(step, business, business_id, lead_id, lead, None, "rejected", reason)
            _save(step, business_id, business)

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


class RunView(TypedDict):
    """What ops see of a run (`/businesses/BIZ/?run=`, `streams run show`)."""

    run_id: str
    business_id: str
    total: int
    waiting: int
    scheduled: int
    live: int
    outcomes: dict[str, int]
    withdrawn: bool


class _BusinessViewBase(TypedDict):
    business_id: str
    limit: int
    paused: bool
    active: list[ActiveCall]
    waiting: int
    scheduled: int
    oldest_waiting_seconds: float | None
    held_statuses: int
    #: its calling window and retry policy, in words, and whether they are the defaults
    window: str | None
    window_default: bool
    retry: str | None
    retry_default: bool
    open_runs: int


class BusinessView(_BusinessViewBase, total=False):
    """What ops see of a business (`/businesses/`); one business alone also lists its
    open runs' figures."""

    runs: list[RunView]


class _LeadViewBase(TypedDict):
    lead_id: str
    business_id: str
    state: LeadState
    attempt: int
    outcome: Outcome | None
    dial_id: str | None
    run_id: str | None


class LeadView(_LeadViewBase, total=False):
    """Where a lead stands (`/businesses/BIZ/?lead=`); a waiting one also says why, a
    scheduled one until when."""

    ahead: int
    waits_for: str
    due: str


#: Queue entries read at most to count the leads ahead of one (a view, not a rule).
_AHEAD_READS = 10_000


def describe_business(
    read: Read, business_id: str, now: float, rules: Rules, runs: bool = False
) -> BusinessView:
    """What ops want to know about one business, from the table alone; with `runs`, the
    figures of its open runs too (a read per run)."""
    business = read_business(read, business_id) or new_business()
    since = oldest_waiting_since(business)
    window, retry = _window_of(business, rules), _retry_of(business, rules)
    view: BusinessView = {
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
        "scheduled": business["scheduled"],
        "oldest_waiting_seconds": None if since is None else round(now - since, 3),
        "held_statuses": len(business["held"]),
        "window": None if window is None else window.describe(),
        "window_default": business["window"] is None,
        "retry": None if retry is None else retry.describe(),
        "retry_default": business["retry"] is None,
        "open_runs": business["open_runs"],
    }
    if runs:
        found = (describe_run(read, business_id, r) for r in business["runs"])
        view["runs"] = [r for r in found if r is not None]
    return view


def describe_run(read: Read, business_id: str, run_id: str) -> RunView | None:
    """A run's figures: leads received, waiting, scheduled, on a call, final outcomes."""
    run = read_run(read, business_id, run_id)
    if run is None:
        return None
    return {
        "run_id": run_id,
        "business_id": business_id,
        "total": run["total"],
        "waiting": run["waiting"],
        "scheduled": run["scheduled"],
        "live": run["live"],
        "outcomes": dict(run["outcomes"]),
        "withdrawn": run["withdrawn"],
    }


def describe_lead(
    read: Read, business_id: str, lead_id: str, rules: Rules, now: float | None = None
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
        "run_id": lead["run_id"],
    }
    if lead["state"] == "scheduled" and lead["due"] is not None:
        view["due"] = to_iso(lead["due"])
    if lead["state"] == "waiting":
        business = read_business(read, business_id) or new_business()
        ahead = _leads_ahead(read, business_id, business, lead_id, lead)
        view["ahead"] = ahead
        window = _window_of(business, rules)
        zone = queue_parts(lead["queued_at"].queue)[1]
        closed = (
            window is not None
            and now is not None
            and not is_open(window, zone or window.timezone, now)
        )
        if business["paused"]:
            view["waits_for"] = "the business is paused"
        elif window is not None and now is not None and closed:
            opens = next_open(window, zone or window.timezone, now)
            view["waits_for"] = (
                f"its calling window ({window.describe()}"
                f"{', judged in ' + zone if zone else ''}), closed until {to_iso(opens)}"
            )
        else:
            view["waits_for"] = (
                f"a free slot: {len(business['active'])} of"
                f" {_limit(business, rules)} in use"
                + (f", {ahead} lead(s) ahead" if ahead else "")
            )
    return view


def _leads_ahead(
    read: Read, business_id: str, business: Business, lead_id: str, lead: Lead
) -> int:
    """Waiting leads that go before this one, counted from the queue entries ahead of
    it (at most _AHEAD_READS of them read)."""
    name, position = lead["queued_at"]
    mine = business["queues"].get(name)
    if mine is None:
        return 0
    order = queue_order(name, mine)
    ahead, reads = 0, 0
    for other, queue in business["queues"].items():
        if other != name and queue_order(other, queue) <= order:
            continue
        end = position + 1 if other == name else queue.tail
        for at in range(queue.head, end):
            reads += 1
            if reads > _AHEAD_READS:
                return ahead
            ids = queue_entry_leads(read, business_id, other, at)
            if other == name and at == position and lead_id in ids:
                ids = ids[: ids.index(lead_id)]
            ahead += len(ids)
    return ahead


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
        #: (business, zone) -> whether its window is open now: the same all event long
        self.open_zones: dict[tuple[str, str], bool] = {}

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


def _window_of(business: Business, rules: Rules) -> CallingWindow | None:
    """The business's calling window: its own, or the default (rule 11)."""
    if business["window"] is None:
        return rules.window
    return CallingWindow.from_dict(business["window"])


def _retry_of(business: Business, rules: Rules) -> RetryPolicy | None:
    """The business's retry policy: its own, or the default (rule 13)."""
    if business["retry"] is None:
        return rules.retry
    return RetryPolicy.from_dict(business["retry"])


def _max_attempts(business: Business, rules: Rules) -> int:
    policy = _retry_of(business, rules)
    return rules.max_attempts if policy is None else policy.max_attempts


def _is_idle(business: Business) -> bool:
    """Nothing live, waiting, scheduled, held or configured: the business leaves the
    table."""
    return not (
        business["active"]
        or business["queues"]
        or business["held"]
        or business["scheduled"]
        or business["open_runs"]
        or business["limit"] is not None
        or business["paused"]
        or business["window"] is not None
        or business["retry"] is not None
    )


def _load(step: _Step, business_id: str) -> Business:
    value = step.get(business_key(business_id))
    return new_business() if value is None else decode_business(value)


def _save(step: _Step, business_id: str, business: Business) -> None:
    """Write the business back, scheduling its next wake; drop it when it is idle."""
    if _is_idle(business):
        step.delete(business_key(business_id))
        return
    wake = _next_wake(step, business_id, business)
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


def _new_lead(
    *,
    phone: str,
    priority: int,
    waiting_since: float,
    request: LeadRequest | None = None,
) -> Lead:
    """A lead's record before its first move (its state is set by `_move`)."""
    return {
        "state": "waiting",
        "phone": phone,
        "priority": priority,
        "attempt": 1,
        "dials": [],
        "outcome": None,
        "queued_at": QueuePosition(str(priority), 0),
        "waiting_since": waiting_since,
        "run_id": None if request is None else request.run_id,
        "run_index": None,
        "not_before": _time_or_none(None if request is None else request.not_before),
        "expires_at": _time_or_none(None if request is None else request.expires_at),
        "timezone": None if request is None else request.timezone,
        "due": None,
        "withdrawn": False,
    }


def _time_or_none(text: str | None) -> float | None:
    return None if text is None else from_iso(text)


def _load_run(step: _Step, bid: str, run_id: str) -> Run:
    value = step.get(run_key(bid, run_id))
    return new_run() if value is None else decode_run(value)


def _peek_run(step: _Step, bid: str, run_id: str) -> Run | None:
    value = step.peek(run_key(bid, run_id))
    return None if value is None else decode_run(value)


def _withdrawn(step: _Step, bid: str, lead: Lead) -> bool:
    """Whether the lead, or its run, was withdrawn (rule 12)."""
    if lead["withdrawn"]:
        return True
    run = None if lead["run_id"] is None else _peek_run(step, bid, lead["run_id"])
    return run is not None and run["withdrawn"]


def _expired(step: _Step, lead: Lead) -> bool:
    return lead["expires_at"] is not None and step.now >= lead["expires_at"]


# -- a lead's moves ------------------------------------------------------------------


def _move(
    step: _Step,
    business: Business,
    bid: str,
    lead: Lead,
    before: LeadState | None,
    after: LeadState,
) -> None:
    """Move a lead's state as LEAD_MOVES allows, keeping its business's and its run's
    counts: waiting, scheduled, live, and the run's final outcomes."""
    if (before, after) not in LEAD_MOVES:
        raise AssertionError(f"a lead cannot move from {before} to {after}")
    lead["state"] = after
    for state, change in ((before, -1), (after, 1)):
        if state == "waiting":
            business["waiting"] += change
        elif state == "scheduled":
            business["scheduled"] += change
    run_id = lead["run_id"]
    if run_id is None:
        return
    run = _load_run(step, bid, run_id)
    was_open = open_leads(run)
    if before is None:
        run["total"] += 1
    for state, change in ((before, -1), (after, 1)):
        if state is not None and state in _RUN_COUNTS:
            run[_RUN_COUNTS[state]] += change
    if after == "done" and lead["outcome"] is not None:
        run["outcomes"][lead["outcome"]] = run["outcomes"].get(lead["outcome"], 0) + 1
    now_open = open_leads(run)
    if not was_open and now_open:
        run["settled_at"] = None
        business["open_runs"] += 1
        if len(business["runs"]) < MAX_LISTED_RUNS:
            business["runs"].append(run_id)
    elif was_open and not now_open:
        _settle_run(step, business, bid, run_id, run)
    elif before is None and not now_open and run["settled_at"] is None:
        run["settled_at"] = step.now  # a run whose only lead ended as it came
        _schedule(
            step, ForgetRun(bid, run_id), math.ceil(step.now + step.rules.lead_retention)
        )
    step.put(run_key(bid, run_id), run)


def _settle_run(step: _Step, business: Business, bid: str, run_id: str, run: Run) -> None:
    """Nothing of the run is open any more: it is forgotten `lead_retention` from now,
    unless leads come for it meanwhile."""
    run["settled_at"] = step.now
    business["open_runs"] -= 1
    if run_id in business["runs"]:
        business["runs"].remove(run_id)
    _schedule(step, ForgetRun(bid, run_id), math.ceil(step.now + step.rules.lead_retention))


def _end(
    step: _Step,
    business: Business,
    bid: str,
    lead_id: str,
    lead: Lead,
    before: LeadState | None,
    outcome: Outcome,
    reason: str | None,
    slot: Slot | None = None,
    dial_id: str | None = None,
) -> None:
    """The lead's final outcome: it is done, its record kept `lead_retention` (rule 6),
    the CRM told."""
    lead["outcome"] = outcome
    _move(step, business, bid, lead, before, "done")
    _put_lead(step, bid, lead_id, lead)
    _schedule(
        step, ForgetLead(bid, lead_id), math.ceil(step.now + step.rules.lead_retention)
    )
    _tell(step, bid, lead_id, lead, outcome, reason, slot, dial_id, final=True)
    step.note(
        OUTCOME_NOTES[outcome],
        bid,
        lead_id,
        f"lead {lead_id} of business {bid} ended {outcome}"
        + (f" ({reason})" if reason else "")
        + (f"; dial {dial_id} frees its slot" if dial_id else ""),
    )


def _tell(
    step: _Step,
    bid: str,
    lead_id: str,
    lead: Lead,
    outcome: str,
    reason: str | None,
    slot: Slot | None,
    dial_id: str | None,
    final: bool,
) -> None:
    step.emit(
        LEADS_OUTCOMES,
        bid,
        LeadOutcome(
            lead_id=lead_id,
            business_id=bid,
            outcome=outcome,
            dial_id=dial_id,
            call_sid=None if slot is None else slot["call_sid"],
            reason=reason,
            attempt=len(lead["dials"]) if slot is None else slot["attempt"],
            final=final,
        ),
    )


def _schedule_lead(
    step: _Step,
    business: Business,
    bid: str,
    lead_id: str,
    lead: Lead,
    before: LeadState | None,
    due: float,
) -> None:
    """Rule 10: the lead waits for its time out of every queue; a wake entry brings it
    in."""
    lead["due"] = due
    _move(step, business, bid, lead, before, "scheduled")
    _schedule(step, ReleaseLead(bid, lead_id), math.floor(due))
    step.note(
        "lead-scheduled",
        bid,
        lead_id,
        f"lead {lead_id} of business {bid} scheduled for {to_iso(due)}"
        f" (attempt {lead['attempt']})",
    )


# -- events --------------------------------------------------------------------------


def _on_lead(step: _Step, request: LeadRequest) -> None:
    bid, lead_id = request.business_id, request.lead_id
    if step.peek(lead_key(bid, lead_id)) is not None:
        step.note(
            "duplicate-lead",
            bid,
            lead_id,
            f"lead {lead_id} of business {bid} was requested before; ignored",
        )
        return
    business = _load(step, bid)
    lead = _new_lead(
        phone=request.phone,
        priority=request.priority,
        waiting_since=step.now,
        request=request,
    )
    run = None if request.run_id is None else _peek_run(step, bid, request.run_id)
    if run is not None and run["withdrawn"]:
        reason = f"run {request.run_id} was withdrawn"
        _end(step, business, bid, lead_id, lead, None, "withdrawn", reason)
    elif _expired(step, lead):
        _end(step, business, bid, lead_id, lead, None, "expired", NOT_DIALED_BEFORE_EXPIRY)
    else:
        if request.run_id is not None:
            _add_to_run(step, bid, request.run_id, lead_id, lead)
        if lead["not_before"] is not None and lead["not_before"] > step.now:
            _schedule_lead(step, business, bid, lead_id, lead, None, lead["not_before"])
        else:
            _enqueue(step, business, bid, lead_id, lead, front=False)
            _move(step, business, bid, lead, None, "waiting")
        if lead["expires_at"] is not None:
            _schedule(step, ExpireLead(bid, lead_id), math.ceil(lead["expires_at"]))
        _put_lead(step, bid, lead_id, lead)
        _fill(step, business, bid)
        waiting = _peek_lead(step, bid, lead_id)
        if waiting is not None and waiting["state"] == "waiting":
            step.note(
                "waiting",
                bid,
                lead_id,
                f"lead {lead_id} of business {bid} waits: "
                f"{len(business['active'])}/{_limit(business, step.rules)} calls active,"
                f" {waiting_count(business)} waiting",
            )
    _save(step, bid, business)


def _add_to_run(step: _Step, bid: str, run_id: str, lead_id: str, lead: Lead) -> None:
    """Append the lead to its run's list, which a withdrawal walks (rule 12)."""
    run = _load_run(step, bid, run_id)
    lead["run_index"] = run["leads"]
    step.put(run_lead_key(bid, run_id, run["leads"]), lead_id)
    run["leads"] += 1
    step.put(run_key(bid, run_id), run)


def _on_withdrawal(step: _Step, withdrawal: Withdrawal) -> None:
    bid = withdrawal.business_id
    business = _load(step, bid)
    if withdrawal.lead_id is not None:
        _withdraw_lead(step, business, bid, withdrawal.lead_id)
    elif withdrawal.run_id is not None:
        _withdraw_run(step, business, bid, withdrawal.run_id)
    _fill(step, business, bid)
    _save(step, bid, business)


def _withdraw_lead(step: _Step, business: Business, bid: str, lead_id: str) -> None:
    lead = _peek_lead(step, bid, lead_id)
    if lead is None or lead["state"] == "done":
        state = "unknown" if lead is None else f"already ended {lead['outcome']}"
        step.note(
            "withdrawal",
            bid,
            lead_id,
            f"withdrawal of lead {lead_id} of business {bid}: {state}; nothing to do",
        )
        return
    lead = _get_lead(step, bid, lead_id)
    if lead["state"] == "active":
        lead["withdrawn"] = True
        _put_lead(step, bid, lead_id, lead)
        step.note(
            "withdrawal",
            bid,
            lead_id,
            f"lead {lead_id} of business {bid} withdrawn while on a call: not hung up;"
            " it ends with that call and is not retried",
        )
        return
    _end(step, business, bid, lead_id, lead, lead["state"], "withdrawn", "withdrawn")


def _withdraw_run(step: _Step, business: Business, bid: str, run_id: str) -> None:
    run = _load_run(step, bid, run_id)
    if run["withdrawn"]:
        step.note("run-withdrawn", bid, None, f"run {run_id} of {bid} was withdrawn before")
        return
    run["withdrawn"] = True
    if not open_leads(run) and run["settled_at"] is None:
        run["settled_at"] = step.now  # nothing of it yet: kept to withdraw what comes
        _schedule(
            step, ForgetRun(bid, run_id), math.ceil(step.now + step.rules.lead_retention)
        )
    step.put(run_key(bid, run_id), run)
    if run["swept"] < run["leads"]:
        _schedule(step, SweepRun(bid, run_id), math.floor(step.now))
    step.note(
        "run-withdrawn",
        bid,
        None,
        f"run {run_id} of business {bid} withdrawn: {run['waiting']} waiting and"
        f" {run['scheduled']} scheduled leads end withdrawn from the next tick on,"
        f" {run['live']} on a call end with their calls",
    )


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
    """Visit the wake entries that are due, at most max_wakes_per_tick pieces of work.
    The cursor stays on the current second: what is scheduled for it later (a lead due
    within the second) is visited on the next tick."""
    partition = step.source.partition
    cursor = step.get(wake_cursor_key(partition))
    if cursor is None:
        return
    second, index = WakeCursor(*cast(list[int], cursor))
    today = math.floor(step.now)
    budget = step.rules.max_wakes_per_tick
    visited = 0
    while second <= today and visited < budget:
        step.put(wake_cursor_key(partition), [second, index])  # where _schedule looks
        end = _wake_size(step, partition, second)
        while index < end and visited < budget:
            entry = wake_entry_key(partition, second, index)
            due = decode_wake_entry(step.get(entry))
            step.delete(entry)
            index += 1
            visited += _visit(step, due, second, budget - visited)
        if index < end or _wake_size(step, partition, second) > index:
            break  # out of budget, or entries for this second came meanwhile
        if index:
            step.delete(wake_size_key(partition, second))
        index = 0
        if second == today:
            break
        second += 1
    step.put(wake_cursor_key(partition), [second, index])


def _visit(step: _Step, due: WakeEntry, second: int, budget: int) -> int:
    """Do one wake entry's work; the pieces of work it took."""
    match due:
        case WakeBusiness(business_id):
            _wake(step, business_id, second)
        case ForgetLead(business_id, lead_id):
            _forget(step, business_id, lead_id)
        case ReleaseLead(business_id, lead_id):
            _release(step, business_id, lead_id)
        case ExpireLead(business_id, lead_id):
            _expire(step, business_id, lead_id)
        case SweepRun(business_id, run_id):
            return _sweep(step, business_id, run_id, budget)
        case ForgetRun(business_id, run_id):
            _forget_run(step, business_id, run_id)
    return 1


def _on_control(step: _Step, control: BusinessControl) -> None:
    bid = control.business_id
    business = _load(step, bid)
    business["limit"] = control.limit
    business["paused"] = control.paused
    business["window"] = None if control.window is None else control.window.to_dict()
    business["retry"] = None if control.retry is None else control.retry.to_dict()
    window, retry = _window_of(business, step.rules), _retry_of(business, step.rules)
    step.note(
        "control",
        bid,
        None,
        f"business {bid}: limit {_limit(business, step.rules)}"
        f"{' (default)' if control.limit is None else ''},"
        f" {'paused' if control.paused else 'running'},"
        f" window {'always open' if window is None else window.describe()},"
        f" retries {'off' if retry is None else retry.describe()};"
        f" {len(business['active'])} active, {waiting_count(business)} waiting",
    )
    _fill(step, business, bid)
    _save(step, bid, business)


_HANDLERS: dict[type[InputRecord], Callable[[_Step, Any], None]] = {
    LeadRequest: _on_lead,
    Withdrawal: _on_withdrawal,
    CallStatus: _on_status,
    Tick: _on_tick,
    BusinessControl: _on_control,
}


# -- queue ---------------------------------------------------------------------------


def _enqueue(
    step: _Step, business: Business, bid: str, lead_id: str, lead: Lead, front: bool
) -> None:
    """Put a lead at the back (or the front) of its queue: its priority (or FRONT_LEVEL)
    and its zone. At the back, a lead of a run right after the run's segment there
    joins that segment (rule 8)."""
    name = queue_name(FRONT_LEVEL if front else lead["priority"], lead["timezone"])
    head, tail, since = business["queues"].get(name, QueueLevel(0, 0, step.now))
    run_id, index = lead["run_id"], lead["run_index"]
    if front:
        head -= 1
        position = head
        since = step.now
        step.put(queue_key(bid, name, position), lead_id)
    else:
        last = step.peek(queue_key(bid, name, tail - 1)) if tail > head else None
        if (
            run_id is not None
            and index is not None
            and isinstance(last, list)
            and last[0] == run_id
            and last[1] + last[2] == index
        ):
            position = tail - 1
            step.put(queue_key(bid, name, position), [run_id, last[1], last[2] + 1])
        else:
            position = tail
            tail += 1
            entry: object = lead_id if run_id is None else [run_id, index, 1]
            step.put(queue_key(bid, name, position), entry)
    business["queues"][name] = QueueLevel(head, tail, since)
    lead["queued_at"] = QueuePosition(name, position)
    lead["waiting_since"] = step.now


def _dequeue(step: _Step, business: Business, bid: str, name: str) -> str | None:
    """Take the next lead id of a queue; None when its head entry stood for no lead
    that can still be dialed (a segment of a withdrawn run, skipped whole)."""
    head, tail, since = business["queues"][name]
    key = queue_key(bid, name, head)
    entry = step.peek(key)
    lead_id: str | None = None
    stays = False
    if isinstance(entry, str):
        lead_id = entry
    elif isinstance(entry, list):
        run_id, first, count = cast(tuple[str, int, int], tuple(entry))
        run = _peek_run(step, bid, run_id)
        if run is None or not run["withdrawn"]:
            found = step.peek(run_lead_key(bid, run_id, first))
            lead_id = found if isinstance(found, str) else None
            if count > 1:
                step.put(key, [run_id, first + 1, count - 1])
                stays = True
    if not stays:
        step.delete(key)
        head += 1
    if head == tail:
        del business["queues"][name]
    else:
        business["queues"][name] = QueueLevel(
            head, tail, _head_since(step, bid, name, head, since)
        )
    return lead_id


def _head_since(step: _Step, bid: str, name: str, head: int, default: float) -> float:
    """Since when the lead at a queue's head waits (the head's entry may be stale)."""
    entry = step.peek(queue_key(bid, name, head))
    if isinstance(entry, list):
        entry = step.peek(run_lead_key(bid, entry[0], entry[1]))
    lead = _peek_lead(step, bid, entry) if isinstance(entry, str) else None
    return default if lead is None else lead["waiting_since"]


def _open_queue(step: _Step, business: Business, bid: str) -> str | None:
    """The queue whose head goes next: the highest level, then the oldest head, among
    those whose calling window is open now (rule 11)."""
    window = _window_of(business, step.rules)
    best: str | None = None
    best_order: tuple[int, float] | None = None
    for name, queue in business["queues"].items():
        if window is not None and not _zone_open(step, bid, window, name):
            continue
        order = queue_order(name, queue)
        if best_order is None or order > best_order:
            best, best_order = name, order
    return best


def _zone_open(step: _Step, bid: str, window: CallingWindow, name: str) -> bool:
    zone = queue_parts(name)[1] or window.timezone
    known = step.open_zones.get((bid, zone))
    if known is None:
        known = step.open_zones[(bid, zone)] = is_open(window, zone, step.now)
    return known


def _fill(step: _Step, business: Business, bid: str) -> None:
    """Rule 2: refill free slots from the queues, right now. A lead that is no longer to
    be dialed (withdrawn, expired, its entry stale) is skipped, at most
    max_skips_per_event of them; then the next tick goes on (rule 8)."""
    skips = step.rules.max_skips_per_event
    while (
        business["queues"]
        and not business["paused"]
        and len(business["active"]) < _limit(business, step.rules)
    ):
        name = _open_queue(step, business, bid)
        if name is None:
            return  # every waiting lead is out of its window: woken when one opens
        lead_id = _dequeue(step, business, bid, name)
        lead = None if lead_id is None else _peek_lead(step, bid, lead_id)
        if lead_id is not None and lead is not None and lead["state"] == "waiting":
            if _withdrawn(step, bid, lead):
                reason = f"run {lead['run_id']} was withdrawn"
                lead = _get_lead(step, bid, lead_id)
                _end(step, business, bid, lead_id, lead, "waiting", "withdrawn", reason)
            elif _expired(step, lead):
                lead = _get_lead(step, bid, lead_id)
                _end(
                    step,
                    business,
                    bid,
                    lead_id,
                    lead,
                    "waiting",
                    "expired",
                    NOT_DIALED_BEFORE_EXPIRY,
                )
            else:
                _grant(step, business, bid, lead_id)
                continue
        skips -= 1
        if skips <= 0 and business["queues"]:
            business["refill_at"] = step.now
            step.note(
                "refill-deferred",
                bid,
                None,
                f"business {bid}: {step.rules.max_skips_per_event} queue entries of leads"
                " no longer to be dialed skipped; the next tick goes on",
            )
            return


def _grant(step: _Step, business: Business, bid: str, lead_id: str) -> None:
    lead = _get_lead(step, bid, lead_id)
    now, rules = step.now, step.rules
    dial_id = dial_id_for(bid, lead_id, lead["attempt"])
    dial_by = now + rules.dial_deadline
    if lead["expires_at"] is not None:
        dial_by = min(dial_by, lead["expires_at"])  # rule 10
    window = _window_of(business, rules)
    if window is not None:  # rule 11
        dial_by = min(dial_by, closes_at(window, lead["timezone"] or window.timezone, now))
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
    _move(step, business, bid, lead, "waiting", "active")
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
    lead_id = slot["lead_id"]
    lead = _get_lead(step, bid, lead_id)
    if action is RETRY:
        _refused(step, business, bid, lead_id, lead, slot, status)
        return
    reason = status.reason
    if status.error_code is not None and not reason:
        reason = f"error {status.error_code}"
    outcome = cast(TerminalStatus, status.status)  # only terminal statuses end a call
    due = _retry_due(step, business, bid, lead, outcome)
    if due is None:
        _end(
            step,
            business,
            bid,
            lead_id,
            lead,
            "active",
            outcome,
            reason,
            slot,
            status.dial_id,
        )
        return
    _tell(step, bid, lead_id, lead, outcome, reason, slot, status.dial_id, final=False)
    step.note(
        "retry-scheduled",
        bid,
        lead_id,
        f"lead {lead_id} of business {bid}: attempt {lead['attempt']} ended {outcome};"
        f" attempt {lead['attempt'] + 1} at {to_iso(due)}; dial {status.dial_id} frees"
        " its slot",
    )
    lead["attempt"] += 1
    _schedule_lead(step, business, bid, lead_id, lead, "active", due)
    _put_lead(step, bid, lead_id, lead)


def _retry_due(
    step: _Step, business: Business, bid: str, lead: Lead, outcome: TerminalStatus
) -> float | None:
    """Rule 13: when the lead's next attempt is due, or None: this outcome is final."""
    policy = _retry_of(business, step.rules)
    if (
        policy is None
        or outcome not in policy.on
        or lead["attempt"] >= policy.max_attempts
        or _withdrawn(step, bid, lead)
    ):
        return None
    due = step.now + policy.delay(lead["attempt"])
    if lead["expires_at"] is not None and due >= lead["expires_at"]:
        return None
    return due


def _refused(
    step: _Step,
    business: Business,
    bid: str,
    lead_id: str,
    lead: Lead,
    slot: Slot,
    status: CallStatus,
) -> None:
    """The dialer refused a stale command: no call was placed. The lead goes back to the
    front as its next attempt, while attempts remain and it is still to be dialed."""
    if _withdrawn(step, bid, lead):
        _end(step, business, bid, lead_id, lead, "active", "withdrawn", "withdrawn")
        return
    if _expired(step, lead):
        _end(
            step,
            business,
            bid,
            lead_id,
            lead,
            "active",
            "expired",
            NOT_DIALED_BEFORE_EXPIRY,
        )
        return
    if lead["attempt"] >= _max_attempts(business, step.rules):
        reason = f"{status.reason} on all {lead['attempt']} attempts"
        _end(
            step,
            business,
            bid,
            lead_id,
            lead,
            "active",
            "canceled",
            reason,
            slot,
            status.dial_id,
        )
        return
    lead["attempt"] += 1
    _enqueue(step, business, bid, lead_id, lead, front=True)
    _move(step, business, bid, lead, "active", "waiting")
    _put_lead(step, bid, lead_id, lead)
    step.note(
        "dial-refused",
        bid,
        lead_id,
        f"dial {status.dial_id} was refused ({status.reason}); lead"
        f" {lead_id} goes back to the front as attempt {lead['attempt']}",
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


def _next_wake(step: _Step, bid: str, business: Business) -> float | None:
    times: list[float] = list(business["held"].values())
    for slot in business["active"].values():
        times.append(slot["lease_until"])
        if slot["resend_at"] is not None:
            times.append(slot["resend_at"])
    if business["refill_at"] is not None:
        times.append(business["refill_at"])
    window = _window_of(business, step.rules)
    if window is not None and not business["paused"]:
        for name in business["queues"]:  # rule 11: woken when a closed window opens
            if not _zone_open(step, bid, window, name):
                zone = queue_parts(name)[1] or window.timezone
                opens = next_open(window, zone, step.now)
                times.append(min(opens, step.now + WINDOW_WAKE_AT_MOST))
    return min(times) if times else None


def _wake_size(step: _Step, partition: int, second: int) -> int:
    return cast(int, step.get(wake_size_key(partition, second)) or 0)


def _schedule(step: _Step, due: WakeEntry, bucket: int) -> int:
    """Append `due` to the wake bucket of second `bucket` of this partition (or of the
    cursor's second, when that one is past); the bucket it went to."""
    partition = step.source.partition
    cursor = step.get(wake_cursor_key(partition))
    if cursor is None:  # from now on: the first entry may be far ahead of the next ones
        step.put(wake_cursor_key(partition), [min(bucket, math.floor(step.now)), 0])
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
        if lead["run_id"] is not None and lead["run_index"] is not None:
            step.delete(run_lead_key(bid, lead["run_id"], lead["run_index"]))
        step.note(
            "lead-forgotten",
            bid,
            lead_id,
            f"lead {lead_id} of business {bid} forgotten"
            f" {step.rules.lead_retention:g}s after its outcome ({lead['outcome']})",
        )


def _forget_run(step: _Step, bid: str, run_id: str) -> None:
    """A run's record goes `lead_retention` after its last lead ended (rule 12)."""
    run = _peek_run(step, bid, run_id)
    if (
        run is not None
        and not open_leads(run)
        and run["settled_at"] is not None
        and step.now >= run["settled_at"] + step.rules.lead_retention
    ):
        step.delete(run_key(bid, run_id))
        step.note(
            "run-forgotten",
            bid,
            None,
            f"run {run_id} of business {bid} forgotten"
            f" {step.rules.lead_retention:g}s after its last lead ended",
        )


def _release(step: _Step, bid: str, lead_id: str) -> None:
    """Rule 10: a scheduled lead whose time has come enters its queue (or ends, if it
    was withdrawn or expired meanwhile)."""
    lead = _peek_lead(step, bid, lead_id)
    if lead is None or lead["state"] != "scheduled" or lead["due"] is None:
        return
    if lead["due"] > step.now:  # visited early in its second: the next tick
        _schedule(step, ReleaseLead(bid, lead_id), math.floor(lead["due"]))
        return
    business = _load(step, bid)
    lead = _get_lead(step, bid, lead_id)
    if _withdrawn(step, bid, lead):
        _end(step, business, bid, lead_id, lead, "scheduled", "withdrawn", "withdrawn")
    elif _expired(step, lead):
        _end(
            step,
            business,
            bid,
            lead_id,
            lead,
            "scheduled",
            "expired",
            NOT_DIALED_BEFORE_EXPIRY,
        )
    else:
        lead["due"] = None
        _enqueue(step, business, bid, lead_id, lead, front=False)
        _move(step, business, bid, lead, "scheduled", "waiting")
        _put_lead(step, bid, lead_id, lead)
        step.note(
            "lead-released",
            bid,
            lead_id,
            f"lead {lead_id} of business {bid}: its time has come; it waits for a slot"
            f" (attempt {lead['attempt']})",
        )
        _fill(step, business, bid)
    _save(step, bid, business)


def _expire(step: _Step, bid: str, lead_id: str) -> None:
    """Rule 10: a lead not dialed by its `expires_at` ends `expired`."""
    lead = _peek_lead(step, bid, lead_id)
    if lead is None or lead["state"] not in ("waiting", "scheduled"):
        return
    if not _expired(step, lead):
        return
    business = _load(step, bid)
    lead = _get_lead(step, bid, lead_id)
    _end(
        step,
        business,
        bid,
        lead_id,
        lead,
        lead["state"],
        "expired",
        NOT_DIALED_BEFORE_EXPIRY,
    )
    _fill(step, business, bid)
    _save(step, bid, business)


def _sweep(step: _Step, bid: str, run_id: str, budget: int) -> int:
    """Rule 12: end the next slice of a withdrawn run's leads not yet dialed (at most
    `budget`); the pieces of work it took."""
    run = _peek_run(step, bid, run_id)
    if run is None or not run["withdrawn"] or run["swept"] >= run["leads"]:
        return 1
    business = _load(step, bid)
    start = run["swept"]
    end = min(run["leads"], start + max(1, budget))
    for index in range(start, end):
        lead_id = step.peek(run_lead_key(bid, run_id, index))
        if not isinstance(lead_id, str):
            continue  # forgotten
        lead = _peek_lead(step, bid, lead_id)
        if lead is None or lead["state"] not in ("waiting", "scheduled"):
            continue
        lead = _get_lead(step, bid, lead_id)
        reason = f"run {run_id} was withdrawn"
        _end(step, business, bid, lead_id, lead, lead["state"], "withdrawn", reason)
    swept = _load_run(step, bid, run_id)
    swept["swept"] = end
    step.put(run_key(bid, run_id), swept)
    if end < swept["leads"]:
        _schedule(step, SweepRun(bid, run_id), math.floor(step.now))
    _fill(step, business, bid)
    _save(step, bid, business)
    return end - start


def _wake(step: _Step, bid: str, bucket: int) -> None:
    """Rules 3, 5, 6 over time: expire leases, resend silent dials, drop held statuses;
    and refill, when a window opened or skipping left slots to fill."""
    value = step.get(business_key(bid))
    if value is None:
        return
    business = decode_business(value)
    if business["wake"] == bucket:
        business["wake"] = None
    business["refill_at"] = None
    now = step.now
    for dial_id, slot in list(business["active"].items()):
        if now >= slot["lease_until"]:
            del business["active"][dial_id]
            reason = f"no final status; lease ran out in phase {slot['status']}"
            lead_id = slot["lead_id"]
            _end(
                step,
                business,
                bid,
                lead_id,
                _get_lead(step, bid, lead_id),
                "active",
                "expired",
                reason,
                slot,
                dial_id,
            )
            step.note(
                "lease-expired",
                bid,
                lead_id,
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
