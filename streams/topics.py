"""The contract: topic names, partitioning, and the JSON records on every topic.

Every topic is keyed by the raw UTF-8 `business_id` and has the same partition count,
so that one business's leads, call statuses and ticks always meet in one partition,
on one worker, in one counter. Producers outside Faust (the CRM, the dialer, our CLI)
must hash keys the way Faust/aiokafka and Java do: `murmur2_random` (every producer
of ours is built with it, `streams.kafka.clients`). confluent-kafka's default,
`consistent_random`, would split a business across two partitions and so across two
counters.

Records are validated here and only here; `InvalidRecord` carries a one-line reason
that ends up in the dead-letter topic.
"""

from __future__ import annotations

import base64
import dataclasses
import datetime as _dt
import functools
import json
import math
import re
from collections.abc import Callable
from typing import Any, Final, Literal, TypeGuard, TypeVar, get_args

import orjson

# -- topic names ---------------------------------------------------------------------

LEADS_REQUESTS: Final = "leads.requests"
CALLS_STATUS: Final = "calls.status"
LIMITER_TICKS: Final = "limiter.ticks"
BUSINESS_CONTROL: Final = "business.control"
CALLS_DIAL: Final = "calls.dial"
LEADS_OUTCOMES: Final = "leads.outcomes"
LEADS_DEADLETTER: Final = "leads.deadletter"

#: Topics the worker consumes; they must be co-partitioned (equal partition counts).
INPUT_TOPICS = (LEADS_REQUESTS, CALLS_STATUS, LIMITER_TICKS, BUSINESS_CONTROL)
#: Topics the worker produces to.
OUTPUT_TOPICS = (CALLS_DIAL, LEADS_OUTCOMES, LEADS_DEADLETTER)
ALL_TOPICS = INPUT_TOPICS + OUTPUT_TOPICS

#: The only partitioner any producer of ours may use (the Java/aiokafka murmur2 hash).
PARTITIONER = "murmur2_random"

#: Faust table holding all limiter state; its changelog is `<app_id>-<name>-changelog`.
LIMITER_TABLE = "limiter"


def topic_name(base: str, prefix: str) -> str:
    """The real name of topic `base` under `TOPIC_PREFIX`."""
    return f"{prefix}{base}"


def base_names(prefix: str, bases: tuple[str, ...] = INPUT_TOPICS) -> dict[str, str]:
    """Real name -> base name of the topics `bases` under `TOPIC_PREFIX`: how the worker
    tells which topic a record came from."""
    return {topic_name(base, prefix): base for base in bases}


def app_id(prefix: str, base_app_id: str) -> str:
    """Faust app id; prefixed so that its changelog and internal topics are too."""
    return f"{prefix}{base_app_id}"


def changelog_topic(prefix: str, base_app_id: str) -> str:
    """Faust's changelog of the limiter table; co-partitioned with the inputs too."""
    return f"{app_id(prefix, base_app_id)}-{LIMITER_TABLE}-changelog"


def leader_topic(prefix: str, base_app_id: str) -> str:
    """Faust's assignor's topic: whoever owns its one partition leads the group."""
    return f"{app_id(prefix, base_app_id)}-__assignor-__leader"


def record_key(business_id: str) -> bytes:
    """The key of every record: the raw UTF-8 business id, nothing else."""
    return business_id.encode("utf-8")


#: How long a dialer's producer holds a call status to batch it. A terminal status is
#: what frees a slot: each millisecond it waits is a millisecond added to every refill
#: (slot-free -> next dial). librdkafka still batches what queues up while a request is
#: in flight, so under load the batches stay large.
STATUS_LINGER_MS = 0


# -- time on the wire ----------------------------------------------------------------


def to_iso(ts: float) -> str:
    """Epoch seconds -> ISO-8601 UTC with milliseconds, as used in every record."""
    fraction, second = math.modf(ts)
    micro = round(fraction * 1e6)  # exactly as datetime.fromtimestamp rounds
    if micro >= 1_000_000:
        second, micro = second + 1, micro - 1_000_000
    return f"{_iso_second(int(second))}.{micro // 1000:03d}Z"


@functools.lru_cache(maxsize=4096)
def _iso_second(second: int) -> str:
    moment = _dt.datetime.fromtimestamp(second, tz=_dt.timezone.utc)
    return moment.strftime("%Y-%m-%dT%H:%M:%S")


def from_iso(text: str) -> float:
    """ISO-8601 (with offset or Z) -> epoch seconds; ValueError when it is not one."""
    moment = _dt.datetime.fromisoformat(text.replace("Z", "+00:00"))
    if moment.tzinfo is None:
        raise ValueError(f"timestamp {text!r} has no timezone")
    return moment.timestamp()


# -- records -------------------------------------------------------------------------

LiveStatus = Literal["queued", "initiated", "ringing", "in-progress"]
TerminalStatus = Literal["completed", "busy", "failed", "no-answer", "canceled"]
#: Twilio's CallStatus values, as `calls.status` carries them.
CallStatusName = Literal[LiveStatus, TerminalStatus]
#: How a lead ends (`leads.outcomes`): its call's terminal status, or ours.
Outcome = Literal[TerminalStatus, "expired", "rejected"]

LIVE_STATUSES: tuple[LiveStatus, ...] = get_args(LiveStatus)
TERMINAL_STATUSES: tuple[TerminalStatus, ...] = get_args(TerminalStatus)
CALL_STATUSES: tuple[CallStatusName, ...] = LIVE_STATUSES + TERMINAL_STATUSES
OUTCOMES: tuple[Outcome, ...] = TERMINAL_STATUSES + ("expired", "rejected")
#: Reason a dialer gives when it refuses a command whose dial_by has passed.
DIAL_DEADLINE_PASSED = "dial-deadline-passed"

MIN_PRIORITY, MAX_PRIORITY = 0, 9
_E164 = re.compile(r"^\+[1-9][0-9]{1,14}$")
_MAX_ID_LENGTH = 200


class InvalidRecord(ValueError):
    """A record we cannot use. `reason` is one line; the ids are kept when readable."""

    def __init__(
        self, reason: str, *, lead_id: str | None = None, business_id: str | None = None
    ):
        super().__init__(reason)
        self.reason = reason
        self.lead_id = lead_id
        self.business_id = business_id


#: A record's JSON object, as decoded from its value.
Fields = dict[str, Any]


def _load_object(value: bytes | None) -> Fields:
    if value is None:
        raise InvalidRecord("value is missing (a null record)")
    try:
        data = json.loads(value)
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise InvalidRecord(f"value is not JSON: {exc}") from None
    if not isinstance(data, dict):
        raise InvalidRecord(f"value must be a JSON object, got {type(data).__name__}")
    return data


def _ident(
    data: Fields, name: str, *, lead_id: str | None = None, business_id: str | None = None
) -> str:
    value = data.get(name)
    if not isinstance(value, str) or not value.strip():
        raise InvalidRecord(
            f"{name} is missing or not a non-empty string",
            lead_id=lead_id,
            business_id=business_id,
        )
    if len(value) > _MAX_ID_LENGTH:
        raise InvalidRecord(
            f"{name} is longer than {_MAX_ID_LENGTH} characters",
            lead_id=lead_id,
            business_id=business_id,
        )
    return value


def _optional_str(data: Fields, name: str, *, lead_id: str, business_id: str) -> str | None:
    value = data.get(name)
    if value is not None and not isinstance(value, str):
        raise InvalidRecord(
            f"{name} must be a string when given", lead_id=lead_id, business_id=business_id
        )
    return value


def _check_key(key: bytes | None, *, business_id: str, lead_id: str | None) -> None:
    if key != record_key(business_id):
        raise InvalidRecord(
            f"record key {key!r} is not the raw UTF-8 business_id {business_id!r}"
            " (records must be keyed by business_id to reach the right partition)",
            lead_id=lead_id,
            business_id=business_id,
        )


def _timestamp(
    data: Fields, name: str, *, lead_id: str | None = None, business_id: str | None = None
) -> float:
    raw = data.get(name)
    try:
        if isinstance(raw, str):
            return from_iso(raw)
        if (
            isinstance(raw, (int, float))
            and not isinstance(raw, bool)
            and math.isfinite(raw)
        ):
            return float(raw)
    except ValueError:
        pass
    raise InvalidRecord(
        f"{name} must be an ISO-8601 timestamp with a timezone",
        lead_id=lead_id,
        business_id=business_id,
    )


def _is_int(value: object) -> TypeGuard[int]:
    return isinstance(value, int) and not isinstance(value, bool)


_R = TypeVar("_R", bound="Record")


@dataclasses.dataclass(frozen=True)
class Record:
    """Base: JSON encoding shared by every record type."""

    def to_dict(self) -> Fields:
        # Every field is a scalar: a shallow dict is all of it (dataclasses.asdict
        # copies recursively, and was a tenth of the worker's time).
        return {
            k: v for k in self.__dataclass_fields__ if (v := getattr(self, k)) is not None
        }

    @classmethod
    def from_dict(cls: type[_R], fields: Fields) -> _R:
        """The record `to_dict` gave these fields for (they are trusted: ours)."""
        return cls(**fields)

    def encode(self) -> bytes:
        return orjson.dumps(self.to_dict())


@dataclasses.dataclass(frozen=True)
class LeadRequest(Record):
    """`leads.requests`, from the CRM. Higher `priority` (0-9, default 0) dials first."""

    lead_id: str
    business_id: str
    phone: str
    priority: int = 0

    @classmethod
    def decode(cls, value: bytes | None, key: bytes | None) -> LeadRequest:
        data = _load_object(value)
        readable = data.get("lead_id")
        lead_id: str | None = readable if isinstance(readable, str) else None
        business_id = _ident(data, "business_id", lead_id=lead_id)
        lead_id = _ident(data, "lead_id", lead_id=lead_id, business_id=business_id)
        _check_key(key, business_id=business_id, lead_id=lead_id)
        phone = data.get("phone")
        if not isinstance(phone, str) or not _E164.match(phone):
            raise InvalidRecord(
                f"phone {phone!r} is not an E.164 number like +14155550100",
                lead_id=lead_id,
                business_id=business_id,
            )
        priority = data.get("priority", 0)
        if priority is None:
            priority = 0
        if not _is_int(priority) or not MIN_PRIORITY <= priority <= MAX_PRIORITY:
            raise InvalidRecord(
                f"priority must be an integer {MIN_PRIORITY}-{MAX_PRIORITY},"
                f" got {priority!r}",
                lead_id=lead_id,
                business_id=business_id,
            )
        return cls(lead_id=lead_id, business_id=business_id, phone=phone, priority=priority)


@dataclasses.dataclass(frozen=True)
class CallStatus(Record):
    """`calls.status`, from the dialer: Twilio's CallStatus for one dial."""

    dial_id: str
    lead_id: str
    business_id: str
    status: str
    at: str
    call_sid: str | None = None
    sequence: int | None = None
    reason: str | None = None
    error_code: int | None = None

    @classmethod
    def decode(cls, value: bytes | None, key: bytes | None) -> CallStatus:
        data = _load_object(value)
        business_id = _ident(data, "business_id")
        lead_id = _ident(data, "lead_id", business_id=business_id)
        ids = {"lead_id": lead_id, "business_id": business_id}
        dial_id = _ident(data, "dial_id", **ids)
        _check_key(key, **ids)
        status = data.get("status")
        if status not in CALL_STATUSES:
            raise InvalidRecord(
                f"unknown call status {status!r}; expected one of "
                + ", ".join(CALL_STATUSES),
                **ids,
            )
        _timestamp(data, "at", **ids)
        sequence = data.get("sequence")
        if sequence is not None and not _is_int(sequence):
            raise InvalidRecord(f"sequence must be an integer, got {sequence!r}", **ids)
        error_code = data.get("error_code")
        if error_code is not None and not _is_int(error_code):
            raise InvalidRecord(f"error_code must be an integer, got {error_code!r}", **ids)
        return cls(
            dial_id=dial_id,
            lead_id=lead_id,
            business_id=business_id,
            status=status,
            at=data["at"],
            call_sid=_optional_str(data, "call_sid", **ids),
            sequence=sequence,
            reason=_optional_str(data, "reason", **ids),
            error_code=error_code,
        )


@dataclasses.dataclass(frozen=True)
class Tick(Record):
    """`limiter.ticks`: the clock, as events, so that only the agent writes state."""

    partition: int
    at: str

    @classmethod
    def decode(cls, value: bytes | None, key: bytes | None) -> Tick:
        data = _load_object(value)
        partition = data.get("partition")
        if not _is_int(partition) or partition < 0:
            raise InvalidRecord(
                f"tick partition must be a non-negative integer, got {partition!r}"
            )
        _timestamp(data, "at")
        return cls(partition=partition, at=data["at"])


@dataclasses.dataclass(frozen=True)
class BusinessControl(Record):
    """`business.control` (compacted): the whole runtime configuration of one business.

    Each record replaces the previous one, so compaction keeps exactly the current
    configuration. `limit` null means the default (MAX_OUTBOUND_CALLS_PER_BUSINESS).
    """

    business_id: str
    limit: int | None = None
    paused: bool = False

    @classmethod
    def decode(cls, value: bytes | None, key: bytes | None) -> BusinessControl:
        data = _load_object(value)
        business_id = _ident(data, "business_id")
        _check_key(key, business_id=business_id, lead_id=None)
        limit = data.get("limit")
        if limit is not None and (not _is_int(limit) or limit < 0):
            raise InvalidRecord(
                f"limit must be a non-negative integer or null, got {limit!r}",
                business_id=business_id,
            )
        paused = data.get("paused", False)
        if not isinstance(paused, bool):
            raise InvalidRecord(
                f"paused must be true or false, got {paused!r}", business_id=business_id
            )
        return cls(business_id=business_id, limit=limit, paused=paused)

    def to_dict(self) -> Fields:
        return {k: getattr(self, k) for k in self.__dataclass_fields__}


@dataclasses.dataclass(frozen=True)
class DialCommand(Record):
    """`calls.dial`, to the dialer. Never place it after `dial_by`; dedupe on `dial_id`."""

    dial_id: str
    lead_id: str
    business_id: str
    phone: str
    attempt: int
    granted_at: str
    dial_by: str

    @classmethod
    def decode(cls, value: bytes | None, key: bytes | None = None) -> DialCommand:
        data = _load_object(value)
        try:
            command = cls(**{f.name: data[f.name] for f in dataclasses.fields(cls)})
        except KeyError as exc:
            raise InvalidRecord(f"dial command lacks {exc.args[0]}") from None
        from_iso(command.dial_by)
        return command


@dataclasses.dataclass(frozen=True)
class LeadOutcome(Record):
    """`leads.outcomes`, to the CRM: the final word on one lead."""

    lead_id: str
    business_id: str
    outcome: str
    dial_id: str | None = None
    call_sid: str | None = None
    reason: str | None = None
    attempt: int | None = None

    @classmethod
    def decode(cls, value: bytes | None, key: bytes | None = None) -> LeadOutcome:
        data = _load_object(value)
        fields = {f.name for f in dataclasses.fields(cls)}
        return cls(**{k: v for k, v in data.items() if k in fields})


@dataclasses.dataclass(frozen=True)
class DeadLetter(Record):
    """`leads.deadletter`: a record we could not use, with where it came from, bytes intact.

    `key` and `value` are base64 of the original bytes (null when the record had none).
    """

    reason: str
    topic: str
    partition: int
    offset: int
    key: str | None
    value: str | None

    @classmethod
    def of(
        cls,
        reason: str,
        topic: str,
        partition: int,
        offset: int,
        key: bytes | None,
        value: bytes | None,
    ) -> DeadLetter:
        return cls(
            reason=reason,
            topic=topic,
            partition=partition,
            offset=offset,
            key=_b64(key),
            value=_b64(value),
        )

    @classmethod
    def decode(cls, value: bytes | None, key: bytes | None = None) -> DeadLetter:
        return cls(**_load_object(value))

    def original_value(self) -> bytes | None:
        return None if self.value is None else base64.b64decode(self.value)

    def to_dict(self) -> Fields:
        return {k: getattr(self, k) for k in self.__dataclass_fields__}


def _b64(data: bytes | None) -> str | None:
    return None if data is None else base64.b64encode(data).decode("ascii")


#: What the worker consumes: one record type per input topic.
InputRecord = LeadRequest | CallStatus | Tick | BusinessControl
#: Decodes a record's value and key, or raises InvalidRecord.
Decoder = Callable[[bytes | None, bytes | None], InputRecord]

#: What the worker decodes from each input topic.
INPUT_RECORDS: dict[str, Decoder] = {
    LEADS_REQUESTS: LeadRequest.decode,
    CALLS_STATUS: CallStatus.decode,
    LIMITER_TICKS: Tick.decode,
    BUSINESS_CONTROL: BusinessControl.decode,
}
