"""Lead -> dial latency at a fixed offered load, and true concurrency per business.

For each offered load (--rates, leads/s) a fresh deployment, so that one load's backlog
never delays the next: its own topic prefix and app id, the contract topics, --workers
`streams worker` processes in one consumer group (default settings, memory store), and
the simulated dialer (`streams dialer --simulate`, short calls: set-up 2 x U(0.05, 0.3) s,
ring U(0.1, 0.8) s, answered with p = 0.8 and then talk U(0.3, 1.5) s) writing its
ledger. It is serving once the group is stable with every worker owning input
partitions and a few warm-up leads have been placed as calls by the dialer.

A producer (murmur2_random, keyed by business id) then sends leads for --seconds on a
fixed schedule, lead i at i/rate s, whatever has come due every 10 ms; a late batch is
not dropped, the next ones catch up. Each lead goes to a business drawn uniformly from
--businesses (10,000 by default, so that few leads wait behind the limit of 3 and the
latency is the pipeline's). Then it waits until every lead has a dial command, or
--drain seconds.

* Latency of a lead = CreateTime of its first `calls.dial` record - CreateTime of its
  `leads.requests` record (one host clock). A lead still without a dial when the wait
  ends counts at its lower bound (end of the wait - its CreateTime); the percentiles are
  then lower bounds, and say so. Split by the dial's `granted_at`: lead -> grant
  (consumer lag and the decision), grant -> dial record (changelog ack wait and send).
* Offered rate = sustained rate of the lead records' CreateTimes, achieved rate = that
  of the first dials (middle 90%, `bench.common.rates`).
* The limit, from the dialer's ledger only (calls that really happened): peak live
  calls per business, and the moments above the limit, i.e. the placements that took a
  business above it (should be 0). Equal times count the end first, as
  `streams.dialers.simulated.concurrency_from_ledger` does.

    python -m bench.latency [--rates 500,2000] [--seconds 20] [--businesses 10000]
                            [--workers 3] [--bootstrap localhost:29092]
                            [--markdown latency.md] > latency.jsonl
"""

from __future__ import annotations

import argparse
import collections
import json
import os
import random
import signal
import subprocess
import sys
import tempfile
import time
import urllib.request
from collections.abc import Callable
from pathlib import Path

from confluent_kafka import Producer, TopicPartition

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
    settings_for,
    stop_process,
    tag,
    worker_env,
)
from streams.kafka import admin, clients
from streams.settings import Settings
from streams.topics import (
    CALLS_DIAL,
    LEADS_REQUESTS,
    from_iso,
    record_key,
    topic_name,
)
from tests.support.ports import free_port

TALK_SECONDS = "0.3,1.5"
#: The producer sends whatever has come due this often.
BATCH_SECONDS = 0.01
#: Leads sent (to distinct businesses) and placed as calls before measuring.
WARMUP_LEADS = 40


class Deployment:
    """One isolated limiter: topics, workers in one group, the simulated dialer."""

    def __init__(self, bootstrap: str, workers: int, partitions: int, workdir: Path):
        self.prefix = f"bench{tag()}.lat."
        self.workdir = workdir
        self.ledger = workdir / "dialer.jsonl"
        self.env = worker_env(bootstrap, self.prefix, partitions)
        self.settings = Settings.from_env(self.env)
        self.worker_count = workers
        self.processes: list[subprocess.Popen] = []
        self.web_ports: list[int] = []

    def topic(self, base: str) -> str:
        return topic_name(base, self.prefix)

    def start(self) -> None:
        admin.create_topics(self.settings)
        for n in range(self.worker_count):
            port = free_port()
            self.web_ports.append(port)
            self._spawn(
                f"worker-{n}",
                ["worker"],
                WORKER_WEB_PORT=str(port),
                STREAMS_DATA_DIR=str(self.workdir / f"data-{n}"),
            )
        self._spawn(
            "dialer",
            [
                "dialer",
                "--simulate",
                "--ledger",
                str(self.ledger),
                "--talk-seconds",
                TALK_SECONDS,
                "--seed",
                "7",
            ],
        )

    def _spawn(self, name: str, arguments: list[str], **env: str) -> None:
        with open(self.workdir / f"{name}.log", "wb") as log:
            self.processes.append(
                subprocess.Popen(
                    [PYTHON, "-m", "streams", *arguments],
                    env={**self.env, **env},
                    stdout=log,
                    stderr=subprocess.STDOUT,
                    cwd=REPO,
                )
            )

    def check_alive(self) -> None:
        for process in self.processes:
            if process.poll() is not None:
                raise RuntimeError(
                    f"{' '.join(process.args[2:4])} exited"
                    f" {process.returncode}; logs in {self.workdir}"
                )

    def wait_serving(self, timeout: float = 120) -> None:
        """Every worker's web view answers and the group is stable with every worker
        owning input partitions (as tests/support/deployment.py waits)."""
        client = clients.admin(self.settings)
        group = self.prefix + self.settings.app_id
        leads = self.topic(LEADS_REQUESTS)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            self.check_alive()
            if all(answers(port) for port in self.web_ports):
                description = client.describe_consumer_groups([group])[group].result(10)
                owners = [
                    m
                    for m in description.members
                    if any(tp.topic == leads for tp in m.assignment.topic_partitions)
                ]
                if (
                    str(description.state).endswith("STABLE")
                    and len(owners) == self.worker_count
                ):
                    return
            time.sleep(0.5)
        raise TimeoutError(
            f"group {group} never had {self.worker_count} members owning"
            f" partitions within {timeout:.0f}s; logs in {self.workdir}"
        )

    def placed_calls(self) -> int:
        if not self.ledger.exists():
            return 0
        return self.ledger.read_text().count('"event":"placed"')

    def stop(self) -> None:
        for process in self.processes:
            stop_process(process)


def answers(port: int) -> bool:
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/businesses/", timeout=2):
            return True
    except OSError:
        return False


def lead_record(lead_id: str, business: str) -> tuple[bytes, bytes]:
    value = {"lead_id": lead_id, "business_id": business, "phone": "+14155550100"}
    return record_key(business), json.dumps(value, separators=(",", ":")).encode()


def produce(producer: Producer, topic: str, record: tuple[bytes, bytes]) -> None:
    while True:
        try:
            producer.produce(topic, key=record[0], value=record[1])
            return
        except BufferError:
            producer.poll(0.05)


def warm_up(deployment: Deployment, producer: Producer, timeout: float = 60) -> None:
    """Leads through the whole chain (worker, dial, dialer) before any is measured, so
    that start-up (table recovery, the dialer's group join) is not counted."""
    topic = deployment.topic(LEADS_REQUESTS)
    for n in range(WARMUP_LEADS):
        produce(producer, topic, lead_record(f"warm-{n:03d}", f"warm{n:03d}"))
    assert producer.flush(30) == 0
    deadline = time.monotonic() + timeout
    while deployment.placed_calls() < WARMUP_LEADS:
        deployment.check_alive()
        if time.monotonic() > deadline:
            raise TimeoutError(
                f"{deployment.placed_calls()}/{WARMUP_LEADS} warm-up calls"
                f" placed after {timeout:.0f}s; logs in {deployment.workdir}"
            )
        time.sleep(0.3)


def send_paced(
    producer: Producer, topic: str, records: list[tuple[bytes, bytes]], rate: float
) -> list[float]:
    """Send record i at i/rate s, in the batch that has come due every BATCH_SECONDS;
    return how late each one was handed to the producer (s)."""
    start = time.monotonic()
    lateness = []
    tick = 0
    while len(lateness) < len(records):
        due = min(len(records), int(tick * BATCH_SECONDS * rate) + 1)
        for index in range(len(lateness), due):
            produce(producer, topic, records[index])
            lateness.append(time.monotonic() - start - index / rate)
        producer.poll(0)
        tick += 1
        time.sleep(max(0.0, start + tick * BATCH_SECONDS - time.monotonic()))
    assert producer.flush(60) == 0
    return lateness


def first_dials(
    bootstrap: str, topic: str, wanted: set[str], timeout: float, check: Callable[[], None]
) -> dict[str, tuple[int, float]]:
    """lead_id -> (CreateTime ms, granted_at s) of its first dial command, read from the
    start of `topic` until every wanted lead has one or `timeout` passes."""
    consumer = clients.consumer(
        settings_for(bootstrap),
        f"latency-{tag()}",
        {"enable.auto.commit": False, "auto.offset.reset": "earliest"},
    )
    found: dict[str, tuple[int, float]] = {}
    try:
        partitions = consumer.list_topics(topic, timeout=10).topics[topic].partitions
        consumer.assign([TopicPartition(topic, p, 0) for p in partitions])
        deadline = time.monotonic() + timeout
        next_report = time.monotonic() + 10
        while len(found) < len(wanted) and time.monotonic() < deadline:
            for message in consumer.consume(1000, timeout=0.5):
                if message.error() is not None:
                    continue
                dial = json.loads(message.value())
                created = message.timestamp()[1]
                lead = dial["lead_id"]
                if lead in wanted and (lead not in found or created < found[lead][0]):
                    found[lead] = (created, from_iso(dial["granted_at"]))
            if time.monotonic() >= next_report:
                say(f"  dialed {len(found):,}/{len(wanted):,}")
                next_report += 10
                check()
        return found
    finally:
        consumer.close()


def limit_check(ledger: Path, limit: int) -> dict:
    """Peak live calls per business and placements above the limit, from the ledger."""
    lines = [json.loads(raw) for raw in ledger.read_text().splitlines() if raw.strip()]
    kinds = collections.Counter(line["event"] for line in lines)
    sweep = sorted(
        (line for line in lines if line["event"] in ("placed", "ended")),
        key=lambda line: (line["at"], line["event"] == "placed"),
    )
    live: collections.Counter[str] = collections.Counter()
    peak: collections.Counter[str] = collections.Counter()
    above = 0
    for line in sweep:
        business = line["business_id"]
        if line["event"] == "placed":
            live[business] += 1
            peak[business] = max(peak[business], live[business])
            above += live[business] > limit
        else:
            live[business] -= 1
    return {
        "limit": limit,
        "calls_placed": kinds["placed"],
        "dialer_refused_late": kinds["refused"],
        "dialer_duplicates": kinds["duplicate"],
        "peak_live_per_business_max": max(peak.values(), default=0),
        "businesses_reaching_limit": sum(n >= limit for n in peak.values()),
        "moments_above_limit": above,
    }


def ms(values: list[float], q: float) -> float | None:
    value = percentile(values, q)
    return None if value is None else round(value, 1)


def measure(rate: int, args: argparse.Namespace, workdir: Path) -> dict:
    """One offered load on a fresh deployment: the JSON line for it."""
    deployment = Deployment(args.bootstrap, args.workers, args.partitions, workdir)
    rng = random.Random(args.seed)
    count = round(rate * args.seconds)
    records = [
        lead_record(f"lead-{n:07d}", f"b{rng.randrange(args.businesses):06d}")
        for n in range(count)
    ]
    leads_topic = deployment.topic(LEADS_REQUESTS)
    try:
        deployment.start()
        deployment.wait_serving()
        producer = clients.producer(deployment.settings)
        warm_up(deployment, producer)
        say(f"{rate}/s: serving; sending {count:,} leads over {args.seconds:g}s")
        lateness = send_paced(producer, leads_topic, records, rate)
        sent_at = time.time()
        say(f"{rate}/s: sent; waiting up to {args.drain:g}s for every dial")
        wanted = {f"lead-{n:07d}" for n in range(count)}
        dials = first_dials(
            args.bootstrap,
            deployment.topic(CALLS_DIAL),
            wanted,
            args.drain,
            deployment.check_alive,
        )
        waited_until = time.time()
        leads = {
            json.loads(value)["lead_id"]: created
            for created, _, value in read_all(args.bootstrap, leads_topic, values=True)
        }
    finally:
        deployment.stop()
        delete_topics(args.bootstrap, deployment.prefix)
    leads = {lead: created for lead, created in leads.items() if lead in wanted}
    dials = {lead: dial for lead, dial in dials.items() if lead in leads}
    latency = {
        lead: latency_of(lead, created, dials, waited_until)
        for lead, created in leads.items()
    }
    to_grant = [dials[lead][1] * 1000 - leads[lead] for lead in dials]
    to_dial = [created - granted * 1000 for created, granted in dials.values()]
    first = min(leads.values())
    quarters, undialed_by_quarter = [[] for _ in range(4)], [0] * 4
    for lead, created in leads.items():
        quarter = min(3, int(4 * (created - first) / (args.seconds * 1000)))
        quarters[quarter].append(latency[lead])
        undialed_by_quarter[quarter] += lead not in dials
    undialed = len(leads) - len(dials)
    all_latency = list(latency.values())
    offered = rates(list(leads.values()))
    achieved = rates([created for created, _ in dials.values()])
    return {
        "bench": "latency",
        "offered_per_s_target": rate,
        "seconds": args.seconds,
        "businesses": args.businesses,
        "workers": args.workers,
        "partitions": args.partitions,
        "talk_s": TALK_SECONDS,
        "leads": len(leads),
        "leads_missing_from_topic": count - len(leads),
        "offered_per_s_sustained": offered.get("per_s_sustained"),
        "offered_span_s": offered.get("span_s"),
        "producer_late_ms_p99": ms([s * 1000 for s in lateness], 99),
        "producer_late_ms_max": round(max(lateness) * 1000, 1),
        "dialed": len(dials),
        "undialed": undialed,
        "drain_s": round(waited_until - sent_at, 1),
        "latency_is_lower_bound": undialed > 0,
        "latency_ms_p50": ms(all_latency, 50),
        "latency_ms_p90": ms(all_latency, 90),
        "latency_ms_p99": ms(all_latency, 99),
        "latency_ms_max": ms(all_latency, 100),
        "latency_ms_p50_by_quarter": [ms(q, 50) for q in quarters],
        "undialed_by_quarter": undialed_by_quarter,
        "lead_to_grant_ms_p50": ms(to_grant, 50),
        "lead_to_grant_ms_p99": ms(to_grant, 99),
        "grant_to_dial_ms_p50": ms(to_dial, 50),
        "grant_to_dial_ms_p99": ms(to_dial, 99),
        "dials_per_s_sustained": achieved.get("per_s_sustained"),
        "dials_span_s": achieved.get("span_s"),
        **limit_check(
            deployment.ledger, deployment.settings.max_outbound_calls_per_business
        ),
        "loadavg_1m": round(os.getloadavg()[0], 2),
        "workdir": str(workdir),
    }


def latency_of(lead: str, created: int, dials: dict, waited_until: float) -> float:
    """Its latency in ms, or its lower bound when it has no dial yet."""
    return dials[lead][0] - created if lead in dials else waited_until * 1000 - created


def summary(result: dict) -> str:
    bound = ">= " if result["latency_is_lower_bound"] else ""
    return (
        f"{result['offered_per_s_target']:,}/s offered"
        f" ({result['offered_per_s_sustained']:,}/s produced):"
        f" {result['dialed']:,}/{result['leads']:,} dialed at"
        f" {result['dials_per_s_sustained']}/s;"
        f" latency ms p50 {bound}{result['latency_ms_p50']}"
        f" p90 {bound}{result['latency_ms_p90']} p99 {bound}{result['latency_ms_p99']}"
        f" max {bound}{result['latency_ms_max']}, p50 by quarter of the send window"
        f" {result['latency_ms_p50_by_quarter']}"
        f" (undialed {result['undialed_by_quarter']});"
        f" {result['dialer_duplicates']:,} repeated dial commands; peak live per business"
        f" {result['peak_live_per_business_max']} (limit {result['limit']}),"
        f" {result['moments_above_limit']} moments above it"
    )


def markdown(results: list[dict]) -> str:
    rows = [
        "| offered leads/s (produced) | leads | dialed | dials/s sustained"
        " | latency p50 / p90 / p99 / max (ms) | p50 by quarter of the send window (ms)"
        " | peak live per business | moments above limit |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for r in results:
        bound = "≥ " if r["latency_is_lower_bound"] else ""
        quarters = " / ".join(
            f"{'≥ ' if undialed else ''}{q:,.0f}"
            for q, undialed in zip(
                r["latency_ms_p50_by_quarter"], r["undialed_by_quarter"], strict=True
            )
            if q is not None
        )
        rows.append(
            f"| {r['offered_per_s_target']:,} ({r['offered_per_s_sustained']:,})"
            f" | {r['leads']:,} | {r['dialed']:,} | {r['dials_per_s_sustained']}"
            f" | {bound}{r['latency_ms_p50']:,.0f} / {bound}{r['latency_ms_p90']:,.0f} /"
            f" {bound}{r['latency_ms_p99']:,.0f} / {bound}{r['latency_ms_max']:,.0f}"
            f" | {quarters} | {r['peak_live_per_business_max']}"
            f" (limit {r['limit']}) | {r['moments_above_limit']} |"
        )
    first = results[0]
    rows.append(
        f"\n{first['workers']} workers, {first['partitions']} partitions,"
        f" {first['businesses']:,} businesses, {first['seconds']:g} s per load, talk"
        f' U({first["talk_s"].replace(",", ", ")}) s. "≥": leads still without a'
        " dial at the end of the wait count at their lower bound."
    )
    return "\n".join(rows) + "\n"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m bench.latency",
        description=__doc__.split("\n\n")[0],
        formatter_class=argparse.RawDescriptionHelpFormatter,
        epilog=__doc__.split("\n\n", 1)[1],
    )
    parser.add_argument("--bootstrap", default=DEFAULT_BOOTSTRAP)
    parser.add_argument("--rates", default="500,2000", help="offered loads, leads/s")
    parser.add_argument("--seconds", type=float, default=20, help="send time per load")
    parser.add_argument("--businesses", type=int, default=10_000)
    parser.add_argument("--workers", type=int, default=3)
    parser.add_argument("--partitions", type=int, default=8)
    parser.add_argument(
        "--drain",
        type=float,
        default=60,
        help="longest wait for the dials after the last lead, seconds",
    )
    parser.add_argument("--seed", type=int, default=7, help="seed of the business draw")
    parser.add_argument("--markdown", metavar="PATH", help="also write a table here")
    args = parser.parse_args(argv)
    # SIGTERM unwinds like Ctrl-C, so the finally blocks stop the workers.
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
    results = []
    for rate in (int(r) for r in args.rates.split(",") if r.strip()):
        workdir = Path(tempfile.mkdtemp(prefix=f"bench-latency-{rate}-"))
        say(f"{rate}/s: {args.workers} workers, logs in {workdir}")
        result = measure(rate, args, workdir)
        emit(result)
        say(summary(result))
        results.append(result)
    if args.markdown:
        Path(args.markdown).write_text(markdown(results))
        say(f"table in {args.markdown}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
