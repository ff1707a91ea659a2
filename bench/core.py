"""Per-event cost of the pure limiter core, and the state it keeps.

No broker: `streams.limiter_table.process` is driven with a dict as the table,
exactly as the worker drives it (read = dict.get, writes applied in order).

1. Per-event cost of one business in several states. One "cycle" is the same six
   events in every case: a new lead request (of run "cycle"), then the five statuses
   (queued, initiated, ringing, in-progress, completed) of the business's oldest live
   call. The configurations:
   * `empty`: the business holds 2 calls; the new lead is granted at once and the
     completion frees a slot nobody waits for;
   * `waiting-K`: it holds 3 calls and K waiting leads; the new lead joins the queue
     and the completion grants the queue's head (K stays constant);
   * `scheduled-B`: as `empty`, beside B leads scheduled for next week (`not_before`);
   * `withdrawn-B`: as `waiting-1`, behind a run of B waiting leads that was withdrawn
     and not swept yet (no ticks here), so every grant passes it.
   Configurations are interleaved, repeat by repeat, so a noisy machine slows them
   alike; the median of the repeats is reported. `waiting-1` runs the same code path
   as `waiting-B`, so B vs 1 isolates the cost of the backlog's *size*; every
   configuration vs `empty` is the figure the target is about (<= 1.2x).
2. A run's withdrawal: the cost of the withdrawal event for a run of B waiting leads,
   against a lead event, and of the ticks that end its leads in slices (per lead, and
   how many ticks of `max_wakes_per_tick` leads a run of B takes).
3. State bytes per 100,000 businesses: each business gets 1-3 leads (seeded random),
   all granted at once; the table's size as the worker's changelog and store hold it
   (JSON of every key and value), while the calls are live and after every call ended.
   Resident memory of the dict store is reported alongside (RSS growth, approximate).
4. This core against another version's (`--versus REF`, main by default), in the same
   run: REF's `streams` package is exported from git to a temporary directory and both
   cores are driven by `bench.core_driver` in a process each, through the same events
   (leads of no run, which every version accepts) in `empty`, `waiting-1` and
   `waiting-B`, one repeat of one core after one of the other (which goes first
   alternates), so both see the same machine. Reported: each core's median and the
   cost ratio, this core's time per event over REF's.

    python -m bench.core [--backlog 100000] [--cycles 2000] [--repeats 7]
                         [--businesses 100000] [--versus main] [--json-only]

Prints one JSON line per measurement, then a human summary.
"""

from __future__ import annotations

import argparse
import collections
import gc
import json
import os
import random
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from bench.core_driver import LEADS, Business, Table, cycle, new_business
from streams.limiter_state import read_business, waiting_count
from streams.topics import Tick, Withdrawal, to_iso

TICKS = "limiter.ticks"


def prepare(config: str) -> Business:
    """A business in the steady state of configuration `config` (see the docstring)."""
    kind, _, size_text = config.partition("-")
    size = int(size_text or 0)
    business, calls = new_business(config, cycle_run="cycle")
    table = business.table
    for _ in range(calls):
        business.lead()
    if kind == "waiting":
        for _ in range(size):
            business.lead(run_id="backlog")
    elif kind == "scheduled":
        next_week = to_iso(table.now + 7 * 86400)
        for _ in range(size):
            business.lead(run_id="later", not_before=next_week)
    elif kind == "withdrawn":
        for _ in range(size):
            business.lead(run_id="bulk")
        table.feed(LEADS, Withdrawal(business.bid, run_id="bulk"))
        business.lead()
    assert len(business.live) == calls, (len(business.live), calls)
    return business


def counts(business: Business) -> tuple[int, int]:
    record = read_business(business.table.data.get, business.bid)
    return (0, 0) if record is None else (waiting_count(record), record["scheduled"])


def configurations(backlog: int) -> list[str]:
    return [
        "empty",
        "waiting-1",
        f"waiting-{backlog}",
        f"scheduled-{backlog}",
        f"withdrawn-{backlog}",
    ]


def bench_backlog(backlog: int, cycles: int, repeats: int) -> list[dict]:
    configs = configurations(backlog)
    built = {}
    for config in configs:
        began = time.perf_counter()
        built[config] = prepare(config)
        print(
            f"# prepared {config} in {time.perf_counter() - began:.1f}s",
            file=sys.stderr,
            flush=True,
        )
    before = {config: counts(built[config]) for config in configs}
    # The worker keeps its table out of the cyclic GC (streams/app.py,
    # _freeze_survivors); so does this bench. Without it the collections that walk
    # the 100,000-lead table landed on some configurations more than others (backlog
    # 1 and 100,000 measured 1.23x backlog 0, 1.0-1.07x with it).
    gc.collect()
    gc.freeze()
    for config in configs:  # warm-up (a withdrawn run is passed by the first grant)
        cycle(built[config], max(50, cycles // 10))
    samples: dict[str, list[float]] = {config: [] for config in configs}
    for _ in range(repeats):
        for config in configs:
            seconds = cycle(built[config], cycles)
            samples[config].append(cycles * 6 / seconds)
    results = []
    base = statistics.median(samples["empty"])
    for config in configs:
        assert counts(built[config]) == before[config], (config, counts(built[config]))
        median = statistics.median(samples[config])
        waiting, scheduled = counts(built[config])
        results.append(
            {
                "bench": "core.per_event",
                "config": config,
                "waiting": waiting,
                "scheduled": scheduled,
                "events_per_s_median": round(median),
                "events_per_s_min": round(min(samples[config])),
                "events_per_s_max": round(max(samples[config])),
                "us_per_event_median": round(1e6 / median, 2),
                "cost_vs_empty": round(base / median, 3),
                "cycles": cycles,
                "events_per_repeat": cycles * 6,
                "repeats": repeats,
            }
        )
    return results


def bench_withdrawal(size: int, repeats: int = 5) -> dict:
    """The withdrawal event of a run of `size` waiting leads against a lead event, and
    the ticks that end its leads (median of `repeats` for the events)."""
    business = prepare(f"waiting-{size}")
    table = business.table
    leads, withdrawals = [], []
    for n in range(repeats):
        began = time.perf_counter()
        business.lead(run_id=f"probe-{n}")
        leads.append(time.perf_counter() - began)
    for n in range(repeats):
        began = time.perf_counter()
        table.feed(LEADS, Withdrawal(business.bid, run_id=f"probe-{n}"))
        withdrawals.append(time.perf_counter() - began)
    table.feed(LEADS, Withdrawal(business.bid, run_id="backlog"))
    ticks, swept, began = 0, 0, time.perf_counter()
    while counts(business)[0] > repeats:  # the probes' leads were withdrawn at once
        table.now = float(int(table.now) + 1)
        effects = table.feed(TICKS, Tick(0, to_iso(table.now)))
        swept += sum(1 for note in effects.notes if note.kind == "outcome-withdrawn")
        ticks += 1
    sweep_seconds = time.perf_counter() - began
    return {
        "bench": "core.withdrawal",
        "run_leads": size,
        "lead_event_us": round(1e6 * statistics.median(leads), 1),
        "withdrawal_event_us": round(1e6 * statistics.median(withdrawals), 1),
        "withdrawal_vs_lead_event": round(
            statistics.median(withdrawals) / statistics.median(leads), 2
        ),
        "ticks_to_sweep": ticks,
        "leads_per_tick": table.rules.max_wakes_per_tick,
        "swept": swept,
        "us_per_lead_swept": round(1e6 * sweep_seconds / max(1, swept), 2),
        "tick_event_ms": round(1e3 * sweep_seconds / max(1, ticks), 2),
    }


ROOT = Path(__file__).resolve().parent.parent


class Core:
    """One version of the core in a process of its own, serving `bench.core_driver`."""

    def __init__(self, name: str, directory: Path, configs: list[str]) -> None:
        self.name = name
        self.process = subprocess.Popen(
            [sys.executable, "-m", "bench.core_driver", "--serve", *configs],
            cwd=directory,
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            text=True,
        )
        ready = self._answer()
        self.streams = ready["streams"]
        if not Path(self.streams).resolve().is_relative_to(directory.resolve()):
            self.close()
            raise SystemExit(f"the {name} core imported {self.streams}, not its own")

    def _answer(self) -> dict:
        assert self.process.stdout is not None
        line = self.process.stdout.readline()
        if not line:
            raise SystemExit(f"the {self.name} core's process ended")
        return json.loads(line)

    def cycle(self, config: str, cycles: int) -> tuple[float, int]:
        assert self.process.stdin is not None
        self.process.stdin.write(f"{config} {cycles}\n")
        self.process.stdin.flush()
        answer = self._answer()
        return answer["seconds"], answer["waiting"]

    def close(self) -> None:
        if self.process.poll() is None:
            assert self.process.stdin is not None
            self.process.stdin.write("quit\n")
            self.process.stdin.close()
            self.process.wait(timeout=60)


def commit_of(ref: str) -> str | None:
    """REF's abbreviated commit, or None when this checkout has no such ref."""
    found = subprocess.run(
        ["git", "-C", str(ROOT), "rev-parse", "--short", "--verify", f"{ref}^{{commit}}"],
        capture_output=True,
        text=True,
    )
    return found.stdout.strip() if found.returncode == 0 else None


def export(commit: str, into: Path) -> None:
    """The commit's `streams` package and this checkout's driver into `into`."""
    archive = subprocess.run(
        ["git", "-C", str(ROOT), "archive", "--format=tar", commit, "streams"],
        check=True,
        capture_output=True,
    ).stdout
    subprocess.run(["tar", "-x", "-C", str(into)], input=archive, check=True)
    (into / "bench").mkdir()
    for name in ("__init__.py", "core_driver.py"):
        shutil.copy(ROOT / "bench" / name, into / "bench" / name)


def bench_versus(
    ref: str, commit: str, backlog: int, cycles: int, repeats: int
) -> list[dict]:
    configs = ["empty", "waiting-1", f"waiting-{backlog}"]
    directory = Path(tempfile.mkdtemp(prefix="bench-core-"))
    cores: list[Core] = []
    try:
        export(commit, directory)
        print(f"# preparing this core and {ref} ({commit})", file=sys.stderr, flush=True)
        cores = [Core("this", ROOT, configs), Core(ref, directory, configs)]
        for core in cores:  # warm-up
            for config in configs:
                core.cycle(config, max(50, cycles // 10))
        samples = {(c.name, config): [] for c in cores for config in configs}
        backlogs: dict[tuple[str, str], set[int]] = collections.defaultdict(set)
        for repeat in range(repeats):
            for config in configs:
                for core in cores if repeat % 2 == 0 else cores[::-1]:
                    seconds, waiting = core.cycle(config, cycles)
                    samples[core.name, config].append(cycles * 6 / seconds)
                    backlogs[core.name, config].add(waiting)
    finally:
        for core in cores:
            core.close()
        shutil.rmtree(directory)
    results = []
    for config in configs:
        this = statistics.median(samples["this", config])
        other = statistics.median(samples[ref, config])
        # Both cores held the same backlog throughout, or the comparison is void.
        assert backlogs["this", config] == backlogs[ref, config], backlogs
        results.append(
            {
                "bench": "core.versus",
                "config": config,
                "versus": ref,
                "versus_commit": commit,
                "waiting": sorted(backlogs["this", config]),
                "events_per_s_median": round(this),
                "versus_events_per_s_median": round(other),
                "cost_vs_versus": round(other / this, 3),
                "cycles": cycles,
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
    parser.add_argument(
        "--versus",
        metavar="REF",
        help="git ref of the core to compare with in the same run (default main, when"
        " this checkout has it; an empty string skips it)",
    )
    parser.add_argument("--json-only", action="store_true")
    args = parser.parse_args(argv)
    if args.versus is None:  # the default: main, if there is one to compare with
        args.versus = "main" if commit_of("main") else ""
        if not args.versus:
            print("# no git ref main here: no comparison", file=sys.stderr, flush=True)
    commit = commit_of(args.versus) if args.versus else None
    if args.versus and commit is None:
        parser.error(f"--versus {args.versus}: no such git ref in {ROOT}")
    results = bench_backlog(args.backlog, args.cycles, args.repeats)
    results.append(bench_withdrawal(args.backlog))
    if args.versus and commit is not None:
        results += bench_versus(
            args.versus, commit, args.backlog, args.cycles, args.repeats
        )
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
                f"  {r['config']:>17}: {r['events_per_s_median']:>8,} events/s"
                f"  ({r['us_per_event_median']} us/event; cost x{r['cost_vs_empty']}"
                f" of empty; min-max {r['events_per_s_min']:,}"
                f"-{r['events_per_s_max']:,})"
            )
    worst = max(r["cost_vs_empty"] for r in results if r["bench"] == "core.per_event")
    print(
        f"  target: every configuration <= 1.2x empty: worst x{worst}"
        f" -> {'MET' if worst <= 1.2 else 'MISSED'}"
    )
    versus = [r for r in results if r["bench"] == "core.versus"]
    if versus:
        print("this core against another version's, same events, interleaved:")
    for r in versus:
        print(
            f"  {r['config']:>17}: {r['events_per_s_median']:>8,} events/s here,"
            f" {r['versus_events_per_s_median']:>8,} on {r['versus']}"
            f" ({r['versus_commit']}): cost x{r['cost_vs_versus']} of {r['versus']}'s"
        )
    for r in results:
        if r["bench"] == "core.withdrawal":
            print(
                f"withdrawing a run of {r['run_leads']:,} waiting leads:"
                f" {r['withdrawal_event_us']} us (a lead event: {r['lead_event_us']} us);"
                f" its leads end in {r['ticks_to_sweep']:,} ticks of"
                f" {r['leads_per_tick']} ({r['us_per_lead_swept']} us per lead,"
                f" {r['tick_event_ms']} ms per tick)"
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
