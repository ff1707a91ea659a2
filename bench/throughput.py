"""Records/s on a real broker: Faust's own ceiling, Faust apps, raw Kafka and the worker.

Every system gets the same N lead records (the same bytes: keyed by business id, lead
JSON values) already waiting in an input topic with the same partition count, on the
same broker, in one run:

  raw                  a confluent-kafka consume -> produce loop in this process (the
                       producer settings every producer of the project uses);
  faust-consume        a minimal Faust agent (`bench/faust_passthrough.py`; kafka://,
                       concurrency 1) that only consumes, `stream.events()`: Faust's
                       ceiling, what it delivers to any agent;
  faust-take-consume   the same with `stream.take_events(1000, within=0.005)`;
  faust-batched        take_events + each record handed to Faust's producer without
                       waiting (its commit flushes it): what a well-built Faust app does;
  faust-send           `stream.events()` + `await sink.send()` per record;
  faust-take-send      take_events + `await sink.send()` per record;
  faust-tableK         faust-send writing K table keys per record;
  ours                 `python -m streams worker` (its own TOPIC_PREFIX / STREAMS_APP_ID,
                       memory store, default settings) granting the N leads spread over
                       --businesses businesses (<= 3 leads each by default, so every lead
                       is granted at once: one dial out per lead in); ours-VARIANT is a
                       diagnostic variant (`bench/worker_variant.py`).

Systems that produce are timed by the CreateTimes of their output records (sustained =
the middle 90%; full = first to last), so start-up and group joins are not counted;
the consume-only agents by their own clock at each hundredth of the records (the
same middle 90%).

    python -m bench.throughput [--bootstrap localhost:29092] [-n 40000]
        [--businesses 20000] [--partitions 8]
        [--only raw,faust-consume,faust-take-consume,faust-batched,faust-send,ours]

Prints one JSON line per system and one with the ratios, then a human summary.
Target: ours >= 60% of Faust's consume ceiling (the faster of the two consume loops).
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from bench.common import (
    DEFAULT_BOOTSTRAP,
    PYTHON,
    REPO,
    create_topics,
    delete_topics,
    emit,
    high_watermark,
    rates,
    read_all,
    say,
    settings_for,
    stop_process,
    tag,
    wait_count,
    worker_env,
)
from streams.kafka import admin, clients
from streams.settings import Settings
from streams.topics import CALLS_DIAL, LEADS_REQUESTS, topic_name
from tests.support.ports import free_port


def leads(n: int, businesses: int) -> list[tuple[bytes, bytes]]:
    out = []
    for i in range(n):
        business = f"b{i % businesses:06d}"
        value = {
            "lead_id": f"lead-{i:07d}",
            "business_id": business,
            "phone": f"+1415{i % 10_000_000:07d}",
        }
        out.append((business.encode(), json.dumps(value, separators=(",", ":")).encode()))
    return out


def produce(bootstrap: str, topic: str, records: list[tuple[bytes, bytes]]) -> None:
    producer = clients.producer(settings_for(bootstrap))
    for key, value in records:
        while True:
            try:
                producer.produce(topic, key=key, value=value)
                break
            except BufferError:
                producer.poll(0.1)
        producer.poll(0)
    assert producer.flush(60) == 0


def run_raw(bootstrap: str, src: str, dst: str, n: int) -> dict:
    settings = settings_for(bootstrap)
    consumer = clients.consumer(
        settings,
        f"{src}-raw",
        {"auto.offset.reset": "earliest", "enable.auto.commit": True},
    )
    producer = clients.producer(settings)
    consumer.subscribe([src])
    done = 0
    began = None
    cpu0 = time.process_time()
    while done < n:
        for message in consumer.consume(500, timeout=1.0):
            if message.error() is not None:
                continue
            began = began or time.monotonic()
            while True:
                try:
                    producer.produce(dst, key=message.key(), value=message.value())
                    break
                except BufferError:
                    producer.poll(0.05)
            done += 1
        producer.poll(0)
    producer.flush(60)
    wall = time.monotonic() - began
    cpu = time.process_time() - cpu0
    consumer.close()
    return {
        "wall_s_first_consume_to_flush": round(wall, 3),
        "per_s_delivered": round(n / wall),
        "process_cpu_share_of_one_core": round(cpu / wall, 2),
        "process_cpu_ms_per_record": round(1000 * cpu / n, 3),
    }


def profile(
    pid: int,
    bootstrap: str,
    topic: str,
    n: int,
    seconds: float,
    out: Path,
    process: subprocess.Popen,
) -> subprocess.Popen | None:
    """py-spy on `pid` for `seconds`, once a tenth of the records is out (steady state),
    sampling only the thread that holds the GIL: the process is bound by one core, so
    what matters is who has the interpreter, not which threads wait."""
    if not seconds:
        return None
    wait_count(bootstrap, topic, n // 10, 300, process)
    return subprocess.Popen(
        [
            str(Path(PYTHON).parent / "py-spy"),
            "record",
            "--pid",
            str(pid),
            "--duration",
            str(max(1, round(seconds))),
            "--rate",
            "200",
            "--gil",
            "--format",
            "raw",
            "--output",
            str(out),
        ],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )


def cpu_seconds(pid: int) -> float:
    """User + system CPU seconds of a process (and its reaped children), from /proc."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return sum(int(x) for x in fields[11:15]) / os.sysconf("SC_CLK_TCK")


def measured_run(
    process: subprocess.Popen,
    bootstrap: str,
    topic: str,
    n: int,
    timeout: float,
    profile_seconds: float,
    profile_out: Path,
) -> dict:
    """Wait for n records out; CPU use of the process between 10% and 100% of them."""
    wait_count(bootstrap, topic, n // 10, timeout, process)
    began, cpu0 = time.monotonic(), cpu_seconds(process.pid)
    spy = profile(process.pid, bootstrap, topic, n, profile_seconds, profile_out, process)
    wait_count(bootstrap, topic, n, timeout, process)
    wall, cpu = time.monotonic() - began, cpu_seconds(process.pid) - cpu0
    if spy:
        spy.wait(profile_seconds + 30)
    return {
        "process_cpu_share_of_one_core": round(cpu / wall, 2),
        "process_cpu_ms_per_record": round(1000 * cpu / (n - n // 10), 3),
    }


#: The Faust agents (`bench/faust_passthrough.py`): system name -> (loop, send).
FAUST_AGENTS = {
    "faust-consume": ("events", "none"),
    "faust-take-consume": ("take", "none"),
    "faust-batched": ("take", "batched"),
    "faust-send": ("events", "each"),
    "faust-take-send": ("take", "each"),
}
#: Systems that produce nothing: timed by the stamps they write as they consume.
CONSUME_ONLY = ("faust-consume", "faust-take-consume")


def faust_agent(system: str) -> tuple[str, str, int]:
    """(loop, send, table writes per record) of a Faust system name."""
    if system.startswith("faust-table"):
        return "events", "each", int(system[len("faust-table") :])
    loop, send = FAUST_AGENTS[system]
    return loop, send, 0


def stamped_run(process: subprocess.Popen, stamps: Path, n: int, timeout: float) -> dict:
    """Rates of a consume-only agent from the stamps it wrote at each hundredth of the
    n records: wall time between 5% and 95% of them (as `rates` takes the middle 90%
    of output records), CPU between 10% and 100%."""
    deadline = time.monotonic() + timeout
    while not stamps.exists():
        if process.poll() is not None:
            raise RuntimeError(f"agent exited {process.returncode} before {n} records")
        if time.monotonic() > deadline:
            raise TimeoutError(f"agent consumed fewer than {n} records in {timeout:.0f}s")
        time.sleep(0.2)
    time.sleep(0.1)  # written in one call; let it land
    marks = json.loads(stamps.read_text())

    def at(share: float) -> tuple[int, float, float]:
        return min(marks, key=lambda m: abs(m[0] - share * n))

    lo, hi, ten, last = at(0.05), at(0.95), at(0.10), marks[-1]
    return {
        "records": last[0],
        "span_s": round(last[1] - marks[0][1], 3),
        "per_s_sustained": round((hi[0] - lo[0]) / (hi[1] - lo[1])),
        "measured_on": "the agent's own clock (consume only)",
        "process_cpu_share_of_one_core": round((last[2] - ten[2]) / (last[1] - ten[1]), 2),
        "process_cpu_ms_per_record": round(
            1000 * (last[2] - ten[2]) / (last[0] - ten[0]), 3
        ),
    }


def run_faust(
    system: str,
    bootstrap: str,
    src: str,
    dst: str,
    n: int,
    workdir: Path,
    timeout: float,
    profile_seconds: float = 0,
    partitions: int = 8,
) -> dict:
    loop, send, writes = faust_agent(system)
    stamps = workdir / f"{system}-{tag()}.stamps.json"
    env = {
        **os.environ,
        "BENCH_IN": src,
        "BENCH_OUT": dst,
        "BENCH_APP": f"{src}-faust",
        "KAFKA_BOOTSTRAP_SERVERS": bootstrap,
        "BENCH_DATADIR": str(workdir / system),
        "BENCH_TABLE_WRITES": str(writes),
        "BENCH_PARTITIONS": str(partitions),
        "BENCH_LOOP": loop,
        "BENCH_SEND": send,
        "BENCH_COUNT": str(n),
        "BENCH_STAMPS": str(stamps),
    }
    with open(workdir / f"{system}.log", "wb") as log:
        process = subprocess.Popen(
            [
                PYTHON,
                str(REPO / "bench" / "faust_passthrough.py"),
                "worker",
                "-l",
                "warning",
                "--without-web",
            ],
            env=env,
            stdout=log,
            stderr=subprocess.STDOUT,
            cwd=workdir,
        )
        try:
            if send == "none":
                return stamped_run(process, stamps, n, timeout)
            return measured_run(
                process,
                bootstrap,
                dst,
                n,
                timeout,
                profile_seconds,
                workdir / f"{system}.pyspy.txt",
            )
        finally:
            stop_process(process)


def run_ours(
    bootstrap: str,
    prefix: str,
    n: int,
    businesses: int,
    partitions: int,
    workdir: Path,
    timeout: float,
    records: list,
    profile_seconds: float = 0,
    variant: str = "",
    source: Path = REPO,
) -> dict:
    env = worker_env(
        bootstrap,
        prefix,
        partitions,
        BENCH_VARIANT=variant,
        WORKER_WEB_PORT=str(free_port()),
        STREAMS_DATA_DIR=str(workdir / "ours"),
    )
    settings = Settings.from_env(env)
    admin.create_topics(settings)
    produce(bootstrap, topic_name(LEADS_REQUESTS, prefix), records)
    dial = topic_name(CALLS_DIAL, prefix)
    command = (
        [PYTHON, str(source / "bench" / "worker_variant.py")]
        if variant
        else [PYTHON, "-m", "streams", "worker"]
    )
    name = f"ours-{variant}" if variant else "ours"
    with open(workdir / f"{name}.log", "wb") as log:
        process = subprocess.Popen(
            command, env=env, stdout=log, stderr=subprocess.STDOUT, cwd=source
        )
        try:
            extra = measured_run(
                process,
                bootstrap,
                dial,
                n,
                timeout,
                profile_seconds,
                workdir / f"{name}.pyspy.txt",
            )
        finally:
            stop_process(process)
    changelog = f"{prefix}limiter-limiter-changelog"
    records = high_watermark(bootstrap, changelog)
    return {
        "businesses": businesses,
        "measured_on": "calls.dial",
        **extra,
        "changelog_records_per_lead": round(records / n, 2),
    }


TARGET_OF_CEILING = 0.6


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__.split("\n\n")[0],
        formatter_class=argparse.RawDescriptionHelpFormatter,
        epilog=__doc__.split("\n\n", 1)[1],
    )
    parser.add_argument("--bootstrap", default=DEFAULT_BOOTSTRAP)
    parser.add_argument("-n", "--records", type=int, default=40_000)
    parser.add_argument(
        "--businesses",
        type=int,
        default=None,
        help="businesses for ours (default: n/2, so all leads are granted)",
    )
    parser.add_argument("--partitions", type=int, default=8)
    parser.add_argument(
        "--only",
        default="raw,faust-consume,faust-take-consume,faust-batched,faust-send,ours",
        help="systems, in order (see above)",
    )
    parser.add_argument(
        "--timeout",
        type=float,
        default=300,
        help="longest wait for one system to produce n records",
    )
    parser.add_argument(
        "--variants",
        default="",
        help="also run diagnostic worker variants (bench/worker_variant.py),"
        " comma-separated, e.g. quiet",
    )
    parser.add_argument(
        "--repeat",
        type=int,
        default=1,
        help="measure every system this many times, interleaved; each figure is the median",
    )
    parser.add_argument(
        "--worker-source",
        type=Path,
        default=REPO,
        metavar="DIR",
        help="run ours from this checkout (e.g. a worktree of another commit: an A/B"
        " of worker changes in one session); default: this one",
    )
    parser.add_argument("--keep-topics", action="store_true")
    parser.add_argument(
        "--profile",
        type=float,
        default=0,
        metavar="SECONDS",
        help="py-spy faust-batched and our worker for this long, in passes of their"
        " own after the measured ones (raw stacks in the workdir; summarise with"
        " bench.profile)",
    )
    parser.add_argument("--workdir", default=None)
    args = parser.parse_args(argv)
    n = args.records
    businesses = args.businesses or max(1, n // 2)
    run = f"bench{tag()}."
    workdir = Path(args.workdir or tempfile.mkdtemp(prefix="bench-throughput-"))
    workdir.mkdir(parents=True, exist_ok=True)
    records = leads(n, businesses)
    systems = [s.strip() for s in args.only.split(",") if s.strip()]
    systems += [f"ours-{v.strip()}" for v in args.variants.split(",") if v.strip()]
    passes: dict[str, list[dict]] = {s: [] for s in systems}

    def measure(system: str, profile_seconds: float, topics: str) -> dict:
        """One pass of `system` on fresh topics (named after `topics`)."""
        if system == "raw" or system.startswith("faust"):
            src, dst = f"{run}{topics}.in", f"{run}{topics}.out"
            create_topics(args.bootstrap, [src, dst], args.partitions)
            produce(args.bootstrap, src, records)
            if system == "raw":
                extra = run_raw(args.bootstrap, src, dst, n)
            else:
                extra = run_faust(
                    system,
                    args.bootstrap,
                    src,
                    dst,
                    n,
                    workdir,
                    args.timeout,
                    profile_seconds,
                    args.partitions,
                )
        else:
            variant = system[len("ours-") :] if system.startswith("ours-") else ""
            prefix = f"{run}{topics.replace('+', '_')}."
            dst = topic_name(CALLS_DIAL, prefix)
            extra = run_ours(
                args.bootstrap,
                prefix,
                n,
                businesses,
                args.partitions,
                workdir,
                args.timeout,
                records,
                profile_seconds,
                variant,
                args.worker_source.resolve(),
            )
        measured = (
            {}
            if system in CONSUME_ONLY
            else rates([r[0] for r in read_all(args.bootstrap, dst, n)])
        )
        return {
            "bench": "throughput",
            "system": system,
            "n": n,
            "partitions": args.partitions,
            "bootstrap": args.bootstrap,
            **measured,
            **extra,
        }

    try:
        for attempt in range(args.repeat):
            for system in systems:
                say(f"{system}: {n} records on {args.bootstrap} (pass {attempt + 1})")
                result = measure(system, 0, f"{system}-{attempt}")
                if system == "raw":
                    # The loop only enqueues (all input is prefetched), so its CreateTimes
                    # span milliseconds; count it conservatively, first consume -> all
                    # delivered.
                    result["per_s_createtime"] = result["per_s_sustained"]
                    result["per_s_sustained"] = result["per_s_delivered"]
                passes[system].append(result)
                emit(result)
        # py-spy pauses the process for every sample: profiled, the worker ran at half
        # its rate and Faust's pass-through at 0.88 of its own, so the profiles come from
        # passes of their own, after the measured ones, and their rates are dropped.
        for system in ("faust-batched", "ours"):
            if args.profile and system in passes:
                say(f"{system}, profiled for {args.profile:g} s (rates not used)")
                measure(system, args.profile, f"{system}-profiled")
    finally:
        if not args.keep_topics:
            delete_topics(args.bootstrap, run)
    results = {s: _median_pass(p) for s, p in passes.items() if p}
    ratios: dict = {"bench": "throughput.ratios", "n": n, "passes": args.repeat}
    ceilings = [s for s in CONSUME_ONLY if s in results]
    if ceilings:
        ceiling = max(ceilings, key=lambda s: results[s]["per_s_sustained"])
        ratios["ceiling"] = ceiling
        for system in results:
            if system != ceiling:
                ratios[f"{system}/ceiling"] = round(
                    results[system]["per_s_sustained"]
                    / results[ceiling]["per_s_sustained"],
                    4,
                )
    emit(ratios)
    print(
        f"\nthroughput, {n:,} records, {args.partitions} partitions, {args.bootstrap},"
        f" median of {args.repeat} pass(es) (sustained = middle 90% of the records):"
    )
    for system, r in results.items():
        share = ratios.get(f"{system}/ceiling")
        print(
            f"  {system:>18}: {r['per_s_sustained']:>8,} records/s sustained"
            + (f" ({share:.1%} of the ceiling)" if share is not None else " (ceiling)")
            + f"; {r.get('process_cpu_share_of_one_core')} of a core,"
            f" {r.get('process_cpu_ms_per_record')} CPU ms/record"
        )
    if "ours/ceiling" in ratios:
        ok = ratios["ours/ceiling"] >= TARGET_OF_CEILING
        print(
            f"  ours = {ratios['ours/ceiling']:.1%} of {ratios['ceiling']} (target >="
            f" {TARGET_OF_CEILING:.0%}: {'MET' if ok else 'MISSED'})"
        )
    print(f"  logs in {workdir}")
    return 0


def _median_pass(passes: list[dict]) -> dict:
    """The pass with the median sustained rate (the lower middle one of an even count),
    with every pass's rate beside it."""
    ordered = sorted(passes, key=lambda r: r["per_s_sustained"])
    chosen = dict(ordered[(len(ordered) - 1) // 2])
    chosen["per_s_sustained_passes"] = [r["per_s_sustained"] for r in passes]
    return chosen


if __name__ == "__main__":
    sys.exit(main())
