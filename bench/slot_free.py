"""Slot-free -> next dial delay, grants/s and true concurrency: the shared analysis, and
the run of *ours* (the real worker + the simulated dialer) that `bench/seed_poller.py`
compares with the seed's design.

The workload (same for both designs): `businesses` businesses with `leads` leads each,
all offered at the start; limit 3; calls follow the simulated dialer's call model
(two set-up steps of U(0.05, 0.3) s, ring U(0.1, 0.8) s, answered with p = 0.8 and then
talk U(talk_min, talk_max) s).

The delay. With all leads offered up front and a limit of 3, the business's k-th call
end frees the slot its (k+3)-th dial refills, so delay_k = placed_{k+3} - ended_k
(k = 1 .. leads-3). This is "the time between an end and the next dial of the same
business while it had waiting leads", except that when two slots free before the first
refill lands, one refill is not credited to both ends. An end whose refill had not
happened when the run stopped is counted as censored, not as a sample.

Ours, standalone:

    python -m bench.slot_free --businesses 100 --leads 12 [--bootstrap localhost:29092]
"""

from __future__ import annotations

import argparse
import collections
import json
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

from bench.common import (
    DEFAULT_BOOTSTRAP,
    PYTHON,
    REPO,
    delete_topics,
    emit,
    percentile,
    rates,
    read_all,
    say,
    stop_process,
    tag,
    worker_env,
)
from tests.support.ports import free_port

LIMIT = 3
SETUP = (0.05, 0.3)
RING = (0.1, 0.8)
ANSWER_RATIO = 0.8


def call_seconds(rng, talk: tuple[float, float]) -> float:
    """One call's length under the simulated dialer's model."""
    seconds = rng.uniform(*SETUP) + rng.uniform(*SETUP) + rng.uniform(*RING)
    if rng.random() < ANSWER_RATIO:
        seconds += rng.uniform(*talk)
    return seconds


#: Samples whose slot freed this long after the run's first dial are "steady state":
#: the burst of every business's first three grants is over by then.
WARMUP_SECONDS = 15.0


def analyse(
    placed: dict[str, list[float]],
    ended: dict[str, list[float]],
    leads: int,
    stopped_at: float,
    limit: int = LIMIT,
) -> dict:
    """Delays, grants/s and true peak concurrency from per-business placed/ended times."""
    delays, censored, negative = [], 0, 0
    steady, bounds = [], []
    first = min((min(v) for v in placed.values() if v), default=0.0)
    over_businesses, peak = 0, 0
    moments_over_s = 0.0
    for business, starts in placed.items():
        starts = sorted(starts)
        ends = sorted(ended.get(business, []))
        for k, end in enumerate(ends):
            refill = k + limit
            if refill >= leads:
                break
            if refill < len(starts):
                delay = starts[refill] - end
                if delay < 0:
                    negative += 1
                delays.append(delay)
                if end >= first + WARMUP_SECONDS:
                    steady.append(delay)
            elif end < stopped_at:
                censored += 1
                bounds.append(stopped_at - end)
        # true concurrency: sweep (end before start at equal times)
        events = sorted(
            [(t, 1) for t in starts] + [(t, -1) for t in ends], key=lambda e: (e[0], e[1])
        )
        live, top, over_since = 0, 0, None
        for t, step in events:
            live += step
            top = max(top, live)
            if live > limit and over_since is None:
                over_since = t
            elif live <= limit and over_since is not None:
                moments_over_s += t - over_since
                over_since = None
        peak = max(peak, top)
        over_businesses += top > limit
    all_starts = [t for starts in placed.values() for t in starts]
    ms = [d * 1000 for d in delays]
    return {
        "grants": len(all_starts),
        "grants_per_s_sustained": rates([int(t * 1000) for t in all_starts]).get(
            "per_s_sustained"
        ),
        "slot_free_samples": len(delays),
        "slot_free_censored": censored,
        "slot_free_negative": negative,
        "slot_free_ms_p50": round(percentile(ms, 50), 1) if ms else None,
        "slot_free_ms_p99": round(percentile(ms, 99), 1) if ms else None,
        "slot_free_ms_max": round(max(ms), 1) if ms else None,
        # With censored ends, the delays they would have had are at least (stop - end):
        # percentiles over samples + those bounds are lower bounds of the true ones.
        "slot_free_ms_p50_at_least": (
            round(percentile(delays + bounds, 50) * 1000, 1) if censored else None
        ),
        "slot_free_ms_p99_at_least": (
            round(percentile(delays + bounds, 99) * 1000, 1) if censored else None
        ),
        "steady_after_s": WARMUP_SECONDS,
        "steady_samples": len(steady),
        "steady_slot_free_ms_p50": round(percentile(steady, 50) * 1000, 1)
        if steady
        else None,
        "steady_slot_free_ms_p99": round(percentile(steady, 99) * 1000, 1)
        if steady
        else None,
        "true_peak_concurrency": peak,
        "businesses_over_limit": over_businesses,
        "seconds_over_limit_summed": round(moments_over_s, 3),
    }


def split_delay(
    placed: dict, ended: dict, leads: int, status_times: dict, dial_times: dict
) -> dict:
    """Where ours spends a slot-free delay, from record CreateTimes (ms, one host clock):
    dialer out (call ended -> its terminal status produced), worker (status produced ->
    refill dial produced: Kafka both ways, Faust, our shell and core, the changelog
    wait), dialer in (dial produced -> the simulated dialer placed it: its poll loop)."""
    parts: dict[str, list[float]] = {
        "dialer_out": [],
        "worker": [],
        "dialer_in": [],
        "steady_worker": [],
    }
    first = min((t for v in placed.values() for t, _ in v), default=0.0)
    for business, starts in placed.items():
        starts = sorted(starts)
        for k, (end, end_dial) in enumerate(sorted(ended.get(business, []))):
            if k + LIMIT >= min(leads, len(starts)):
                break
            start, refill = starts[k + LIMIT]
            if end_dial not in status_times or refill not in dial_times:
                continue
            parts["dialer_out"].append(status_times[end_dial] - end)
            parts["worker"].append(dial_times[refill] - status_times[end_dial])
            parts["dialer_in"].append(start - dial_times[refill])
            if end >= first + WARMUP_SECONDS:
                parts["steady_worker"].append(dial_times[refill] - status_times[end_dial])
    out = {}
    for name, values in parts.items():
        ms = [v * 1000 for v in values]
        out[f"split_{name}_ms_p50"] = round(percentile(ms, 50), 1) if ms else None
        out[f"split_{name}_ms_p99"] = round(percentile(ms, 99), 1) if ms else None
    return out


def record_times(bootstrap: str, prefix: str) -> tuple[dict, dict]:
    """CreateTime (s) of each dial's terminal status and of its first dial command."""
    from streams.topics import CALLS_DIAL, CALLS_STATUS, TERMINAL_STATUSES, topic_name

    status_times, dial_times = {}, {}
    for ts, _key, value in read_all(
        bootstrap, topic_name(CALLS_STATUS, prefix), values=True
    ):
        status = json.loads(value)
        if status["status"] in TERMINAL_STATUSES:
            status_times.setdefault(status["dial_id"], ts / 1000)
    for ts, _key, value in read_all(bootstrap, topic_name(CALLS_DIAL, prefix), values=True):
        dial_times.setdefault(json.loads(value)["dial_id"], ts / 1000)
    return status_times, dial_times


def ledger_times(ledger: Path) -> tuple[dict, dict]:
    """Per business, (time, dial_id) of each call placed and ended, from the dialer's
    ledger (calls dropped when the dialer stopped are not ends)."""
    placed, ended = collections.defaultdict(list), collections.defaultdict(list)
    for raw in ledger.read_text().splitlines():
        line = json.loads(raw)
        if line["event"] == "placed":
            placed[line["business_id"]].append((line["at"], line["dial_id"]))
        elif line["event"] == "ended" and line.get("status") != "abandoned":
            ended[line["business_id"]].append((line["at"], line["dial_id"]))
    return placed, ended


# -- ours ------------------------------------------------------------------------------


def run_ours(
    bootstrap: str,
    businesses: int,
    leads: int,
    talk: tuple[float, float],
    cap_seconds: float,
    workdir: Path,
    partitions: int = 8,
    seed: int = 7,
    workers: int = 1,
) -> dict:
    from streams.dialers.simulated import SimulatedDialer
    from streams.kafka import admin, clients
    from streams.settings import Settings
    from streams.topics import LEADS_REQUESTS, record_key, topic_name

    prefix = f"bench{tag()}.slot."
    env = worker_env(
        bootstrap,
        prefix,
        partitions,
        WORKER_WEB_PORT=str(free_port()),
        STREAMS_DATA_DIR=str(workdir / "data"),
    )
    settings = Settings.from_env(env)
    try:
        admin.create_topics(settings)
        producer = clients.producer(settings)
        topic = topic_name(LEADS_REQUESTS, prefix)
        # A business's leads back to back (a bulk-call list per business), so the worker
        # holds each business's backlog as soon as it reaches the business.
        for b in range(businesses):
            for n in range(leads):
                business = f"b{b:06d}"
                value = json.dumps(
                    {
                        "lead_id": f"l{n:04d}",
                        "business_id": business,
                        "phone": "+14155550100",
                    }
                ).encode()
                while True:
                    try:
                        producer.produce(topic, key=record_key(business), value=value)
                        break
                    except BufferError:
                        producer.poll(0.1)
        assert producer.flush(60) == 0
        ledger = workdir / "dialer.jsonl"
        dialer = SimulatedDialer(
            settings,
            seed=seed,
            talk_seconds=talk,
            ring_seconds=RING,
            answer_ratio=ANSWER_RATIO,
            ledger_path=ledger,
        )
        stop = threading.Event()
        thread = threading.Thread(target=dialer.run, args=(stop,), daemon=True)
        processes = []
        for n in range(workers):
            with open(workdir / f"worker-{n + 1}.log", "wb") as log:
                processes.append(
                    subprocess.Popen(
                        [PYTHON, "-m", "streams", "worker"],
                        env={
                            **env,
                            "WORKER_WEB_PORT": str(free_port()),
                            "STREAMS_DATA_DIR": str(workdir / f"data-{n + 1}"),
                        },
                        stdout=log,
                        stderr=subprocess.STDOUT,
                        cwd=REPO,
                    )
                )
        thread.start()
        began = time.monotonic()
        total = businesses * leads
        try:
            while time.monotonic() - began < cap_seconds:
                snap = dialer.snapshot()
                if sum(snap["ended_by_status"].values()) >= total:
                    break
                for worker in processes:
                    if worker.poll() is not None:
                        raise RuntimeError(f"worker exited {worker.returncode}")
                time.sleep(1)
            stopped_at = time.time()
        finally:
            stop.set()
            thread.join(30)
            for worker in processes:
                stop_process(worker)
        snap = dialer.snapshot()
        status_times, dial_times = record_times(bootstrap, prefix)
    finally:
        delete_topics(bootstrap, prefix)
    placed, ended = ledger_times(ledger)
    result = analyse(
        {b: [t for t, _ in v] for b, v in placed.items()},
        {b: [t for t, _ in v] for b, v in ended.items()},
        leads,
        stopped_at,
    )
    result.update(split_delay(placed, ended, leads, status_times, dial_times))
    result.update(
        system="ours" if workers == 1 else f"ours-{workers}-workers",
        workers=workers,
        businesses=businesses,
        leads_per_business=leads,
        talk_s=list(talk),
        ran_s=round(time.monotonic() - began, 1),
        completed=sum(len(v) for v in ended.values()),
        offered=businesses * leads,
        refused=snap["refused"],
        duplicates=snap["duplicates"],
        dialer_max_live=max(snap["max_live_by_business"].values(), default=0),
    )
    return result


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__.split("\n\n")[0],
        formatter_class=argparse.RawDescriptionHelpFormatter,
        epilog=__doc__.split("\n\n", 1)[1],
    )
    parser.add_argument("--bootstrap", default=DEFAULT_BOOTSTRAP)
    parser.add_argument("--businesses", type=int, default=100)
    parser.add_argument("--leads", type=int, default=12, help="leads per business")
    parser.add_argument("--talk", type=float, nargs=2, default=(5.0, 15.0))
    parser.add_argument("--cap", type=float, default=150, help="longest run, seconds")
    parser.add_argument(
        "--workers", type=int, default=1, help="worker processes (one group)"
    )
    args = parser.parse_args(argv)
    workdir = Path(tempfile.mkdtemp(prefix="bench-slot-"))
    say(f"ours: {args.businesses} businesses x {args.leads} leads; logs in {workdir}")
    result = {
        "bench": "slot_free",
        **run_ours(
            args.bootstrap,
            args.businesses,
            args.leads,
            tuple(args.talk),
            args.cap,
            workdir,
            workers=args.workers,
        ),
    }
    emit(result)
    return 0


if __name__ == "__main__":
    sys.exit(main())
