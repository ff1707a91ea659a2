"""Drives the pure limiter core as the worker does, for `bench.core`.

It imports only what every version of the core since the table's restructure has,
so `bench.core --versus REF` can run it beside another version's `streams` package:
`python -m bench.core_driver --serve` started in a directory holding that package
prepares the comparable configurations, then answers "CONFIG CYCLES" lines with the
seconds those cycles took, one JSON line each, until "quit".
"""

from __future__ import annotations

import argparse
import collections
import gc
import json
import sys
import time
from typing import Any

from streams import limiter_table as core
from streams.limiter_state import read_business, waiting_count
from streams.settings import Settings
from streams.topics import CALLS_DIAL, CallStatus, LeadRequest, to_iso

LEADS = "leads.requests"
STATUS = "calls.status"
LIVE = ("queued", "initiated", "ringing", "in-progress")


class Table:
    """A dict store driven like the worker drives its Faust table."""

    def __init__(self) -> None:
        self.data: dict[str, Any] = {}
        self.offsets: collections.Counter[str] = collections.Counter()
        self.now = 1_700_000_000.0
        self.rules = Settings().rules()

    def feed(self, topic: str, event: Any) -> Any:
        offset = self.offsets[topic]
        self.offsets[topic] += 1
        self.now += 0.001
        effects = core.process(
            self.data.get, event, core.Source(topic, 0, offset), self.now, self.rules
        )
        data = self.data
        for key, value in effects.writes:
            if value is not None:
                data[key] = value
            else:
                data.pop(key, None)
        return effects


class Business:
    """One business driven through the core: leads in, its oldest call's statuses.
    Its leads carry `cycle_run` as their run unless told otherwise (None: no run,
    which every version of the contract accepts)."""

    def __init__(
        self, table: Table, business_id: str, cycle_run: str | None = None
    ) -> None:
        self.table, self.bid, self.cycle_run = table, business_id, cycle_run
        self.live: collections.deque[tuple[str, str]] = collections.deque()
        self.next_lead = 0

    def lead(self, run_id: str | None = None, not_before: str | None = None) -> None:
        lead_id = f"L{self.next_lead:07d}"
        self.next_lead += 1
        optional = {"run_id": run_id or self.cycle_run, "not_before": not_before}
        request = LeadRequest(
            lead_id,
            self.bid,
            "+14155550100",
            **{name: value for name, value in optional.items() if value is not None},
        )
        self._granted(self.table.feed(LEADS, request))

    def finish_oldest(self, final: str = "completed") -> None:
        dial_id, lead_id = self.live.popleft()
        for sequence, status in enumerate(LIVE + (final,)):
            effects = self.table.feed(
                STATUS,
                CallStatus(
                    dial_id=dial_id,
                    lead_id=lead_id,
                    business_id=self.bid,
                    status=status,
                    at=to_iso(self.table.now),
                    call_sid="CA" + dial_id[-8:],
                    sequence=sequence,
                ),
            )
            self._granted(effects)

    def _granted(self, effects: Any) -> None:
        for emit in effects.emits:
            if emit.topic == CALLS_DIAL:
                self.live.append((emit.record.dial_id, emit.record.lead_id))


def new_business(config: str, cycle_run: str | None = None) -> tuple[Business, int]:
    """A business beside 200 others, not yet holding any calls, and the calls
    configuration `config` has it hold (`empty`: 2; any other: 3)."""
    table = Table()
    business = Business(table, "biz-under-test", cycle_run)
    for i in range(200):  # so that the table is not trivially small
        Business(table, f"other-{i}").lead()
    return business, 2 if config.partition("-")[0] in ("empty", "scheduled") else 3


def prepare_plain(config: str) -> Business:
    """`empty` or `waiting-K` with leads of no run: what every core version runs."""
    business, calls = new_business(config)
    for _ in range(calls):
        business.lead()
    kind, _, size = config.partition("-")
    for _ in range(int(size) if kind == "waiting" else 0):
        business.lead()
    assert len(business.live) == calls, (len(business.live), calls)
    return business


def cycle(business: Business, cycles: int) -> float:
    """Run `cycles` cycles (a new lead, the 5 statuses of the oldest call); return the
    seconds they took."""
    gc.collect()
    began = time.perf_counter()
    for _ in range(cycles):
        business.lead()
        business.finish_oldest()
    return time.perf_counter() - began


def waiting(business: Business) -> int:
    record = read_business(business.table.data.get, business.bid)
    return 0 if record is None else waiting_count(record)


def serve(configs: list[str]) -> int:
    """Prepare `configs`, then time cycles on request (see the module's docstring)."""
    import streams

    built = {config: prepare_plain(config) for config in configs}
    gc.collect()
    gc.freeze()  # as the worker does with its table
    print(json.dumps({"ready": True, "streams": streams.__file__}), flush=True)
    for line in sys.stdin:
        if line.strip() == "quit":
            break
        config, cycles = line.split()
        seconds = cycle(built[config], int(cycles))
        print(json.dumps({"seconds": seconds, "waiting": waiting(built[config])}))
        sys.stdout.flush()
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--serve", nargs="+", required=True, metavar="CONFIG")
    return serve(parser.parse_args(argv).serve)


if __name__ == "__main__":
    sys.exit(main())
