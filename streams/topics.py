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
import zoneinfo
from collections.abc import Callable
from typing import Any, ClassVar, Final, Literal, TypeGuard, TypeVar, cast, get_args

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
Outcome = Literal[TerminalStatus, "expired", "rejected", "withdrawn"]

LIVE_STATUSES: tuple[LiveStatus, ...] = get_args(LiveStatus)
TERMINAL_STATUSES: tuple[TerminalStatus, ...] = get_args(TerminalStatus)
CALL_STATUSES: tuple[CallStatusName, ...] = LIVE_STATUSES + TERMINAL_STATUSES
OUTCOMES: tuple[Outcome, ...] = TERMINAL_STATUSES + ("expired", "rejected", "withdrawn")
#: Reason a dialer gives when it refuses a command whose dial_by has passed.
DIAL_DEADLINE_PASSED = "dial-deadline-passed"
#: Reason of the outcome `expired` of a lead whose `expires_at` came before its dial.
NOT_DIALED_BEFORE_EXPIRY = "not-dialed-before-expiry"
#: Call statuses a business may have retried (`streams business set-retry --on`).
RETRYABLE_STATUSES: tuple[TerminalStatus, ...] = ("busy", "no-answer", "failed", "canceled")
#: Days of the week as calling windows name them, Monday first (Python's weekday()).
WEEKDAYS = ("mon", "tue", "wed", "thu", "fri", "sat", "sun")

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


def _optional_time(
    data: Fields, name: str, *, lead_id: str, business_id: str
) -> str | None:
    """An optional timestamp field, as ISO-8601 UTC (None when absent or null)."""
    if data.get(name) is None:
        return None
    return to_iso(_timestamp(data, name, lead_id=lead_id, business_id=business_id))


@functools.lru_cache(maxsize=1024)
def known_zone(name: str) -> bool:
    """Whether `name` is an IANA time zone of the tz database (`Europe/Paris`)."""
    try:
        zoneinfo.ZoneInfo(name)
    except (zoneinfo.ZoneInfoNotFoundError, ValueError, OSError):
        return False
    return True


def _duration(text: str) -> float:
    """`90`, `90s`, `10m`, `1h`, `1d` -> seconds; ValueError when it is none of these."""
    match = re.fullmatch(r"\s*(\d+(?:\.\d+)?)\s*([smhd]?)\s*", text)
    if match is None:
        raise ValueError(f"{text!r} is not a duration like 30s, 10m, 1h or 1d")
    return (
        float(match.group(1))
        * {"": 1, "s": 1, "m": 60, "h": 3600, "d": 86400}[match.group(2)]
    )


def _clock(text: str) -> int:
    """`HH:MM` or `HH:MM:SS` (24:00 allowed) -> seconds since midnight."""
    match = re.fullmatch(r"(\d{1,2}):(\d{2})(?::(\d{2}))?", text.strip())
    if match is None:
        raise ValueError(f"{text!r} is not a time of day like 09:00 or 20:30")
    hours, minutes, seconds = (int(g or 0) for g in match.groups())
    value = hours * 3600 + minutes * 60 + seconds
    if minutes > 59 or seconds > 59 or value > 86400:
        raise ValueError(f"{text!r} is not a time of day between 00:00 and 24:00")
    return value


def _clock_text(seconds: int) -> str:
    hours, rest = divmod(seconds, 3600)
    minutes, second = divmod(rest, 60)
    return f"{hours:02d}:{minutes:02d}" + (f":{second:02d}" if second else "")


def _days(text: str) -> tuple[int, ...]:
    """`mon-fri`, `mon,wed,fri`, `sat-sun`, `mon-sun` -> weekday numbers, Monday 0."""
    days: set[int] = set()
    for part in (p.strip().lower() for p in text.split(",")):
        first, _, last = part.partition("-")
        if first not in WEEKDAYS or (last and last not in WEEKDAYS):
            raise ValueError(f"{text!r} is not days like mon-fri or mon,wed,fri")
        start = WEEKDAYS.index(first)
        end = WEEKDAYS.index(last) if last else start
        days.update(d % 7 for d in range(start, end + 1 + (7 if end < start else 0)))
    return tuple(sorted(days))


@dataclasses.dataclass(frozen=True)
class CallingWindow:
    """When a business may call: from `start` to `end` (seconds since local midnight) on
    `days` (Monday 0), judged in `timezone`, or in a lead's own zone when it has one."""

    start: int
    end: int
    days: tuple[int, ...]
    timezone: str

    @classmethod
    def parse(
        cls, hours: str, days: str = "mon-sun", timezone: str = "UTC"
    ) -> CallingWindow:
        """From the command line's forms (`09:00-20:00`, `mon-fri`, `Europe/Paris`);
        ValueError with a one-line reason."""
        first, sep, last = hours.partition("-")
        if not sep:
            raise ValueError(f"hours {hours!r} must be START-END, like 09:00-20:00")
        window = cls(_clock(first), _clock(last), _days(days), timezone.strip())
        window.check()
        return window

    def check(self) -> None:
        if not 0 <= self.start < self.end <= 86400:
            raise ValueError("a calling window must start before it ends, within a day")
        if not self.days or any(d not in range(7) for d in self.days):
            raise ValueError("a calling window needs at least one day of the week")
        if not known_zone(self.timezone):
            raise ValueError(f"unknown time zone {self.timezone!r}")

    def to_dict(self) -> Fields:
        return {
            "start": _clock_text(self.start),
            "end": _clock_text(self.end),
            "days": [WEEKDAYS[d] for d in self.days],
            "timezone": self.timezone,
        }

    @classmethod
    def from_dict(cls, data: Fields) -> CallingWindow:
        """From its JSON (`to_dict`); ValueError with a one-line reason."""
        if not isinstance(data, dict):
            raise ValueError("window must be an object {start, end, days, timezone}")
        days = data.get("days", list(WEEKDAYS))
        if not isinstance(days, list) or not all(isinstance(d, str) for d in days):
            raise ValueError('window days must be a list like ["mon", "tue"]')
        start, end, zone = data.get("start"), data.get("end"), data.get("timezone", "UTC")
        if (
            not isinstance(start, str)
            or not isinstance(end, str)
            or not isinstance(zone, str)
        ):
            raise ValueError("window start, end and timezone must be strings")
        window = cls(_clock(start), _clock(end), _days(",".join(days) or "?"), zone)
        window.check()
        return window

    def describe(self) -> str:
        return (
            f"{_clock_text(self.start)}-{_clock_text(self.end)}"
            f" {','.join(WEEKDAYS[d] for d in self.days)} {self.timezone}"
        )


@dataclasses.dataclass(frozen=True)
class RetryPolicy:
    """Which final call statuses a business retries, after which delays (the last one
    repeats), and how many attempts a lead gets in all (dialer refusals count too)."""

    on: tuple[str, ...]
    delays: tuple[float, ...]
    max_attempts: int

    @classmethod
    def parse(cls, on: str, delays: str, max_attempts: int | None = None) -> RetryPolicy:
        """From the command line's forms (`busy,no-answer`, `10m,1h`); ValueError with a
        one-line reason. Attempts default to one more than the delays."""
        seconds = tuple(_duration(d) for d in delays.split(","))
        policy = cls(
            tuple(s.strip() for s in on.split(",")),
            seconds,
            len(seconds) + 1 if max_attempts is None else max_attempts,
        )
        policy.check()
        return policy

    def check(self) -> None:
        bad = [s for s in self.on if s not in RETRYABLE_STATUSES]
        if bad or not self.on:
            raise ValueError(
                f"retry on {', '.join(bad) or 'nothing'}? expected some of "
                + ", ".join(RETRYABLE_STATUSES)
            )
        if not self.delays or any(not (math.isfinite(d) and d >= 0) for d in self.delays):
            raise ValueError("retry delays must be durations of 0 or more")
        if not _is_int(self.max_attempts) or self.max_attempts < 1:
            raise ValueError("max_attempts must be an integer of at least 1")

    def delay(self, retry: int) -> float:
        """Seconds before retry number `retry` (1 = the second attempt)."""
        return self.delays[min(retry, len(self.delays)) - 1]

    def to_dict(self) -> Fields:
        return {
            "on": list(self.on),
            "delays": [int(d) if float(d).is_integer() else d for d in self.delays],
            "max_attempts": self.max_attempts,
        }

    @classmethod
    def from_dict(cls, data: Fields) -> RetryPolicy:
        """From its JSON (`to_dict`); ValueError with a one-line reason."""
        if not isinstance(data, dict):
            raise ValueError("retry must be an object {on, delays, max_attempts}")
        on, delays, attempts = data.get("on"), data.get("delays"), data.get("max_attempts")
        if not isinstance(on, list) or not all(isinstance(s, str) for s in on):
            raise ValueError("retry on must be a list of call statuses")
        if not isinstance(delays, list) or not all(
            isinstance(d, (int, float)) and not isinstance(d, bool) for d in delays
        ):
            raise ValueError("retry delays must be a list of seconds")
        if attempts is None:  # as on the command line: one more than the delays
            attempts = len(delays) + 1
        if not _is_int(attempts):
            raise ValueError("retry max_attempts must be an integer of at least 1")
        policy = cls(tuple(on), tuple(float(d) for d in delays), attempts)
        policy.check()
        return policy

    def describe(self) -> str:
        return (
            f"on {','.join(self.on)} after"
            f" {','.join(_duration_text(d) for d in self.delays)},"
            f" at most {self.max_attempts} attempts"
        )


#: JSON Schema of a calling window as `business.control` carries it.
WINDOW_SCHEMA: Fields = {
    "type": "object",
    "required": ["start", "end", "days", "timezone"],
    "properties": {
        "start": {"type": "string", "pattern": r"^\d{1,2}:\d{2}(:\d{2})?$"},
        "end": {"type": "string", "pattern": r"^\d{1,2}:\d{2}(:\d{2})?$"},
        "days": {"type": "array", "items": {"enum": list(WEEKDAYS)}, "minItems": 1},
        "timezone": {"type": "string"},
    },
}
#: JSON Schema of a retry policy as `business.control` carries it.
RETRY_SCHEMA: Fields = {
    "type": "object",
    "required": ["on", "delays"],
    "properties": {
        "on": {"type": "array", "items": {"enum": list(RETRYABLE_STATUSES)}, "minItems": 1},
        "delays": {
            "type": "array",
            "items": {"type": "number", "minimum": 0},
            "minItems": 1,
        },
        "max_attempts": {"type": "integer", "minimum": 1},
    },
}


def _duration_text(seconds: float) -> str:
    for unit, size in (("d", 86400), ("h", 3600), ("m", 60)):
        if seconds >= size and seconds % size == 0:
            return f"{int(seconds // size)}{unit}"
    return f"{seconds:g}s"


_R = TypeVar("_R", bound="Record")

#: JSON Schema of an identifier (`lead_id`, `business_id`, `dial_id`, `run_id`).
_ID: Fields = {
    "type": "string",
    "minLength": 1,
    "maxLength": _MAX_ID_LENGTH,
    "pattern": r"\S",
}
#: JSON Schema of a time the worker writes, and of one it reads (epoch seconds too).
_TIME: Fields = {"type": "string", "format": "date-time"}
_INPUT_TIME: Fields = {"anyOf": [_TIME, {"type": "number"}]}


def _field(
    doc: str, default: Any = dataclasses.MISSING, *, present: bool = False, **schema: Any
) -> Any:
    """A record's field with its meaning and its JSON Schema (`present`: always in the
    JSON, even when null): the published schemas and the AsyncAPI document
    (`streams/schemas.py`) are generated from these."""
    return dataclasses.field(
        default=default, metadata={"doc": doc, "schema": schema, "present": present}
    )


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
    """`leads.requests`, from the CRM. Higher `priority` (0-9, default 0) dials first.

    Optional: the bulk `run_id` it belongs to (withdrawn together), `not_before` (never
    dialed earlier), `expires_at` (never dialed later: it ends `expired`), and the
    called party's IANA `timezone`, in which calling windows judge it."""

    lead_id: str = _field(
        "unique per business; an id seen before is ignored while its record is kept",
        **_ID,
    )
    business_id: str = _field("the business; equal to the record's key", **_ID)
    phone: str = _field("E.164, like +14155550100", type="string", pattern=_E164.pattern)
    priority: int = _field(
        "0-9, higher first, then arrival",
        0,
        type="integer",
        minimum=MIN_PRIORITY,
        maximum=MAX_PRIORITY,
    )
    run_id: str | None = _field(
        "the bulk run it belongs to (withdrawn together)", None, **_ID
    )
    not_before: str | None = _field("never dialed earlier", None, **_INPUT_TIME)
    expires_at: str | None = _field(
        "never dialed at or after it: then it ends expired (not-dialed-before-expiry);"
        " later than not_before",
        None,
        **_INPUT_TIME,
    )
    timezone: str | None = _field(
        "IANA zone of the called party, in which calling windows judge it; an unknown"
        " zone is rejected",
        None,
        type="string",
    )

    #: Besides its fields: a record with `withdraw` is a withdrawal, not a lead.
    SCHEMA_RULES: ClassVar[Fields] = {"not": {"required": ["withdraw"]}}

    @classmethod
    def decode(cls, value: bytes | None, key: bytes | None) -> LeadRequest:
        return cls.from_fields(_load_object(value), key)

    @classmethod
    def from_fields(cls, data: Fields, key: bytes | None) -> LeadRequest:
        """The request these decoded JSON fields make, or InvalidRecord."""
        readable = data.get("lead_id")
        lead_id: str | None = readable if isinstance(readable, str) else None
        business_id = _ident(data, "business_id", lead_id=lead_id)
        lead_id = _ident(data, "lead_id", lead_id=lead_id, business_id=business_id)
        ids = {"lead_id": lead_id, "business_id": business_id}
        _check_key(key, **ids)
        phone = data.get("phone")
        if not isinstance(phone, str) or not _E164.match(phone):
            raise InvalidRecord(
                f"phone {phone!r} is not an E.164 number like +14155550100", **ids
            )
        priority = data.get("priority", 0)
        if priority is None:
            priority = 0
        if not _is_int(priority) or not MIN_PRIORITY <= priority <= MAX_PRIORITY:
            raise InvalidRecord(
                f"priority must be an integer {MIN_PRIORITY}-{MAX_PRIORITY},"
                f" got {priority!r}",
                **ids,
            )
        run_id = None if data.get("run_id") is None else _ident(data, "run_id", **ids)
        not_before = _optional_time(data, "not_before", **ids)
        expires_at = _optional_time(data, "expires_at", **ids)
        if not_before and expires_at and from_iso(expires_at) <= from_iso(not_before):
            raise InvalidRecord("expires_at must be later than not_before", **ids)
        zone = data.get("timezone")
        if zone is not None and (not isinstance(zone, str) or not known_zone(zone)):
            raise InvalidRecord(
                f"timezone {zone!r} is not an IANA time zone like Europe/Paris", **ids
            )
        return cls(
            lead_id=lead_id,
            business_id=business_id,
            phone=phone,
            priority=priority,
            run_id=run_id,
            not_before=not_before,
            expires_at=expires_at,
            timezone=zone,
        )


@dataclasses.dataclass(frozen=True)
class Withdrawal(Record):
    """`leads.requests` too, keyed like a lead: `{business_id, lead_id, withdraw: true}`
    withdraws one lead, `{business_id, run_id, withdraw: true}` every lead of a run not
    yet dialed, including those that arrive later. A lead on a call is not hung up."""

    business_id: str = _field("the business; equal to the record's key", **_ID)
    lead_id: str | None = _field("the lead to withdraw (or run_id)", None, **_ID)
    run_id: str | None = _field("the run to withdraw (or lead_id)", None, **_ID)
    withdraw: bool = _field(
        "always true: what makes it a withdrawal", True, present=True, const=True
    )

    #: Besides its fields: it names a lead or a run, not both.
    SCHEMA_RULES: ClassVar[Fields] = {
        "oneOf": [
            {"required": ["lead_id"], "not": {"required": ["run_id"]}},
            {"required": ["run_id"], "not": {"required": ["lead_id"]}},
        ]
    }

    @classmethod
    def from_fields(cls, data: Fields, key: bytes | None) -> Withdrawal:
        """The withdrawal these decoded JSON fields make, or InvalidRecord (which never
        names a lead: a bad withdrawal ends no lead)."""
        business_id = _ident(data, "business_id")
        _check_key(key, business_id=business_id, lead_id=None)
        if data.get("withdraw") is not True:
            raise InvalidRecord(
                f"withdraw must be true, got {data.get('withdraw')!r}",
                business_id=business_id,
            )
        named = [n for n in ("lead_id", "run_id") if data.get(n) is not None]
        if len(named) != 1:
            raise InvalidRecord(
                "a withdrawal names either a lead_id or a run_id", business_id=business_id
            )
        ident = _ident(data, named[0], business_id=business_id)
        if named[0] == "lead_id":
            return cls(business_id=business_id, lead_id=ident)
        return cls(business_id=business_id, run_id=ident)


def decode_lead_request(value: bytes | None, key: bytes | None) -> LeadRequest | Withdrawal:
    """A `leads.requests` record: a withdrawal when it carries `withdraw`, else a lead."""
    data = _load_object(value)
    if "withdraw" in data:
        return Withdrawal.from_fields(data, key)
    return LeadRequest.from_fields(data, key)


@dataclasses.dataclass(frozen=True)
class CallStatus(Record):
    """`calls.status`, from the dialer: Twilio's CallStatus for one dial."""

    dial_id: str = _field("the dial_id of the command", **_ID)
    lead_id: str = _field("that of the command", **_ID)
    business_id: str = _field("that of the command; equal to the record's key", **_ID)
    status: str = _field(
        "Twilio's CallStatus: queued, initiated, ringing, in-progress (live); completed,"
        " busy, failed, no-answer, canceled (terminal)",
        enum=list(CALL_STATUSES),
    )
    at: str = _field("when the dialer saw it", **_INPUT_TIME)
    call_sid: str | None = _field("the call's id at the carrier", None, type="string")
    sequence: int | None = _field(
        "orders statuses of one phase (Twilio's SequenceNumber)", None, type="integer"
    )
    reason: str | None = _field(
        "dial-deadline-passed with canceled: the dialer refused a stale command",
        None,
        type="string",
    )
    error_code: int | None = _field(
        "the carrier's error code of a failed call", None, type="integer"
    )

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

    partition: int = _field("the partition it is for", type="integer", minimum=0)
    at: str = _field("when the worker's timer sent it", **_INPUT_TIME)

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
    configuration. `limit`, `window` and `retry` null mean the defaults
    (MAX_OUTBOUND_CALLS_PER_BUSINESS, CALLING_HOURS, RETRY_ON).
    """

    business_id: str = _field("the business; equal to the record's key", **_ID)
    limit: int | None = _field(
        "its calls in flight at most; null: MAX_OUTBOUND_CALLS_PER_BUSINESS",
        None,
        type="integer",
        minimum=0,
    )
    paused: bool = _field("no new dials; waiting leads stay", False, type="boolean")
    window: CallingWindow | None = _field(
        "its calling window; null: the default (CALLING_HOURS)", None, **WINDOW_SCHEMA
    )
    retry: RetryPolicy | None = _field(
        "its retries; null: the default (RETRY_ON)", None, **RETRY_SCHEMA
    )

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
        try:
            window = _nested(data.get("window"), CallingWindow.from_dict)
            retry = _nested(data.get("retry"), RetryPolicy.from_dict)
        except ValueError as exc:
            raise InvalidRecord(str(exc), business_id=business_id) from None
        return cls(business_id, limit, paused, window, retry)

    @classmethod
    def from_dict(cls, fields: Fields) -> BusinessControl:
        window, retry = fields.get("window"), fields.get("retry")
        return cls(
            fields["business_id"],
            fields.get("limit"),
            fields.get("paused", False),
            None if window is None else CallingWindow.from_dict(window),
            None if retry is None else RetryPolicy.from_dict(retry),
        )

    def to_dict(self) -> Fields:
        return {
            "business_id": self.business_id,
            "limit": self.limit,
            "paused": self.paused,
            "window": None if self.window is None else self.window.to_dict(),
            "retry": None if self.retry is None else self.retry.to_dict(),
        }


_N = TypeVar("_N")


def _nested(value: object, parse: Callable[[Fields], _N]) -> _N | None:
    return None if value is None else parse(cast(Fields, value))


@dataclasses.dataclass(frozen=True)
class DialCommand(Record):
    """`calls.dial`, to the dialer. Never place it after `dial_by`; dedupe on `dial_id`."""

    dial_id: str = _field(
        "business_id:lead_id:attempt; the same on every resend: dedupe on it", **_ID
    )
    lead_id: str = _field("from the lead request", **_ID)
    business_id: str = _field("from the lead request; the record's key", **_ID)
    phone: str = _field("from the lead request", type="string")
    attempt: int = _field(
        "1, then one more per retry and per refused stale command",
        type="integer",
        minimum=1,
    )
    granted_at: str = _field("when the worker granted the slot", **_TIME)
    dial_by: str = _field(
        "never place the call after it (report canceled, dial-deadline-passed)", **_TIME
    )

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
    """`leads.outcomes`, to the CRM: how one attempt at a lead ended. `final` is false
    for an attempt that will be retried; every lead gets exactly one final outcome.
    `attempt` is that of the last dial (0: never dialed)."""

    lead_id: str = _field("the lead", **_ID)
    business_id: str = _field("its business; the record's key", **_ID)
    outcome: str = _field(
        "a terminal call status, expired, rejected or withdrawn", enum=list(OUTCOMES)
    )
    dial_id: str | None = _field("of the attempt's dial", None, **_ID)
    call_sid: str | None = _field("of the attempt's call", None, type="string")
    reason: str | None = _field(
        "why: the dialer's reason or error, the lease, the expiry, the validation error",
        None,
        type="string",
    )
    attempt: int | None = _field(
        "the attempt of the last dial (0: never dialed)", None, type="integer", minimum=0
    )
    final: bool = _field(
        "false for an attempt that will be retried; one final outcome per lead",
        True,
        type="boolean",
    )

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

    reason: str = _field("one line: what was wrong", type="string")
    topic: str = _field("where the original record was", type="string")
    partition: int = _field("its partition", type="integer", minimum=0)
    offset: int = _field("its offset", type="integer", minimum=0)
    key: str | None = _field(
        "base64 of the original key (null: none)", type=["string", "null"], present=True
    )
    value: str | None = _field(
        "base64 of the original value (null: none)", type=["string", "null"], present=True
    )

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


#: What the worker consumes: one record type per input topic (two on leads.requests).
InputRecord = LeadRequest | Withdrawal | CallStatus | Tick | BusinessControl
#: Decodes a record's value and key, or raises InvalidRecord.
Decoder = Callable[[bytes | None, bytes | None], InputRecord]

#: What the worker decodes from each input topic.
INPUT_RECORDS: dict[str, Decoder] = {
    LEADS_REQUESTS: decode_lead_request,
    CALLS_STATUS: CallStatus.decode,
    LIMITER_TICKS: Tick.decode,
    BUSINESS_CONTROL: BusinessControl.decode,
}
