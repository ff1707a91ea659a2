"""Fault injection for tests: off unless STREAMS_WORKER_FAULTS is set.

The tests make the worker lose records the way faust-streaming can, to check it still
handles every one of them. The variable lists faults as "base_topic:offset:kind,...";
each fires once, on the first delivery of that offset (of the first partition to
deliver it). Kinds:

* "drop": the agent drops the record unhandled, and Faust acks it;
* "drop-unacked": Faust's consumer drops it before any stream sees it, never acked
  (as its `getmany` does with the rest of a fetch when the generation changes);
* "raise": handling it raises, as a bug in our code would.
"""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator, Mapping
from typing import Any, Literal, get_args

from streams.errors import StreamsError
from streams.topics import topic_name

log = logging.getLogger(__name__)

FAULTS_ENV = "STREAMS_WORKER_FAULTS"
FaultKind = Literal["drop", "drop-unacked", "raise"]
FAULT_KINDS: tuple[FaultKind, ...] = get_args(FaultKind)


class Faults:
    """The faults still to inject, by (real topic name, offset)."""

    def __init__(self, faults: Mapping[tuple[str, int], FaultKind]):
        self._faults = dict(faults)

    @classmethod
    def from_env(cls, environ: Mapping[str, str], prefix: str) -> Faults:
        """The faults STREAMS_WORKER_FAULTS asks for (none when unset), on the topics
        under `prefix`."""
        faults: dict[tuple[str, int], FaultKind] = {}
        for item in environ.get(FAULTS_ENV, "").split(","):
            if not item:
                continue
            base, offset, kind = _parse(item)
            faults[(topic_name(base, prefix), offset)] = kind
        return cls(faults)

    def install(self) -> None:
        """Patch Faust's consumer when a fault needs it: records it drops never reach
        a stream. Patches the class: one worker per process."""
        if "drop-unacked" not in self._faults.values():
            return
        from faust.transport.consumer import Consumer

        getmany, fires = Consumer.getmany, self.fires

        async def dropping_getmany(consumer: Any, timeout: float) -> AsyncIterator[Any]:
            async for tp, message in getmany(consumer, timeout):
                if not fires(tp.topic, tp.partition, message.offset, "drop-unacked"):
                    yield tp, message

        Consumer.getmany = dropping_getmany  # type: ignore[method-assign,assignment]

    def raise_if_due(self, topic: str, partition: int, offset: int) -> None:
        """Fault "raise": handling this record raises."""
        if self.fires(topic, partition, offset, "raise"):
            raise RuntimeError(f"injected fault ({FAULTS_ENV})")

    def fires(self, topic: str, partition: int, offset: int, kind: FaultKind) -> bool:
        """Whether to inject fault `kind` into this record now (once per fault)."""
        if not self._faults or self._faults.get((topic, offset)) != kind:
            return False
        del self._faults[(topic, offset)]
        log.warning(
            "%s/%d/%d: injected fault %r (%s)", topic, partition, offset, kind, FAULTS_ENV
        )
        return True


def _parse(item: str) -> tuple[str, int, FaultKind]:
    base, _, rest = item.partition(":")
    offset, _, kind = rest.partition(":")
    for known in FAULT_KINDS:
        if kind == known and offset.isdigit():
            return base, int(offset), known
    raise StreamsError(
        f"{FAULTS_ENV}: {item!r} is not topic:offset:kind with kind one of"
        f" {', '.join(FAULT_KINDS)}"
    )
