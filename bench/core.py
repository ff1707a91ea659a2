"""Per-event cost of the pure limiter core, and the state it keeps.

No broker: `streams.limiter_table.process` is driven with a plain dict as the table,
exactly as the worker drives it (read = dict.get, writes applied in order).

1. Per-event cost with a business backlog of 0, 1 and B (default 100,000) waiting
   leads. One "cycle" is the same six events in every case: a new lead request, then
   the five statuses (queued, initiated, ringing, in-progress, completed) of the
   business's oldest live call. With backlog 0 the business holds 2 calls, the new lead
   is granted at once and the completion frees a slot nobody waits for; with backlog
   k >= 1 it holds 3 calls and k waiting leads, the new lead joins the queue and the
   completion grants the queue's head. The backlog stays constant, so every repeat
   measures the same steady state. Configurations are interleaved, repeat by repeat,
   so a noisy machine slows them alike; the median of the repeats is reported.
   Backlog 1 runs the same code path as backlog B, so B vs 1 isolates the cost of the
   backlog's *size*; B vs 0 is the figure the target is about (<= 1.2x).
2. State bytes per 100,000 businesses: each business gets 1-3 leads (seeded random),
   all granted at once; the table's size as the worker's changelog and store hold it
   (JSON of every key and value), while the calls are live and after every call ended.
   Resident memory of the dict store is reported alongside (RSS growth, approximate).

    python -m bench.core [--backlog 100000] [--cycles 2000] [--repeats 7]
                         [--businesses 100000] [--json-only]

Prints one JSON line per measurement, then a human summary.
"""

from __future__ import annotations

import argparse
import collections
import gc
import json
import os
import random
import statistics
import sys
import time

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
        self.data: dict = {}
        self.offsets = collections.Counter()
        self.now = 1_700_000_000.0
        self.rules = Settings().rules()

    def feed(self, topic: str, event) -> core.Effects:
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
    """One business driven through the core: leads in, its oldest call's statuses."""

    def __init__(self, table: Table, business_id: str):
        self.table, self.bid = table, business_id
        self.live: collections.deque = (
            collections.deque()
        )  # (dial_id, lead_id), oldest first
        self.next_lead = 0
        self.time_in_queue = []

    def lead(self) -> None:
        lead_id = f"L{self.next_lead:07d}"
        self.next_lead += 1
        self._granted(
            self.table.feed(LEADS, LeadRequest(lead_id, self.bid, "+14155550100"))
        )

    def finish_oldest(self, final: str = "completed") -> None:
        dial_id, lead_id = self.live.popleft()
        for sequence, status in enumerate(LIVE + (final,)):
            at = to_iso(self.table.now)
            effects = self.table.feed(
                STATUS,
                CallStatus(
                    dial_id=dial_id,
                    lead_id=lead_id,
                    business_id=self.bid,
                    status=status,
                    at=at,
                    call_sid="CA" + dial_id[-8:],
                    sequence=sequence,
                ),
            )
            self._granted(effects)

    def _granted(self, effects: core.Effects) -> None:
        for emit in effects.emits:
            if emit.topic == CALLS_DIAL:
                self.live.append((emit.record.dial_id, emit.record.lead_id))


def prepare(backlog: int) -> Business:
    """A business in the steady state of `backlog` waiting leads."""
    table = Table()
    business = Business(table, "biz-under-test")
    # Some other businesses, so the table is not trivially small.
    for i in range(200):
        Business(table, f"other-{i}").lead()
    calls = 2 if backlog == 0 else 3
    for _ in range(calls + backlog):
        business.lead()
    assert len(business.live) == calls, (len(business.live), calls)
    return business


def cycle(business: Business, cycles: int) -> float:
    """Run `cycles` cycles (6 events each); return the seconds they took."""
    gc.collect()
    began = time.perf_counter()
    for _ in range(cycles):
        business.lead()
        business.finish_oldest()
    return time.perf_counter() - began


def waiting(business: Business) -> int:
    record = read_business(business.table.data.get, business.bid)
    return 0 if record is None else waiting_count(record)


def bench_backlog(backlog: int, cycles: int, repeats: int) -> list[dict]:
    configs = sorted({0, 1, backlog})
    built = {}
    for b in configs:
        began = time.perf_counter()
        built[b] = prepare(b)
        print(
            f"# prepared backlog {b} in {time.perf_counter() - began:.1f}s",
            file=sys.stderr,
            flush=True,
        )
    # The worker keeps its table out of the cyclic GC (streams/app.py,
    # _freeze_survivors); so does this bench. Without it the collections that walk
    # the 100,000-lead table landed on some configurations more than others (backlog
    # 1 and 100,000 measured 1.23x backlog 0, 1.0-1.07x with it).
    gc.collect()
    gc.freeze()
    for b in configs:  # warm-up
        cycle(built[b], max(50, cycles // 10))
    samples: dict[int, list[float]] = {b: [] for b in configs}
    for _ in range(repeats):
        for b in configs:
            seconds = cycle(built[b], cycles)
            samples[b].append(cycles * 6 / seconds)
    results = []
    base = statistics.median(samples[0])
    for b in configs:
        assert waiting(built[b]) == b, (b, waiting(built[b]))
        median = statistics.median(samples[b])
        results.append(
            {
                "bench": "core.per_event",
                "backlog": b,
                "events_per_s_median": round(median),
                "events_per_s_min": round(min(samples[b])),
                "events_per_s_max": round(max(samples[b])),
                "us_per_event_median": round(1e6 / median, 2),
                "cost_vs_backlog_0": round(base / median, 3),
                "cycles": cycles,
                "events_per_repeat": cycles * 6,
                "repeats": repeats,
            }
        )
    return results


def rss_bytes() -> int:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


def table_bytes(data: dict) -> tuple[int, dict[str, int]]:
    """JSON bytes of keys and values, as Faust's json serializers write them."""
    by_kind: collections.Counter = collections.Counter()
    for key, value in data.items():
        kind = key.split("\x1f", 1)[0]
        by_kind[kind] += len(json.dumps(key).encode()) + len(json.dumps(value).encode())
    return sum(by_kind.values()), dict(by_kind)


def bench_state(businesses: int, seed: int = 1) -> list[dict]:
    rng = random.Random(seed)
    gc.collect()
    rss_before = rss_bytes()
    table = Table()
    drivers = []
    leads = 0
    began = time.perf_counter()
    for i in range(businesses):
        business = Business(table, f"biz-{i:06d}")
        for _ in range(rng.randint(1, 3)):
            business.lead()
            leads += 1
        drivers.append(business)
    build_seconds = time.perf_counter() - began
    gc.collect()
    rss_live = rss_bytes() - rss_before
    live_total, live_kinds = table_bytes(table.data)
    results = [
        {
            "bench": "core.state",
            "phase": "calls live",
            "businesses": businesses,
            "leads": leads,
            "keys": len(table.data),
            "json_bytes": live_total,
            "json_bytes_per_100k_businesses": round(live_total * 100_000 / businesses),
            "json_bytes_by_key_kind": live_kinds,
            "rss_growth_bytes": rss_live,
            "build_seconds": round(build_seconds, 1),
            "build_events_per_s": round(leads / build_seconds),
        }
    ]
    for business in drivers:
        while business.live:
            business.finish_oldest()
    gc.collect()
    ended_total, ended_kinds = table_bytes(table.data)
    results.append(
        {
            "bench": "core.state",
            "phase": "all calls ended",
            "businesses": businesses,
            "leads": leads,
            "keys": len(table.data),
            "json_bytes": ended_total,
            "json_bytes_per_100k_businesses": round(ended_total * 100_000 / businesses),
            "json_bytes_by_key_kind": ended_kinds,
            "rss_growth_bytes": rss_bytes() - rss_before,
        }
    )
    return results


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__.split("\n\n")[0],
        formatter_class=argparse.RawDescriptionHelpFormatter,
        epilog=__doc__.split("\n\n", 1)[1],
    )
    parser.add_argument("--backlog", type=int, default=100_000)
    parser.add_argument(
        "--cycles",
        type=int,
        default=2000,
        help="cycles (6 events each) per repeat (default 2000)",
    )
    parser.add_argument("--repeats", type=int, default=7)
    parser.add_argument(
        "--businesses",
        type=int,
        default=100_000,
        help="businesses for the state-size figure (0 skips it)",
    )
    parser.add_argument("--json-only", action="store_true")
    args = parser.parse_args(argv)
    results = bench_backlog(args.backlog, args.cycles, args.repeats)
    if args.businesses:
        results += bench_state(args.businesses)
    for result in results:
        print(json.dumps(result), flush=True)
    if args.json_only:
        return 0
    print("\nper-event cost of the core (dict store, median of repeats):")
    for r in results:
        if r["bench"] == "core.per_event":
            print(
                f"  backlog {r['backlog']:>7,}: {r['events_per_s_median']:>8,} events/s"
                f"  ({r['us_per_event_median']} us/event; cost x{r['cost_vs_backlog_0']}"
                f" of backlog 0; min-max {r['events_per_s_min']:,}"
                f"-{r['events_per_s_max']:,})"
            )
    big = [
        r
        for r in results
        if r["bench"] == "core.per_event" and r["backlog"] == args.backlog
    ]
    if big:
        ratio = big[0]["cost_vs_backlog_0"]
        print(
            f"  target backlog {args.backlog:,} <= 1.2x backlog 0: x{ratio}"
            f" -> {'MET' if ratio <= 1.2 else 'MISSED'}"
        )
    for r in results:
        if r["bench"] == "core.state":
            print(
                f"state, {r['phase']}:"
                f" {r['json_bytes_per_100k_businesses'] / 1e6:.1f} MB JSON"
                f" per 100,000 businesses ({r['keys']:,} keys, {r['leads']:,} leads;"
                f" dict store RSS growth ~{r['rss_growth_bytes'] / 1e6:.0f} MB)"
            )
    return 0


if __name__ == "__main__":
    sys.exit(main())
