"""The limiter's state as its table holds it: keys, typed values, and their JSON.

The rules (`streams/limiter_table.py`) read and write one Faust table; every value is
JSON on the changelog and in the store. Here is what each key holds, typed as what it
decodes to, and how it is read back:

    b␟BIZ                  Business: active slots, its queues, held dial ids, limit,
                           paused, window, retry, counts, open runs, next wake
    l␟BIZ␟LEAD             Lead: state, attempt, dial ids used, outcome (dedupe), where
                           it waits (QueuePosition), its run, schedule and zone
    q␟BIZ␟QUEUE␟N          position N of a queue: a waiting lead id, or a segment
                           [run, first index, count] of that run's list
    r␟BIZ␟RUN              Run: its figures, whether withdrawn, its list's length
    rl␟BIZ␟RUN␟I           the lead id at index I of a run's list (arrival order)
    o␟BIZ␟DIAL             HeldStatus list: statuses held for a dial we do not know yet
    wc␟P / wn␟P␟S / w␟P␟S␟I  WakeCursor, bucket sizes and WakeEntry of partition P
    c␟P                    Cursors: the partition's next offset to apply, per topic
    x␟P                    the shell's records not yet delivered (`streams/shell/units.py`)

Values written before these types existed decode too, so that a worker upgraded in
place reads its table as it was: a business's held dial ids under "orphans", a
business to wake as its bare id, and businesses and leads written before runs,
schedules and windows (their new fields take their defaults).

No rules here, and nothing that changes the table: decoding a value shares it (read
only), unless the value is already a copy.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any, Literal, NamedTuple, TypedDict, cast

from streams.topics import CallStatus, DeadLetter, Outcome

#: Reads one key of the table: its JSON value, or None when the key is absent.
Read = Callable[[str], object]

#: How far a call has got: granted by us, then the dialer's live statuses.
Phase = Literal["granted", "queued", "initiated", "ringing", "in-progress"]
#: A lead waits for its time (not in a queue), waits for a slot, holds one, or has its
#: final outcome.
LeadState = Literal["scheduled", "waiting", "active", "done"]

# -- values --------------------------------------------------------------------------


class Slot(TypedDict):
    """A call in flight: a lease on one of its business's slots."""

    lead_id: str
    attempt: int
    phone: str
    granted_at: float
    dial_by: float
    status: Phase
    sequence: int | None
    call_sid: str | None
    resends: int
    resend_at: float | None
    lease_until: float


class QueueLevel(NamedTuple):
    """One priority level of a business's queue: positions head..tail-1 wait, the head
    since `since`. (JSON: [head, tail, since].)"""

    head: int
    tail: int
    since: float


class Business(TypedDict):
    """A business with something live, waiting, scheduled, held or configured."""

    #: dial id -> its slot
    active: dict[str, Slot]
    #: queue name (`queue_name`: priority level, and a lead's own zone) -> that queue
    queues: dict[str, QueueLevel]
    #: dial id -> until when statuses for it are held, waiting for its grant
    held: dict[str, float]
    #: the second of the wake bucket it is in (None: none)
    wake: int | None
    #: its own limit (None: the default)
    limit: int | None
    paused: bool
    #: its own calling window and retry policy, as JSON (None: the defaults)
    window: dict[str, Any] | None
    retry: dict[str, Any] | None
    #: leads in state waiting, and scheduled (queues may also hold stale entries)
    waiting: int
    scheduled: int
    #: runs with leads not yet final: how many, and the ids of up to MAX_LISTED_RUNS
    open_runs: int
    runs: list[str]
    #: when to go on filling, after an event skipped its share of stale entries
    refill_at: float | None


#: Runs a business lists by id (`open_runs` counts them all).
MAX_LISTED_RUNS = 32


class Run(TypedDict):
    """A bulk run of one business: its figures, and the list of its leads (`rl` keys)
    for withdrawing them in slices."""

    total: int
    waiting: int
    scheduled: int
    live: int
    #: final outcome -> leads that ended so
    outcomes: dict[str, int]
    withdrawn: bool
    #: length of the run's list; the next index the sweep of a withdrawal visits
    leads: int
    swept: int
    #: since when nothing of it is open (None: something is)
    settled_at: float | None


class QueuePosition(NamedTuple):
    """Where a lead waits: position `position` of queue `queue`. (JSON: a list.)"""

    queue: str
    position: int


class Lead(TypedDict):
    """One lead request, kept to refuse its id again (rule 6)."""

    state: LeadState
    phone: str
    priority: int
    attempt: int
    #: every dial id it was granted, oldest first
    dials: list[str]
    outcome: Outcome | None
    queued_at: QueuePosition
    waiting_since: float
    #: its run and its index in the run's list (None: no run)
    run_id: str | None
    run_index: int | None
    not_before: float | None
    expires_at: float | None
    #: the called party's zone (None: judged in the business's)
    timezone: str | None
    #: when a scheduled lead enters its queue
    due: float | None
    #: withdrawn while on a call: it ends with that call, never retried
    withdrawn: bool


#: A lead's fields added after leads were first written, with the value of a lead
#: written before them: the encoding leaves these values out.
LEAD_DEFAULTS: dict[str, object] = {
    "run_id": None,
    "run_index": None,
    "not_before": None,
    "expires_at": None,
    "timezone": None,
    "due": None,
    "withdrawn": False,
}
#: The same for a business.
BUSINESS_DEFAULTS: dict[str, object] = {
    "window": None,
    "retry": None,
    "scheduled": 0,
    "open_runs": 0,
    "runs": [],
    "refill_at": None,
}


class HeldStatus(NamedTuple):
    """A status for a dial we do not know yet, with where it came from (to dead-letter it
    if no grant claims it). (JSON: {"status": ..., "source": ...}.)"""

    status: CallStatus
    source: DeadLetter


class WakeCursor(NamedTuple):
    """The next wake entry of a partition to visit: entry `entry` of the bucket of second
    `second`. (JSON: [second, entry].)"""

    second: int
    entry: int


class WakeBusiness(NamedTuple):
    """Wake entry: visit a business (expire leases, resend dials, drop held statuses)."""

    business_id: str


class ForgetLead(NamedTuple):
    """Wake entry: forget a finished lead's record, its retention over."""

    business_id: str
    lead_id: str


class ReleaseLead(NamedTuple):
    """Wake entry: a scheduled lead's time may have come (`not_before`, a retry delay)."""

    business_id: str
    lead_id: str


class ExpireLead(NamedTuple):
    """Wake entry: a lead's `expires_at` may have come."""

    business_id: str
    lead_id: str


class SweepRun(NamedTuple):
    """Wake entry: end the next slice of a withdrawn run's leads not yet dialed."""

    business_id: str
    run_id: str


class ForgetRun(NamedTuple):
    """Wake entry: forget a settled run's record, its retention over."""

    business_id: str
    run_id: str


WakeEntry = WakeBusiness | ForgetLead | ReleaseLead | ExpireLead | SweepRun | ForgetRun
#: Wake entries are JSON lists tagged with their kind: [tag, field, ...].
_WAKE_TAGS: dict[type[WakeEntry], str] = {
    WakeBusiness: "business",
    ForgetLead: "lead",
    ReleaseLead: "release",
    ExpireLead: "expire",
    SweepRun: "sweep",
    ForgetRun: "run",
}
_WAKE_KINDS: dict[str, type[WakeEntry]] = {tag: kind for kind, tag in _WAKE_TAGS.items()}

#: Per input topic (its real name), the offset of the next record to apply.
Cursors = dict[str, int]


#: A sentinel no value equals: every field without a default is kept.
_KEPT = object()
#: The defaults that are lists, of which every decoded value needs a copy of its own.
_LEAD_LISTS = tuple(k for k, v in LEAD_DEFAULTS.items() if isinstance(v, list))
_BUSINESS_LISTS = tuple(k for k, v in BUSINESS_DEFAULTS.items() if isinstance(v, list))


def _with_defaults(
    value: object, defaults: dict[str, object], lists: tuple[str, ...]
) -> dict[str, Any]:
    # One merge, then fresh copies of the mutable defaults only: this runs on every
    # event, so it is kept to the few fields that can be missing.
    data: dict[str, Any] = {**defaults, **cast(dict[str, Any], value)}
    for key in lists:
        if data[key] is defaults[key]:
            data[key] = list(cast(list[object], defaults[key]))
    return data


def _without_defaults(
    record: Mapping[str, object], defaults: dict[str, object]
) -> dict[str, object]:
    data = dict(record)
    for key, default in defaults.items():
        if data.get(key, _KEPT) == default:
            del data[key]
    return data


def decode_business(value: object) -> Business:
    """A business from its JSON."""
    data = _with_defaults(value, BUSINESS_DEFAULTS, _BUSINESS_LISTS)
    data["queues"] = {name: QueueLevel(*q) for name, q in data["queues"].items()}
    if "orphans" in data:  # written before the rename
        data["held"] = data.pop("orphans")
    if "waiting" not in data:  # written before the count: no stale entries then
        data["waiting"] = sum(q.tail - q.head for q in data["queues"].values())
    return cast(Business, data)


def encode_business(business: Business) -> dict[str, object]:
    data = _without_defaults(business, BUSINESS_DEFAULTS)
    data["queues"] = {name: list(q) for name, q in business["queues"].items()}
    return data


def decode_lead(value: object) -> Lead:
    data = _with_defaults(value, LEAD_DEFAULTS, _LEAD_LISTS)
    queue, position = data["queued_at"]
    data["queued_at"] = QueuePosition(str(queue), position)  # a level number before
    return cast(Lead, data)


def encode_lead(lead: Lead) -> dict[str, object]:
    data = _without_defaults(lead, LEAD_DEFAULTS)
    data["queued_at"] = list(lead["queued_at"])
    return data


def decode_run(value: object) -> Run:
    return cast(Run, dict(cast(dict[str, Any], value)))


def new_run() -> Run:
    """A run the table does not hold yet."""
    return {
        "total": 0,
        "waiting": 0,
        "scheduled": 0,
        "live": 0,
        "outcomes": {},
        "withdrawn": False,
        "leads": 0,
        "swept": 0,
        "settled_at": None,
    }


def open_leads(run: Run) -> int:
    """A run's leads not yet final."""
    return run["waiting"] + run["scheduled"] + run["live"]


def decode_held(value: object) -> list[HeldStatus]:
    return [
        HeldStatus(CallStatus.from_dict(e["status"]), DeadLetter.from_dict(e["source"]))
        for e in cast(list[dict[str, Any]], value or [])
    ]


def encode_held(held: list[HeldStatus]) -> list[dict[str, object]]:
    return [{"status": h.status.to_dict(), "source": h.source.to_dict()} for h in held]


def decode_wake_entry(value: object) -> WakeEntry:
    if isinstance(value, str):  # a business, as written before entries were tagged
        return WakeBusiness(value)
    tag, *fields = cast(list[str], value)
    return _WAKE_KINDS[tag](*fields)


def encode_wake_entry(entry: WakeEntry) -> list[str]:
    return [_WAKE_TAGS[type(entry)], *entry]


# -- keys ----------------------------------------------------------------------------

_SEP = "\x1f"

#: What a key holds, by its prefix.
KeyKind = Literal[
    "business",
    "lead",
    "queue",
    "run",
    "run-lead",
    "held",
    "wake-cursor",
    "wake-size",
    "wake-entry",
    "cursor",
    "undelivered",
]
_KEY_KINDS: dict[str, KeyKind] = {
    "b": "business",
    "l": "lead",
    "q": "queue",
    "r": "run",
    "rl": "run-lead",
    "o": "held",
    "wc": "wake-cursor",
    "wn": "wake-size",
    "w": "wake-entry",
    "c": "cursor",
    "x": "undelivered",
}


# (f-strings, not a join: a dozen keys per event)
def business_key(business_id: str) -> str:
    return f"b\x1f{business_id}"


def lead_key(business_id: str, lead_id: str) -> str:
    return f"l\x1f{business_id}\x1f{lead_id}"


def queue_key(business_id: str, queue: str, position: int) -> str:
    return f"q\x1f{business_id}\x1f{queue}\x1f{position}"


def queue_name(level: int, zone: str | None) -> str:
    """A business's queue of leads of priority `level` judged in zone `zone` (None: the
    business's own; then the name is the level alone, as before zones)."""
    return str(level) if zone is None else f"{level}@{zone}"


def queue_parts(name: str) -> tuple[int, str | None]:
    """(level, zone) of a queue name."""
    level, _, zone = name.partition("@")
    return int(level), zone or None


def run_key(business_id: str, run_id: str) -> str:
    return f"r\x1f{business_id}\x1f{run_id}"


def run_lead_key(business_id: str, run_id: str, index: int) -> str:
    return f"rl\x1f{business_id}\x1f{run_id}\x1f{index}"


def held_key(business_id: str, dial_id: str) -> str:
    return f"o\x1f{business_id}\x1f{dial_id}"


def cursor_key(partition: int) -> str:
    return f"c\x1f{partition}"


def undelivered_key(partition: int) -> str:
    """Where the shell keeps the partition's records not yet delivered (rule 7)."""
    return f"x\x1f{partition}"


def wake_cursor_key(partition: int) -> str:
    return f"wc\x1f{partition}"


def wake_size_key(partition: int, second: int) -> str:
    return f"wn\x1f{partition}\x1f{second}"


def wake_entry_key(partition: int, second: int, index: int) -> str:
    return f"w\x1f{partition}\x1f{second}\x1f{index}"


def key_kind(key: str) -> KeyKind:
    """What the table holds under `key`."""
    return _KEY_KINDS[key.split(_SEP, 1)[0]]


def is_business_key(key: str) -> bool:
    return key.startswith("b" + _SEP)


def business_id_of(key: str) -> str:
    return key.split(_SEP, 1)[1]


# -- reading -------------------------------------------------------------------------


class QueuedLead(NamedTuple):
    """A waiting lead and its place in its business's queues."""

    queue: str
    position: int
    lead_id: str


def read_business(read: Read, business_id: str) -> Business | None:
    """A business's value (read only), or None when the table does not hold it."""
    value = read(business_key(business_id))
    return None if value is None else decode_business(value)


def read_lead(read: Read, business_id: str, lead_id: str) -> Lead | None:
    """A lead's record (read only), or None: never requested, or forgotten (rule 6)."""
    value = read(lead_key(business_id, lead_id))
    return None if value is None else decode_lead(value)


def read_run(read: Read, business_id: str, run_id: str) -> Run | None:
    """A run's record (read only), or None: unknown, or forgotten."""
    value = read(run_key(business_id, run_id))
    return None if value is None else decode_run(value)


def queue_order(name: str, queue: QueueLevel) -> tuple[int, float]:
    """Which queue's head goes first (highest): the higher level, then the older head."""
    return queue_parts(name)[0], -queue.since


def waiting_leads(read: Read, business_id: str) -> list[QueuedLead]:
    """A business's waiting leads, queue by queue in the order their heads go first
    (rule 2; windows aside), each queue in order. Reads every one of them: for tests
    and tools, not for the rules."""
    business = read_business(read, business_id)
    if business is None:
        return []
    found = []
    for name, queue in sorted(
        business["queues"].items(), key=lambda q: queue_order(*q), reverse=True
    ):
        for position in range(queue.head, queue.tail):
            for lead_id in queue_entry_leads(read, business_id, name, position):
                lead = read_lead(read, business_id, lead_id)
                if lead is not None and lead["state"] == "waiting":
                    found.append(QueuedLead(name, position, lead_id))
    return found


def queue_entry_leads(read: Read, business_id: str, queue: str, position: int) -> list[str]:
    """The lead ids a queue entry stands for: itself, or its segment of a run's list."""
    entry = read(queue_key(business_id, queue, position))
    if isinstance(entry, str):
        return [entry]
    if not isinstance(entry, list):
        return []
    run_id, first, count = entry
    ids = (read(run_lead_key(business_id, run_id, i)) for i in range(first, first + count))
    return [i for i in ids if isinstance(i, str)]


def waiting_count(business: Business) -> int:
    """How many leads a business has waiting."""
    return business["waiting"]


def oldest_waiting_since(business: Business) -> float | None:
    """Since when the longest-waiting lead at the head of one of its queues waits."""
    return min((since for _, _, since in business["queues"].values()), default=None)


def new_business() -> Business:
    """A business the table does not hold yet."""
    return {
        "active": {},
        "queues": {},
        "held": {},
        "wake": None,
        "limit": None,
        "paused": False,
        "window": None,
        "retry": None,
        "waiting": 0,
        "scheduled": 0,
        "open_runs": 0,
        "runs": [],
        "refill_at": None,
    }
