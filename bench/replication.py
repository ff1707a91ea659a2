"""The cost of replication: our worker on one broker beside a 3-node cluster, one run.

The same two measurements on each Kafka, one after the other, each Kafka started by
this run on free ports and stopped before the next starts (so neither shares the
machine with the other):

  (a) throughput: `bench/throughput.py`'s run of our worker, N lead records already
      waiting, every one granted at once; records/s on the dial topic;
  (b) slot-free -> next dial: `bench/slot_free.py`'s run of the worker and the
      simulated dialer, every business with a backlog; p50/p99 of the delay.

On the single node every topic has one replica; on the cluster three, with
min.insync.replicas 2, so each write of every producer (acks=all: ours, Faust's
changelog) waits for a second broker.

    python -m bench.replication [-n 10000] [--businesses 100] [--leads 10]

Prints one JSON line per Kafka and measurement, then a table side by side.
"""

from __future__ import annotations

import argparse
import contextlib
import sys
import tempfile
from collections.abc import Iterator
from pathlib import Path

from bench import slot_free, throughput
from bench.common import emit, rates, read_all, say, tag
from streams.devtools.broker import Broker
from streams.devtools.cluster import Cluster
from streams.topics import CALLS_DIAL, topic_name
from tests.support.cluster import free_ports

KAFKAS = ("single", "cluster")


@contextlib.contextmanager
def kafka(kind: str, workdir: Path) -> Iterator[tuple[str, int]]:
    """A Kafka of this run: its bootstrap and replication factor, stopped afterwards."""
    ports = free_ports(6)
    if kind == "single":
        broker = Broker(port=ports[0], controller_port=ports[1], data_dir=workdir / kind)
        broker.start()
        try:
            yield broker.bootstrap, 1
        finally:
            broker.stop()
        return
    cluster = Cluster(workdir / kind, ports=ports[:3], controller_ports=ports[3:])
    cluster.start()
    try:
        yield cluster.bootstrap, cluster.replication_factor
    finally:
        cluster.stop()


def measure(kind: str, args: argparse.Namespace, workdir: Path) -> dict:
    """Throughput, then slot-free -> dial delays, of our worker on a fresh `kind` Kafka."""
    with kafka(kind, workdir) as (bootstrap, factor):
        say(f"{kind} ({bootstrap}, replication {factor}): throughput, {args.records} leads")
        prefix = f"bench{tag()}.rep."
        logs = workdir / f"{kind}-throughput"
        logs.mkdir(parents=True, exist_ok=True)
        rate = throughput.run_ours(
            bootstrap,
            prefix,
            args.records,
            args.records // 2,  # every lead granted at once: one dial out per lead in
            args.partitions,
            logs,
            args.timeout,
            throughput.leads(args.records, args.records // 2),
        )
        dials = read_all(bootstrap, topic_name(CALLS_DIAL, prefix), args.records)
        rate.update(rates([stamp for stamp, _, _ in dials]))
        rate.update(bench="replication.throughput", kafka=kind, replication_factor=factor)
        emit(rate)
        say(f"{kind}: slot-free -> dial, {args.businesses} x {args.leads} leads")
        logs = workdir / f"{kind}-slot-free"
        logs.mkdir(parents=True, exist_ok=True)
        delays = slot_free.run_ours(
            bootstrap,
            args.businesses,
            args.leads,
            (args.talk[0], args.talk[1]),
            args.cap,
            logs,
            partitions=args.partitions,
        )
        delays.update(bench="replication.slot_free", kafka=kind, replication_factor=factor)
        emit(delays)
    return {"throughput": rate, "slot_free": delays}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m bench.replication",
        description=__doc__.split("\n\n")[0],
        formatter_class=argparse.RawDescriptionHelpFormatter,
        epilog=__doc__.split("\n\n", 1)[1],
    )
    parser.add_argument(
        "-n", "--records", type=int, default=10_000, help="leads of the throughput run"
    )
    parser.add_argument("--partitions", type=int, default=8)
    parser.add_argument(
        "--businesses", type=int, default=100, help="businesses of the slot-free run"
    )
    parser.add_argument(
        "--leads", type=int, default=10, help="leads per business (slot-free run)"
    )
    parser.add_argument(
        "--talk",
        type=float,
        nargs=2,
        default=(1.0, 3.0),
        metavar=("MIN", "MAX"),
        help="talk seconds of the simulated calls (slot-free run)",
    )
    parser.add_argument("--cap", type=float, default=150, help="longest slot-free run, s")
    parser.add_argument(
        "--timeout", type=float, default=300, help="longest wait for the throughput run"
    )
    parser.add_argument("--workdir", help="keep the logs here (default: a temp dir)")
    args = parser.parse_args(argv)
    workdir = Path(args.workdir or tempfile.mkdtemp(prefix="bench-replication-"))
    workdir.mkdir(parents=True, exist_ok=True)
    results = {kind: measure(kind, args, workdir) for kind in KAFKAS}
    print(
        f"\nour worker, one broker (replication 1) beside 3 nodes (replication 3,"
        f" min.insync.replicas 2), acks=all; logs in {workdir}"
    )
    print(f"  {'':<34}{'1 broker':>12}{'3 nodes':>12}{'3 / 1':>9}")
    rows = [
        ("throughput, records/s sustained", "throughput", "per_s_sustained"),
        ("slot-free -> dial p50, ms", "slot_free", "slot_free_ms_p50"),
        ("slot-free -> dial p99, ms", "slot_free", "slot_free_ms_p99"),
        ("slot-free -> dial, steady p99, ms", "slot_free", "steady_slot_free_ms_p99"),
    ]
    for label, bench, key in rows:
        one, three = (results[kind][bench].get(key) for kind in KAFKAS)
        ratio = f"{three / one:.2f}" if one and three else "-"
        print(f"  {label:<34}{one!s:>12}{three!s:>12}{ratio:>9}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
