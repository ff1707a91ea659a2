"""The seed's design, faithfully, on PostgreSQL, beside ours on Kafka.

The seed (the design note this project replaces, kept outside the repository): leads are
queued as rows of `outbound_call_jobs`; `fill_queue_slots_for_job()` and
`process_bulk_call_run()` each, for every business with queued leads, run
`count_active_outbound_calls(business_id)` =

    SELECT COUNT(*) FROM outbound_call_jobs
    WHERE business_id = %s AND status IN ('dialing', 'calling')

and start calls (UPDATE status = 'dialing') `while ... business_active_outbound <
MAX_OUTBOUND_CALLS_PER_BUSINESS`, counting each start locally. No lock, no
transaction around count-and-start (the note shows none), autocommit. Here:

* poller: one process per code path; a pass visits every business with queued leads,
  then sleeps --interval seconds (the design note names no interval; a 1 s default
  is generous). `--pollers 2` runs both code paths at once, the second started half an
  interval later. The UPDATE is guarded with `AND status = 'queued'`, so two pollers
  never start the *same* lead twice (generous again: only the limit can break).
* calls, two variants of the telephony side (`--telephony`), each call's length drawn
  per lead with the simulated dialer's call model (`bench/slot_free.py`):
  - `bulk` (systems `seed-N-poller(s)`): one process marks every answered call
    `calling` and every ended call `completed` with two bulk UPDATEs every 10 ms. Kept
    generous to the seed: a status costs it almost nothing.
  - `callback` (systems `seed-callback-N-poller(s)`): as the seed's webhooks do, one
    UPDATE of one row per status callback, in the order and number the simulated
    dialer reports them to ours (queued, initiated, ringing, in-progress when answered,
    then the final status: 4.8 per call), by one webhook process, autocommit. It hears
    of each call from the poller that started it (as Twilio hears of it from the API
    request), so finding new calls costs the database nothing.
* the seed's verification query samples the table continuously in its own process:

    SELECT business_id, COUNT(*) FROM outbound_call_jobs
    WHERE status IN ('dialing','calling') GROUP BY business_id

  a "moment above the limit" is a sample in which some business has more than 3.
All times are PostgreSQL's clock_timestamp(). PostgreSQL is a throwaway cluster from
Debian's package, started with tests/support/postgres.py (fsync off).

Reported per (design, businesses): grants/s sustained, slot-free -> next dial p50/p99
(see bench/slot_free.py for the definition), moments above the limit (sampled) and the
true peak concurrency from the rows' started/ended times. With --ours, our worker +
simulated dialer run the same workload on the broker.

    python -m bench.seed_poller --businesses 100 10000 [--pollers 1 2] [--ours]
        [--telephony bulk callback] [--bootstrap localhost:29092]
        [--out bench/results.jsonl]
"""

from __future__ import annotations

import argparse
import collections
import json
import multiprocessing as mp
import random
import sys
import tempfile
import time
from pathlib import Path

from bench.common import DEFAULT_BOOTSTRAP, emit, say
from bench.slot_free import LIMIT, analyse, call_seconds, run_ours

SCHEMA = """
CREATE TABLE outbound_call_jobs (
    id bigserial PRIMARY KEY,
    business_id text NOT NULL,
    lead_id text NOT NULL,
    status text NOT NULL DEFAULT 'queued',
    call_status text,
    ring_s double precision NOT NULL,
    length_s double precision NOT NULL,
    created_at timestamptz NOT NULL DEFAULT clock_timestamp(),
    started_at timestamptz,
    answered_at timestamptz,
    ended_at timestamptz,
    started_by int
);
CREATE INDEX jobs_business_status ON outbound_call_jobs (business_id, status);
CREATE INDEX jobs_status ON outbound_call_jobs (status);
"""

COUNT_ACTIVE = (
    "SELECT COUNT(*) FROM outbound_call_jobs"
    " WHERE business_id = %s AND status IN ('dialing', 'calling')"
)
NEXT_QUEUED = (
    "SELECT id, ring_s, length_s FROM outbound_call_jobs WHERE business_id = %s"
    " AND status = 'queued' ORDER BY id LIMIT 1"
)
START = (
    "UPDATE outbound_call_jobs SET status = 'dialing', started_at = clock_timestamp(),"
    " started_by = %s WHERE id = %s AND status = 'queued'"
)
VERIFY = (
    "SELECT business_id, COUNT(*) FROM outbound_call_jobs"
    " WHERE status IN ('dialing','calling') GROUP BY business_id"
)


def _connect(url: str):
    import psycopg

    return psycopg.connect(url, autocommit=True)


#: What each status callback writes to its row (`callback` telephony).
CALLBACK = {
    "progress": "UPDATE outbound_call_jobs SET call_status = %s WHERE id = %s",
    "answered": (
        "UPDATE outbound_call_jobs SET status = 'calling', call_status = %s,"
        " answered_at = clock_timestamp() WHERE id = %s"
    ),
    "ended": (
        "UPDATE outbound_call_jobs SET status = 'completed', call_status = %s,"
        " ended_at = clock_timestamp() WHERE id = %s"
    ),
}


def poller(url: str, who: int, interval: float, delay: float, stop, calls=None) -> None:
    """One of the seed's code paths: count per business, start while below the limit.
    With `calls` (a queue), each call started is announced there to the telephony side:
    (row id, started at, ring_s, length_s)."""
    conn = _connect(url)
    time.sleep(delay)
    passes = 0
    while not stop.is_set():
        businesses = [
            r[0]
            for r in conn.execute(
                "SELECT DISTINCT business_id FROM outbound_call_jobs"
                " WHERE status = 'queued'"
            )
        ]
        if who == 2:
            businesses.reverse()  # the other code path walks its runs in its own order
        for business in businesses:
            if stop.is_set():
                break
            active = conn.execute(COUNT_ACTIVE, (business,)).fetchone()[0]
            while active < LIMIT:
                row = conn.execute(NEXT_QUEUED, (business,)).fetchone()
                if row is None:
                    break
                started = conn.execute(START, (who, row[0])).rowcount
                if started and calls is not None:
                    calls.put((row[0], time.time(), row[1], row[2]))
                active += 1
        passes += 1
        stop.wait(interval)
    conn.close()


def telephony(url: str, stop) -> None:
    """Calls get answered and end on their own schedule; the table hears it at once."""
    conn = _connect(url)
    while not stop.is_set():
        conn.execute(
            "UPDATE outbound_call_jobs SET status = 'calling',"
            " answered_at = clock_timestamp() WHERE status = 'dialing'"
            " AND started_at + make_interval(secs => ring_s) <= clock_timestamp()"
            " AND ring_s < length_s"
        )
        conn.execute(
            "UPDATE outbound_call_jobs SET status = 'completed',"
            " ended_at = clock_timestamp() WHERE status IN ('dialing', 'calling')"
            " AND started_at + make_interval(secs => length_s) <= clock_timestamp()"
        )
        stop.wait(0.01)
    conn.close()


def callback_telephony(url: str, stop, calls) -> None:
    """Calls report each status as it happens, one UPDATE of one row per callback, in
    the simulated dialer's order: queued at once, initiated and ringing during set-up
    (a third and two thirds of ring_s), in-progress at ring_s when the call is
    answered, the final status at length_s."""
    import heapq
    import queue

    conn = _connect(url)
    due: list[tuple[float, int, str, str]] = []
    while not stop.is_set():
        try:
            while True:
                row, started, ring, length = calls.get_nowait()
                answered = ring < length
                heapq.heappush(due, (started, row, "progress", "queued"))
                heapq.heappush(due, (started + ring / 3, row, "progress", "initiated"))
                heapq.heappush(due, (started + 2 * ring / 3, row, "progress", "ringing"))
                if answered:
                    heapq.heappush(due, (started + ring, row, "answered", "in-progress"))
                final = "completed" if answered else "no-answer"
                heapq.heappush(due, (started + length, row, "ended", final))
        except queue.Empty:
            pass
        now = time.time()
        while due and due[0][0] <= now and not stop.is_set():
            _, row, kind, status = heapq.heappop(due)
            conn.execute(CALLBACK[kind], (status, row))
        stop.wait(min(0.01, max(0.0, due[0][0] - now)) if due else 0.01)
    conn.close()


def sampler(url: str, stop, results) -> None:
    """The seed's own verification query, continuously."""
    conn = _connect(url)
    samples = over = 0
    worst = 0
    over_businesses = set()
    while not stop.is_set():
        rows = conn.execute(VERIFY).fetchall()
        samples += 1
        bad = [b for b, n in rows if n > LIMIT]
        if bad:
            over += 1
            over_businesses.update(bad)
        worst = max([worst] + [n for _, n in rows])
        stop.wait(0.005)
    conn.close()
    results.put(
        {
            "samples": samples,
            "samples_above_limit": over,
            "sampled_max_active": worst,
            "sampled_businesses_above_limit": len(over_businesses),
        }
    )


def run_seed(
    url: str,
    businesses: int,
    leads: int,
    talk: tuple[float, float],
    pollers: int,
    interval: float,
    cap_seconds: float,
    seed: int = 7,
    telephony_kind: str = "bulk",
) -> dict:
    conn = _connect(url)
    conn.execute("DROP TABLE IF EXISTS outbound_call_jobs")
    conn.execute(SCHEMA)
    rng = random.Random(seed)
    rows = []
    for n in range(leads):
        for b in range(businesses):
            length = call_seconds(rng, talk)
            rows.append((f"b{b:06d}", f"l{n:04d}", min(length, 0.6), length))
    with conn.cursor() as cur:
        with cur.copy(
            "COPY outbound_call_jobs (business_id, lead_id, ring_s, length_s) FROM STDIN"
        ) as copy:
            for row in rows:
                copy.write_row(row)
    conn.execute("ANALYZE outbound_call_jobs")
    ctx = mp.get_context("fork")
    stop = ctx.Event()
    results = ctx.Queue()
    calls = ctx.Queue() if telephony_kind == "callback" else None
    procs = [
        ctx.Process(target=telephony, args=(url, stop))
        if calls is None
        else ctx.Process(target=callback_telephony, args=(url, stop, calls)),
        ctx.Process(target=sampler, args=(url, stop, results)),
    ]
    procs += [
        ctx.Process(
            target=poller,
            args=(url, who, interval, (who - 1) * interval / 2, stop, calls),
        )
        for who in range(1, pollers + 1)
    ]
    began = time.monotonic()
    for p in procs:
        p.start()
    total = businesses * leads
    while time.monotonic() - began < cap_seconds:
        time.sleep(0.5)
        done = conn.execute(
            "SELECT COUNT(*) FROM outbound_call_jobs WHERE status = 'completed'"
        ).fetchone()[0]
        if done >= total:
            break
    stopped_at = conn.execute("SELECT extract(epoch FROM clock_timestamp())").fetchone()[0]
    stop.set()
    sampled = results.get(timeout=60)
    for p in procs:
        p.join(30)
    placed, ended = collections.defaultdict(list), collections.defaultdict(list)
    completed = 0
    for business, started, finished in conn.execute(
        "SELECT business_id, extract(epoch FROM started_at), extract(epoch FROM ended_at)"
        " FROM outbound_call_jobs WHERE started_at IS NOT NULL"
    ):
        placed[business].append(float(started))
        if finished is not None:
            ended[business].append(float(finished))
            completed += 1
    conn.close()
    result = analyse(placed, ended, leads, float(stopped_at))
    variant = "seed-callback" if telephony_kind == "callback" else "seed"
    result.update(
        system=f"{variant}-{pollers}-poller{'s' if pollers > 1 else ''}",
        telephony=telephony_kind,
        businesses=businesses,
        leads_per_business=leads,
        talk_s=list(talk),
        poll_interval_s=interval,
        ran_s=round(time.monotonic() - began, 1),
        completed=completed,
        offered=total,
        **sampled,
    )
    return result


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__.split("\n\n")[0],
        formatter_class=argparse.RawDescriptionHelpFormatter,
        epilog=__doc__.split("\n\n", 1)[1],
    )
    parser.add_argument("--businesses", type=int, nargs="+", default=[100, 10_000])
    parser.add_argument(
        "--leads",
        type=int,
        nargs="+",
        default=None,
        help="leads per business, one per --businesses value"
        " (default: 12 for <= 1000 businesses, else 4)",
    )
    parser.add_argument("--pollers", type=int, nargs="+", default=[1, 2])
    parser.add_argument(
        "--interval", type=float, default=1.0, help="seconds between passes"
    )
    parser.add_argument(
        "--telephony",
        nargs="+",
        choices=("bulk", "callback"),
        default=["bulk", "callback"],
        help="the seed's telephony side: bulk UPDATEs every 10 ms, or one UPDATE per"
        " status callback (both by default, each a run of its own)",
    )
    parser.add_argument(
        "--talk",
        type=float,
        nargs=2,
        default=(5.0, 15.0),
        help="talk time range of answered calls, seconds",
    )
    parser.add_argument("--cap", type=float, default=150, help="longest run, seconds")
    parser.add_argument(
        "--ours",
        action="store_true",
        help="also run our worker + simulated dialer on the same workload",
    )
    parser.add_argument("--only-ours", action="store_true")
    parser.add_argument(
        "--workers",
        type=int,
        nargs="+",
        default=[1],
        help="ours: run once per worker count given (one group each)",
    )
    parser.add_argument("--bootstrap", default=DEFAULT_BOOTSTRAP)
    parser.add_argument("--out", default=None, help="also append the JSON lines here")
    args = parser.parse_args(argv)
    leads = args.leads or [12 if b <= 1000 else 4 for b in args.businesses]
    talk = tuple(args.talk)
    out = open(args.out, "a") if args.out else None
    results = []

    def record(result: dict) -> None:
        result = {"bench": "slot_free", **result}
        emit(result)
        results.append(result)
        if out:
            out.write(json.dumps(result) + "\n")
            out.flush()

    server = None
    if not args.only_ours:
        from tests.support.postgres import start_postgres

        server = start_postgres()
        url = server.url.replace("postgresql+psycopg://", "postgresql://")
        say(f"PostgreSQL on port {server.port}")
    try:
        for businesses, per in zip(args.businesses, leads, strict=True):
            if server is not None:
                for kind in args.telephony:
                    for pollers in args.pollers:
                        say(
                            f"seed ({kind} telephony), {pollers} poller(s):"
                            f" {businesses} businesses x {per} leads"
                        )
                        record(
                            run_seed(
                                url,
                                businesses,
                                per,
                                talk,
                                pollers,
                                args.interval,
                                args.cap,
                                telephony_kind=kind,
                            )
                        )
            if args.ours or args.only_ours:
                for workers in args.workers:
                    say(
                        f"ours, {workers} worker(s): {businesses} businesses x {per} leads"
                        f" on {args.bootstrap}"
                    )
                    workdir = Path(tempfile.mkdtemp(prefix="bench-slot-"))
                    record(
                        run_ours(
                            args.bootstrap,
                            businesses,
                            per,
                            talk,
                            args.cap,
                            workdir,
                            workers=workers,
                        )
                    )
    finally:
        if server is not None:
            server.stop()
        if out:
            out.close()
    print("\nslot-free -> next dial, grants/s, moments above the limit:")
    for r in results:
        sampled = (
            f"; {r['samples_above_limit']}/{r['samples']} verification samples above"
            f" the limit"
            if "samples" in r
            else ""
        )
        print(
            f"  {r['system']:>15} @ {r['businesses']:>6,} businesses x"
            f" {r['leads_per_business']} leads: {r['grants_per_s_sustained']} grants/s,"
            f" delay p50 {r['slot_free_ms_p50']} ms p99 {r['slot_free_ms_p99']} ms"
            f" ({r['slot_free_samples']} samples, {r['slot_free_censored']} censored;"
            f" after the first {r['steady_after_s']:g}s: p50 {r['steady_slot_free_ms_p50']}"
            f" p99 {r['steady_slot_free_ms_p99']} ms, {r['steady_samples']} samples),"
            f" true peak {r['true_peak_concurrency']}, {r['businesses_over_limit']}"
            f" businesses over the limit{sampled}; {r['completed']}/{r['offered']}"
            f" calls ended in {r['ran_s']}s"
        )
        if r.get("split_worker_ms_p50") is not None:
            print(
                f"  {'':>15}   ours' delay split p50/p99 ms: dialer out"
                f" {r['split_dialer_out_ms_p50']}/{r['split_dialer_out_ms_p99']},"
                f" worker {r['split_worker_ms_p50']}/{r['split_worker_ms_p99']},"
                f" dialer in {r['split_dialer_in_ms_p50']}/{r['split_dialer_in_ms_p99']};"
                f" worker after the first {r['steady_after_s']:g}s"
                f" {r['split_steady_worker_ms_p50']}/{r['split_steady_worker_ms_p99']}"
            )
    return 0


if __name__ == "__main__":
    sys.exit(main())
