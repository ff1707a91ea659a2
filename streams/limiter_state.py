"""The limiter's state as its table holds it: keys, typed values, and their JSON.

The rules (`streams/limiter_table.py`) read and write one Faust table; every value is
JSON on the changelog and in the store. Here is what each key holds, typed as what it
decodes to, and how it is read back:

    b␟BIZ                  Business: active slots, its queue levels, held dial ids,
                           limit, paused, when it is next woken
    l␟BIZ␟LEAD             Lead: state, attempt, dial ids used, outcome (dedupe), and
                           where it waits (QueuePosition)
    q␟BIZ␟LEVEL␟N          a waiting lead id at position N of a priority level
    o␟BIZ␟DIAL             HeldStatus list: statuses held for a dial we do not know yet
    wc␟P / wn␟P␟S / w␟P␟S␟I  WakeCursor, bucket sizes and WakeEntry of partition P
    c␟P                    Cursors: the partition's next offset to apply, per topic
    x␟P                    the shell's records not yet delivered (`streams/shell/units.py`)

Values written before these types existed decode too, so that a worker upgraded in
place reads its table as it was: a business's held dial ids under "orphans", and a
business to wake as its bare id.

No rules here, and nothing that changes the table: decoding a value shares it (read
only), unless the value is already a copy.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, Literal, NamedTuple, TypedDict, cast

from streams.topics import CallStatus, DeadLetter, Outcome

#: Reads one key of the table: its JSON value, or None when the key is absent.
Read = Callable[[str], object]

#: How far a call has got: granted by us, then the dialer's live statuses.
Phase = Literal["granted", "queued", "initiated", "ringing", "in-progress"]
#: A lead waits for a slot, holds one, or has its outcome.
LeadState = Literal["waiting", "active", "done"]

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
    """A business with something live, waiting, held or configured."""

    #: dial id -> its slot
    active: dict[str, Slot]
    #: priority level (its decimal string: a JSON key) -> that level of the queue
    queues: dict[str, QueueLevel]
    #: dial id -> until when statuses for it are held, waiting for its grant
    held: dict[str, float]
    #: the second of the wake bucket it is in (None: none)
    wake: int | None
    #: its own limit (None: the default)
    limit: int | None
    paused: bool


class QueuePosition(NamedTuple):
    """Where a lead waits: position `position` of queue level `level`. (JSON: a list.)"""

    level: int
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


WakeEntry = WakeBusiness | ForgetLead
#: Wake entries are JSON lists tagged with their kind: [tag, field, ...].
_WAKE_TAGS: dict[type[WakeEntry], str] = {WakeBusiness: "business", ForgetLead: "lead"}
_WAKE_KINDS: dict[str, type[WakeEntry]] = {tag: kind for kind, tag in _WAKE_TAGS.items()}

#: Per input topic (its real name), the offset of the next record to apply.
Cursors = dict[str, int]


def decode_business(value: object) -> Business:
    """A business from its JSON."""
    data: dict[str, Any] = dict(cast(dict[str, Any], value))
    data["queues"] = {level: QueueLevel(*q) for level, q in data["queues"].items()}
    if "orphans" in data:  # written before the rename
        data["held"] = data.pop("orphans")
    return cast(Business, data)


def encode_business(business: Business) -> dict[str, object]:
    data: dict[str, object] = dict(business)
    data["queues"] = {level: list(q) for level, q in business["queues"].items()}
    return data


def decode_lead(value: object) -> Lead:
    data: dict[str, Any] = dict(cast(dict[str, Any], value))
    data["queued_at"] = QueuePosition(*data["queued_at"])
    return cast(Lead, data)


def encode_lead(lead: Lead) -> dict[str, object]:
    data: dict[str, object] = dict(lead)
    data["queued_at"] = list(lead["queued_at"])
    return data


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


def queue_key(business_id: str, level: int | str, position: int) -> str:
    return f"q\x1f{business_id}\x1f{level}\x1f{position}"


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
    """A waiting lead and its place in its business's queue."""

    level: int
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


def waiting_leads(read: Read, business_id: str) -> list[QueuedLead]:
    """A business's waiting leads in the order they will be dialed (rule 2). Reads
    every one of them: for tests and tools, not for the rules."""
    business = read_business(read, business_id)
    if business is None:
        return []
    return [
        QueuedLead(
            int(level), position, cast(str, read(queue_key(business_id, level, position)))
        )
        for level, queue in sorted(business["queues"].items(), key=lambda q: -int(q[0]))
        for position in range(queue.head, queue.tail)
    ]


def waiting_count(business: Business) -> int:
    """How many leads a business has waiting."""
    return sum(tail - head for head, tail, _ in business["queues"].values())


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
    }
