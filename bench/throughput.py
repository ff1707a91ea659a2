"""Events/s on a real broker: raw Kafka ceiling, Faust floor, and our worker.

All three get the same N lead records (the same bytes: keyed by business id, lead JSON
values) already waiting in an input topic with the same partition count, on the same
broker, in one run, and are measured the same way: from the CreateTime timestamps of
the records they produce (sustained = the middle 90% of the output records; full = first
to last), so process start-up and consumer-group joins are not counted.

  (a) ceiling: a confluent-kafka consumer -> producer loop in this process
      (the producer settings every producer of the project uses, idempotent, acks=all);
  (b) Faust floor: `bench/faust_passthrough.py`, a minimal Faust agent (kafka://,
      concurrency 1, acks=-1, raw serializers) forwarding each record unchanged;
  (c) ours: `python -m streams worker` (its own TOPIC_PREFIX / STREAMS_APP_ID, memory
      store, default settings) granting the N leads spread over --businesses businesses
      (<= 3 leads each by default, so every lead is granted at once: one dial out per
      lead in, the same shape as the pass-throughs). Measured on the dial topic.

    python -m bench.throughput [--bootstrap localhost:29092] [-n 20000]
                               [--businesses 10000] [--partitions 8] [--only raw,faust,ours]

Prints one JSON line per system and one with the ratios, then a human summary.
Target: ours >= 50% of the Faust pass-through.
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
    """py-spy on `pid` for `seconds`, once a tenth of the records is out (steady state)."""
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


def run_faust(
    bootstrap: str,
    src: str,
    dst: str,
    n: int,
    workdir: Path,
    timeout: float,
    profile_seconds: float = 0,
    writes: int = 0,
    partitions: int = 8,
) -> dict:
    name = f"faust-table{writes}" if writes else "faust"
    env = {
        **os.environ,
        "BENCH_IN": src,
        "BENCH_OUT": dst,
        "BENCH_APP": f"{src}-faust",
        "KAFKA_BOOTSTRAP_SERVERS": bootstrap,
        "BENCH_DATADIR": str(workdir / name),
        "BENCH_TABLE_WRITES": str(writes),
        "BENCH_PARTITIONS": str(partitions),
    }
    with open(workdir / f"{name}.log", "wb") as log:
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
            return measured_run(
                process,
                bootstrap,
                dst,
                n,
                timeout,
                profile_seconds,
                workdir / f"{name}.pyspy.txt",
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
) -> dict:
    env = {
        **os.environ,
        "BENCH_VARIANT": variant,
        "KAFKA_BOOTSTRAP_SERVERS": bootstrap,
        "TOPIC_PREFIX": prefix,
        "STREAMS_APP_ID": "limiter",
        "TOPIC_PARTITIONS": str(partitions),
        "WORKER_WEB_PORT": str(free_port()),
        "STREAMS_DATA_DIR": str(workdir / "ours"),
    }
    settings = Settings.from_env(env)
    admin.create_topics(settings)
    produce(bootstrap, topic_name(LEADS_REQUESTS, prefix), records)
    dial = topic_name(CALLS_DIAL, prefix)
    command = (
        [PYTHON, str(REPO / "bench" / "worker_variant.py")]
        if variant
        else [PYTHON, "-m", "streams", "worker"]
    )
    name = f"ours-{variant}" if variant else "ours"
    with open(workdir / f"{name}.log", "wb") as log:
        process = subprocess.Popen(
            command, env=env, stdout=log, stderr=subprocess.STDOUT, cwd=REPO
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


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__.split("\n\n")[0],
        formatter_class=argparse.RawDescriptionHelpFormatter,
        epilog=__doc__.split("\n\n", 1)[1],
    )
    parser.add_argument("--bootstrap", default=DEFAULT_BOOTSTRAP)
    parser.add_argument("-n", "--records", type=int, default=20_000)
    parser.add_argument(
        "--businesses",
        type=int,
        default=None,
        help="businesses for ours (default: n/2, so all leads are granted)",
    )
    parser.add_argument("--partitions", type=int, default=8)
    parser.add_argument(
        "--only",
        default="raw,faust,ours",
        help="systems, in order; also faust-tableK: the Faust pass-through"
        " writing K table keys per record",
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
    parser.add_argument("--keep-topics", action="store_true")
    parser.add_argument(
        "--profile",
        type=float,
        default=0,
        metavar="SECONDS",
        help="py-spy the Faust pass-through and our worker for this long, in"
        " passes of their own after the measured ones (raw stacks in"
        " the workdir; summarise with bench.profile)",
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
    results = {}

    def measure(system: str, profile_seconds: float, topics: str) -> dict:
        """One pass of `system` on fresh topics (named after `topics`)."""
        if system == "raw" or system.startswith("faust"):
            src, dst = f"{run}{topics}.in", f"{run}{topics}.out"
            create_topics(args.bootstrap, [src, dst], args.partitions)
            produce(args.bootstrap, src, records)
            if system == "raw":
                extra = run_raw(args.bootstrap, src, dst, n)
            else:
                writes = int(system[len("faust-table") :] or 0) if system != "faust" else 0
                extra = run_faust(
                    args.bootstrap,
                    src,
                    dst,
                    n,
                    workdir,
                    args.timeout,
                    profile_seconds,
                    writes,
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
            )
        stamps = [r[0] for r in read_all(args.bootstrap, dst, n)]
        return {
            "bench": "throughput",
            "system": system,
            "n": n,
            "partitions": args.partitions,
            "bootstrap": args.bootstrap,
            **rates(stamps),
            **extra,
        }

    try:
        for system in systems:
            say(f"{system}: {n} records on {args.bootstrap}")
            result = measure(system, 0, system)
            if system == "raw":
                # The loop only enqueues (all input is prefetched), so its CreateTimes span
                # milliseconds; count it conservatively, first consume -> all delivered.
                result["per_s_createtime"] = result["per_s_sustained"]
                result["per_s_sustained"] = result["per_s_delivered"]
            results[system] = result
            emit(result)
        # py-spy pauses the process for every sample: profiled, the worker ran at half
        # its rate and Faust's pass-through at 0.88 of its own, so the profiles come from
        # passes of their own, after the measured ones, and their rates are dropped.
        for system in ("faust", "ours"):
            if args.profile and system in results:
                say(f"{system}, profiled for {args.profile:g} s (rates not used)")
                measure(system, args.profile, f"{system}-profiled")
    finally:
        if not args.keep_topics:
            delete_topics(args.bootstrap, run)
    ratios = {"bench": "throughput.ratios", "n": n}
    pairs = [("ours", "faust"), ("ours", "raw"), ("faust", "raw")]
    pairs += [(s, "faust") for s in results if s.startswith(("ours-", "faust-"))]
    for a, b in pairs:
        if a in results and b in results:
            ratios[f"{a}/{b}"] = round(
                results[a]["per_s_sustained"] / results[b]["per_s_sustained"], 4
            )
    emit(ratios)
    print(
        f"\nthroughput, {n:,} records, {args.partitions} partitions, {args.bootstrap}"
        " (sustained = middle 90% of output records):"
    )
    for system, r in results.items():
        print(
            f"  {system:>18}: {r['per_s_sustained']:>8,} records/s sustained"
            f" ({r['per_s_full']:,}/s first-to-last over {r['span_s']}s;"
            f" {r.get('process_cpu_share_of_one_core')} of a core,"
            f" {r.get('process_cpu_ms_per_record')} CPU ms/record)"
        )
    if "ours/faust" in ratios:
        ok = ratios["ours/faust"] >= 0.5
        print(
            f"  ours/faust = {ratios['ours/faust']:.1%} (target >= 50%:"
            f" {'MET' if ok else 'MISSED'})"
        )
    for key in ratios:
        if "/" in key and key != "ours/faust":
            print(f"  {key} = {ratios[key]:.1%}")
    print(f"  logs in {workdir}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
