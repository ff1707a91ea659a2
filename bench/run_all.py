"""Every benchmark in one run, on one broker, into one results directory.

    python -m bench.run_all [--bootstrap localhost:29092] [--out bench/results/RUN]
                            [--quick]

Runs, in order, each as its own process (its command is logged in commands.txt):
  1. bench.core          per-event cost at backlog 0 / 1 / 100,000; state bytes
  2. bench.throughput    Faust's consume ceiling (two loops), Faust apps sending
                         batched and per record, raw Kafka, ours (+ the decision
                         summary and asyncio-loop variants), 3 interleaved passes each,
                         with py-spy profiles of the batched Faust app and ours
  3. bench.seed_poller   the seed (bulk and per-callback telephony, 1 and 2 pollers)
                         and ours (1 and 2 workers) at 100 / 1,000 / 10,000 businesses
  4. bench.latency       lead -> dial latency at fixed offered loads, 3 workers, and
                         the true concurrency per business from the dialer's ledger
  5. bench.scale         slot-free -> next dial at 100 / 10,000 / 100,000 businesses
                         under one fixed load, ours beside the seed (1 poller)
  6. bench.recovery      recovery time, state bytes and memory at 100,000 businesses
  7. bench.profile       summaries of the profiles
  8. bench.plot          slot_free_delay.png (from step 5) and slot_free_saturated.png
                         (from step 3); copy the first to bench/ for the README
Each step's stdout (JSON lines + summary) goes to STEP.out, its stderr to STEP.err, and
every JSON line also to results.jsonl. --quick shrinks every size for a smoke test.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import platform
import shutil
import subprocess
import sys
import time
from pathlib import Path

from bench.common import DEFAULT_BOOTSTRAP

HERE = Path(__file__).resolve().parent
REPO = HERE.parent


def cpu_probe() -> float:
    """Seconds for a fixed pure-Python loop, best of 3. This shared machine's speed
    drifts (one loop took 1.13 s, then 1.53 s half an hour later), and absolute
    latencies with it: each step's status line records the probe beside its figures."""
    best = float("inf")
    for _ in range(3):
        began = time.perf_counter()
        total = 0
        for n in range(1_000_000):
            total += n
        best = min(best, time.perf_counter() - began)
    return round(best, 3)


def machine() -> dict:
    load = os.getloadavg()
    mem = {}
    for line in Path("/proc/meminfo").read_text().splitlines()[:2]:
        key, value = line.split(":")
        mem[key] = value.strip()
    model = ""
    for line in Path("/proc/cpuinfo").read_text().splitlines():
        if line.startswith("model name"):
            model = line.split(":", 1)[1].strip()
            break
    return {
        "bench": "machine",
        "utc": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"),
        "cpus": os.cpu_count(),
        "cpu_model": model,
        "python": platform.python_version(),
        "kernel": platform.release(),
        "loadavg_1_5_15": [round(x, 2) for x in load],
        "cpu_probe_s": cpu_probe(),
        **mem,
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__.split("\n\n")[0],
        formatter_class=argparse.RawDescriptionHelpFormatter,
        epilog=__doc__.split("\n\n", 1)[1],
    )
    parser.add_argument("--bootstrap", default=DEFAULT_BOOTSTRAP)
    parser.add_argument("--out", default=None)
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--skip", default="", help="comma-separated steps to skip")
    args = parser.parse_args(argv)
    stamp = dt.datetime.now(dt.timezone.utc).strftime("%Y%m%dT%H%M%SZ")
    out = Path(args.out or HERE / "results" / stamp)
    out.mkdir(parents=True, exist_ok=True)
    results = out / "results.jsonl"
    py = [sys.executable, "-m"]
    work = Path(f"/tmp/bench-work-{stamp}")  # worker logs are large; kept out of the repo
    q = args.quick
    steps = [
        (
            "core",
            py
            + ["bench.core"]
            + (
                [
                    "--backlog",
                    "5000",
                    "--cycles",
                    "300",
                    "--repeats",
                    "3",
                    "--businesses",
                    "5000",
                ]
                if q
                else []
            ),
        ),
        (
            "throughput",
            py
            + [
                "bench.throughput",
                "--bootstrap",
                args.bootstrap,
                "--only",
                "raw,faust-consume,faust-take-consume,faust-batched,faust-send,ours",
                "-n",
                "5000" if q else "40000",
                "--variants",
                "summary,asyncio",
                "--repeat",
                "1" if q else "3",
                "--profile",
                "3" if q else "8",
                "--workdir",
                str(work / "throughput"),
            ],
        ),
        (
            "seed_poller",
            py
            + [
                "bench.seed_poller",
                "--bootstrap",
                args.bootstrap,
                "--ours",
                "--workers",
                "1",
                "2",
                "--out",
                str(out / "slot_free.jsonl"),
                "--businesses",
            ]
            + (
                ["20", "200", "--leads", "6", "4", "--cap", "60"]
                if q
                else ["100", "1000", "10000", "--leads", "12", "6", "4", "--cap", "150"]
            ),
        ),
        (
            "latency",
            py
            + ["bench.latency", "--bootstrap", args.bootstrap, "--rates"]
            + (["50", "--seconds", "5"] if q else ["50,100,200,500,2000"]),
        ),
        (
            "scale",
            py
            + [
                "bench.scale",
                "--bootstrap",
                args.bootstrap,
                "--out",
                str(out / "scale.jsonl"),
                "--businesses",
            ]
            + (
                [
                    "100",
                    "1000",
                    "--probes",
                    "5",
                    "--leads",
                    "12",
                    "--seconds",
                    "15",
                    "--settle",
                    "5",
                ]
                if q
                else ["100", "10000", "100000"]
            ),
        ),
        (
            "recovery",
            py
            + [
                "bench.recovery",
                "--bootstrap",
                args.bootstrap,
                "--businesses",
                "2000" if q else "100000",
            ],
        ),
        (
            "profile",
            py
            + [
                "bench.profile",
                str(out / "ours.pyspy.txt"),
                str(out / "faust-batched.pyspy.txt"),
                "--top",
                "40",
            ],
        ),
        (
            "plot",
            py
            + [
                "bench.plot",
                str(out / "scale.jsonl"),
                "--bench",
                "slot_free_at_scale",
                "-o",
                str(out / "slot_free_delay.png"),
            ],
        ),
        (
            "plot_saturated",
            py
            + [
                "bench.plot",
                str(out / "slot_free.jsonl"),
                "-o",
                str(out / "slot_free_saturated.png"),
            ],
        ),
    ]
    skip = {s for s in args.skip.split(",") if s}
    with open(results, "a") as jsonl, open(out / "commands.txt", "a") as commands:
        info = machine()
        jsonl.write(json.dumps(info) + "\n")
        print(json.dumps(info), flush=True)
        for name, command in steps:
            if name in skip:
                continue
            shown = " ".join(["python"] + command[1:]).replace(str(REPO) + "/", "")
            commands.write(f"{name}: {shown}\n")
            commands.flush()
            print(f"# {name}: {shown}", file=sys.stderr, flush=True)
            probe = cpu_probe()
            began = time.monotonic()
            with (
                open(out / f"{name}.out", "w") as stdout,
                open(out / f"{name}.err", "w") as stderr,
            ):
                code = subprocess.run(
                    command, cwd=REPO, stdout=stdout, stderr=stderr
                ).returncode
            seconds = time.monotonic() - began
            if name == "throughput":
                for profile in (work / "throughput").glob("*.pyspy.txt"):
                    shutil.copy(profile, out / profile.name)
            for line in (out / f"{name}.out").read_text().splitlines():
                if line.startswith("{"):
                    jsonl.write(line + "\n")
            status = {
                "bench": "step",
                "step": name,
                "exit": code,
                "seconds": round(seconds, 1),
                "cpu_probe_s_before": probe,
                "loadavg_1_5_15": [round(x, 2) for x in os.getloadavg()],
            }
            jsonl.write(json.dumps(status) + "\n")
            jsonl.flush()
            print(json.dumps(status), flush=True)
    print(f"results in {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
