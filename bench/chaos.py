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

It exits 1 on any violation and prints the seed that reproduces it.

    python -m bench.chaos --leads 5000 --businesses 200 --seed 7
    python -m bench.chaos --dialer twilio --leads 600 --businesses 60 --seed 7
    python -m bench.chaos --short --bootstrap localhost:29092      # what CI runs
"""

from __future__ import annotations

import argparse
import collections
import json
import random
import signal
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

from streams.devtools.broker import Broker, BrokerError
from streams.ops.lag.reader import LagReader
from streams.settings import Settings
from streams.topics import BusinessControl, app_id, record_key
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
        bootstrap = args.bootstrap
        if bootstrap is None:  # our own broker, so that we may restart it
            self.broker = Broker(
                port=args.broker_port,
                controller_port=args.broker_port + 1,
                data_dir=workdir / "kafka",
            )
            self.broker.start()
            bootstrap = self.broker.bootstrap
        self.deployment = Deployment(
            bootstrap, workdir, LEASE_GRACE_SECONDS="20", ORPHAN_STATUS_HOLD_SECONDS="30"
        )
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
        schedule = (
            ["kill_worker", "rebalance"] + (["kill_dialer"] if self.twilio else [])
            if args.short
            else ["kill_worker", "rebalance", "kill_dialer", "kill_worker"]
            + (["restart_broker"] if self.broker else [])
        )
        for fault in schedule:
            time.sleep(self.rng.uniform(3, 8))
            print(f"[{time.monotonic() - started:6.1f}s] fault: {fault}", flush=True)
            getattr(self, f"fault_{fault}")()
        sender.join()
        wanted = {lead["lead_id"] for lead in leads}
        outcomes = deployment.read(
            "leads.outcomes",
            timeout=args.settle_seconds,
            until=lambda recs: wanted <= {r["lead_id"] for r in recs},
        )
        if self.fake is not None:
            self.fake.wait_idle(60)
        calls = self.calls_made()
        report = verify(
            leads,
            limits,
            outcomes,
            calls,
            [w for w in deployment.workers if w.process.poll() is None],
            default_limit=deployment.settings.max_outbound_calls_per_business,
        )
        report.update(
            seed=args.seed, faults=self.faults, seconds=round(time.monotonic() - started, 1)
        )
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
        batch = max(1, self.args.leads_per_second // 10)
        for start in range(0, len(leads), batch):
            self.deployment.produce_leads(leads[start : start + batch])
            time.sleep(0.1)

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
    live, peak = collections.Counter(), collections.Counter()
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
        for business in answer or []:
            if business["active"] or business["waiting"]:
                violations.append(
                    f"at quiescence {business['business_id']} still holds"
                    f" {len(business['active'])} slots and"
                    f" {business['waiting']} waiting leads"
                )

    return {
        "leads": len(leads),
        "outcomes": len(outcome_kinds),
        "calls_placed": len(placed),
        "peak_by_business_max": max(peak.values(), default=0),
        "slot_free_to_dial_seconds": slot_free_delays(ledger),
        "violations": violations,
    }


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
    reader = LagReader(settings.kafka_bootstrap_servers)
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


def slot_free_delays(ledger: list[dict]) -> dict:
    """For each call end followed by another dial of the same business, the gap."""
    by_business = collections.defaultdict(list)
    for line in ledger:
        if line["event"] in ("placed", "ended"):
            by_business[line["business_id"]].append(line)
    gaps = []
    for lines in by_business.values():
        lines.sort(key=lambda line: line["at"])
        for index, line in enumerate(lines):
            if line["event"] == "ended":
                following = next(
                    (nxt for nxt in lines[index + 1 :] if nxt["event"] == "placed"), None
                )
                if following is not None:
                    gaps.append(following["at"] - line["at"])
    gaps.sort()
    if not gaps:
        return {}
    return {
        "count": len(gaps),
        "p50": round(gaps[len(gaps) // 2], 4),
        "p99": round(gaps[min(len(gaps) - 1, int(len(gaps) * 0.99))], 4),
    }


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
    parser.add_argument("--settle-seconds", type=float, default=300)
    parser.add_argument(
        "--keep",
        metavar="DIR",
        help="run in DIR and keep it (worker and dialer logs, the broker's"
        " data when this run owns it) for a post-mortem",
    )
    args = parser.parse_args(argv)
    with tempfile.TemporaryDirectory(prefix="chaos-") as scratch:
        workdir = Path(args.keep or scratch)
        workdir.mkdir(parents=True, exist_ok=True)
        chaos = Chaos(args, workdir)
        try:
            report = chaos.run()
        finally:
            chaos.close()
    post_mortem_lines = report.pop("post_mortem", [])
    print(json.dumps(report, indent=2))
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
