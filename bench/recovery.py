"""Recovery time of a killed worker holding N businesses (memory and rocksdb stores), and
the state bytes and resident memory that N businesses cost.

Method. Pushing 100,000 businesses' leads through the worker would take many minutes,
so the state is built offline with the pure core (`streams.limiter_table.process`, a
dict as the table, as `bench/core.py` does): N businesses (default 100,000) with 1-3
leads each (seeded), every lead a `LeadRequest` from `<prefix>leads.requests`, on the
partition the real producer would choose (murmur2 of the UTF-8 business id, as
`murmur2_random` and aiokafka do) at that partition's next offset. All leads are
granted at once, so every business holds 1-3 live calls. Like the worker, each final
key and value is then written to the table's changelog partition of the event that
last wrote it, JSON-encoded by Faust's own codec: the changelog as compaction would
leave it (one record per live key). The real worker writes each key once per unit
(`streams/shell/units.py`), so somewhat more records than that until the broker compacts.

Dial timers are set long (DIAL_DEADLINE_SECONDS=3600, DIAL_ACK_TIMEOUT_SECONDS=3000),
both for the core and the workers, so that no resend or expiry work starts while the
recovery is measured: the figures are about the replay, not about what follows it.

Per store, `python -m streams worker` is started on that changelog and timed from
process start: `web_s` (its web server answers), `assigned_s` (partitions assigned,
from its log), `restored_s` (Faust's "Restore complete!", from its log) and `ready_s`
(GET /businesses/<id>/ turns from 503 to 200, polled every 0.2 s). Then its resident
memory (VmRSS, and the peak VmHWM) is read and a sample of businesses checked against
the state built (their live calls). Then it is SIGKILLed and started again at once:

* memory://: both starts replay the whole changelog (Faust's memory store keeps
  nothing across a process);
* rocksdb://: the first start has an empty data dir (cold, replays everything); the
  restart after the SIGKILL keeps its local tables (they hold only what the changelog
  acknowledged, `streams/shell/units.py`) and reads the changelog only from the offset they
  applied; it is then stopped cleanly and started once more.

Each worker runs with WORKER_INSTANCE_ID (Kafka static membership), as the shipped
Kubernetes StatefulSet does: a restarted worker takes its partitions back at once
instead of waiting for the group to drop its killed self after the session timeout
(15 s). `--dynamic` measures without it.

    python -m bench.recovery [--businesses 100000] [--partitions 8] [--dynamic]
                             [--stores memory,rocksdb] [--bootstrap localhost:29092]
                             [--markdown /tmp/recovery.md]

Prints one JSON line per measurement, then a human summary on stderr. Target: ready
<= 10 s after a kill, for 100,000 businesses. The topics it creates are deleted and
the data dirs removed at the end; worker logs stay in the printed workdir.
"""

from __future__ import annotations

import argparse
import contextlib
import datetime as dt
import gc
import json
import random
import shutil
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path

from aiokafka.partitioner import murmur2
from faust.serializers import codecs

from bench.common import (
    DEFAULT_BOOTSTRAP,
    PYTHON,
    REPO,
    delete_topics,
    emit,
    high_watermark,
    say,
    settings_for,
    stop_process,
    tag,
    worker_env,
)
from streams import limiter_table as core
from streams.kafka import admin, clients
from streams.settings import Settings
from streams.topics import (
    LEADS_REQUESTS,
    LeadRequest,
    changelog_topic,
    topic_name,
)
from tests.support.ports import free_port

APP_ID = "limiter"
PHONE = "+14155550100"
TARGET_SECONDS = 10.0
#: Keep the leases' timers out of the measured minutes (see the module docstring).
LONG_TIMERS = {"DIAL_DEADLINE_SECONDS": "3600", "DIAL_ACK_TIMEOUT_SECONDS": "3000"}
#: Businesses whose live calls are checked on the recovered worker.
SAMPLE = 20
POLL_SECONDS = 0.2
#: Log lines of Faust that split a start into group join and changelog replay.
ASSIGNED_MARK = "Setting newly assigned partitions"
RESTORED_MARK = "Restore complete!"
#: Per store, the runs in order: what the run is, and how its worker ends (which is
#: what the next run starts from).
RUNS = {
    "memory://": (("start", "kill"), ("restart after SIGKILL", "stop")),
    "rocksdb://": (
        ("cold start (empty data dir)", "kill"),
        ("restart after SIGKILL (local tables kept)", "stop"),
        ("restart after a clean stop", "stop"),
    ),
}


def partition_of(business_id: str, partitions: int) -> int:
    """The partition murmur2_random (Java, aiokafka) picks for this business's records."""
    return (murmur2(business_id.encode("utf-8")) & 0x7FFFFFFF) % partitions


def build_state(
    businesses: int,
    prefix: str,
    partitions: int,
    rules: core.Rules,
    leads_of=lambda rng: rng.randint(1, 3),
    name: str = "biz-{:06d}",
    source_topic: str | None = None,
) -> tuple[dict, dict, dict]:
    """Request leads_of(rng) leads (default 1-3, so all are granted) for each business
    through the core, as the worker would.

    Returns the table, the changelog partition of each key (that of the event that last
    wrote it, as the worker sends it) and figures (leads, all writes, a sample's live
    calls). `source_topic` names where the leads came from (default: the real input
    topic; the state's cursors then stand at the number of leads of each partition).
    """
    rng = random.Random(1)
    source_topic = source_topic or topic_name(LEADS_REQUESTS, prefix)
    table: dict = {}
    partition_of_key: dict[str, int] = {}
    next_offset = [0] * partitions
    leads = writes = 0
    live_calls: dict[str, int] = {}
    for i in range(businesses):
        business_id = name.format(i)
        partition = partition_of(business_id, partitions)
        count = leads_of(rng)
        live_calls[business_id] = min(count, rules.limit)
        for n in range(count):
            source = core.Source(source_topic, partition, next_offset[partition])
            next_offset[partition] += 1
            effects = core.process(
                table.get,
                LeadRequest(f"L{n}", business_id, PHONE),
                source,
                time.time(),
                rules,
            )
            for key, value in effects.writes:
                if value is None:
                    table.pop(key, None)
                    partition_of_key.pop(key, None)
                else:
                    table[key] = value
                    partition_of_key[key] = partition
            writes += len(effects.writes)
            leads += 1
    sample = dict(
        random.Random(2).sample(sorted(live_calls.items()), min(SAMPLE, businesses))
    )
    return (
        table,
        partition_of_key,
        {"leads": leads, "core_writes": writes, "sample": sample},
    )


def produce_changelog(
    bootstrap: str, topic: str, table: dict, partition_of_key: dict[str, int]
) -> int:
    """Write every key and value as Faust does (its json codec); return the bytes sent."""
    producer = clients.producer(settings_for(bootstrap), {"linger.ms": 50})
    sent = 0
    for key, value in table.items():
        key_bytes, value_bytes = codecs.dumps("json", key), codecs.dumps("json", value)
        sent += len(key_bytes) + len(value_bytes)
        while True:
            try:
                producer.produce(
                    topic, key=key_bytes, value=value_bytes, partition=partition_of_key[key]
                )
                break
            except BufferError:
                producer.poll(0.1)
        producer.poll(0)
    if producer.flush(120) != 0:
        raise RuntimeError(f"changelog records still unsent to {topic}")
    return sent


def http_get(url: str) -> tuple[int | None, bytes]:
    """Status and body; None while nothing answers (not listening, or a stalled loop)."""
    try:
        with urllib.request.urlopen(url, timeout=1.0) as response:
            return response.status, response.read()
    except urllib.error.HTTPError as error:
        return error.code, b""
    except (urllib.error.URLError, OSError):
        return None, b""


def log_marks(log_path: Path, started_wall: float) -> dict:
    """Seconds from process start to the group assignment and the end of the replay,
    from the timestamps of Faust's log lines."""
    marks: dict = {"assigned_s": None, "restored_s": None}
    for line in log_path.read_text(errors="replace").splitlines():
        if not line.startswith("[20"):
            continue
        try:
            at = dt.datetime.strptime(line[1:24], "%Y-%m-%d %H:%M:%S,%f").timestamp()
        except ValueError:
            continue
        if ASSIGNED_MARK in line:
            marks["assigned_s"] = round(at - started_wall, 2)
        elif RESTORED_MARK in line:
            marks["restored_s"] = round(at - started_wall, 2)
            break
    return marks


def memory_mb(pid: int) -> dict:
    """Resident memory now and at its peak, from /proc."""
    fields = dict(
        line.split(":", 1)
        for line in Path(f"/proc/{pid}/status").read_text().splitlines()
        if ":" in line
    )
    return {
        "rss_mb": round(int(fields["VmRSS"].split()[0]) / 1024, 1),
        "rss_peak_mb": round(int(fields["VmHWM"].split()[0]) / 1024, 1),
    }


def dir_mb(path: Path) -> float:
    return round(sum(f.stat().st_size for f in path.rglob("*") if f.is_file()) / 1e6, 1)


@contextlib.contextmanager
def worker(env: dict, log_path: Path) -> Iterator[subprocess.Popen]:
    """A `streams worker`, SIGKILLed on the way out unless already gone."""
    with open(log_path, "wb") as log:
        process = subprocess.Popen(
            [PYTHON, "-m", "streams", "worker", "--loglevel", "info"],
            env=env,
            stdout=log,
            stderr=subprocess.STDOUT,
            cwd=REPO,
        )
    try:
        yield process
    finally:
        if process.poll() is None:
            process.kill()
            process.wait(30)


def time_to_ready(
    process: subprocess.Popen,
    base_url: str,
    probe_business: str,
    started: float,
    timeout: float,
    log_path: Path,
) -> dict:
    """Poll one business's page until the table is restored (503 -> 200/404)."""
    web_s = None
    while True:
        if process.poll() is not None:
            raise RuntimeError(f"worker exited {process.returncode}; see {log_path}")
        status, _ = http_get(f"{base_url}/businesses/{probe_business}/")
        elapsed = round(time.monotonic() - started, 2)
        if status is not None and web_s is None:
            web_s = elapsed
        if status in (200, 404):
            return {"web_s": web_s, "ready_s": elapsed}
        if elapsed > timeout:
            raise TimeoutError(f"worker not ready after {timeout:.0f}s; see {log_path}")
        time.sleep(POLL_SECONDS)


def check_sample(base_url: str, sample: dict[str, int]) -> str:
    """How many sampled businesses show exactly the live calls they were given."""
    right = 0
    for business_id, calls in sample.items():
        status, body = http_get(f"{base_url}/businesses/{business_id}/")
        right += status == 200 and len(json.loads(body)["active"]) == calls
    return f"{right}/{len(sample)}"


def measure(
    process: subprocess.Popen,
    env: dict,
    log_path: Path,
    started_wall: float,
    started: float,
    sample: dict[str, int],
    timeout: float,
) -> dict:
    """Time a just-started worker to ready, then read its memory and check the sample."""
    base_url = f"http://127.0.0.1:{env['WORKER_WEB_PORT']}"
    result = time_to_ready(
        process, base_url, next(iter(sample)), started, timeout, log_path
    )
    result.update(memory_mb(process.pid))
    result.update(log_marks(log_path, started_wall))
    if result["assigned_s"] is not None and result["restored_s"] is not None:
        result["replay_s"] = round(result["restored_s"] - result["assigned_s"], 2)
    result["sample_right"] = check_sample(base_url, sample)
    return result


def measure_store(
    store: str,
    base_env: dict,
    workdir: Path,
    changelog: str,
    sample: dict[str, int],
    timeout: float,
) -> list[dict]:
    """The store's RUNS, each started as soon as the one before ended; the last worker
    leaves the group cleanly so the next store's first start does not wait for a dead
    member."""
    name = store.rstrip(":/")
    data_dir = workdir / f"{name}-data"
    env = {**base_env, "TABLE_STORE": store, "STREAMS_DATA_DIR": str(data_dir)}
    results = []
    try:
        for index, (run, ending) in enumerate(RUNS[store]):
            say(f"{store} {run}")
            log_path = workdir / f"{name}-{index + 1}.log"
            replayed = high_watermark(env["KAFKA_BOOTSTRAP_SERVERS"], changelog)
            started_wall, started = time.time(), time.monotonic()
            with worker(env, log_path) as process:
                result = measure(
                    process, env, log_path, started_wall, started, sample, timeout
                )
                if ending == "kill":
                    process.kill()
                    process.wait(30)
                else:
                    stop_process(process)
            result["changelog_records_at_start"] = replayed
            if store == "rocksdb://":
                result["data_dir_mb"] = dir_mb(data_dir)
            results.append({"bench": "recovery.run", "store": store, "run": run, **result})
            emit(results[-1])
            say(
                f"  web {result['web_s']}s, assigned {result['assigned_s']}s, restored"
                f" {result['restored_s']}s (replay {result.get('replay_s')}s),"
                f" ready {result['ready_s']}s,"
                f" RSS {result['rss_mb']} MB (peak {result['rss_peak_mb']}),"
                f" sample {result['sample_right']}"
            )
    finally:
        shutil.rmtree(data_dir, ignore_errors=True)
    return results


def markdown(state: dict, runs: list[dict]) -> str:
    lines = [
        f"Recovery, {state['businesses']:,} businesses ({state['leads']:,} leads, all"
        f" granted), {state['partitions']} partitions: changelog of"
        f" {state['changelog_records']:,} records, {state['changelog_bytes'] / 1e6:.1f} MB"
        f" (key + value JSON; the worker itself would have written"
        f" {state['core_writes']:,} records before compaction).",
        "",
        "Seconds from process start; replay = restored - assigned (Faust reading the"
        " changelog).",
        "",
        "| store | run | records replayed | web up (s) | assigned (s) | restored (s)"
        " | replay (s) | ready (s) | RSS (MB) | RSS peak (MB) | ready <= 10 s |",
        "|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for r in runs:
        lines.append(
            f"| {r['store']} | {r['run']} | {r['changelog_records_at_start']:,}"
            f" | {r['web_s']} | {r['assigned_s']} | {r['restored_s']}"
            f" | {r.get('replay_s')} | {r['ready_s']}"
            f" | {r['rss_mb']} | {r['rss_peak_mb']}"
            f" | {'yes' if r['ready_s'] <= TARGET_SECONDS else 'no'} |"
        )
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__.split("\n\n")[0],
        formatter_class=argparse.RawDescriptionHelpFormatter,
        epilog=__doc__.split("\n\n", 1)[1],
    )
    parser.add_argument("--bootstrap", default=DEFAULT_BOOTSTRAP)
    parser.add_argument("--businesses", type=int, default=100_000)
    parser.add_argument("--partitions", type=int, default=8)
    parser.add_argument(
        "--stores", default="memory,rocksdb", help="comma-separated, from memory,rocksdb"
    )
    parser.add_argument(
        "--timeout",
        type=float,
        default=300,
        help="longest wait for one worker to be ready, seconds",
    )
    parser.add_argument(
        "--dynamic",
        action="store_true",
        help="no WORKER_INSTANCE_ID: dynamic group membership, so a"
        " restarted worker waits out the session timeout",
    )
    parser.add_argument(
        "--markdown",
        type=Path,
        default=None,
        metavar="PATH",
        help="also write the table of results here",
    )
    args = parser.parse_args(argv)
    stores = [f"{s.strip()}://" for s in args.stores.split(",") if s.strip()]
    unknown = [s for s in stores if s not in RUNS]
    if unknown:
        parser.error(f"unknown store(s) {', '.join(unknown)}")
    prefix = f"bench{tag()}.recovery."
    workdir = Path(tempfile.mkdtemp(prefix="bench-recovery-"))
    env = worker_env(
        args.bootstrap,
        prefix,
        args.partitions,
        APP_ID,
        **LONG_TIMERS,
        # One address for every run: a static member must come back under the address
        # it had (Faust's assignor asserts it; docs/settings.md, WORKER_INSTANCE_ID).
        WORKER_WEB_PORT=str(free_port()),
    )
    if not args.dynamic:
        env["WORKER_INSTANCE_ID"] = f"{prefix}worker-1"
    settings = Settings.from_env(env)
    changelog = changelog_topic(prefix, APP_ID)
    say(
        f"{args.businesses:,} businesses, {args.partitions} partitions, prefix {prefix},"
        f" logs in {workdir}"
    )
    try:
        admin.create_topics(settings)  # the changelog too, compacted, as Faust would
        began = time.monotonic()
        table, partition_of_key, figures = build_state(
            args.businesses, prefix, args.partitions, settings.rules()
        )
        build_s = time.monotonic() - began
        say(f"built {len(table):,} keys from {figures['leads']:,} leads in {build_s:.1f}s")
        began = time.monotonic()
        sent = produce_changelog(args.bootstrap, changelog, table, partition_of_key)
        produce_s = time.monotonic() - began
        state = {
            "bench": "recovery.state",
            "businesses": args.businesses,
            "partitions": args.partitions,
            "leads": figures["leads"],
            "changelog_records": len(table),
            "changelog_bytes": sent,
            "changelog_bytes_per_100k_businesses": round(sent * 100_000 / args.businesses),
            "core_writes": figures["core_writes"],
            "build_s": round(build_s, 1),
            "produce_s": round(produce_s, 1),
        }
        del table, partition_of_key
        gc.collect()
        emit(state)
        say(
            f"changelog: {state['changelog_records']:,} records,"
            f" {sent / 1e6:.1f} MB, produced in {produce_s:.1f}s"
        )
        runs = []
        for store in stores:
            runs += measure_store(
                store, env, workdir, changelog, figures["sample"], args.timeout
            )
    finally:
        delete_topics(args.bootstrap, prefix)
    after_kill = [r for r in runs if "SIGKILL" in r["run"]]
    summary = {
        "bench": "recovery.summary",
        "businesses": args.businesses,
        "membership": "dynamic" if args.dynamic else "static",
        "target_ready_s": TARGET_SECONDS,
        **{
            f"ready_s_after_kill_{r['store'].rstrip(':/')}": r["ready_s"]
            for r in after_kill
        },
        "met": all(r["ready_s"] <= TARGET_SECONDS for r in after_kill),
    }
    emit(summary)
    table_text = markdown(state, runs)
    if args.markdown:
        args.markdown.write_text(table_text)
    print("\n" + table_text, file=sys.stderr)
    for r in after_kill:
        print(
            f"{r['store']} {r['run']}: ready in {r['ready_s']}s (target <="
            f" {TARGET_SECONDS:.0f}s:"
            f" {'MET' if r['ready_s'] <= TARGET_SECONDS else 'MISSED'});"
            f" partitions assigned at {r['assigned_s']}s, changelog replay"
            f" {r.get('replay_s')}s",
            file=sys.stderr,
        )
    print(f"logs in {workdir}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
