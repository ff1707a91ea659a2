"""Table writes on their way to the changelog, in units; records on their way out. Sans-I/O.

The core's rule 7 asks the shell to make each event's writes durable all together or
not at all, and to emit only after. Kafka appends a record batch whole, so the shell
sends each *unit* (the writes of one or more consecutive events of one partition, each
key once with its last value) as one record batch to that partition of the table's
changelog. A crash then leaves the changelog after some event, never inside one.

Why units rather than Faust's `table[key] = value`: Faust produces one changelog record
per assignment through its producer buffer, at about 0.2 ms of Python each, and offers
no atomic group of writes; the core used to write a journal entry per event to make up
for that, and paid 5 changelog records per lead.

Reads go through `Units.get`: a value written by a unit not yet acknowledged is here
(the overlay); the store holds only what the changelog acknowledged, written there the
way Faust's own recovery writes it (`durable`). So the store never holds a write the
changelog lacks, and a RocksDB store is as good after a SIGKILL as after a clean stop.

Records to emit leave only once their unit is durable. Until the broker acknowledges
them they are also kept in the table: every unit writes the partition's undelivered
records (`undelivered_key`), its own included. Whoever is assigned the partition next,
after a crash or a rebalance, sends those again (`resend`). Outputs are at-least-once;
consumers dedupe on dial_id or lead_id.
"""

from __future__ import annotations

import dataclasses
import itertools
from collections.abc import Callable, Iterable
from typing import Any

import orjson

from streams.limiter_state import undelivered_key
from streams.limiter_table import Effects, Emit, decode_emits, encode_emits

#: A unit is closed before it grows past this many bytes of keys and values, so that
#: its record batch stays under the broker's default message.max.bytes (1 MiB) with
#: room for the batch overhead. One event larger than this is a unit of its own.
UNIT_MAX_BYTES = 512 * 1024
#: Rough bytes a record adds to a batch beyond its key and value.
RECORD_OVERHEAD = 24

Encode = Callable[[Any], bytes]


def encode_json(value: Any) -> bytes:
    """The table's codec, as faust.utils.json calls orjson: changelog records must be
    byte for byte what Faust itself would write, or a RocksDB store would not find their
    keys. (Faust's own codec wrapper cost four times the encoding.)"""
    return orjson.dumps(value, option=orjson.OPT_NON_STR_KEYS | orjson.OPT_UTC_Z)


@dataclasses.dataclass
class Unit:
    """Writes of consecutive events of one partition, made durable together."""

    partition: int
    number: int
    #: key -> (value, encoded key, encoded value or None for a delete)
    records: dict[str, tuple[Any, bytes, bytes | None]] = dataclasses.field(
        default_factory=dict
    )
    emits: list[Emit] = dataclasses.field(default_factory=list)
    #: each emit's record, encoded once: for the undelivered record's size and to send
    values: list[bytes] = dataclasses.field(default_factory=list)
    size: int = 0
    #: bytes the emits add to the undelivered record, roughly (its JSON)
    emits_size: int = 0
    events: int = 0

    def add_emits(self, emits: list[Emit], values: list[bytes] | None = None) -> None:
        values = [e.record.encode() for e in emits] if values is None else values
        self.emits += emits
        self.values += values
        self.emits_size += _emits_size(emits, values)


class Units:
    """One worker's writes not yet durable and records not yet delivered."""

    def __init__(
        self,
        store_get: Callable[[str], Any],
        encode: Encode,
        max_bytes: int = UNIT_MAX_BYTES,
    ):
        self._store_get = store_get
        self._encode = encode
        self._max_bytes = max_bytes
        self._numbers = itertools.count()
        self._last_closed = -1
        #: Events taken so far (the sender watches it to know when the agent paused).
        self.events = 0
        #: key -> (unit number, value): the newest write of each key not yet durable.
        self._overlay: dict[str, tuple[int, Any]] = {}
        self._open: dict[int, Unit] = {}
        self._closed: list[Unit] = []
        #: unit number -> unit taken to be sent and not yet durable
        self._in_flight: dict[int, Unit] = {}
        #: partition -> unit number -> unit whose emits are not all delivered yet.
        self._undelivered: dict[int, dict[int, Unit]] = {}
        #: Kept with `_undelivered` (`_hold`, `_release`): the agent asks after every
        #: event whether too much is pending, and summing over every unit cost more
        #: than the question was worth.
        self._undelivered_records = 0
        self._undelivered_size: dict[int, int] = {}

    # -- what the core reads -------------------------------------------------------

    def get(self, key: str) -> Any:
        """The table's value of `key`, counting writes not yet durable."""
        found = self._overlay.get(key)
        return self._store_get(key) if found is None else found[1]

    def pending_keys(self) -> Iterable[str]:
        """Keys written but not yet durable (their value may be None: deleted)."""
        return list(self._overlay)

    # -- the agent's side ----------------------------------------------------------

    def add(self, partition: int, effects: Effects) -> None:
        """Take one event's writes and emits; they join the partition's open unit."""
        if not effects.writes and not effects.emits:
            return
        encode = self._encode
        encoded = []
        size = 0
        for key, value in effects.writes:
            key_bytes = encode(key)
            value_bytes = None if value is None else encode(value)
            encoded.append((key, value, key_bytes, value_bytes))
            size += _record_size(key_bytes, value_bytes)
        values = [e.record.encode() for e in effects.emits]
        unit = self._open.get(partition)
        if (
            unit is not None
            and unit.events
            and unit.size
            + unit.emits_size
            + self._undelivered_bytes(partition)
            + size
            + _emits_size(effects.emits, values)
            > self._max_bytes
        ):
            self._close(partition)
            unit = None
        if unit is None:
            unit = self._open[partition] = Unit(partition, next(self._numbers))
        records, overlay, number = unit.records, self._overlay, unit.number
        for key, value, key_bytes, value_bytes in encoded:
            replaced = records.get(key)
            if replaced is not None:
                size -= _record_size(replaced[1], replaced[2])
            records[key] = (value, key_bytes, value_bytes)
            overlay[key] = (number, value)
        unit.size += size
        unit.add_emits(effects.emits, values)
        unit.events += 1
        self.events += 1

    def resend(self, partition: int) -> Unit | None:
        """The partition was just assigned here: the records its last owner (maybe this
        process before a crash) may not have delivered, as a unit that is durable
        already. They stay in the table until delivered, like any others."""
        emits = decode_emits(self.get(undelivered_key(partition)) or [])
        if not emits:
            return None
        unit = Unit(partition, next(self._numbers))
        unit.add_emits(emits)
        self._hold(unit)
        return unit

    def has_open(self) -> bool:
        return bool(self._open)

    def take(self) -> list[Unit]:
        """Close every open unit and hand over the closed ones, oldest first, to be sent
        (one record batch each, a partition's units in this order)."""
        for partition in list(self._open):
            self._close(partition)
        closed, self._closed = self._closed, []
        self._in_flight.update((unit.number, unit) for unit in closed)
        return closed

    def _close(self, partition: int) -> None:
        unit = self._open.pop(partition)
        if unit.emits:
            self._hold(unit)
        waiting = [
            e
            for pending in self._undelivered.get(partition, {}).values()
            for e in pending.emits
        ]
        key = undelivered_key(partition)
        value = encode_emits(waiting)
        if value != (self.get(key) or []):  # an empty list is left unwritten
            unit.records[key] = (value, self._encode(key), self._encode(value))
            unit.size += _record_size(unit.records[key][1], unit.records[key][2])
            self._overlay[key] = (unit.number, value)
        self._closed.append(unit)
        self._last_closed = max(self._last_closed, unit.number)

    # -- the sender's side ---------------------------------------------------------

    def durable(self, unit: Unit) -> list[tuple[str, Any, bytes, bytes | None]]:
        """The broker acknowledged `unit`: its records, to write into the store the way
        Faust's recovery does. Reads of keys no later unit wrote go to the store again."""
        self._in_flight.pop(unit.number, None)
        for key in unit.records:
            if self._overlay.get(key, (None,))[0] == unit.number:
                del self._overlay[key]
        return [
            (key, value, key_bytes, value_bytes)
            for key, (value, key_bytes, value_bytes) in unit.records.items()
        ]

    def delivered(self, unit: Unit) -> None:
        """The broker acknowledged every record `unit` emitted."""
        waiting = self._undelivered.get(unit.partition, {})
        if waiting.pop(unit.number, None) is not None:
            self._undelivered_records -= len(unit.emits)
            self._undelivered_size[unit.partition] -= unit.emits_size
        if not waiting:
            self._undelivered.pop(unit.partition, None)
            self._undelivered_size.pop(unit.partition, None)

    def _hold(self, unit: Unit) -> None:
        """Keep `unit` until its emits are delivered."""
        self._undelivered.setdefault(unit.partition, {})[unit.number] = unit
        self._undelivered_records += len(unit.emits)
        self._undelivered_size[unit.partition] = (
            self._undelivered_size.get(unit.partition, 0) + unit.emits_size
        )

    def newest(self) -> int:
        """The number of the newest unit begun so far (-1: none)."""
        return max((u.number for u in self._open.values()), default=self._last_closed)

    def oldest_pending(self) -> int | None:
        """The number of the oldest unit not yet durable and delivered, if any."""
        numbers = [u.number for u in self._open.values()]
        numbers += [u.number for u in self._closed] + list(self._in_flight)
        numbers += [n for by_unit in self._undelivered.values() for n in by_unit]
        return min(numbers, default=None)

    def undelivered_count(self) -> int:
        return self._undelivered_records

    def undelivered_bytes(self) -> int:
        """The largest undelivered record of any partition, in bytes (roughly)."""
        return max(self._undelivered_size.values(), default=0)

    def overlay_size(self) -> int:
        return len(self._overlay)

    def _undelivered_bytes(self, partition: int) -> int:
        return self._undelivered_size.get(partition, 0)


def _record_size(key: bytes, value: bytes | None) -> int:
    return len(key) + (len(value) if value is not None else 0) + RECORD_OVERHEAD


def _emits_size(emits: list[Emit], values: list[bytes]) -> int:
    """Bytes the emits add to the undelivered record, roughly (its JSON)."""
    pairs = zip(emits, values, strict=True)
    return sum(len(v) + len(e.key) + len(e.topic) + 8 for e, v in pairs)
