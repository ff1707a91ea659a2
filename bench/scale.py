"""Slot-free -> next dial against the number of businesses, at one fixed load: ours beside
the seed's polling design.

Why a workload of its own: in `bench/seed_poller.py` every business has leads waiting
and calls ending, so more businesses means more load, and past capacity the delay is
queueing, whatever the design. Here the load is the same at every size and only the
number of businesses changes, which is what "flat from 100 to 100,000 businesses" asks:

* N - P idle businesses each hold 3 live calls that outlast the run and 1 waiting lead:
  state the limiter must keep (and the seed's poller must visit: it has a queued row);
* P probe businesses (default 20) get L leads each (default 60) at the start; their
  calls are short (the simulated dialer's model with talk U(1, 2) s, about 2.3 s), so
  about P x 3 / 2.3 = 26 slots free per second (about 30 measured) at every N: a load
  well inside what one worker and the simulated dialer sustain on 2 cores, so the
  delay measured is the limiter's, not queueing. Their refills are measured:
  delay = placed(k+3) - ended(k), as in `bench/slot_free.py`.

Ours: the idle businesses' state is built with the pure core and written to the table's
changelog (as `bench/recovery.py` does, with timers beyond the run, so none of their
calls is resent or expires); the worker restores it, then the probes' leads are
produced and the simulated dialer places their calls. Its resident memory with the
state loaded is recorded too.

The probes' leads come `--settle` seconds (default 30) after the worker is ready. The
idle state was just bulk-loaded: 700,000 changelog records at 100,000 businesses,
written and read back within two minutes. In the seconds after that both the worker's
and the dialer's share of the delay stalled in bursts of 40-130 ms, cause not found;
a real worker's changelog grows over days. `--settle 0` measures those seconds too.

Seed: `outbound_call_jobs` on PostgreSQL (tests/support/postgres.py) with 3 'calling'
rows and 1 'queued' row per idle business and the probes' queued rows; one poller
(`bench/seed_poller.py`, a pass over every business with queued rows, 1 s apart) and the
telephony process. The verification-query sampler is left out here: it would load the
database and slow the poller further (`bench/seed_poller.py` runs it).

    python -m bench.scale [--businesses 100 10000 100000] [--systems seed,ours]
                          [--probes 20] [--leads 60] [--seconds 60] [--settle 30]
                          [--bootstrap localhost:29092] [--out scale.jsonl]

Prints one JSON line per (system, N) with bench "slot_free_at_scale" (plot them with
`python -m bench.plot FILE --bench slot_free_at_scale`).
"""

from __future__ import annotations

import argparse
import collections
import datetime as dt
import json
import multiprocessing as mp
import random
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
    say,
    stop_process,
    tag,
    worker_env,
)
from bench.recovery import (
    LONG_TIMERS,
    build_state,
    memory_mb,
    produce_changelog,
    time_to_ready,
)
from bench.seed_poller import SCHEMA, _connect, poller, telephony
from bench.slot_free import (
    ANSWER_RATIO,
    LIMIT,
    RING,
    analyse,
    call_seconds,
    ledger_times,
    record_times,
    split_delay,
)
from tests.support.ports import free_port

TALK = (1.0, 2.0)
#: A length no idle call reaches within any run.
FOREVER_S = 1e6
PROBE = "probe-{:03d}"
IDLE = "idle-{:06d}"


def run_seed(
    url: str,
    businesses: int,
    probes: int,
    leads: int,
    seconds: float,
    interval: float = 1.0,
    seed: int = 7,
) -> dict:
    conn = _connect(url)
    conn.execute("DROP TABLE IF EXISTS outbound_call_jobs")
    conn.execute(SCHEMA)
    rng = random.Random(seed)
    began_load = time.monotonic()
    now = dt.datetime.now(dt.timezone.utc)
    with conn.cursor() as cur:
        with cur.copy(
            "COPY outbound_call_jobs (business_id, lead_id, status, ring_s,"
            " length_s, started_at) FROM STDIN"
        ) as copy:
            for i in range(businesses - probes):
                business = IDLE.format(i)
                for n in range(LIMIT):
                    copy.write_row((business, f"l{n}", "calling", 0.5, FOREVER_S, now))
                copy.write_row((business, f"l{LIMIT}", "queued", 0.5, FOREVER_S, None))
            for n in range(leads):
                for p in range(probes):
                    length = call_seconds(rng, TALK)
                    copy.write_row(
                        (
                            PROBE.format(p),
                            f"l{n:04d}",
                            "queued",
                            min(length, 0.6),
                            length,
                            None,
                        )
                    )
    conn.execute("ANALYZE outbound_call_jobs")
    load_s = time.monotonic() - began_load
    ctx = mp.get_context("fork")
    stop = ctx.Event()
    procs = [
        ctx.Process(target=telephony, args=(url, stop)),
        ctx.Process(target=poller, args=(url, 1, interval, 0.0, stop)),
    ]
    for p in procs:
        p.start()
    time.sleep(seconds)
    stopped_at = conn.execute("SELECT extract(epoch FROM clock_timestamp())").fetchone()[0]
    stop.set()
    for p in procs:
        p.join(60)
    placed, ended = collections.defaultdict(list), collections.defaultdict(list)
    for business, started, finished in conn.execute(
        "SELECT business_id, extract(epoch FROM started_at), extract(epoch FROM ended_at)"
        " FROM outbound_call_jobs WHERE started_at IS NOT NULL"
        " AND business_id LIKE 'probe-%%'"
    ):
        placed[business].append(float(started))
        if finished is not None:
            ended[business].append(float(finished))
    conn.close()
    return {
        **analyse(placed, ended, leads, float(stopped_at)),
        "system": "seed-1-poller",
        "load_s": round(load_s, 1),
    }


def run_ours(
    bootstrap: str,
    businesses: int,
    probes: int,
    leads: int,
    seconds: float,
    workdir: Path,
    partitions: int = 8,
    seed: int = 7,
    settle: float = 0.0,
) -> dict:
    from streams.dialers.simulated import SimulatedDialer
    from streams.kafka import admin, clients
    from streams.settings import Settings
    from streams.topics import LEADS_REQUESTS, changelog_topic, record_key, topic_name

    prefix = f"bench{tag()}.scale."
    env = worker_env(
        bootstrap,
        prefix,
        partitions,
        **LONG_TIMERS,
        WORKER_WEB_PORT=str(free_port()),
        STREAMS_DATA_DIR=str(workdir / "data"),
    )
    settings = Settings.from_env(env)
    changelog = changelog_topic(prefix, "limiter")
    try:
        admin.create_topics(settings)  # the changelog too, compacted, as Faust would
        began_load = time.monotonic()
        table, partition_of_key, _ = build_state(
            businesses - probes,
            prefix,
            partitions,
            settings.rules(),
            leads_of=lambda rng: LIMIT + 1,
            name=IDLE,
            source_topic=f"{prefix}preloaded",
        )
        records = len(table)
        produce_changelog(bootstrap, changelog, table, partition_of_key)
        probe_idle = next(iter(k for k in table if k.startswith("b\x1f")), None)
        del table, partition_of_key
        ledger = workdir / "dialer.jsonl"
        log_path = workdir / "worker.log"
        with open(log_path, "wb") as log:
            worker = subprocess.Popen(
                [PYTHON, "-m", "streams", "worker"],
                env=env,
                stdout=log,
                stderr=subprocess.STDOUT,
                cwd=REPO,
            )
        try:
            started = time.monotonic()
            ready = time_to_ready(
                worker,
                f"http://127.0.0.1:{env['WORKER_WEB_PORT']}",
                probe_idle.split("\x1f")[1] if probe_idle else "none",
                started,
                900,
                log_path,
            )
            memory = memory_mb(worker.pid)
            load_s = time.monotonic() - began_load
            time.sleep(settle)
            dialer = SimulatedDialer(
                settings,
                seed=seed,
                talk_seconds=TALK,
                ring_seconds=RING,
                answer_ratio=ANSWER_RATIO,
                ledger_path=ledger,
            )
            stop = threading.Event()
            thread = threading.Thread(target=dialer.run, args=(stop,), daemon=True)
            thread.start()
            producer = clients.producer(settings)
            topic = topic_name(LEADS_REQUESTS, prefix)
            for n in range(leads):
                for p in range(probes):
                    business = PROBE.format(p)
                    producer.produce(
                        topic,
                        key=record_key(business),
                        value=json.dumps(
                            {
                                "lead_id": f"l{n:04d}",
                                "business_id": business,
                                "phone": "+14155550100",
                            }
                        ).encode(),
                    )
            assert producer.flush(60) == 0
            time.sleep(seconds)
            stopped_at = time.time()
            stop.set()
            thread.join(30)
            snap = dialer.snapshot()
        finally:
            stop_process(worker)
        status_times, dial_times = record_times(bootstrap, prefix)
    finally:
        delete_topics(bootstrap, prefix)
    placed, ended = ledger_times(ledger)
    return {
        **analyse(
            {b: [t for t, _ in v] for b, v in placed.items()},
            {b: [t for t, _ in v] for b, v in ended.items()},
            leads,
            stopped_at,
        ),
        **split_delay(placed, ended, leads, status_times, dial_times),
        "system": "ours",
        "changelog_records": records,
        "worker_ready_s": ready["ready_s"],
        "load_s": round(load_s, 1),
        "worker_rss_mb": memory["rss_mb"],
        "dialer_duplicates": snap["duplicates"],
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__.split("\n\n")[0],
        formatter_class=argparse.RawDescriptionHelpFormatter,
        epilog=__doc__.split("\n\n", 1)[1],
    )
    parser.add_argument("--businesses", type=int, nargs="+", default=[100, 10_000, 100_000])
    parser.add_argument("--systems", default="seed,ours")
    parser.add_argument("--probes", type=int, default=20)
    parser.add_argument("--leads", type=int, default=60, help="leads per probe business")
    parser.add_argument("--seconds", type=float, default=60, help="measured run, seconds")
    parser.add_argument("--bootstrap", default=DEFAULT_BOOTSTRAP)
    parser.add_argument("--out", default=None, help="also append the JSON lines here")
    parser.add_argument(
        "--settle",
        type=float,
        default=30.0,
        help="ours: seconds to wait between the worker being ready and the probes' leads",
    )
    args = parser.parse_args(argv)
    systems = [s.strip() for s in args.systems.split(",") if s.strip()]
    if set(systems) - {"seed", "ours"}:
        parser.error("--systems takes seed and/or ours")
    if min(args.businesses) <= args.probes:
        parser.error("every --businesses value must exceed --probes")
    out = open(args.out, "a") if args.out else None
    results = []
    server = None
    if "seed" in systems:
        from tests.support.postgres import start_postgres

        server = start_postgres()
        url = server.url.replace("postgresql+psycopg://", "postgresql://")
    try:
        for businesses in args.businesses:
            for system in systems:
                say(
                    f"{system}: {businesses:,} businesses ({args.probes} probes x"
                    f" {args.leads} leads), {args.seconds:g} s"
                )
                if system == "seed":
                    result = run_seed(
                        url, businesses, args.probes, args.leads, args.seconds
                    )
                else:
                    workdir = Path(tempfile.mkdtemp(prefix="bench-scale-"))
                    result = run_ours(
                        args.bootstrap,
                        businesses,
                        args.probes,
                        args.leads,
                        args.seconds,
                        workdir,
                        settle=args.settle,
                    )
                result = {
                    "bench": "slot_free_at_scale",
                    "businesses": businesses,
                    "probes": args.probes,
                    "leads_per_probe": args.leads,
                    "seconds": args.seconds,
                    **({"settle_s": args.settle} if system == "ours" else {}),
                    **result,
                }
                emit(result)
                results.append(result)
                if out:
                    out.write(json.dumps(result) + "\n")
                    out.flush()
    finally:
        if server is not None:
            server.stop()
        if out:
            out.close()
    print(
        "\nslot-free -> next dial of the probe businesses, same load at every size:",
        file=sys.stderr,
    )
    for r in results:
        print(
            f"  {r['system']:>14} @ {r['businesses']:>7,} businesses:"
            f" p50 {r['slot_free_ms_p50']} ms, p99 {r['slot_free_ms_p99']} ms"
            f" ({r['slot_free_samples']} refills, {r['slot_free_censored']} pending at"
            f" the end), {r['grants_per_s_sustained']} grants/s"
            + (f", worker {r['worker_rss_mb']} MB" if "worker_rss_mb" in r else ""),
            file=sys.stderr,
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
