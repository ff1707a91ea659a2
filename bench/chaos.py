"""Fault injection with an independent verifier, after Kafka's exactly-once system test.

A driver sends a known workload (leads over many businesses, a few with big backlogs,
some with their own limits) through the real broker to 2-3 workers in one group and a
dialer (the simulated one, or the Twilio dialer on the fake Twilio server, as unkind as
Twilio: status callbacks duplicated, reordered, delayed and lost, `TWILIO_FAULTS` on its
REST API: requests that hang, a call list that lags its creates, 5xx answers to creates
that did make the call, and an account CPS below the one the dialer is told, so Twilio
queues calls), while a seeded schedule
SIGKILLs and restarts workers, adds and removes a third worker (rebalances), SIGKILLs
the dialer and, when this run owns the broker, restarts the broker. The verifier then
reads only the calls that really happened (the simulated dialer's ledger, or what the
fake Twilio server recorded) and the full history of the topics, never the workers'
counters:

* the true concurrent calls of every business never exceeded its limit;
* every lead got exactly one outcome, none was lost, none was called twice;
* at quiescence no business holds a slot or a waiting lead;
* slot-free -> next dial delay p50/p99.

With ``--cluster`` it runs on a local 3-node cluster of its own instead (replication 3,
min.insync.replicas 2), keeps the leads coming while it injects broker faults one after
the other (bench/cluster_faults.py: SIGKILL the changelog's leader, SIGKILL the group
coordinator, SIGSTOP a leader for 30 s, a rolling restart, a lost disk), and reports for
each fault the longest stall in dials and the slot-free -> dial delays while it lasted.

It exits 1 on any violation and prints the seed that reproduces it; with
``--expect-violations`` it exits 0 only if the verifier found one (a control run, e.g. a
lost disk at replication factor 1, proving the verifier sees the loss).

    python -m bench.chaos --leads 5000 --businesses 200 --seed 7
    python -m bench.chaos --dialer twilio --leads 600 --businesses 60 --seed 7
    python -m bench.chaos --short --bootstrap localhost:29092      # what CI runs
    python -m bench.chaos --cluster --seed 7                        # broker faults
    python -m bench.chaos --cluster --replication-factor 1 --faults lose_disk \
        --expect-violations --seed 7                                # the control run
"""

from __future__ import annotations

import argparse
import collections
import contextlib
import json
import random
import signal
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable
from pathlib import Path

from confluent_kafka import KafkaException

from bench.cluster_faults import FAULTS, ClusterFaults, FaultWindow
from streams.devtools.broker import Broker, BrokerError
from streams.devtools.cluster import Cluster
from streams.kafka import clients
from streams.ops.lag.reader import LagReader
from streams.settings import Settings
from streams.topics import BusinessControl, app_id, record_key, topic_name
from tests.support.cluster import free_ports
from tests.support.deployment import Deployment, Dialer, WorkerProcess
from tests.support.fake_twilio import FakeTwilio

#: Faust's own rebalance and recovery lines in the worker logs, for a post-mortem.
WORKER_ARGS = ("--loglevel", "info")
#: The fake Twilio's REST faults in a Twilio run, and the dialer settings they call for
#: (its list settle time above the fake's longest lag).
TWILIO_FAULTS = dict(
    hang_ratio=0.02,
    consistency_lag=(0.0, 3.0),
    server_error_after_create_ratio=0.05,
    cps=5.0,
)
TWILIO_DIALER_ENV = dict(
    TWILIO_CPS="8",
    TWILIO_LIST_SETTLE_SECONDS="4",
    TWILIO_REQUEST_TIMEOUT_SECONDS="3",
)


def workload(rng: random.Random, leads: int, businesses: int) -> tuple[list[dict], dict]:
    """Leads (3 businesses get a big backlog) and per-business limits (some not 3)."""
    names = [f"biz{n:04d}" for n in range(businesses)]
    heavy = names[:3]
    weights = [40 if name in heavy else 1 for name in names]
    limits = {name: rng.choice((1, 2, 5)) for name in rng.sample(names, businesses // 10)}
    chosen = rng.choices(names, weights=weights, k=leads)
    return (
        [
            {
                "lead_id": f"L{n:06d}",
                "business_id": b,
                "phone": f"+1555{n:07d}",
                "priority": rng.choice((0, 0, 0, 5)),
            }
            for n, b in enumerate(chosen)
        ],
        limits,
    )


class Chaos:
    def __init__(self, args: argparse.Namespace, workdir: Path):
        self.args = args
        self.rng = random.Random(args.seed)
        self.broker: Broker | None = None
        self.cluster: Cluster | None = None
        self.owns_cluster = False
        bootstrap = args.bootstrap
        overrides = {"LEASE_GRACE_SECONDS": "20", "ORPHAN_STATUS_HOLD_SECONDS": "30"}
        if args.cluster_dir is not None:  # a running cluster, e.g. a test session's
            self.cluster = Cluster.load(Path(args.cluster_dir))
            if self.cluster is None:
                raise BrokerError(f"no cluster recorded in {args.cluster_dir}")
        elif args.cluster:
            ports = free_ports(6)
            self.cluster = Cluster(
                workdir / "kafka-cluster", ports=ports[:3], controller_ports=ports[3:]
            )
            self.owns_cluster = True
            self.cluster.start()
        if self.cluster is not None:
            bootstrap = self.cluster.bootstrap
            if self.cluster.security != "plaintext":
                overrides["KAFKA_CLIENT_CONFIG"] = str(self.cluster.client_properties_file)
        elif bootstrap is None:  # our own broker, so that we may restart it
            self.broker = Broker(
                port=args.broker_port,
                controller_port=args.broker_port + 1,
                data_dir=workdir / "kafka",
            )
            self.broker.start()
            bootstrap = self.broker.bootstrap
        if args.replication_factor is not None:
            overrides["TOPIC_REPLICATION_FACTOR"] = str(args.replication_factor)
        self.deployment = Deployment(bootstrap, workdir, **overrides)
        self.cluster_faults = (
            None
            if self.cluster is None
            else ClusterFaults(self.cluster, self.deployment.settings, self.rng)
        )
        self.windows: list[FaultWindow] = []
        self.sent_list: list[str] = []  # appended to by librdkafka's delivery reports
        self.sent_at: dict[str, float] = {}
        self.refused: list[str] = []
        self.stop_sending = threading.Event()
        self.dialer: subprocess.Popen | None = None
        self.fake: FakeTwilio | None = None
        self.twilio: Dialer | None = None
        if args.dialer == "twilio":
            self.fake = FakeTwilio(
                seed=args.seed,
                ring_seconds=(0.1, 0.5),
                talk_seconds=(0.3, 1.5),
                duplicate_ratio=0.1,
                reorder_ratio=0.1,
                drop_ratio=0.03,
                **TWILIO_FAULTS,
            ).start()
            self.twilio = Dialer(
                self.deployment,
                self.fake,
                f"sqlite:///{workdir / 'ledger.db'}",
                **TWILIO_DIALER_ENV,
            )
        self.faults: list[str] = []

    # -- the pieces ------------------------------------------------------------------

    def start_dialer(self) -> None:
        if self.twilio is not None:
            self.twilio.start_process()
            return
        log = open(self.deployment.workdir / "dialer.log", "ab")
        self.dialer = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "streams",
                "dialer",
                "--simulate",
                "--ledger",
                str(self.deployment.ledger),
                "--talk-seconds",
                "0.3,1.5",
                "--seed",
                str(self.args.seed),
            ],
            env=self.deployment.env,
            stdout=log,
            stderr=subprocess.STDOUT,
        )

    def worker(self, name: str) -> WorkerProcess:
        return next(
            w
            for w in reversed(self.deployment.workers)
            if w.log_path.name == f"worker-{name}.log"
        )

    # -- faults ----------------------------------------------------------------------

    def fault_kill_worker(self) -> None:
        name = self.rng.choice(["w1", "w2"])
        self.worker(name).kill()
        time.sleep(self.rng.uniform(0.5, 3))
        self.deployment.start_worker(name, *WORKER_ARGS)
        self.faults.append(f"SIGKILL {name} and restart")

    def fault_rebalance(self) -> None:
        extra = self.deployment.start_worker("w3", *WORKER_ARGS)
        time.sleep(self.rng.uniform(8, 15))
        extra.stop()
        self.faults.append("w3 joined and left")

    def fault_kill_dialer(self) -> None:
        if self.twilio is not None:
            self.twilio.kill()
        else:
            assert self.dialer is not None
            self.dialer.send_signal(signal.SIGKILL)
            self.dialer.wait(10)
        time.sleep(self.rng.uniform(0.5, 2))
        self.start_dialer()
        self.faults.append("SIGKILL dialer and restart")

    def fault_restart_broker(self) -> None:
        assert self.broker is not None
        self.broker.stop()
        time.sleep(self.rng.uniform(1, 3))
        for attempt in range(5):  # the old listener's port can take a moment to free up
            try:
                self.broker.start()
                break
            except BrokerError:
                if attempt == 4:
                    raise
                time.sleep(3)
        self.faults.append("broker restart")

    # -- the run ---------------------------------------------------------------------

    def run(self) -> dict:
        args, deployment = self.args, self.deployment
        deployment.create_topics()
        leads, limits = workload(self.rng, args.leads, args.businesses)
        deployment.produce(
            "business.control",
            [
                (record_key(b), BusinessControl(b, limit, False).encode())
                for b, limit in limits.items()
            ],
        )
        for name in ("w1", "w2"):
            deployment.start_worker(name, *WORKER_ARGS)
        for worker in deployment.workers:
            worker.wait_serving()
        self.start_dialer()

        started = time.monotonic()
        sender = threading.Thread(target=self._send, args=(leads,), daemon=True)
        sender.start()
        for fault in self.schedule():
            time.sleep(self.rng.uniform(3, 8))
            print(f"[{time.monotonic() - started:6.1f}s] fault: {fault}", flush=True)
            if self.cluster_faults is not None:
                window = self.cluster_faults.inject(fault)
                self.windows.append(window)
                self.faults.append(window.detail)
                print(
                    f"[{time.monotonic() - started:6.1f}s] cluster whole again after"
                    f" {window.ended - window.started:.1f}s",
                    flush=True,
                )
            else:
                getattr(self, f"fault_{fault}")()
        if self.cluster_faults is not None:
            # Load until the last fault is over, then what was sent is what is checked.
            time.sleep(self.rng.uniform(3, 8))
            self.stop_sending.set()
        sender.join()
        sent = set(self.sent_list)
        leads = [lead for lead in leads if lead["lead_id"] in sent]
        wanted = {lead["lead_id"] for lead in leads}
        outcomes = deployment.read(
            "leads.outcomes",
            timeout=args.settle_seconds,
            until=lambda recs: wanted <= {r["lead_id"] for r in recs},
        )
        if self.fake is not None:
            self.fake.wait_idle(60)
        live_workers = [w for w in deployment.workers if w.process.poll() is None]
        settled = wait_quiescent(live_workers, args.quiescence_seconds)
        calls = self.calls_made()
        report = verify(
            leads,
            limits,
            outcomes,
            calls,
            live_workers,
            default_limit=deployment.settings.max_outbound_calls_per_business,
        )
        report["quiescent_after_seconds"] = settled
        report.update(
            seed=args.seed, faults=self.faults, seconds=round(time.monotonic() - started, 1)
        )
        if self.refused:
            report["leads_kafka_refused"] = len(self.refused)
        if self.cluster is not None:
            report["replication_factor"] = (
                args.replication_factor or self.cluster.replication_factor
            )
            # Slot-free -> dial of a business with a lead waiting: at this rate most
            # businesses wait for their next lead, which is no delay of ours.
            report["slot_free_to_dial_seconds_lead_waiting"] = slot_free_delays(
                calls, sent_at=self.sent_at
            )
            report["per_fault"] = fault_figures(calls, self.windows, self.sent_at)
        if self.fake is not None:
            report["twilio"] = self.twilio_figures()
        if report["violations"]:
            report["post_mortem"] = post_mortem(
                deployment.workdir, leads, outcomes
            ) + group_lag(deployment.settings)
        return report

    def calls_made(self) -> list[dict]:
        """What really happened, as placed/ended lines: the fake's record or the ledger."""
        if self.fake is None:
            return self.deployment.ledger_lines()
        lines = []
        for call in self.fake.calls():
            lead_id = call["dial_id"].split(":")[1]
            common = {
                "dial_id": call["dial_id"],
                "business_id": call["business_id"],
                "lead_id": lead_id,
                "phone": call["to"],
            }
            lines.append({"event": "placed", "at": call["created_at"], **common})
            if call["ended_at"] is not None:
                lines.append({"event": "ended", "at": call["ended_at"], **common})
        return lines

    def schedule(self) -> list[str]:
        if self.cluster is not None:
            return list(self.args.faults)
        if self.args.short:
            return ["kill_worker", "rebalance"] + (["kill_dialer"] if self.twilio else [])
        return ["kill_worker", "rebalance", "kill_dialer", "kill_worker"] + (
            ["restart_broker"] if self.broker else []
        )

    def twilio_figures(self) -> dict:
        """What the fake Twilio saw: its faults and what the dialer made of them."""
        assert self.fake is not None
        calls = self.fake.calls()
        answers = collections.Counter(
            str(r["http_status"]) for r in self.fake.create_requests()
        )
        hung_up = sum(
            1
            for r in self.fake.requests()
            if r["method"] == "POST" and ("Status", "completed") in r["form"]
        )
        return {
            "faults": {
                k: list(v) if isinstance(v, tuple) else v for k, v in TWILIO_FAULTS.items()
            },
            "create_answers": dict(answers),
            "hung_requests": self.fake.hung_requests(),
            "calls": len(calls),
            # Only the dialer cancels, and only calls Twilio still queued.
            "canceled_while_queued": sum(1 for c in calls if c["status"] == "canceled"),
            "unowned_hung_up": hung_up,
        }

    def _send(self, leads: list[dict]) -> None:
        """Leads at the set rate until all are sent or `stop_sending`; a lead counts as
        sent once Kafka acknowledged it (acks=all), since one it refused was never the
        limiter's to lose."""
        settings = self.deployment.settings
        topic = topic_name("leads.requests", settings.topic_prefix)
        timeout_ms = int(self.args.delivery_timeout * 1000)
        producer = clients.producer(settings, {"message.timeout.ms": timeout_ms})

        def delivery_report(lead_id: str) -> Callable[[object, object], None]:
            def delivered(error: object, _message: object) -> None:
                (self.refused if error is not None else self.sent_list).append(lead_id)

            return delivered

        batch = max(1, self.args.leads_per_second // 10)
        for start in range(0, len(leads), batch):
            if self.stop_sending.is_set():
                break
            for lead in leads[start : start + batch]:
                self.sent_at[lead["lead_id"]] = time.time()
                producer.produce(
                    topic,
                    key=record_key(lead["business_id"]),
                    value=json.dumps(lead).encode(),
                    on_delivery=delivery_report(lead["lead_id"]),
                )
            producer.poll(0)
            time.sleep(0.1)
        producer.flush(self.args.delivery_timeout + 30)

    def close(self) -> None:
        if self.dialer is not None and self.dialer.poll() is None:
            self.dialer.send_signal(signal.SIGTERM)
            self.dialer.wait(30)
        if self.twilio is not None:
            self.twilio.stop()
        if self.fake is not None:
            self.fake.release_hung()
            self.fake.stop()
        self.deployment.close()
        if self.broker is not None:
            self.broker.stop()
        if self.cluster is not None and self.owns_cluster:
            self.cluster.stop()
        elif self.cluster is not None:
            # A cluster we were lent goes back without this run's topics: partitions a
            # lost disk took for good would otherwise stay offline in it forever.
            delete_topics(self.deployment.settings)


def verify(
    leads: list[dict],
    limits: dict,
    outcomes: list[dict],
    ledger: list[dict],
    workers: list[WorkerProcess],
    default_limit: int,
) -> dict:
    """Check the guarantees from what really happened; return figures and violations."""
    violations: list[str] = []
    outcome_kinds = collections.defaultdict(set)
    for outcome in outcomes:
        outcome_kinds[outcome["lead_id"]].add(outcome["outcome"])
    lost = [lead["lead_id"] for lead in leads if lead["lead_id"] not in outcome_kinds]
    if lost:
        violations.append(f"{len(lost)} leads without an outcome, e.g. {lost[:5]}")
    doubled = {lead: kinds for lead, kinds in outcome_kinds.items() if len(kinds) > 1}
    if doubled:
        violations.append(f"leads with two different outcomes: {list(doubled.items())[:5]}")

    placed = [line for line in ledger if line["event"] == "placed"]
    per_lead = collections.Counter(line["lead_id"] for line in placed)
    twice = [lead for lead, n in per_lead.items() if n > 1]
    if twice:
        violations.append(f"leads called twice: {twice[:5]}")
    per_attempt = collections.Counter((line["dial_id"], line["phone"]) for line in placed)
    repeated = [dial for dial, n in per_attempt.items() if n > 1]
    if repeated:
        violations.append(f"a number called twice for one attempt: {repeated[:5]}")
    ended = {line["dial_id"] for line in ledger if line["event"] == "ended"}
    unended = [line["dial_id"] for line in placed if line["dial_id"] not in ended]
    if unended:
        violations.append(f"calls still live at quiescence: {unended[:5]}")

    marks = sorted(
        (
            (line["at"], 0 if line["event"] == "ended" else 1, line)
            for line in ledger
            if line["event"] in ("placed", "ended")
        ),
        key=lambda mark: mark[:2],
    )
    live: collections.Counter[str] = collections.Counter()
    peak: collections.Counter[str] = collections.Counter()
    for _, is_placed, line in marks:
        live[line["business_id"]] += 1 if is_placed else -1
        peak[line["business_id"]] = max(
            peak[line["business_id"]], live[line["business_id"]]
        )
    for business, most in peak.items():
        if most > limits.get(business, default_limit):
            violations.append(
                f"business {business} had {most} calls at once,"
                f" limit {limits.get(business, default_limit)}"
            )

    for worker in workers:
        answer = worker.businesses()
        if answer is None:
            violations.append(f"worker {worker.log_path.name} did not answer at quiescence")
        for held in answer or []:
            if held["active"] or held["waiting"]:
                violations.append(
                    f"at quiescence {held['business_id']} still holds"
                    f" {len(held['active'])} slots and"
                    f" {held['waiting']} waiting leads"
                )

    return {
        "leads": len(leads),
        "outcomes": len(outcome_kinds),
        "calls_placed": len(placed),
        "peak_by_business_max": max(peak.values(), default=0),
        "slot_free_to_dial_seconds": slot_free_delays(ledger),
        "violations": violations,
    }


def wait_quiescent(workers: list[WorkerProcess], timeout: float) -> float | None:
    """Once every lead has its outcome, the workers may still be reading statuses and
    ticks a broker fault held back: give them until nothing is held (slots, waiting
    leads), at most ``timeout``; the seconds that took, or None if it never was (the
    verifier then reports what is still held)."""
    began = time.monotonic()
    while True:
        answers = [worker.businesses() for worker in workers]
        if all(
            answer is not None
            and not any(held["active"] or held["waiting"] for held in answer)
            for answer in answers
        ):
            return round(time.monotonic() - began, 1)
        if time.monotonic() - began > timeout:
            return None
        time.sleep(1)


def post_mortem(workdir: Path, leads: list[dict], outcomes: list[dict]) -> list[str]:
    """What the worker logs say about the first leads without an outcome, and each
    log's last warnings: enough to start on a failure seen only in CI's output."""
    answered = {outcome["lead_id"] for outcome in outcomes}
    lost = [lead for lead in leads if lead["lead_id"] not in answered]
    lines = [
        f"leads without an outcome per business: "
        f"{dict(collections.Counter(lead['business_id'] for lead in lost))}"
    ]
    logs = {
        path.name: path.read_text(errors="replace").splitlines()
        for path in sorted(workdir.glob("worker-*.log"))
    }
    for lead in lost[:3]:
        mentions = [
            f"{name}: {line}"
            for name, text in logs.items()
            for line in text
            if lead["lead_id"] in line
        ]
        lines.append(
            f"{lead['lead_id']} ({lead['business_id']}) in the worker logs:"
            f" {len(mentions)} lines"
        )
        lines.extend(f"  {line[:240]}" for line in mentions[-4:])
    for name, text in logs.items():
        warnings = [
            line
            for line in text
            if ("WARNING" in line or "ERROR" in line) and "was applied before" not in line
        ]
        lines.append(f"{name}: {len(text)} lines, last warnings:")
        lines.extend(f"  {line[:240]}" for line in warnings[-8:])
    return lines


def group_lag(settings: Settings) -> list[str]:
    """Input partitions the worker group has not committed to the end: records it never
    handled, or handled without committing (`streams lag` reads the same)."""
    group = app_id(settings.topic_prefix, settings.app_id)
    reader = LagReader(settings)
    try:
        sample = reader.sample([group])[group]
    except Exception as exc:  # a post-mortem must not hide the violations
        return [f"group lag of {group}: could not be read ({exc})"]
    finally:
        reader.close()
    behind = [
        f"  {p.topic}/{p.partition}: committed {p.committed}, end {p.end}"
        for p in sample.partitions
        if p.lag
    ]
    return [
        f"group {group} ({sample.state}, {sample.members} members):"
        f" {len(behind)} partitions not committed to the end",
        *behind,
    ]


def delete_topics(settings: Settings) -> None:
    """Every topic of this run (its prefix): the contract's, the changelog, Faust's."""
    client = clients.admin(settings)
    names = [
        name
        for name in client.list_topics(timeout=15).topics
        if name.startswith(settings.topic_prefix)
    ]
    for future in client.delete_topics(names).values() if names else ():
        with contextlib.suppress(KafkaException):
            future.result(30)


def fault_figures(
    ledger: list[dict],
    windows: list[FaultWindow],
    sent_at: dict[str, float] | None = None,
) -> list[dict]:
    """Per fault, while it lasted (injection until the cluster was whole again): the
    dials made, the longest time without any dial (from the window's edges too), and
    the slot-free -> next dial delays of the slots freed in it."""
    dials = sorted(line["at"] for line in ledger if line["event"] == "placed")
    figures = []
    for window in windows:
        inside = [at for at in dials if window.started <= at <= window.ended]
        edges = [window.started, *inside, window.ended]
        figures.append(
            {
                "fault": window.fault,
                "detail": window.detail,
                "seconds": round(window.ended - window.started, 1),
                "dials": len(inside),
                "longest_dial_stall_seconds": round(
                    max(b - a for a, b in zip(edges, edges[1:], strict=False)), 2
                ),
                "slot_free_to_dial_seconds": slot_free_delays(
                    ledger, (window.started, window.ended), sent_at
                ),
                **(
                    {"partitions_lost_for_good": list(window.lost_partitions)}
                    if window.lost_partitions
                    else {}
                ),
            }
        )
    return figures


def slot_free_delays(
    ledger: list[dict],
    freed_between: tuple[float, float] | None = None,
    sent_at: dict[str, float] | None = None,
) -> dict:
    """For each call end followed by another dial of the same business, the gap; only
    the ends within ``freed_between`` when given. With ``sent_at`` (lead -> when it was
    sent), only ends whose next dialed lead had been sent before the slot freed: a slot
    freed while that business had a lead waiting, not the wait for its next lead."""
    by_business = collections.defaultdict(list)
    for line in ledger:
        if line["event"] in ("placed", "ended"):
            by_business[line["business_id"]].append(line)
    gaps = []
    for lines in by_business.values():
        lines.sort(key=lambda line: line["at"])
        for index, line in enumerate(lines):
            if line["event"] == "ended" and (
                freed_between is None or freed_between[0] <= line["at"] <= freed_between[1]
            ):
                following = next(
                    (nxt for nxt in lines[index + 1 :] if nxt["event"] == "placed"), None
                )
                if following is not None and (
                    sent_at is None
                    or sent_at.get(following["lead_id"], float("inf")) <= line["at"]
                ):
                    gaps.append(following["at"] - line["at"])
    gaps.sort()
    if not gaps:
        return {}
    return {
        "count": len(gaps),
        "p50": round(gaps[len(gaps) // 2], 4),
        "p99": round(gaps[min(len(gaps) - 1, int(len(gaps) * 0.99))], 4),
    }


def _exit_on_sigterm(signum: int, _frame: object) -> None:
    raise SystemExit(128 + signum)


def fault_list(text: str) -> tuple[str, ...]:
    faults = tuple(f.strip() for f in text.split(",") if f.strip())
    unknown = [f for f in faults if f not in FAULTS]
    if unknown or not faults:
        raise argparse.ArgumentTypeError(
            f"unknown broker faults {unknown}; choose from {','.join(FAULTS)}"
        )
    return faults


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m bench.chaos",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--seed", type=int, default=random.randrange(1 << 30))
    parser.add_argument("--leads", type=int, default=5000)
    parser.add_argument("--businesses", type=int, default=200)
    parser.add_argument("--leads-per-second", type=int, default=300)
    parser.add_argument(
        "--dialer",
        choices=("simulated", "twilio"),
        default="simulated",
        help="the simulated dialer, or the Twilio dialer on a fake Twilio"
        " server with duplicated/reordered/lost callbacks",
    )
    parser.add_argument(
        "--short",
        action="store_true",
        help="one worker kill and one rebalance (the CI version)",
    )
    parser.add_argument(
        "--bootstrap",
        help="use this broker (no broker restarts); default: start one of our own",
    )
    parser.add_argument(
        "--broker-port",
        type=int,
        default=24092,
        help="below Linux's ephemeral range, so that no client connection"
        " takes the port while the broker restarts",
    )
    parser.add_argument(
        "--cluster",
        action="store_true",
        help="run on a local 3-node cluster of our own and inject broker faults"
        " (--faults) instead of worker and dialer faults; leads keep coming until the"
        " last fault is over (at most --leads)",
    )
    parser.add_argument(
        "--cluster-dir",
        metavar="DIR",
        help="like --cluster, on the running cluster recorded in DIR"
        " (`streams broker start --nodes 3 --data-dir DIR`); it is left running",
    )
    parser.add_argument(
        "--faults",
        type=fault_list,
        default=FAULTS,
        metavar="F1,F2",
        help=f"broker faults of a cluster run, in order (default: {','.join(FAULTS)})",
    )
    parser.add_argument(
        "--replication-factor",
        type=int,
        help="TOPIC_REPLICATION_FACTOR of the run's topics, changelog included"
        " (default: the cluster's)",
    )
    parser.add_argument(
        "--expect-violations",
        action="store_true",
        help="a control run: exit 0 only if the verifier reports a violation",
    )
    parser.add_argument(
        "--delivery-timeout",
        type=float,
        default=120,
        metavar="SECONDS",
        help="a lead Kafka has not acknowledged after this long is not sent, and so"
        " not checked (a partition lost for good never acknowledges)",
    )
    parser.add_argument("--settle-seconds", type=float, default=300)
    parser.add_argument(
        "--quiescence-seconds",
        type=float,
        default=120,
        help="after the last outcome, how long the workers get to release every slot"
        " before the verifier looks",
    )
    parser.add_argument(
        "--keep",
        metavar="DIR",
        help="run in DIR and keep it (worker and dialer logs, the broker's"
        " data when this run owns it) for a post-mortem",
    )
    args = parser.parse_args(argv)
    if args.cluster_dir is not None:
        args.cluster = True
    if args.cluster and args.bootstrap is not None:
        parser.error("--cluster runs on a cluster of its own, not on --bootstrap")
    # SIGTERM (CI's timeout) unwinds like Ctrl-C, so the brokers this run started,
    # which live in sessions of their own, are stopped too.
    previous = signal.signal(signal.SIGTERM, _exit_on_sigterm)
    try:
        with tempfile.TemporaryDirectory(prefix="chaos-") as scratch:
            workdir = Path(args.keep or scratch)
            workdir.mkdir(parents=True, exist_ok=True)
            chaos = Chaos(args, workdir)
            try:
                report = chaos.run()
            finally:
                chaos.close()
    finally:
        signal.signal(signal.SIGTERM, previous)
    post_mortem_lines = report.pop("post_mortem", [])
    print(json.dumps(report, indent=2))
    if args.expect_violations:
        if report["violations"]:
            print(
                f"control run: the verifier saw {len(report['violations'])} violations,"
                " as it must"
            )
            return 0
        print("control run: the verifier saw no violation, but it must", file=sys.stderr)
        return 1
    if report["violations"]:
        print(f"VIOLATIONS (reproduce with --seed {args.seed}):", file=sys.stderr)
        for violation in report["violations"]:
            print(f"  {violation}", file=sys.stderr)
        print("POST-MORTEM:", *post_mortem_lines, sep="\n  ", file=sys.stderr)
        return 1
    print(f"all guarantees held under {len(report['faults'])} faults (seed {args.seed})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
